"""bench_load.py --baseline DIR: each of our scenarios runs twice in one invocation, first with the agents from
another source tree (before), then from this checkout (after), so both arms see the same machine state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402


def test_baseline_runs_each_of_our_scenarios_first_from_the_other_tree(tmp_path: Path) -> None:
    args = argparse.Namespace(n="10", rate="10", writes=0, seconds=1.0, modes="push-pull", set=[], size=512,
                              critical_every=0, budget=0, serf=False, issue_scenario=False, sweep=False,
                              broadcasts="", baseline=str(tmp_path))
    before, after = bench_load.plan(args)
    assert before.src == str(tmp_path.resolve()) and after.src == ""
    assert before.title().endswith("[baseline]") and "[baseline]" not in after.title()
    assert (before.n, before.rate, before.sets) == (after.n, after.rate, after.sets)
    cmd = bench_load.OursFrom(["gossip.mode=push-pull"], before.src).command("a1", 1, 2, [1], tmp_path)
    python = cmd.index(sys.executable)
    assert cmd[:2] == ["env", f"PYTHONPATH={before.src}"] and cmd[python + 1:python + 3] == ["-m", "gossip_agent"]
    assert cmd[2:python] == [f"{k}={v}" for k, v in bench_load.bc.AGENT_ENV.items()]  # the image's interpreter settings
