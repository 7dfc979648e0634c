"""Probe round-trip timing from the packets a driver sends and receives, with the times it passes in.

The Node decides whom to ping but the wire carries no timestamps, so whoever sees packets leave and arrive
times probes: the agent runtime with its monotonic clock (io/probe_rtt.py), the simulator with its virtual
one. A `Ping` sent (our own probe, or one relayed for another member's ping-req: both are a round trip to
the target) is remembered by sequence number with its target's name; an `Ack` with that sequence number
*sent by that member* (`packet.sender`) closes the round trip. Acks a helper relays for an indirect probe come
from the helper, so they are not mistaken for a direct round trip.

A ping is the first message of its packet and an ack the first of its answer (the Node puts protocol
messages before piggybacked rumors and coordinates), so only first messages are looked at: one type check
per packet.

Bounded: at most `MAX_PENDING` pings are remembered, the oldest forgotten first (an unanswered ping is just
forgotten; it never produces a sample). Pure: no clock, no I/O.
"""

from __future__ import annotations

from gossip_agent.core.messages import Ack, Packet, Ping

MAX_PENDING = 256


class ProbeTimer:
    """`sent(packet, now)` for every packet sent, `received(packet, now)` for every packet received."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[int, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def sent(self, packet: Packet, now: float) -> None:
        first = packet.messages[0] if packet.messages else None
        if type(first) is Ping:
            pending = self._pending
            pending.pop(first.seq, None)  # a reused sequence number is the newest ping (keeps age order)
            pending[first.seq] = (first.target, now)
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]

    def received(self, packet: Packet, now: float) -> tuple[str, float] | None:
        """(member, seconds) if `packet` is the ack that closes a round trip, else None."""
        if not self._pending or not packet.messages:
            return None
        first = packet.messages[0]
        if type(first) is not Ack:
            return None
        sent = self._pending.get(first.seq)
        if sent is None or sent[0] != packet.sender:
            return None
        del self._pending[first.seq]
        return sent[0], max(0.0, now - sent[1])
