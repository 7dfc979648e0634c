"""bench/cpu_profile: the CPU attribution of real agents (bench_load.py --cpu-profile DIR).

The hook must stay out of every process but an agent's, name event-loop callbacks by what they are, and the
report must sum each agent's write window only (not its start-up or idle time) and divide by applied writes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"cpu_profile_{name}", ROOT / "bench" / "cpu_profile" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load("sitecustomize")  # imported under another name: inactive here (no GOSSIP_CPU_PROFILE_DIR)
report = _load("report")


def test_only_agent_processes_with_a_directory_are_profiled() -> None:
    agent = ["/venv/bin/python", "-m", "gossip_agent", "--config", "/tmp/a.json"]
    assert hook.active(agent, "/tmp/prof")
    assert not hook.active(agent, "")
    assert not hook.active(["/venv/bin/python", "bench/bench_load.py", "--cpu-profile", "/tmp/p"], "/tmp/p")
    assert not hook.active(["/venv/bin/python", "-c", "import gossip_agent"], "/tmp/p")
    assert not hook.ACTIVE


def test_callbacks_are_named_by_what_they_run() -> None:
    async def watch_stream() -> None:
        await asyncio.sleep(0)

    def on_timer() -> None:
        pass

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(watch_stream())
        names = [hook._name(h._callback) for h in list(loop._ready)]  # type: ignore[attr-defined]
        timer = loop.call_later(10, on_timer)
        names.append(hook._name(timer._callback))
        timer.cancel()
        await task
        return names

    names = asyncio.run(main())
    assert any(n.endswith("watch_stream") and n.startswith("task:") for n in names), names
    assert names[-1].endswith("on_timer"), names


def _snap(t: float, cpu: float, applies: int, udp: tuple[float, int]) -> dict[str, Any]:
    return {"t": t, "utime": cpu * 0.8, "stime": cpu * 0.2,
            "handles": {"udp_read": list(udp)}, "funcs": {report.PERSIST: [0.0, applies]},
            "select": [0.0, 0, 0], "gc": [0.0, 0], "gc_by_gen": {}}


def test_report_sums_each_agents_write_window_per_applied_write(tmp_path: Path) -> None:
    # Agent 1: idle (start-up CPU), then 3 s of writes at 100 applies/s, then idle again.
    a1 = [_snap(0, 5.0, 0, (0.0, 0)), _snap(1, 5.1, 0, (0.0, 0)), _snap(2, 5.2, 100, (0.05, 100)),
          _snap(3, 5.3, 200, (0.10, 200)), _snap(4, 5.4, 300, (0.15, 300)), _snap(5, 5.45, 300, (0.15, 300))]
    # Agent 2: the same writes, twice the CPU; a trickle (below a fifth of its peak) after them is not counted.
    a2 = [_snap(0, 1.0, 0, (0.0, 0)), _snap(1, 1.2, 100, (0.1, 100)), _snap(2, 1.4, 200, (0.2, 200)),
          _snap(3, 1.6, 300, (0.3, 300)), _snap(4, 1.65, 301, (0.3, 301))]
    for name, snaps in (("1", a1), ("2", a2)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in snaps))
    (tmp_path / "3.jsonl").write_text(json.dumps(_snap(0, 9.0, 0, (0.0, 0))) + "\n")  # never wrote: left out
    s = report.summarise(tmp_path)
    assert s["agents"] == 2
    assert s["applies"] == 300 + 300
    cpu = s["total"]["utime"] + s["total"]["stime"]
    assert cpu == pytest.approx((5.4 - 5.1) + (1.6 - 1.0))
    assert s["handles"]["udp_read"] == [pytest.approx(0.15 + 0.3), 600]


def test_bench_option_points_agents_at_the_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Path(bench_load.CPU_PROFILE_HOOK) / "sitecustomize.py").is_file()
    monkeypatch.delenv(bench_load.CPU_PROFILE_ENV, raising=False)
    plain = bench_load.OursFrom([], str(tmp_path)).command("a1", 1, 2, [1], tmp_path)
    assert plain[1] == f"PYTHONPATH={tmp_path}"
    monkeypatch.setenv(bench_load.CPU_PROFILE_ENV, str(tmp_path / "prof"))
    profiled = bench_load.OursFrom([], str(tmp_path)).command("a1", 1, 2, [1], tmp_path)
    assert profiled[1] == f"PYTHONPATH={tmp_path}:{bench_load.CPU_PROFILE_HOOK}"


def _profiled_run(tmp_path: Path, loop: str) -> tuple[str, list[dict[str, Any]]]:
    """A process named like an agent runs a callback on `loop` (io/event_loop.py's choice) under the hook:
    its stderr and the snapshots it wrote."""
    import os
    import subprocess

    script = ("import asyncio\nfrom gossip_agent.io import event_loop\n"
              "async def main() -> None:\n    asyncio.get_running_loop().call_soon(print, 'ran')\n"
              "    await asyncio.sleep(0.05)\n"
              f"event_loop.run(main(), event_loop.loop_factory({loop!r})[0])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "cpu_profile"), str(ROOT / "agent")]),
           "GOSSIP_CPU_PROFILE_DIR": str(tmp_path / "prof")}
    done = subprocess.run([sys.executable, "-c", script, "gossip_agent"], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert "ran" in done.stdout
    snapshots = [json.loads(line) for p in (tmp_path / "prof").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert snapshots
    return done.stderr, snapshots


def test_the_hook_profiles_the_loop_the_agent_runs(tmp_path: Path) -> None:
    """The agent runs its loop through io/event_loop.py (an asyncio.Runner, whichever loop was chosen): the hook
    must catch that, or a profiled bench silently writes nothing (it hooked asyncio.run alone once)."""
    stderr, snapshots = _profiled_run(tmp_path, "asyncio")
    assert any(s["handles"] for s in snapshots)
    assert all(s["callbacks_attributed"] for s in snapshots) and "NOT ATTRIBUTED" not in stderr


def test_under_uvloop_the_hook_says_its_callbacks_are_not_attributed(tmp_path: Path) -> None:
    """uvloop runs callbacks in C, with nothing the hook can time: the profile must say so (in every snapshot,
    on the agent's stderr, and above the report's figures) instead of showing an empty callback table."""
    pytest.importorskip("uvloop")
    stderr, snapshots = _profiled_run(tmp_path, "uvloop")
    assert "CALLBACKS NOT ATTRIBUTED" in stderr and "uvloop" in stderr
    assert all(not s["callbacks_attributed"] and s["loop"].startswith("uvloop") for s in snapshots)
    assert all(s["handles"] == {} for s in snapshots)  # (what the flag stands for)
    assert snapshots[-1]["funcs"]  # the wrapped functions still are measured


def test_the_report_warns_and_leaves_out_callback_rows_for_agents_it_could_not_attribute(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = [_snap(0, 1.0, 0, (0.0, 0)), _snap(1, 1.2, 100, (0.0, 0)), _snap(2, 1.4, 200, (0.0, 0))]
    blind = [{**s, "loop": "uvloop.Loop", "callbacks_attributed": False} for s in snaps]
    (tmp_path / "1.jsonl").write_text("".join(json.dumps(s) + "\n" for s in blind))
    (tmp_path / "2.jsonl").write_text("".join(json.dumps(s) + "\n" for s in snaps))  # older files: attributed
    s = report.summarise(tmp_path)
    assert s["agents"] == 2 and s["unattributed_loops"] == {"uvloop.Loop": 1}
    monkeypatch.setattr(sys, "argv", ["report.py", str(tmp_path)])
    report.main()
    out, err = capsys.readouterr()
    assert "CALLBACKS NOT ATTRIBUTED for 1 of 2 agents (1 on uvloop.Loop)" in out and "NOT ATTRIBUTED" in err
    assert "event-loop callbacks" not in out and "-- callbacks" not in out and "unattributed (other" not in out
    assert "-- functions" in out
    (tmp_path / "1.jsonl").unlink()
    report.main()
    out, _ = capsys.readouterr()
    assert "NOT ATTRIBUTED" not in out and "event-loop callbacks" in out and "-- callbacks" in out
