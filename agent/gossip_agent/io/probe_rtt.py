"""Probe round-trip times, measured where packets meet the clock: in the runtime, not in the Node.

The timing rules are core/probe_timer.py's (shared with the simulator, which passes virtual time); this
wrapper reads the runtime's monotonic clock only for pings and their acks, feeds the probe-RTT histogram
(`observe`), and returns each closed round trip to the runtime, which hands it to `Node.observe_rtt` (a
network-coordinate sample) once the ack's packet, whose coordinate came with it, has been handled.
"""

from __future__ import annotations

from collections.abc import Callable

from gossip_agent.core.messages import Ack, Packet, Ping
from gossip_agent.core.probe_timer import MAX_PENDING, ProbeTimer

__all__ = ["MAX_PENDING", "ProbeRtt"]


class ProbeRtt:
    """`observe(seconds)` gets each round trip; `clock` is read only for pings and their acks."""

    def __init__(self, observe: Callable[[float], None], clock: Callable[[], float]) -> None:
        self._observe = observe
        self._clock = clock
        self._timer = ProbeTimer()

    def __len__(self) -> int:
        return len(self._timer)

    def sent(self, packet: Packet) -> None:
        if packet.messages and type(packet.messages[0]) is Ping:
            self._timer.sent(packet, self._clock())

    def received(self, packet: Packet) -> tuple[str, float] | None:
        """(member, seconds) when `packet` is the ack closing one of our pings (after `observe` had it)."""
        messages = packet.messages  # (the ack test first: cheaper than asking the timer, and most packets fail it)
        if not messages or type(messages[0]) is not Ack or not len(self._timer):
            return None
        sample = self._timer.received(packet, self._clock())
        if sample is not None:
            self._observe(sample[1])
        return sample
