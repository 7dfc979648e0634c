"""Uniform peer choice (`topology.mode: random`) is untouched by the topology code: with zones known (in every
member's metadata) but links alike, a run sends exactly the datagrams, to exactly the members, at exactly the
times of the same run without zones. Zone rings (core/probe_order.py), far rounds, near/far gossip peers and
the piggyback rule are aware mode's alone; coordinates (mode-independent) ride as before. Aware mode on the
same zones does differ: the comparison can tell."""

from __future__ import annotations

from gossip_agent.core.effects import Send
from gossip_agent.core.messages import Address
from gossip_agent.sim import PayloadLog, Simulation, make_config
from gossip_agent.sim.zones import ZONES, zone_config

N = 90


def sends(mode: str, *, zoned: bool) -> list[tuple[float, int, Address]]:
    """Every datagram of a run (time, sender, destination): idle, five flooded writes, a crash."""
    sim = Simulation(N, seed=5, config=zone_config(mode, 0.15, make_config(), broadcast="flood"),
                     delegate_factory=lambda i: PayloadLog())
    if zoned:  # the default links' latency (1 ms one way, up to 1 ms jitter) between every pair of zones
        sim.set_zones([ZONES[i % len(ZONES)] for i in range(N)], lambda a, b: 0.002, jitter=1.0)
    log: list[tuple[float, int, Address]] = []

    def on_send(now: float, i: int, send: Send) -> None:
        log.append((now, i, send.to))

    sim.on_send.append(on_send)
    sim.start_joined()
    sim.run_for(1.5)
    for w in range(5):
        sim.broadcast(sim.live()[w * 29 % N], f"w{w}".encode())
        sim.run_for(0.4)
    sim.crash(sim.live()[77])
    sim.run_for(3.0)
    node = sim.nodes[0]
    assert node is not None and (node.topology.local_zone is not None) == zoned
    return log


def test_random_mode_sends_the_same_datagrams_with_zones_known() -> None:
    plain, zoned = sends("random", zoned=False), sends("random", zoned=True)
    assert len(plain) > 3000
    assert zoned == plain
    assert sends("aware", zoned=True) != zoned
