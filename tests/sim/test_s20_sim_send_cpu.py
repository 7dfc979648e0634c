"""The simulator's send cost (`Simulation(cpu_per_send=...)`): a node's datagrams leave one after another, each
costing it that much CPU, and what it receives meanwhile waits for them. Without it, a member sending one copy to
every other member at once (a critical write's writer) reached the last as soon as the first."""

from __future__ import annotations

import itertools

import pytest

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, Ping, Prune
from gossip_agent.core.node import Node
from gossip_agent.sim.cluster import Simulation
from gossip_agent.sim.network import LinkProfile

LINK = LinkProfile(latency=0.001, jitter=0.0)  # exact arrival times


def spy_prunes(sim: Simulation, i: int) -> list[float]:
    """When node i handles each bare PRUNE datagram (the test's marker), from now on."""
    node = sim.node(i)
    times: list[float] = []
    handle = node.handle_packet

    def spy(packet: Packet, src: tuple[str, int], now: float) -> list[Effect]:
        if packet.messages == (Prune(),):
            times.append(now)
        return handle(packet, src, now)

    node.handle_packet = spy  # type: ignore[method-assign]
    return times


def burst_to(to: tuple[str, int], count: int):  # type: ignore[no-untyped-def]
    def burst(n: Node, now: float) -> list[Effect]:
        return [Send(to, Packet(n.name, (Prune(),))) for _ in range(count)]
    return burst


def arrivals(send_cost: float) -> list[float]:
    """When node 1 handles each of 5 datagrams node 0 sends it at once, after t=1."""
    sim = Simulation(2, seed=1, link=LINK, cpu_per_send=send_cost)
    sim.start_joined()
    sim.run_for(1.0)
    times = spy_prunes(sim, 1)
    start = sim.now
    sim.call(0, burst_to(sim.addrs[1], 5))
    sim.run_for(1.0)
    return [t - start for t in times]


def test_without_a_send_cost_a_burst_leaves_at_once() -> None:
    assert all(abs(t - 0.001) < 1e-9 for t in arrivals(0.0)) and len(arrivals(0.0)) == 5


def test_each_datagram_leaves_after_the_one_before() -> None:
    times = arrivals(0.01)
    assert len(times) == 5
    assert abs(times[0] - 0.011) < 1e-9  # its own send cost, then the link
    assert all(abs(b - a - 0.01) < 1e-9 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("receive_cost", [0.002, 0.0])
def test_what_arrives_during_a_burst_waits_for_it(receive_cost: float) -> None:
    # Node 0 sends 5 datagrams (50 ms of CPU at 10 ms each) while node 1 sends it one at the same moment:
    # node 0 handles that one only once its burst is out, then pays its receive cost (if any).
    sim = Simulation(2, seed=1, link=LINK, cpu_per_send=0.01, cpu_per_packet=receive_cost)
    sim.start_joined()
    sim.run_for(1.0)
    at_0 = spy_prunes(sim, 0)
    start = sim.now
    sim.call(0, burst_to(sim.addrs[1], 5))
    sim.call(1, burst_to(sim.addrs[0], 1))
    sim.run_for(1.0)
    assert len(at_0) == 1
    # Node 1's own send (10 ms) and the link (1 ms) bring it at 11 ms; node 0's CPU is busy sending until 50 ms.
    assert abs(at_0[0] - start - (0.05 + receive_cost)) < 1e-9


def test_a_crashed_process_sends_nothing_it_had_booked() -> None:
    sim = Simulation(2, seed=1, link=LINK, cpu_per_send=0.01)
    sim.start_joined()
    sim.run_for(1.0)
    at_1 = spy_prunes(sim, 1)
    sim.call(0, burst_to(sim.addrs[1], 100))  # a second of sends booked, 10 ms apart
    sim.run_for(0.045)                        # 4 have left (at 10, 20, 30, 40 ms)
    sim.crash(0)
    sim.restart(0, seeds=[1])                 # a new process: the old one's sends died with it
    assert sim._send_free[0] == 0.0 and sim._cpu_free[0] == 0.0
    sim.run_for(2.0)
    assert len(at_1) == 4
    assert sim.stats["sends_of_down"] == 96


def test_a_send_leaves_after_the_datagram_being_handled_not_after_those_still_queued() -> None:
    # Node 1 pings node 0 five times at once; node 0 handles each in turn (10 ms each) and acks it (1 ms to send).
    # Each ack leaves as its ping is handled: the pings still queued behind it wait for the ack, not the other
    # way round (an agent sends while it handles a datagram, before it reads the next).
    sim = Simulation(2, seed=1, link=LINK, cpu_per_packet=0.01, cpu_per_send=0.001)
    sim.start_joined()
    sim.run_for(1.0)
    left: list[float] = []
    datagram = sim.net.datagram

    def spy(a: int, b: int, now: float, size: int) -> float | None:
        if a == 0:
            left.append(now)
        return datagram(a, b, now, size)

    sim.net.datagram = spy  # type: ignore[method-assign]
    start = sim.now
    src = sim.addrs[1]

    def pings(n: Node, now: float) -> list[Effect]:
        return [Send(sim.addrs[0], Packet(n.name, (Ping(100 + k, sim.names[0], n.name, src),))) for k in range(5)]

    sim.call(1, pings)
    sim.run_for(0.2)
    acks = [t - start for t in left[:5]]
    # Pings leave node 1 at 1..5 ms and arrive at 2..6 ms; node 0 is done with them at 12, 22, 32, 42, 52 ms
    # (handling booked on arrival is not moved back by the acks: the model's documented optimism), and each ack
    # leaves 1 ms after its ping. Held behind the queued pings, the second would have left at 53 ms.
    assert len(acks) == 5
    assert all(abs(t - e) < 1e-9 for t, e in zip(acks, (0.013, 0.023, 0.033, 0.043, 0.053), strict=True))
