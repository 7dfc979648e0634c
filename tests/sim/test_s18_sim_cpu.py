"""The simulator's CPU load model (`Simulation(cpu_per_packet=...)`): a node handles its datagrams in turn, each
costing it that much CPU, so a burst queues up as in an agent's socket buffer on a machine at capacity."""

from __future__ import annotations

import itertools

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, Prune
from gossip_agent.core.node import Node
from gossip_agent.sim.cluster import Simulation


def handled_at(cpu: float) -> list[float]:
    """When node 1 handles each of 5 datagrams node 0 sends it at once (links: 1 ms, up to 1 ms jitter)."""
    sim = Simulation(2, seed=1, cpu_per_packet=cpu)
    sim.start_joined()
    sim.run_for(1.0)
    node = sim.node(1)
    times: list[float] = []
    handle = node.handle_packet

    def spy(packet: Packet, src: tuple[str, int], now: float) -> list[Effect]:
        if packet.messages == (Prune(),):
            times.append(now)
        return handle(packet, src, now)

    node.handle_packet = spy  # type: ignore[method-assign]
    to = sim.addrs[1]

    def burst(n: Node, now: float) -> list[Effect]:
        return [Send(to, Packet(n.name, (Prune(),))) for _ in range(5)]

    sim.call(0, burst)
    sim.run_for(1.0)
    return [t - 1.0 for t in times]


def test_without_a_cpu_cost_datagrams_are_handled_on_arrival() -> None:
    assert all(t <= 0.002 for t in handled_at(0.0))


def test_each_datagram_waits_for_the_ones_before_it() -> None:
    times = handled_at(0.05)
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(g - 0.05) < 1e-9 for g in gaps)  # one after the other, each 50 ms of CPU
    assert 0.05 <= times[0] <= 0.052  # the first: on arrival (<= 2 ms) plus its own cost
