"""The simulator itself: determinism, virtual time, the network model, exact byte accounting."""

from __future__ import annotations

import pytest

from gossip_agent.core import codec
from gossip_agent.core.effects import EventKind, Send
from gossip_agent.core.messages import MemberState
from gossip_agent.sim import LinkProfile, Simulation, make_config, node_address
from gossip_agent.sim.network import Network

from .conftest import converged_cluster


def fingerprint(sim: Simulation) -> tuple[object, ...]:
    return (sim.now, tuple(sorted(sim.stats.items())), tuple(sim.events))


def run(seed: int) -> Simulation:
    sim = Simulation(20, seed=seed, link=LinkProfile(loss=0.05), keep_events=True)
    sim.start_all(seeds=2, spread=2.0)
    sim.run_until(10.0)
    sim.crash("n7")
    sim.run_until(40.0)
    return sim


def test_same_seed_same_run_other_seed_other_run() -> None:
    assert fingerprint(run(3)) == fingerprint(run(3))
    assert fingerprint(run(3)) != fingerprint(run(4))


def test_virtual_time_never_goes_back() -> None:
    sim = run(5)
    times = [e[0] for e in sim.events]
    assert times == sorted(times)
    assert sim.now == 40.0


def test_addresses_are_distinct_and_virtual() -> None:
    addrs = {node_address(i) for i in range(70_000)}
    assert len(addrs) == 70_000
    assert node_address(0) == ("10.0.0.1", 7946)


def test_loss_rate_and_partition_cuts() -> None:
    import random

    net = Network(4, random.Random(1), LinkProfile(latency=0.01, jitter=0.0, loss=0.25))
    arrivals = [net.datagram(0, 1, 1.0, 0) for _ in range(20_000)]
    delivered = [t for t in arrivals if t is not None]
    assert 0.23 < 1 - len(delivered) / len(arrivals) < 0.27
    assert set(delivered) == {1.01}
    net.partition([[0, 1]])
    assert net.datagram(0, 2, 1.0, 0) is None and net.cut == 1
    assert net.reachable(0, 1) and not net.reachable(1, 3) and net.reachable(2, 3)
    net.heal()
    net.crash(3)
    assert not net.reachable(2, 3) and net.connected(2, 3)


def test_bandwidth_spreads_a_burst() -> None:
    import random

    net = Network(2, random.Random(1), LinkProfile(latency=0.0, jitter=0.0), bandwidth=1000.0)
    assert [net.datagram(0, 1, 0.0, 500) for _ in range(3)] == [0.5, 1.0, 1.5]


def test_exact_bytes_mode_round_trips_every_packet_within_the_mtu() -> None:
    sim = Simulation(30, seed=2, bytes_mode="exact")
    sim.start_all(seeds=2, spread=1.0)
    assert sim.run_until_condition(sim.converged, timeout=60.0) is not None
    sim.run_for(10.0)
    assert sim.stats["bytes_sent"] > sim.stats["packets_sent"] * 20
    assert sim.stats["packets_over_mtu"] == 0
    assert sim.stats["sync_bytes"] > 0


def test_estimated_bytes_equal_exact_bytes() -> None:
    """Each packet's estimated size (what "estimate" mode counts) is its encoded size, packet by packet in one
    run. (Two runs, one per mode, drift apart: exact mode delivers what it decodes, e.g. coordinate ages rounded
    to 0.1 s, so their totals were equal only as long as no drift changed an encoded length.)"""
    sim = Simulation(15, seed=9, bytes_mode="exact")
    sizes: list[tuple[int, int]] = []

    def compare(now: float, i: int, e: Send) -> None:
        n = len(e.packet.messages)
        estimate = sim._header[i] + (1 if n < 16 else 3) + sum(map(codec.message_size, e.packet.messages))
        sizes.append((estimate, len(codec.encode_packet(e.packet))))

    sim.on_send.append(compare)
    sim.start_all(seeds=1, spread=1.0)
    sim.run_until(20.0)
    assert len(sizes) > 1000
    assert [s for s in sizes if s[0] != s[1]] == []


def test_converged_needs_every_node_started_and_ignores_the_crashed() -> None:
    sim = Simulation(10, seed=1)
    sim.start_all(seeds=1, spread=3.0)
    assert not sim.converged()
    assert sim.run_until_condition(sim.converged, timeout=30.0) is not None
    sim.crash("n4")
    assert not sim.converged()  # the others still see n4 alive
    assert sim.run_until_condition(sim.converged, timeout=60.0) is not None  # n4 suspect: not alive
    assert sim.run_until_condition(lambda: sim.all_see("n4", MemberState.DEAD), timeout=60.0) is not None
    assert sim.views("n4")[MemberState.DEAD] == 9


def test_queries_on_a_small_cluster() -> None:
    sim = converged_cluster(12, seed=4)
    assert sim.all_see("n3", MemberState.ALIVE)
    assert sim.state_of("n1", "n2") is MemberState.ALIVE
    sim.crash("n3")
    sim.run_for(40.0)
    t = sim.time_all_saw("n3", EventKind.DEAD, since=sim.crashed_at[3])
    assert t is not None and sim.detection_time("n3") == t - sim.crashed_at[3]
    assert sim.rate("packets_sent", seconds=sim.now) > 0


def test_make_config_overrides_sections() -> None:
    cfg = make_config("local", membership={"indirect_checks": 0}, gossip={"fanout": 5})
    assert cfg.membership.indirect_checks == 0 and cfg.gossip.fanout == 5 and cfg.preset == "local"


def test_command_line_summary(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gossip_agent.sim.__main__ import main

    assert main(["--nodes", "25", "--seed", "3", "--loss", "0.1", "--duration", "40", "--crash", "2",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["join_converged_at"] is not None
    assert len(summary["detection_seconds"]) == 2 and None not in summary["detection_seconds"].values()
    assert summary["false_positives"] == 0
    assert summary["messages_per_node_per_s"] > 0 and summary["bytes_per_node_per_s"] > 0
