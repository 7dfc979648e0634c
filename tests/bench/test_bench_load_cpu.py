"""bench_load's CPU per delivered write: all agents' utime + stime over the window, per write per receiver.

The figure that compares arms on a loaded machine (wall-time latencies do not), so its arithmetic is checked
here on hand-made readings, and the reader of /proc on this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_cluster  # noqa: E402
import bench_load  # noqa: E402


def test_cpu_per_delivery_sums_agents_and_divides_by_deliveries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cluster, "CLK_TCK", 100)
    before = [(100, 10), (200, 20), None]          # a third agent whose /proc vanished: left out
    after = [(160, 20), (230, 40), (999, 999)]
    out = bench_load.cpu_per_delivery(before, after, 45)  # e.g. 5 writes x (10 - 1) receivers
    assert out["cpu_s"] == pytest.approx(1.2)           # (60 + 10 + 30 + 20) ticks / 100
    assert out["per_delivery_ms"] == pytest.approx(1000 * 1.2 / 45, abs=1e-4)
    assert out["stime_share"] == pytest.approx(30 / 120, abs=1e-3)
    assert bench_load.cpu_per_delivery(before, before, 0) == {"cpu_s": 0.0, "per_delivery_ms": None,
                                                              "stime_share": None}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc (Linux)")
def test_cpu_split_reads_this_process() -> None:
    split = bench_load.cpu_split(os.getpid())
    assert split is not None and split[0] >= 0 and split[1] >= 0
    assert bench_load.cpu_split(2 ** 22 + 12345) is None  # no such process


def test_cpu_spread_per_write_is_one_writes_cpu_over_the_cores() -> None:
    # 0.4 ms per delivery, 49 receivers, 2 cores: 9.8 ms of every core per write (N=50 on this machine's kind).
    assert bench_load.cpu_spread_per_write(0.4, 50, 2) == pytest.approx(9.8)
    assert bench_load.cpu_spread_per_write(0.4, 10, 4) == pytest.approx(0.9)
    assert bench_load.cpu_spread_per_write(None, 50, 2) is None      # no CPU reading
    assert bench_load.cpu_spread_per_write(0.4, 1, 2) is None        # nobody to deliver to
    assert bench_load.cpu_spread_per_write(0.4, 50, 0) is None
    assert 1 <= bench_load.agent_cpus() <= (os.cpu_count() or 1)
