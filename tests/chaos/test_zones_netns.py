"""Real agents in zones: network namespaces in groups with a real delay between groups (zones_netns.py).

Only robust, generous assertions live here (a busy 2-core machine stretches every delay); the figures
(estimate vs measured RTT, cross-zone bytes and write->all t100, topology-aware vs uniform peer choice at
N >= 30) are measured by bench/bench_topology_real.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.zones_netns import ZonedTestbed, ZoneLayout, delayer_problem, icmp_rtts

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
