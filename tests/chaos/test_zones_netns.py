"""Real agents in zones: network namespaces in groups with a real delay between groups (zones_netns.py).

Only robust, generous assertions live here (a busy 2-core machine stretches every delay); the figures
(estimate vs measured RTT, cross-zone bytes and write->all t100, topology-aware vs uniform peer choice at
N >= 30) are measured by bench/bench_topology_real.py.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.zones_netns import (
    ZonedAgents,
    ZonedTestbed,
    ZoneLayout,
    delayer_problem,
    icmp_rtts,
    zone_name,
)

RTT_MS = 20.0


@pytest.fixture(autouse=True)
def _needs_delayer() -> None:
    problem = delayer_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[ZonedTestbed]:
    with ZonedTestbed(ZoneLayout.symmetric([2, 2], {(0, 1): RTT_MS}), tmp_path) as testbed:
        yield testbed


def test_delay_applies_between_groups_only(bed: ZonedTestbed) -> None:
    """The round trip between groups is at least the configured one (the delayer holds each packet its
    one-way delay), inside a group it stays far below it; the router counts what crosses, per direction."""
    a0, a1, b0, _ = bed.hosts
    before = bed.pair_bytes()
    across = icmp_rtts(a0.ns, b0.addr, count=10)
    inside = icmp_rtts(a0.ns, a1.addr, count=10)
    assert len(across) >= 8 and len(inside) >= 8, (across, inside)
    assert statistics.median(across) >= 0.95 * RTT_MS / 1000, across
    assert statistics.median(inside) < RTT_MS / 4 / 1000, inside
    after = bed.pair_bytes()
    assert after[(0, 1)] > before.get((0, 1), 0) and after[(1, 0)] > before.get((1, 0), 0)
    assert after[(0, 0)] > before.get((0, 0), 0)
    assert bed.queue_drops() == 0
    assert bed.delayer is not None and bed.delayer.alive()


def test_namespaces_and_delayer_are_gone_after_close(tmp_path: Path) -> None:
    bed = ZonedTestbed(ZoneLayout.symmetric([1, 1], {(0, 1): RTT_MS}), tmp_path)
    with bed:
        assert bed.delayer is not None
        delayer = bed.delayer
        names = [h.ns for h in bed.hosts] + [bed.router_ns]
    assert not delayer.alive()
    assert not any((Path("/run/netns") / name).exists() for name in names)


# ---- real agents ---------------------------------------------------------------------------------------------

AGENT_RTT_MS = 40.0
# Generous bounds: the waits return as soon as the condition holds; a busy 2-core machine slows everything.
JOIN_BOUND = 90.0
CONVERGE_BOUND = 120.0


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def test_agents_estimates_separate_the_groups_and_match_the_measured_rtt(tmp_path: Path) -> None:
    """Two groups of three agents, 40 ms round trip between them (NFQUEUE delay), each agent told its zone.
    Within a bounded wait, every agent's estimates (GET /v1/rtt) put every member of the other group further
    than every member of its own, and the median cross-group estimate is within 25% of the ICMP round trip;
    nobody is ever suspected (the delay is well under the probe timeout)."""
    layout = ZoneLayout.symmetric([3, 3], {(0, 1): AGENT_RTT_MS})
    with ZonedTestbed(layout, tmp_path) as bed:
        net = ZonedAgents(bed, {"preset": "lan"})
        agents = net.start_all(lambda group: {"topology": {"zone": zone_name(group)}})
        names = [a.name for a in agents]
        net.wait(lambda: net.sees(agents, {n: ("alive",) for n in names}), JOIN_BOUND, "every agent sees all alive")
        groups = bed.groups()
        measured = _median(icmp_rtts(groups[0][0].ns, groups[1][0].addr, count=20)) * 1000
        assert measured >= 0.95 * AGENT_RTT_MS, measured
        group_of = {a.name: bed.group_of[a.host.index] for a in agents}
        last: dict[str, object] = {}

        def converged() -> bool:
            same: list[float] = []
            cross: list[float] = []
            for x in agents:
                mine: list[float] = []
                theirs: list[float] = []
                for y in agents:
                    if x is y:
                        continue
                    est = net.rtt_ms(x, y)
                    if est is None:
                        return False
                    (mine if group_of[x.name] == group_of[y.name] else theirs).append(est)
                if max(mine) >= min(theirs):
                    last.update(agent=x.name, same=mine, cross=theirs)
                    return False
                same += mine
                cross += theirs
            error = abs(_median(cross) - measured) / measured
            last.update(error=error, median_cross=_median(cross), median_same=_median(same))
            return error <= 0.25

        net.wait(converged, CONVERGE_BOUND, f"separated estimates within 25% of {measured:.1f} ms (last: {last})",
                 interval=2.0)
        zones = {a.name: json.loads(net.get(a, "/v1/coordinates") or b"{}").get("zone") for a in agents}
        assert zones == {a.name: zone_name(group_of[a.name]) for a in agents}
        assert all(set((net.members(a) or {}).values()) == {"alive"} for a in agents)
        assert not any(net.dead_reports(a) for a in agents)
        assert bed.queue_drops() == 0
