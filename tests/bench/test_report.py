"""bench/report.py does not rot: the report and its plots from a canned run, in seconds, with no agent started.

The canned run holds what the steps write: bench_load.py results (a tree/flood pair beside Serf, critical and
normal writes, a two-point fanout sweep), the topology simulator's output (computed here on a tiny topology:
the real drivers, under a second) and a bench_topology_real.py output (canned: that bench needs namespaces and
root); the idle section renders from hand-made bench_cluster.py JSON of its own. No timing is asserted: only
that the ratios the report states are the ones in the data, that every plot is made and small, that rendering
twice gives the same bytes, and what the plan would run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402

WRITES = 20


def load_row(n: int, size: int, *, impl: str = "ours", path: str | None = "tree", bytes_total: int,
             t100_ms: list[float], step_sets: tuple[str, ...] = (), critical: bool = False) -> dict[str, Any]:
    """One bench_load.py result as the bench writes it (the fields the report reads)."""
    sets = [*([f"gossip.broadcast={path}"] if path and impl == "ours" else []), *step_sets]
    udp, tcp = bytes_total * 9 // 10, bytes_total - bytes_total * 9 // 10
    r: dict[str, Any] = {
        "scenario": {"impl": impl, "n": n, "rate": 10.0, "size": size, "writes": WRITES,
                     "mode": "push-pull" if impl == "ours" else "-", "sets": sets, "label": "load",
                     "critical_every": 10 if critical else 0, "budget": 0},
        "writes_acked": WRITES, "write_errors": {}, "write_window_s": 2.0, "window_s": 5.0,
        "latency": {"t100_median_ms": sorted(t100_ms)[len(t100_ms) // 2], "t100_p99_ms": max(t100_ms),
                    "t100_max_ms": max(t100_ms), "each_median_ms": min(t100_ms), "complete": len(t100_ms),
                    "incomplete": WRITES - len(t100_ms),
                    "t100_ms": t100_ms},
        "floor_bytes_per_write": (n - 1) * (12 + size + 16),
        "nft_whole": {"bytes": bytes_total, "udp_bytes": udp, "udp_packets": 100, "tcp_bytes": tcp,
                      "tcp_packets": 10},
        "nft_during_writes": {"bytes": bytes_total // 2, "udp_bytes": udp // 2, "udp_packets": 50, "tcp_bytes": 0,
                              "tcp_packets": 0},
        "load_before": [1.0, 1.0, 1.0], "load_after": [1.5, 1.0, 1.0],
        "cpu_pct_per_agent": {"mean": 1.0, "max": 2.0}, "idle": {"Bps_per_agent": 100.0},
    }
    if impl == "ours":
        r.update({
            "roots_equal_after_last_write_s": 0.1,
            "membership_under_load": {"false_positives": 0, "suspected_members": 0},
            "capture": {"packets": 100, "wire_bytes": udp, "messages": {"state": 60, "digest": 20, "ping": 20},
                        "wire_bytes_by_type": {"state": udp * 8 // 10, "digest": udp // 10, "ping": udp // 10},
                        "undecoded_bytes": 0},
            "agent_counters": {"messages_out_by_type": {"state": 60, "digest": 20, "ping": 20},
                               "bytes_out_by_kind": {"pushpull": 10}, "bytes_in_by_kind": {"pushpull": 10},
                               "antientropy_bytes": {"sent": 10}, "dropped": {}},
        })
        if critical:
            crit, normal = t100_ms[:2], t100_ms[2:]
            r["latency_by_class"] = {
                "critical": {"writes": 2, "complete": 2, "t100_median_ms": 10.0, "t100_p99_ms": 12.0, "t100_ms": crit,
                             "t100_over_cpu_spread": 1.25},
                "normal": {"writes": 18, "complete": len(normal), "t100_median_ms": 40.0, "t100_p99_ms": 90.0,
                           "t100_ms": normal, "t100_over_cpu_spread": 5.0},
                "critical_over_normal_median": 0.25, "cpu_spread_per_write_ms": 8.0}
    else:
        r["bytes_by_type"] = {"udp (serf)": udp, "tcp (serf push-pull)": tcp}
        r["bytes_per_write"] = bytes_total // WRITES
        r["x_floor"] = round(bytes_total / WRITES / r["floor_bytes_per_write"], 2)
    return r


def bench_file(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"meta": {"date": "2026-11-30T08:00:00+00:00", "machine": "test 2 cpus", "load_start": [1.0, 1.0, 1.0],
                     "versions": {"python": "3.11"}, "argv": ["--test"], "load_end": [1.0, 1.0, 1.0]},
            "results": results}


def topology_real() -> dict[str, Any]:
    """bench_topology_real.py's output shape (two modes, 2 groups)."""
    def result(mode: str, cross: int) -> dict[str, Any]:
        return {"mode": mode, "n": 6, "join_s": 1.0,
                "rtt": {"summary": {"measured_ms": {"0-1": 20.0}, "median_rel_error_cross": 0.1},
                        "scatter": {"0-1": [19.0, 21.0, 22.5], "0-0": [0.5, 0.6]}},
                "idle_bytes": {"summary": {"cross_bytes": cross, "same_bytes": 5000, "cross_share": 0.2}},
                "write_bytes": {"summary": {"cross_bytes": 2 * cross, "same_bytes": 9000}},
                "writes": {"writes": 5, "complete": 5, "t100": {"median_ms": 30.0}},
                "false_positives": {"non_alive_views": [], "dead_log_lines": 0}}
    return {"when": "2026-11-30 08:00:00 UTC", "args": {"groups": "3,3"}, "load_before": [1.0, 1.0, 1.0],
            "results": [result("aware", 1000), result("uniform", 5000)],
            "comparison": {"idle_cross_bytes_cut": 5.0, "write_cross_bytes_cut": 5.0, "t100_median_ratio": 1.1}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    lat = [float(5 + i) for i in range(WRITES)]
    (d / "serf.json").write_text(json.dumps(bench_file([
        load_row(10, 200, path="tree", bytes_total=100_000, t100_ms=lat),
        load_row(10, 200, path="flood", bytes_total=400_000, t100_ms=[x * 2 for x in lat]),
        load_row(10, 200, impl="serf", path=None, bytes_total=200_000, t100_ms=[x * 10 for x in lat[:15]]),
    ])))
    (d / "critical.json").write_text(json.dumps(bench_file([
        load_row(n, 1024, path=None, bytes_total=300_000 * n // 10, t100_ms=lat, critical=True) for n in (10, 50)])))
    (d / "sweep.json").write_text(json.dumps(bench_file([
        load_row(10, 1024, path=p, bytes_total=b, t100_ms=[x * m for x in lat],
                 step_sets=(f"gossip.fanout={f}", f"gossip.retransmitMult={m}"))
        for p, f, m, b in (("tree", 3, 1, 200_000), ("tree", 3, 4, 210_000), ("flood", 3, 1, 300_000),
                           ("flood", 3, 4, 900_000))])))
    seen = []
    for observer, scale, cpu in (("trace", 1, 0.4), ("watch", 3, 0.47)):  # the same scenario, both observers
        row = load_row(50, 1024, path="tree", bytes_total=2_000_000 * scale, t100_ms=[x * scale for x in lat])
        row["apparatus"] = {"observer": observer}
        row["cpu_s_per_delivery"] = {"during_writes": {"per_delivery_ms": cpu}}
        seen.append(row)
    (d / "load.json").write_text(json.dumps(bench_file(seen[:1])))
    (d / "observer.json").write_text(json.dumps(bench_file(seen[1:])))
    (d / "topology.json").write_text(json.dumps(report.topology_sim(report.topology_params(quick=True))))
    (d / "critical_sim.json").write_text(json.dumps(report.critical_sim({"sizes": [5], "seeds": [1], "writes": 20})))
    (d / "topology_real.json").write_text(json.dumps(topology_real()))
    (d / "run.json").write_text(json.dumps({
        "started": "2026-11-30T08:00:00+00:00", "finished": "2026-11-30T08:30:00+00:00", "argv": ["--run"],
        "machine": {"host": "test", "cpus": 2, "memory_mb": 1000, "platform": "Linux"},
        "versions": {"python": "3.11", "serf": "0.8.2"}, "load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 1.0, 1.0],
        "steps": [{"name": "serf", "what": "w", "command": ["bench/bench_load.py", "--serf"], "wall_s": 10.0,
                   "load_before": [1.0, 1.0, 1.0], "load_after": [3.0, 1.0, 1.0], "rc": 0}]}))
    return d


def render(run_dir: Path, out: Path) -> tuple[str, Path]:
    md, plots = out / "REPORT.md", out / "plots"
    assert report.main(["--from", str(run_dir), "--output", str(md), "--plots", str(plots)]) == 0
    return md.read_text(), plots


@pytest.fixture(scope="module")
def rendered(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return render(run_dir, tmp_path_factory.mktemp("first"))


def test_report_states_the_ratios_of_the_run(rendered: tuple[str, Path]) -> None:
    text, plots = rendered
    for heading in ("## The run", "## Ratios measured in this run", "## Targets", "## Bytes by message type",
                    "## Fanout and retransmits", "## All load scenarios", "## Topology", "## Plots"):
        assert heading in text, heading
    assert "load average (1/5/15 min) at start [1.0, 1.0, 1.0]" in text and "serf 0.8.2" in text
    # tree 100 kB vs flood 400 kB: 4x; t100 median tree 15 ms vs flood 30 ms
    assert "| serf | push-pull | N=10 10/s 200 B | " in text and "| 4.00x | 15.0 | 30.0 | 0.50x |" in text
    # ours (tree) 5,000 B/write against Serf's 10,000 B/event; Serf left 5 events short of everyone
    assert "| 5,000 | 10,000 | 0.50x | 15.0 | 120.0 |" in text and "| 5.0 | 50.0 | 0 / 5 |" in text
    for n in (10, 50):                                                              # critical / normal, N=10 and 50
        assert f"| critical | N={n} 10/s 1024 B | no budget | 10.0 | 40.0 | 8.0 | 1.25 | 5.00 | 0.25 | yes |" in text
    assert "One write's CPU / cores: the agents' CPU per delivery x (N-1)" in text
    assert "**The same scenario with one CPU per agent** (bench_critical_sim.py" in text  # the simulator's rows
    assert "| N=5 100/s 1024 B | 1 | 0.3 ms / 13 us | 0.1 ms + up to 0.1 ms |" in text
    assert "5.00x idle, 5.00x during writes" in text                                # real agents, canned
    assert "**Observer**" in text                                # the same scenario through both observers
    assert "| trace | N=50 10/s 1024 B | 15.0 | 24.0 |" in text and "| 0.400 | 0.10 |" in text
    assert "| watch | N=50 10/s 1024 B | 45.0 | 72.0 |" in text and "| 0.470 | 0.10 |" in text
    assert "**Zone-aware against random peer choice**" in text and "**Vivaldi**" in text
    assert "## Repeatability" not in text and "runs met" not in text  # a run without the repeat step
    names = sorted(p.name for p in plots.iterdir())
    assert names == sorted(["latency_cdf.png", "bytes_per_write_vs_n.png", "bytes_by_type.png",
                            "fanout_retransmit.png", "critical.png", "rtt_scatter.png", "bytes_by_zone.png",
                            "t100_vs_fraction.png"])
    for name in names:
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000, (name, len(data))
        assert f"](plots/{name})" in text


def test_rendering_is_deterministic(run_dir: Path, rendered: tuple[str, Path], tmp_path: Path) -> None:
    a_text, a_plots = rendered
    b_text, b_plots = render(run_dir, tmp_path)
    assert a_text == b_text
    for p in a_plots.iterdir():
        assert p.read_bytes() == (b_plots / p.name).read_bytes(), p.name


def test_plan_reduces_large_clusters_and_runs_namespaces_only_when_asked(tmp_path: Path) -> None:
    steps = {s.name: s for s in report.plan([10, 50, 200])}
    assert "topology_real" not in steps and steps["topology"].kind == "topology"
    big = steps["n200"]
    assert big.agents == 200 and "--serf" in big.args and big.args[big.args.index("--rate") + 1] == "10"
    assert "tree,flood" in steps["load"].args and "tree,flood" in steps["sweep"].args
    observer = steps["observer"]  # N=50, 100/s through watch streams, beside the load step's own row
    assert observer.args[observer.args.index("--observer") + 1] == "watch"
    assert observer.args[observer.args.index("--n") + 1] == "50"  # the tree: its row pairs with the load step's
    assert observer.args[observer.args.index("--broadcasts") + 1] == "tree"
    repeat = steps["repeat"]  # the issue's scenario on 5 fresh clusters in a row, right after the load step
    names = list(steps)
    assert names.index("repeat") == names.index("load") + 1 and repeat.agents == 50
    assert [repeat.args[repeat.args.index(k) + 1] for k in ("--n", "--rate", "--size", "--broadcasts", "--repeat")] \
        == ["50", "100", "1024", "tree", "5"]
    assert report.step_command(repeat, tmp_path, ["--base-port", "25000"])[-4:-2] == ["--base-port", "25000"]
    critical = steps["critical"]  # critical against normal at N=10 and at the issue's N=50, one row each
    assert critical.args[critical.args.index("--n") + 1] == "10,50" and critical.agents == 50
    assert "--critical-every" in critical.args and critical.args[critical.args.index("--rate") + 1] == "100"
    small = {s.name: s for s in report.plan([10])}["critical"]
    assert small.args[small.args.index("--n") + 1] == "10" and small.agents == 10
    assert steps["critical_sim"].kind == "critical-sim"  # the same sizes with one CPU per agent, in this process
    assert steps["critical_sim"].params["sizes"] == [10, 50, 200]  # (N=200: the simulator only)
    assert {s.name: s for s in report.plan([10])}["critical_sim"].params["sizes"] == [10, 200]
    assert {s.name: s for s in report.plan([10], quick=True)}["critical_sim"].params["sizes"] == [10]
    real = {s.name: s for s in report.plan([10], topology_real=True, real_args=["--groups", "10,10,10"])}
    cmd = report.step_command(real["topology_real"], tmp_path)
    assert cmd[1].endswith("bench_topology_real.py") and cmd[-2:] == ["--json", str(tmp_path / "topology_real.json")]
    assert "--groups" in cmd


def test_execute_skips_a_large_cluster_without_memory_and_records_the_run(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "mem_available_mb", lambda: 100)
    steps = [s for s in report.plan([200], quick=True) if s.name in ("n200", "topology", "critical_sim")]
    manifest = report.execute(steps, tmp_path, ["--run"])
    recs = {s["name"]: s for s in manifest["steps"]}
    assert "skipped" in recs["n200"] and not (tmp_path / "n200.json").exists()   # nothing was started
    assert recs["topology"]["rc"] == 0 and (tmp_path / "topology.json").exists()
    assert recs["critical_sim"]["rc"] == 0 and "rows" in json.loads((tmp_path / "critical_sim.json").read_text())[
        "critical_sim"]
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["finished"] and saved["versions"]["python"] and len(saved["load_start"]) == 3


def repeat_rows(p99s: list[float | None], *, after: bool = True) -> list[dict[str, Any]]:
    """The repeat step's rows: N=50, 100 writes/s on the tree, one per fresh cluster (None: the run failed)."""
    rows = []
    for i, p99 in enumerate(p99s):
        r = load_row(50, 1024, path="tree", bytes_total=2_000_000, t100_ms=[5.0, 7.0, p99 or 0.0])
        r["scenario"].update(rate=100.0, repeat=i, repeats=len(p99s))
        if p99 is None:
            r = {"scenario": r["scenario"], "title": "t", "error": "the cluster did not converge", "repeat": i}
        else:
            r["latency"].update(t100_median_ms=7.0 + i, t100_p99_ms=p99)
            if after:
                r["latency"].update(t100_p99_after_first_s_ms=20.0 + i, first_s_t100_median_ms=140.0 + i)
            r["cpu_s_per_delivery"] = {"during_writes": {"per_delivery_ms": 0.3 + i / 100}}
            r["load_before"] = [3.0 + i, 1.0, 1.0]
        rows.append(r)
    return rows


def render_rows(tmp_path: Path, steps: dict[str, list[dict[str, Any]]]) -> str:
    """REPORT.md (no plots) from canned bench_load files, one per step, as report.py reads a run."""
    for step, rows in steps.items():
        (tmp_path / f"{step}.json").write_text(json.dumps(bench_file(rows)))
    run = report.read_run(tmp_path)
    return report.write_report(run, [], "none asked for", tmp_path / "plots", tmp_path / "REPORT.md")


def test_repeat_section_has_a_row_per_run_and_how_many_met(tmp_path: Path) -> None:
    one = load_row(50, 1024, path="tree", bytes_total=2_000_000, t100_ms=[5.0, 480.6])
    one["scenario"]["rate"] = 100.0
    text = render_rows(tmp_path, {"load": [one], "repeat": repeat_rows([255.7, 68.9, 18.4, 490.1, None])})
    assert "## Repeatability: N=50, 100 writes/s on the tree, 5 fresh clusters in a row" in text
    table = text[text.index("## Repeatability"):]
    assert "| 0 | 7.0 | 255.7 | 20.0 | 140.0 | 1.94 | 0.300 | 0.10 | 3.0 |" in table
    assert "| 3 | 10.0 | 490.1 | 23.0 | 143.0 | 1.94 | 0.330 | 0.10 | 6.0 |" in table
    assert "| 4 | ERROR: the cluster did not converge |" in table
    # 68.9 and 18.4 met; the failed run did not; median of the four p99s (68.9 + 255.7) / 2.
    assert "2 of 5 runs met t100 p99 <= 250 ms; median of the runs' p99s 162.3 ms." in table
    assert "p99 after the first second: 4 of 5 met it, median 21.5 ms." in table
    # The load step's own p99 stays, with the repeat step's figures beside it.
    assert "480.6 ms (NO); repeat step: 2 of 5 runs met; median p99 162.3 ms |" in text
    assert text.index("## Targets") < text.index("## Repeatability") < text.index("## All load scenarios")
    assert "| repeat #3 | push-pull tree | 50 | 100 | 1024 |" in text   # each run in the table of all rows


def test_repeat_section_from_rows_without_the_first_second_fields(tmp_path: Path) -> None:
    text = render_rows(tmp_path, {"repeat": repeat_rows([100.0, 300.0], after=False)})
    assert "## Repeatability: N=50, 100 writes/s on the tree, 2 fresh clusters in a row" in text
    assert "| 1 | 8.0 | 300.0 | - | - |" in text
    assert "1 of 2 runs met t100 p99 <= 250 ms; median of the runs' p99s 200.0 ms. p99 after the first second: - " \
        "(not in this run's JSON)." in text
    assert "repeat step:" not in text  # no load step row to set it beside


def test_a_run_without_the_repeat_step_renders_as_before(tmp_path: Path) -> None:
    one = load_row(50, 1024, path="tree", bytes_total=2_000_000, t100_ms=[5.0, 480.6])
    one["scenario"]["rate"] = 100.0
    for key in ("repeat", "repeats"):  # an older row's scenario: no such fields
        one["scenario"].pop(key, None)
    text = render_rows(tmp_path, {"load": [one]})
    assert "| N=50, 100/s | push-pull tree |" in text and "480.6 ms (NO) |" in text
    assert "Repeatability" not in text and "runs met" not in text
    assert "| load | push-pull tree | 50 | 100 | 1024 |" in text


def test_plan_measures_idle_beside_serf_in_two_windows_first(tmp_path: Path) -> None:
    steps = report.plan([10, 50])
    names = [s.name for s in steps]
    assert names[:2] == ["idle", "idle_settled"] and names.index("idle_settled") < names.index("load")
    idle, settled = steps[0], steps[1]
    for s in (idle, settled):
        assert s.kind == "idle" and s.agents == 50  # the memory check sees the cluster it starts
        assert [s.args[s.args.index(k) + 1] for k in ("--impls", "--scenarios", "--n", "--runs", "--idle-seconds")] \
            == ["ours,serf", "idle", "50", "1", "60"]
    assert "--settle-seconds" not in idle.args  # bench_cluster.py's default 15 s: right after the join
    assert settled.args[settled.args.index("--settle-seconds") + 1] == "300"
    assert report.plan([10])[0].args == idle.args  # N=50 whatever the load steps' sizes (the reference's N)
    # Only the --base-port pair of the bench_load.py extras reaches bench_cluster.py, in either spelling.
    cmd = report.step_command(settled, tmp_path, ["--settle", "2", "--base-port", "29500", "--seconds", "3"])
    assert cmd[1].endswith("bench_cluster.py") and cmd[2:] == [*settled.args, "--base-port", "29500", "--json",
                                                                 str(tmp_path / "idle_settled.json")]
    assert report.step_command(idle, tmp_path, ["--base-port=29500", "--serf"])[-3:] == \
        ["--base-port=29500", "--json", str(tmp_path / "idle.json")]
    quick = {s.name: s for s in report.plan([10], quick=True)}
    assert quick["idle"].args[quick["idle"].args.index("--n") + 1] == "5" and quick["idle"].agents == 5


def cluster_file(settle: float, ours: dict[str, float], serf: dict[str, float] | None) -> dict[str, Any]:
    """bench_cluster.py's JSON for `--scenarios idle` (the fields the report reads): cpu, rss, payload, wire."""
    def res(f: dict[str, float]) -> dict[str, Any]:
        return {"version": "v", "idle": {
            "load_before": [1.0, 1.0, 1.0], "seconds": 60.0, "load_after": [1.5, 1.0, 1.0], "agents": 50,
            "cpu_pct_mean": f["cpu"], "cpu_pct_max": 2 * f["cpu"], "rss_mib_mean": f["rss"], "rss_mib_max": f["rss"],
            "pss_mib_mean": f["rss"] / 2,
            "traffic": {"wire_Bps": f["wire"], "udp_wire_Bps": f["wire"], "tcp_wire_Bps": 0.0,
                        "payload_Bps": f["payload"], "udp_pps": 2.0, "tcp_pps": 0.0}}}
    results = {"ours": res(ours), **({"serf": res(serf)} if serf else {})}
    return {"meta": {"date": "2026-12-03T12:00:00+00:00", "n": 50, "args": {"settle_seconds": settle},
                     "versions": {"ours": "v"}}, "table": [], "results": results}


SERF_IDLE = {"cpu": 0.25, "rss": 15.0, "payload": 250.0, "wire": 300.0}


@pytest.fixture
def reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle tests' own reference (the first one measured): they check the arithmetic, not today's figures."""
    monkeypatch.setattr(report, "IDLE_REFERENCE", {
        "ours": {"cpu": 0.204, "rss": 39.9, "payload": 87.2, "wire": 151.8},
        "serf": {"cpu": 0.248, "rss": 15.0, "payload": 247.6, "wire": 308.6}})


def render_idle(tmp_path: Path, files: dict[str, dict[str, Any]]) -> str:
    for step, data in files.items():
        (tmp_path / f"{step}.json").write_text(json.dumps(data))
    run = report.read_run(tmp_path)
    assert not run.rows and set(run.idle) == set(files)  # not taken for bench_load.py rows
    text = report.write_report(run, [], "none asked for", tmp_path / "plots", tmp_path / "REPORT.md")
    return text[text.index("## Idle beside Serf"):text.index("## Bytes by message type")]


@pytest.mark.usefixtures("reference")
def test_idle_section_sets_each_window_against_the_reference_ratio(tmp_path: Path) -> None:
    # idle: CPU 0.90x (the limit: 0.82x + 10 %), RSS 2.70x (2.66x rounded up), payload 0.36x (over 0.35x),
    # wire 0.49x; settled: CPU 0.91x and RSS 2.71x just over, bytes well under.
    section = render_idle(tmp_path, {
        "idle_settled": cluster_file(180.0, {"cpu": 0.2275, "rss": 40.65, "payload": 75.0, "wire": 120.0}, SERF_IDLE),
        "idle": cluster_file(15.0, {"cpu": 0.225, "rss": 40.5, "payload": 90.0, "wire": 147.0}, SERF_IDLE)})
    assert section.index("| idle (N=50, settle 15 s) | ours |") < section.index("| idle_settled (N=50, settle 180 s)")
    assert "| idle (N=50, settle 15 s) | ours | 60.0 | 0.225 | 40.5 | 90.0 | 147.0 | 2.00 | 0.450 | 1.00 → 1.50 |" \
        in section
    assert "| idle (N=50, settle 15 s) | Serf | 60.0 | 0.250 | 15.0 | 250.0 | 300.0 | 2.00 | 0.500 |" in section
    assert "| idle (N=50, settle 15 s) | **ours/Serf** |  | 0.90x | 2.70x | 0.36x | 0.49x | 1.00x |" in section
    assert "| idle_settled (N=50, settle 180 s) | **ours/Serf** |  | 0.91x | 2.71x | 0.30x | 0.40x | 1.00x |" in section
    assert "| figure | 2f7e524: ours / Serf | 2f7e524 ours/Serf | target ours/Serf | idle ours/Serf | met | " \
        "idle_settled ours/Serf | met |" in section
    assert "| CPU, mean, % of a core | 0.204 / 0.248 | 0.82x | <= 0.90x (+10 %) | 0.90x | yes | 0.91x | NO |" in section
    assert "| RSS, mean, MiB | 39.9 / 15.0 | 2.66x | <= 2.70x (rounded up to 0.1) | 2.70x | yes | 2.71x | NO |" \
        in section
    assert "| payload (nft), B/s | 87.2 / 247.6 | 0.35x | <= 0.35x | 0.36x | NO | 0.30x | yes |" in section
    assert "| wire (nft), B/s | 151.8 / 308.6 | 0.49x | <= 0.49x | 0.49x | yes | 0.40x | yes |" in section
    assert "Met: `idle` 3 of 4 met (not: payload (nft)); `idle_settled` 2 of 4 met (not: CPU, RSS)." in section
    assert "not in this run" not in section


@pytest.mark.usefixtures("reference")
def test_idle_section_without_serf_shows_ours_only_and_says_so(tmp_path: Path) -> None:
    section = render_idle(tmp_path, {"idle": cluster_file(15.0, {"cpu": 0.2, "rss": 40.0, "payload": 80.0,
                                                                  "wire": 150.0}, None)})
    assert "| idle (N=50, settle 15 s) | ours | 60.0 | 0.200 | 40.0 | 80.0 | 150.0 |" in section
    assert "| Serf |" not in section and "ours/Serf** |" not in section
    assert "`idle`: Serf is not in this run (not installed, or not asked for): ours only" in section
    assert "| CPU, mean, % of a core | 0.204 / 0.248 | 0.82x | <= 0.90x (+10 %) | - | - |" in section
    assert "Met: `idle` not judged (no Serf beside)." in section
