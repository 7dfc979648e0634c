"""bench_load.py --repeat K and the first second's latency apart: without agents.

One run of N=50, 100 writes/s on the tree gave a t100 p99 anywhere from 16 to 490 ms, the misses all from the
first second of writes on a freshly joined cluster. So a scenario can run K times in a row (each a fresh cluster,
each row carrying its index), and each row says the first second's median and the p99 of the writes after it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402


def plan_args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(n="50", rate="100", writes=0, seconds=10.0, modes="push-pull", set=[], size=1024,
                                critical_every=0, budget=0, serf=False, issue_scenario=False, sweep=False,
                                broadcasts="tree")
    return argparse.Namespace(**(base | kw))


def test_repeat_runs_each_of_our_scenarios_k_times_in_a_row_and_serf_once() -> None:
    scenarios = bench_load.plan(plan_args(rate="10,100", size=200, serf=True, repeat=3))
    ours = [s for s in scenarios if s.impl == "ours"]
    assert [(s.rate, s.repeat, s.repeats) for s in ours] == [(r, i, 3) for r in (10.0, 100.0) for i in range(3)]
    serf = [s for s in scenarios if s.impl == "serf"]
    assert [(s.rate, s.repeat, s.repeats) for s in serf] == [(10.0, 0, 1), (100.0, 0, 1)]
    # In a row: each scenario's runs one after the other, its Serf row after them.
    assert [(s.impl, s.rate) for s in scenarios] == [*[("ours", 10.0)] * 3, ("serf", 10.0),
                                                     *[("ours", 100.0)] * 3, ("serf", 100.0)]
    first, second = ours[:2]
    assert (first.n, first.rate, first.size, first.writes, first.mode, first.sets) == (
        second.n, second.rate, second.size, second.writes, second.mode, second.sets)
    assert first.sets == ["gossip.broadcast=tree"]
    assert first.title().endswith("repeat 0/3") and second.title().endswith("repeat 1/3")
    assert bench_load.asdict(second)["repeat"] == 1  # the row's JSON scenario carries it


def test_without_repeat_the_plan_and_titles_are_unchanged() -> None:
    for args in (plan_args(), plan_args(repeat=1)):
        (only,) = bench_load.plan(args)
        assert (only.repeat, only.repeats) == (0, 1)
        assert only.title() == "load: N=50 100/s 1024 B x1000 push-pull gossip.broadcast=tree"


def test_repeat_with_baseline_pairs_each_run_before_after(tmp_path: Path) -> None:
    scenarios = bench_load.plan(plan_args(repeat=2, baseline=str(tmp_path)))
    assert [(bool(s.src), s.repeat) for s in scenarios] == [(True, 0), (False, 0), (True, 1), (False, 1)]


def test_repeat_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit):
        bench_load.main(["--repeat", "0"])


def test_first_second_apart_from_the_rest() -> None:
    # Writes every 0.25 s from t=100: the first four are in the first second, slow (a fresh cluster's burst).
    sent = {f"k{i}": 100.0 + 0.25 * i for i in range(12)}
    t100 = {f"k{i}": (0.5 + 0.1 * i if i < 4 else 0.01 + 0.001 * i) for i in range(12)}
    del t100["k1"]                                    # never reached everyone: in neither figure
    out = bench_load.first_second_split(t100, sent)
    assert out["first_s_t100_median_ms"] == 700.0     # k0, k2, k3: 500, 700, 800 ms
    assert out["t100_p99_after_first_s_ms"] == 21.0   # k4..k11 (k4 at exactly 1 s): 14..21 ms, p99 the largest
    # The first second counts from the earliest send, even when that write never reached everyone (from the
    # first complete one, k2 at 100.5, k4 and k5 would be in it and the median 357.5 ms).
    del t100["k0"]
    assert bench_load.first_second_split(t100, sent)["first_s_t100_median_ms"] == 750.0
    sent["k4"] = 100.999                              # a send just inside the first second
    out = bench_load.first_second_split(t100, sent)
    assert out["first_s_t100_median_ms"] == 700.0     # k2, k3, k4: 700, 800, 14 ms
    assert out["t100_p99_after_first_s_ms"] == 21.0


def test_first_second_split_with_nothing_on_one_side() -> None:
    assert bench_load.first_second_split({}, {}) == {"t100_p99_after_first_s_ms": None,
                                                    "first_s_t100_median_ms": None}
    sent = {"a": 5.0, "b": 5.5}
    assert bench_load.first_second_split({"a": 0.1, "b": 0.2}, sent) == {"t100_p99_after_first_s_ms": None,
                                                                         "first_s_t100_median_ms": 150.0}
