"""The load bench's tail figures: which agents were last at the slowest writes, and the spread of a per-agent
count (bench/bench_load.py `tail_agents`, `per_agent_spread`). Pure: hand-made arrivals."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402


def test_the_slowest_percent_names_its_last_agents() -> None:
    # 200 writes: the 2 slowest (1 %) were last at agent "c"; the rest were last at "a" or "b".
    arrivals = {f"k{i}": {"a": 0.001, "b": 0.002 if i % 2 else 0.0005, "c": 0.0001} for i in range(198)}
    arrivals["slow1"] = {"a": 0.01, "b": 0.02, "c": 0.5}
    arrivals["slow2"] = {"a": 0.01, "b": 0.02, "c": 0.4}
    t100 = {k: max(v.values()) for k, v in arrivals.items()}
    assert bench_load.tail_agents(arrivals, t100) == {"c": 2}
    assert bench_load.tail_agents({}, {}) == {}
    # Fewer than 100 writes: still the slowest one.
    assert bench_load.tail_agents({"x": {"a": 0.1, "b": 0.3}}, {"x": 0.3}) == {"b": 1}


def test_per_agent_spread_counts_the_agents_that_forward_nothing() -> None:
    spread = bench_load.per_agent_spread([0.0, 2.0, 1000.0, 3000.0])
    assert spread == {"max": 3000.0, "mean": 1000.5, "near_zero": 2}
    assert bench_load.per_agent_spread([]) is None
