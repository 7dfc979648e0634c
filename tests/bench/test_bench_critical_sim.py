"""bench_critical_sim.py: critical against normal writes when every member has a CPU of its own (the simulator).

The loopback bench cannot show the priority target on a 2-core machine (bench_load `cpu_spread_per_write_ms`:
both classes wait for the same shared CPU); here each member is charged its own CPU per datagram handled and
sent, as a pod would be, and the product's cores must bring a critical write to everyone in at most half a
normal write's time (the issue's target) under a 100 writes/s background."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_critical_sim as bcs  # noqa: E402


def test_critical_writes_reach_everyone_in_under_half_the_time_of_normal_ones() -> None:
    # N=20, 200 writes of 1 KiB at 100/s, every 10th critical; 0.3 ms per datagram handled, 13 us per datagram
    # sent, 0.1 ms links plus up to 0.1 ms; members join as agents do. (Measured: 0.72 against 2.08 ms: 0.35x.)
    p = bcs.Params(n=20, writes=200)
    row = bcs.summarise(p, bcs.t100_by_class(p), 0.0)
    assert row["never_all"] == 0
    assert row["critical"]["writes"] == 20 and row["normal"]["writes"] == 180
    assert row["critical_over_normal_median"] <= 0.5


def test_without_the_direct_route_critical_writes_are_no_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lead comes from the writer reaching every member at once (core/critical.py): routed as normal writes
    # are (no direct copies), the critical class loses it (measured: 1.97 against 2.04 ms, 0.97x). Guards the
    # bench itself against measuring nothing.
    import gossip_agent.core.node as node_module
    monkeypatch.setattr(node_module, "direct_reach", lambda others: 0)
    p = bcs.Params(n=20, writes=200)
    row = bcs.summarise(p, bcs.t100_by_class(p), 0.0)
    assert row["never_all"] == 0
    assert row["critical_over_normal_median"] > 0.5


def test_summarise_gives_medians_p99_and_the_ratio() -> None:
    p = bcs.Params(n=3)
    row = bcs.summarise(p, {"critical": [0.001, 0.003, 0.002], "normal": [0.004] * 9 + [0.1], "never": [0.0]}, 1.23)
    assert row["critical"] == {"writes": 3, "t100_median_ms": 2.0, "t100_p99_ms": 3.0}
    assert row["normal"]["t100_median_ms"] == 4.0 and row["normal"]["t100_p99_ms"] == 100.0
    assert row["critical_over_normal_median"] == 0.5 and row["never_all"] == 1 and row["params"]["n"] == 3
