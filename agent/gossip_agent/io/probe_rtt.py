"""Probe round-trip times, measured where packets meet the clock: in the runtime, not in the Node.

The Node decides whom to ping but reads no clock, and the wire carries no timestamps. The runtime sees every
packet leave (`sent`) and arrive (`received`) with the time, so it times probes here: a `Ping` we send (our
own probe, or one relayed for another member's ping-req: both are a round trip to the target) is remembered
by sequence number together with its target's name; an `Ack` with that sequence number *sent by that member*
(`packet.sender`) closes the round trip. Acks a helper relays for an indirect probe come from the helper, so
they are not mistaken for a direct round trip.

A ping is the first message of its packet and an ack the first of its answer (the Node puts protocol
messages before piggybacked rumors), so only first messages are looked at: one type check per packet.

Each closed round trip also goes back to the caller (`received` returns it), which feeds it to the Node as a
network-coordinate sample once the packet (whose coordinate came with the ack) has been handled.

Bounded: at most `MAX_PENDING` pings are remembered, the oldest forgotten first (an unanswered ping is just
forgotten; it never produces a sample).
"""

from __future__ import annotations

from collections.abc import Callable

from gossip_agent.core.messages import Ack, Packet, Ping

MAX_PENDING = 256


class ProbeRtt:
    """`observe(seconds)` gets each round trip; `clock` is read only for pings and their acks."""

    def __init__(self, observe: Callable[[float], None], clock: Callable[[], float]) -> None:
        self._observe = observe
        self._clock = clock
        self._pending: dict[int, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def sent(self, packet: Packet) -> None:
        first = packet.messages[0] if packet.messages else None
        if type(first) is Ping:
            pending = self._pending
            pending.pop(first.seq, None)  # a reused sequence number is the newest ping (keeps age order)
            pending[first.seq] = (first.target, self._clock())
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]

    def received(self, packet: Packet) -> tuple[str, float] | None:
        """Closes a round trip if `packet` is the ack of one: returns (member, seconds) -- the runtime hands it
        to `Node.observe_rtt`, a Vivaldi sample (core/topology_state.py) -- after `observe` had it."""
        if not self._pending or not packet.messages:
            return None
        first = packet.messages[0]
        if type(first) is not Ack:
            return None
        sent = self._pending.get(first.seq)
        if sent is None or sent[0] != packet.sender:
            return None
        del self._pending[first.seq]
        rtt = max(0.0, self._clock() - sent[1])
        self._observe(rtt)
        return sent[0], rtt
