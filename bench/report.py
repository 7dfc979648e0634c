"""bench/REPORT.md and its plots (bench/plots/), from one run of the idle, loaded and topology benchmarks.

    .venv/bin/pip install -r requirements-bench.txt      # matplotlib, once (scripts/setup --dev has it too)
    .venv/bin/python bench/report.py --run                 # the whole plan (~50 min on 2 cores), then the report
    .venv/bin/python bench/report.py                       # the report again from the latest run's JSON
    .venv/bin/python bench/report.py --list                # the plan, without running it

`--run` runs every step of the plan one after the other into a new directory bench/out/run-<UTC time>/ (raw
JSON and a text log per step, and run.json: machine, versions, each step's command, load average and wall time
before and after it; bench/out/ is not in git). The steps (`--list` prints them with their arguments):

- bench_cluster.py's idle scenario, ours and then Serf at N = 50 (root for the nftables byte counters): CPU,
  RSS, payload and wire bytes/s and packets/s per agent over 60 s, in two windows: `idle` after the default
  15 s settle (network coordinates still filling in: second-hand coordinate rows ride on acks for the first
  minute or so) and `idle_settled` after 300 s (the steady state). Each ours/Serf ratio is set against the
  one measured before the dissemination work (IDLE_REFERENCE: its target "idle no worse than today").
  Only `--base-port` of the `--bench-arg` extras reaches them.
- bench_load.py, real agents on 127.0.0.1 (root for the byte counters: nftables and AF_PACKET): 1 KiB writes at
  10 and 100/s for N = 10 and 50 in push-pull on the broadcast tree and flooding, and at N = 10 in push and pull;
  200 B writes beside Serf user events of the same size and rate; the 8-agent scenario; critical against normal
  writes under 100 writes/s (N = 10 and 50), and under a per-agent byte budget (N = 10); the fanout x
  retransmitMult sweep on both paths; and the issue's scenario (N = 50, 100 writes/s on the tree) 5 times in a
  row, each on a fresh cluster (`--repeat 5`): how often its p99 target is met, not one draw of it.
  `--n` changes N; `--n 10,50,200` adds N = 200 reduced to 10 writes/s of 200 B for 5 s (skipped, and said so,
  without the memory for 200 agents; on a shared 2-core machine 200 Python agents under writes drive the load
  past 100).
- the topology simulator, in this process (virtual time, deterministic given the seed): Vivaldi at N = 200
  (estimated vs true RTT), the near/far choice at N = 1,000, and real Node cores in 3 zones at N = 1,000, random
  against zone-aware choice at several cross-zone fractions (bytes by zone, write->all t100, crash detection).
- with `--topology-real` only: bench_topology_real.py (real agents in network namespaces, root; it uses the
  namespaces, so never beside another namespace test). `--topology-real-json FILE` includes an earlier output.

The report (default bench/REPORT.md) states the machine, versions, parameters and load average, then the
ratios measured within the run (tree/flood, ours/Serf, critical/normal, aware/random), the targets of the
dissemination and topology work, the idle figures beside Serf's, and the tables behind them; the plots (PNG,
palette-quantised to stay small) go to bench/plots/. Re-rendering the same run gives the same files. On a
shared machine absolute latencies and CPU are noisy; byte counts and ratios within one run are the robust figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PLOTS = HERE / "plots"
REPORT = HERE / "REPORT.md"

TARGETS = {"x_floor": 2.5, "membership_share": 0.10, "t100_median_ms": 60.0, "t100_p99_ms": 250.0,
           "roots_equal_s": 1.0, "eight_kBps": 30.0, "critical_ratio": 0.5, "vivaldi_error": 0.15,
           "cross_zone_cut": 4.0, "zone_t100_ratio": 1.2, "detection_ratio": 1.1, "real_rtt_error": 0.25}

#: The repeat step: fresh-cluster runs of N=50, 100 writes/s on the tree, one after the other.
REPEATS = 5
#: A 200-agent cluster needs ~45 MB per agent; with less memory available than this the step is skipped.
LARGE_N_MIN_AVAILABLE_MB = 12_000
#: Points of the estimated-vs-true RTT scatter kept per topology (the plot does not need 2,000).
SCATTER_POINTS = 400
#: PNG size: figures at this dpi, quantised to a palette of this many colours.
DPI = 80
PALETTE = 64


# == the plan ==================================================================================================
@dataclass(frozen=True)
class Step:
    """One invocation. kind: load (bench_load.py with `args`), idle (bench_cluster.py's idle scenario with
    `args`), topology (the simulator with `params`, in this process), critical-sim (bench_critical_sim.py with
    `params`, in this process), topology-real (bench_topology_real.py with `args`)."""

    name: str
    kind: str
    what: str
    args: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    agents: int = 0   # the largest cluster the step starts (for the memory check)


def load_plan(sizes: Sequence[int], *, quick: bool = False) -> list[Step]:
    """The loaded scenarios: each plot and ratio from a pair measured in the same invocation.

    Tree against flood wherever the path matters (pull always floods its answers: one pull row); Serf user
    events beside at 200 B (Serf refuses events over 512 B); the critical class under a 100 writes/s background;
    the fanout x retransmitMult sweep on both paths. N >= 100 is reduced (10 writes/s for 5 s, push-pull only):
    a 2-core machine cannot hold 200 Python agents at 100 writes/s. `quick`: seconds-long windows, to check the
    pipeline, not to measure.
    """
    small = [n for n in sizes if n < 100]
    large = [n for n in sizes if n >= 100]
    secs = "1" if quick else "10"
    both = ("--broadcasts", "tree,flood")
    steps: list[Step] = []
    if small:
        ns = ",".join(map(str, small))
        least = str(min(small))
        steps += [
            Step("load", "load", "1 KiB writes at 10 and 100/s, push-pull on the tree and flooding",
                 ("--n", ns, "--rate", "10,100", "--size", "1024", "--seconds", secs, "--modes", "push-pull",
                  *both), agents=max(small)),
            # One run of the issue's scenario says little about its tail (p99 of five runs in a row: 16-490 ms,
            # the misses all from the first second of writes on a fresh cluster): the same scenario 5 times.
            Step("repeat", "load", f"1 KiB writes at 100/s, N={max(small)}, push-pull on the tree, {REPEATS} times "
                 "in a row, each on a fresh cluster",
                 ("--n", str(max(small)), "--rate", "100", "--size", "1024", "--seconds", secs, "--modes",
                  "push-pull", "--broadcasts", "tree", "--repeat", str(REPEATS)), agents=max(small)),
            Step("modes", "load", f"the same writes in push and pull mode (N={least}; pull always floods)",
                 ("--n", least, "--rate", "10,100", "--size", "1024", "--seconds", secs, "--modes", "push,pull"),
                 agents=int(least)),
            Step("serf", "load", "200 B writes at 10/s (push-pull, tree and flood) beside Serf user events of the "
                 "same size and rate", ("--n", ns, "--rate", "10", "--size", "200", "--seconds", secs, "--modes",
                                        "push-pull", *both, "--serf"), agents=max(small)),
            Step("serf100", "load", f"the same at 100/s (N={least})",
                 ("--n", least, "--rate", "100", "--size", "200", "--seconds", secs, "--modes", "push-pull", *both,
                  "--serf"), agents=int(least)),
        ]
    # The critical class at N=10 and at the largest small N (50 by default: the issue's cluster size, where a
    # 100 writes/s background queues most), one invocation, one row each.
    crit_ns = sorted({10, max(small, default=10)})
    steps += [
        Step("eight", "load", "the 8-agent scenario: 80 writes of 200 B at 10/s, each mode, Serf beside",
             ("--no-default", "--issue-scenario", "--serf"), agents=8),
        Step("critical", "load", "every 10th write ?priority=critical under 100 writes/s of 1 KiB, at N="
             + " and N=".join(map(str, crit_ns)),
             ("--n", ",".join(map(str, crit_ns)), "--rate", "100", "--size", "1024", "--seconds", secs, "--modes",
              "push-pull", "--critical-every", "10"), agents=max(crit_ns)),
        Step("budget", "load", "the same at N=10 and 512 B, without and with a 30 kB/s per-agent byte budget",
             ("--n", "10", "--rate", "100", "--size", "512", "--seconds", secs, "--modes", "push-pull",
              "--critical-every", "10", "--budget", "30000"), agents=10),
        Step("observer", "load", f"1 KiB writes at 100/s, N={max(small, default=10)}, push-pull on the tree, seen "
             "through a watch stream per agent (`--observer watch`, the observer of earlier reports) instead of the "
             "agents' own apply stamps", ("--n", str(max(small, default=10)), "--rate", "100", "--size", "1024",
                                          "--seconds", secs, "--modes", "push-pull", "--broadcasts", "tree",
                                          "--observer", "watch"),
             agents=max(small, default=10)),
        Step("sweep", "load", "gossip.fanout x gossip.retransmitMult at N=10, 10 writes/s of 1 KiB, tree and flood",
             ("--no-default", "--sweep", "--size", "1024", "--seconds", "1" if quick else "5", *both), agents=10),
    ]
    for n in large:
        steps.append(Step(f"n{n}", "load", f"N={n}, reduced: 200 B at 10 writes/s for 5 s, push-pull on the tree "
                          "and flooding, Serf beside",
                          ("--n", str(n), "--rate", "10", "--size", "200", "--seconds", "1" if quick else "5",
                           "--modes", "push-pull", *both, "--serf", "--join-timeout", "600", "--idle-seconds", "3"),
                          agents=n))
    if quick:
        steps = [dataclasses.replace(s, args=(*s.args, "--settle", "0.5", "--idle-seconds", "0.5", "--tail", "0.5"))
                 for s in steps]
    return steps


#: The idle steps' cluster: the issue's N=50, whatever --n says (IDLE_REFERENCE was measured there).
IDLE_N = 50
#: The idle steps: name -> (settle seconds before the window, or None for bench_cluster.py's default 15 s;
#: what the window shows).
IDLE_STEPS: dict[str, tuple[int | None, str]] = {
    "idle": (None, "right after the join: network coordinates still filling in (second-hand coordinate rows ride "
                   "on acks for the first minute or so)"),
    "idle_settled": (300, "the steady state"),
}


def idle_plan(*, quick: bool = False) -> list[Step]:
    """bench_cluster.py's idle scenario, ours then Serf (each on a fresh cluster), in two windows after the join.
    `quick`: 5 agents and seconds-long windows (a pipeline check)."""
    n = 5 if quick else IDLE_N
    window = "3" if quick else "60"
    steps = []
    for name, (settle, what) in IDLE_STEPS.items():
        if quick:
            settle = 1 if settle is None else 5
        args = ("--impls", "ours,serf", "--scenarios", "idle", "--n", str(n), "--runs", "1", "--idle-seconds", window,
                *(("--settle-seconds", str(settle)) if settle is not None else ()))
        shown = "the default 15 s" if settle is None else f"{settle} s"
        steps.append(Step(name, "idle", f"idle beside Serf, N={n}, {window} s after {shown} of settling: {what}",
                          args, agents=n))
    return steps


def topology_params(*, quick: bool = False) -> dict[str, Any]:
    """Vivaldi at N=200 (the issue's target), the choice rule at N=1,000 and the protocol at N=1,000."""
    if quick:
        return {"nodes": 12, "seconds": 10, "every": 5, "mix_nodes": 30, "seeds": 2, "fractions": [0.15, 0.5],
                "protocol_nodes": 15, "protocol_fractions": [0.15], "protocol_writes": 3, "seed": 1}
    return {"nodes": 200, "seconds": 60, "every": 10, "mix_nodes": 1000, "seeds": 10,
            "fractions": [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.667], "protocol_nodes": 1000,
            "protocol_fractions": [0.05, 0.15, 0.3], "protocol_writes": 30, "seed": 1}


SIM_LARGE_N = 200
"""The largest cluster the critical scenario runs at in the simulator (a full run only)."""


def critical_sim_params(sizes: Sequence[int], *, quick: bool = False) -> dict[str, Any]:
    """The critical scenario with one CPU per agent (bench_critical_sim.py), at the critical step's sizes and,
    in a full run, at N=200 too: the issue's largest size, which 2 cores cannot run as agent processes (~30 s
    of virtual-time simulation a seed)."""
    small = [n for n in sizes if n < 100]
    large = set() if quick else {SIM_LARGE_N}
    return {"sizes": sorted({10, max(small, default=10)} | large), "seeds": [1] if quick else [1, 2, 3],
            "writes": 50 if quick else 300}


def critical_sim(params: dict[str, Any]) -> dict[str, Any]:
    """The critical-sim step: bench_critical_sim.py's scenarios, in this process (virtual time)."""
    sys.path.insert(0, str(HERE))
    import bench_critical_sim as bcs

    out = bcs.run(list(params["sizes"]), list(params["seeds"]), writes=params["writes"])
    out["critical_sim"]["params"] = params
    return out


def plan(sizes: Sequence[int], *, quick: bool = False, topology: bool = True, topology_real: bool = False,
         real_args: Sequence[str] = ()) -> list[Step]:
    steps = idle_plan(quick=quick) + load_plan(sizes, quick=quick)  # the idle steps first: cheap, on a calm machine
    steps.append(Step("critical_sim", "critical-sim", "the critical scenario with one CPU per agent: the "
                      "simulator, each member charged its own CPU per datagram handled and sent",
                      params=critical_sim_params(sizes, quick=quick)))
    if topology:
        steps.append(Step("topology", "topology", "the simulator: Vivaldi convergence and RTT scatter, near/far "
                          "choice, the protocol across 3 zones random vs aware", params=topology_params(quick=quick)))
    if topology_real:
        steps.append(Step("topology_real", "topology-real", "real agents in zone namespaces, aware vs uniform",
                          tuple(real_args)))
    return steps


def base_port_args(extra: Sequence[str]) -> list[str]:
    """The --base-port of the bench_load.py extras (`--base-port P` or `--base-port=P`): the one bench_cluster.py
    takes too (the others are bench_load.py's own)."""
    out: list[str] = []
    for i, a in enumerate(extra):
        if a == "--base-port" and i + 1 < len(extra):
            out += [a, extra[i + 1]]
        elif a.startswith("--base-port="):
            out.append(a)
    return out


def step_command(step: Step, run_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """The argv of a subprocess step; its JSON goes to run_dir/<name>.json. `extra`: the --bench-arg arguments
    (all of them for a load step, their --base-port for an idle step)."""
    out = str(run_dir / f"{step.name}.json")
    if step.kind == "load":
        return [sys.executable, str(HERE / "bench_load.py"), *step.args, *extra, "--json", out]
    if step.kind == "idle":
        return [sys.executable, str(HERE / "bench_cluster.py"), *step.args, *base_port_args(extra), "--json", out]
    if step.kind == "topology-real":
        return [sys.executable, str(HERE / "bench_topology_real.py"), *step.args, "--json", out]
    raise ValueError(f"{step.name}: not a subprocess step")


def topology_sim(params: dict[str, Any]) -> dict[str, Any]:
    """The simulator step (bench_topology.py's drivers), keeping the raw bytes by zone for the plots."""
    sys.path.insert(0, str(HERE))
    import bench_topology as bt

    from gossip_agent.sim.zones import summary, sweep

    p = params
    t0 = time.process_time()
    conv, scatter = bt.convergence(p["nodes"], p["seconds"], p["seed"], p["every"])
    t1 = time.process_time()
    mix = bt.choice(p["mix_nodes"], list(p["fractions"]), p["seeds"])
    t2 = time.process_time()
    runs = sweep(p["protocol_nodes"], list(p["protocol_fractions"]), seed=p["seed"], writes=p["protocol_writes"],
                 payload_bytes=256)
    t3 = time.process_time()
    rng = random.Random(p["seed"])
    kept = {name: [[round(1000 * a, 3), round(1000 * b, 3)]
                   for a, b in (pts if len(pts) <= SCATTER_POINTS else rng.sample(pts, SCATTER_POINTS))]
            for name, pts in sorted(scatter.items())}
    raw = []
    for r in runs:
        d = dataclasses.asdict(r)
        d["spread_t100"] = [round(x, 4) for x in d["spread_t100"]]
        d["detection"] = [round(x, 3) for x in d["detection"]]
        raw.append(d)
    return {"params": p, "convergence": conv, "scatter_ms": kept, "choice": mix,
            "protocol": {"summary": summary(runs), "runs": raw},
            "cpu_s": {"convergence": round(t1 - t0, 1), "choice": round(t2 - t1, 1), "protocol": round(t3 - t2, 1)}}


# == running it =================================================================================================
def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mem_available_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return None


def versions() -> dict[str, str]:
    """bench_load's (Python, agent, git, Serf), and the plotting and wire libraries."""
    sys.path.insert(0, str(HERE))
    import bench_load
    out = bench_load.versions()
    out.setdefault("serf", "not installed")
    for mod in ("matplotlib", "numpy", "aiohttp", "msgpack"):
        with contextlib.suppress(ImportError, AttributeError):
            out[mod] = str(__import__(mod).__version__)
    return out


def machine() -> dict[str, Any]:
    mem: int | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    model = ""
    with contextlib.suppress(OSError):
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "memory_mb": mem,
            "platform": platform.platform()}


def new_run_dir(base: Path = OUT) -> Path:
    d = base / f"run-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def latest_run_dir(base: Path = OUT) -> Path | None:
    runs = sorted(p for p in base.glob("run-*") if (p / "run.json").exists())
    return runs[-1] if runs else None


_CHILD: list[subprocess.Popen[bytes]] = []


def _on_term(signum: int, frame: Any) -> None:
    """SIGTERM: stop the running step (by its pid; the benches stop their agents and counters on SIGTERM)."""
    for p in _CHILD:
        if p.poll() is None:
            p.terminate()
    raise SystemExit(143)


def execute(steps: Sequence[Step], run_dir: Path, argv: Sequence[str], extra: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the steps one after the other (never two at once: they would share the CPU) into run_dir."""
    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        return _execute(steps, run_dir, argv, extra)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(steps: Sequence[Step], run_dir: Path, argv: Sequence[str], extra: Sequence[str]) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "argv": list(argv), "machine": machine(),
        "versions": versions(), "load_start": loadavg(), "mem_available_mb_start": mem_available_mb(), "steps": []}

    def save() -> None:
        (run_dir / "run.json").write_text(json.dumps(manifest, indent=1))

    save()
    for step in steps:
        rec: dict[str, Any] = {"name": step.name, "kind": step.kind, "what": step.what, "args": list(step.args),
                               "params": step.params, "load_before": loadavg(), "mem_available_mb": mem_available_mb(),
                               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        t0 = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] report: {step.name}: {step.what} (load {rec['load_before']})",
              file=sys.stderr, flush=True)
        if step.agents >= 100 and (rec["mem_available_mb"] or 0) < LARGE_N_MIN_AVAILABLE_MB:
            rec["skipped"] = f"{rec['mem_available_mb']} MB of memory available, {LARGE_N_MIN_AVAILABLE_MB} MB needed"
        elif step.kind == "topology":
            (run_dir / f"{step.name}.json").write_text(json.dumps(topology_sim(step.params), indent=1))
            rec["rc"] = 0
        elif step.kind == "critical-sim":
            (run_dir / f"{step.name}.json").write_text(json.dumps(critical_sim(step.params), indent=1))
            rec["rc"] = 0
        else:
            cmd = step_command(step, run_dir, extra if step.kind in ("load", "idle") else ())
            rec["command"] = ["bench/" + Path(cmd[1]).name, *cmd[2:]]
            with open(run_dir / f"{step.name}.txt", "wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
                _CHILD[:] = [proc]
                rec["rc"] = proc.wait()
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        rec["load_after"] = loadavg()
        manifest["steps"].append(rec)
        save()
    manifest["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest["load_end"] = loadavg()
    save()
    return manifest


# == reading a run ==============================================================================================
@dataclass
class Run:
    manifest: dict[str, Any]
    metas: list[dict[str, Any]]
    rows: list[dict[str, Any]]          # bench_load results, each with _step
    topology: dict[str, Any] | None
    topology_real: dict[str, Any] | None
    critical_sim: dict[str, Any] | None = None  # bench_critical_sim.py's rows (one CPU per agent)
    idle: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> bench_cluster.py's JSON (idle steps)


def read_run(run_dir: Path | None, files: Sequence[Path] = (), real_json: Path | None = None) -> Run:
    """The run's manifest and JSON (or loose bench_load JSON files, for older runs)."""
    sys.path.insert(0, str(HERE))
    import bench_load  # the byte accounting, re-applied to the raw counters (older JSON gets today's method)

    manifest: dict[str, Any] = {}
    paths = list(files)
    if run_dir is not None:
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((run_dir / "run.json").read_text())
        paths += sorted(p for p in run_dir.glob("*.json") if p.name != "run.json")
    metas: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    topo = real = csim = None
    idle: dict[str, dict[str, Any]] = {}
    for p in paths:
        data = json.loads(p.read_text())
        if "critical_sim" in data:
            csim = data["critical_sim"]
        elif "convergence" in data and "protocol" in data:
            topo = data
        elif "results" in data and "meta" not in data:
            real = data
        elif isinstance(data.get("results"), dict):  # bench_cluster.py: results by implementation
            idle[p.stem] = data
        elif "results" in data:
            metas.append(dict(data["meta"], file=p.name, step=p.stem))
            for r in data["results"]:
                r["_step"] = p.stem
                if r["scenario"]["impl"] == "ours" and "error" not in r:
                    r.update(bench_load.byte_figures(r, r["writes_acked"], r["scenario"]["n"], r["write_window_s"]))
                rows.append(r)
    if real_json is not None:
        real = json.loads(real_json.read_text())
    rows.sort(key=row_order)
    return Run(manifest, metas, rows, topo, real, csim, idle)


MODE_ORDER = {"push": 0, "pull": 1, "push-pull": 2, "-": 3}
STEP_ORDER = {"load": 0, "repeat": 0.5, "modes": 1, "serf": 2, "serf100": 3, "eight": 4, "issue8": 4, "critical": 5,
              "budget": 6, "observer": 6.5, "sweep": 7}


def row_order(r: dict[str, Any]) -> tuple[Any, ...]:
    sc = r["scenario"]
    step = r.get("_step", "")
    return (STEP_ORDER.get(step, 8 if is_large(step) else 9), step, -sc["size"], sc["n"], sc["rate"],
            sc["impl"] == "serf", MODE_ORDER.get(sc["mode"], 9), path_of(r) or "", sc["sets"], sc.get("repeat", 0))


def step_cell(r: dict[str, Any]) -> str:
    """The row's step, with its run index when the step repeated its scenarios (`--repeat`)."""
    return f"{r['_step']} #{r['scenario']['repeat']}" if r["scenario"].get("repeats", 1) > 1 else str(r["_step"])


def is_large(step: str) -> bool:
    """A step of the N >= 100 clusters (named n<N>)."""
    return re.fullmatch(r"n\d+", step) is not None


def path_of(r: dict[str, Any]) -> str | None:
    """The gossip.broadcast path a row ran with (None: the agent's default, or Serf)."""
    return next((s.split("=", 1)[1] for s in r["scenario"]["sets"] if s.startswith("gossip.broadcast=")), None)


def who(r: dict[str, Any]) -> str:
    """Serf, or our gossip mode with the broadcast path when the run set one."""
    sc = r["scenario"]
    if sc["impl"] == "serf":
        return "serf"
    path = path_of(r)
    if sc["mode"] == "pull" or path is None:
        return str(sc["mode"])
    return f"{sc['mode']} {path}"


def extra_sets(r: dict[str, Any]) -> list[str]:
    return [s for s in r["scenario"]["sets"] if not s.startswith("gossip.broadcast=")]


def ok(r: dict[str, Any]) -> bool:
    return "error" not in r


# == formatting =================================================================================================
def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def pctf(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def met(value: float | None, target: float, *, above: bool = False) -> str:
    if value is None:
        return "-"
    return "yes" if (value >= target if above else value <= target) else "NO"


def ratio(a: float | None, b: float | None, nd: int = 2) -> str:
    if a is None or not b:
        return "-"
    x = a / b
    return f"{x:.2g}x" if 0 < x < 0.1 else f"{x:.{nd}f}x"


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(" ---: " if i in right else " --- " for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def t100(r: dict[str, Any], key: str = "t100_median_ms") -> float | None:
    v = r["latency"].get(key)
    return None if v is None else float(v)


def label(r: dict[str, Any]) -> str:
    sc = r["scenario"]
    sets = extra_sets(r)
    more = f" ({', '.join(sets)})" if sets else ""
    return f"N={sc['n']} {sc['rate']:g}/s {sc['size']} B{more}"


# == sections: dissemination ====================================================================================
def pairs_tree_flood(rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(tree, flood) rows of the same step, scenario and mode."""
    by: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if ok(r) and r["scenario"]["impl"] == "ours" and path_of(r) in ("tree", "flood") and r["_step"] != "sweep":
            sc = r["scenario"]
            key = (r["_step"], sc["n"], sc["rate"], sc["size"], sc["mode"], tuple(extra_sets(r)))
            by.setdefault(key, {})[str(path_of(r))] = r
    return [(d["tree"], d["flood"]) for d in by.values() if "tree" in d and "flood" in d]


def serf_of(rows: Sequence[dict[str, Any]], r: dict[str, Any]) -> dict[str, Any] | None:
    sc = r["scenario"]
    return next((s for s in rows if ok(s) and s["scenario"]["impl"] == "serf" and s["_step"] == r["_step"]
                 and (s["scenario"]["n"], s["scenario"]["rate"], s["scenario"]["size"]) ==
                 (sc["n"], sc["rate"], sc["size"])), None)


def headline(run: Run) -> list[str]:
    """The ratios of the run, each between two arms of the same invocation."""
    rows = run.rows
    out: list[str] = []
    tf = pairs_tree_flood(rows)
    if tf:
        cells = []
        for tree, flood in tf:
            if tree.get("bytes_per_write") is None or flood.get("bytes_per_write") is None:
                continue
            cells.append([tree["_step"], who(tree).split()[0], label(tree), fmt(tree.get("x_floor"), 2),
                          fmt(flood.get("x_floor"), 2), ratio(flood["bytes_per_write"], tree["bytes_per_write"]),
                          fmt(t100(tree)), fmt(t100(flood)), ratio(t100(tree), t100(flood))])
        if cells:
            out += ["**Broadcast tree against flooding** (same invocation, one after the other): bytes per write "
                    "in floors, and how many times fewer bytes the tree sends; write->all t100 medians.", ""]
            out += md_table(["step", "mode", "scenario", "tree x floor", "flood x floor", "flood/tree bytes",
                             "tree t100 ms", "flood t100 ms", "tree/flood t100"], cells, right=range(3, 9))
            out.append("")
    serf_cells = []
    for r in rows:
        s = serf_of(rows, r) if ok(r) and r["scenario"]["impl"] == "ours" else None
        if s is None:
            continue
        serf_cells.append([r["_step"], who(r), label(r), fmt(r.get("bytes_per_write")), fmt(s.get("bytes_per_write")),
                           ratio(r.get("bytes_per_write"), s.get("bytes_per_write")), fmt(t100(r)), fmt(t100(s)),
                           ratio(t100(r), t100(s)), fmt(t100(r, "each_median_ms")), fmt(t100(s, "each_median_ms")),
                           f"{r['latency']['incomplete']} / {s['latency']['incomplete']}"])
    if serf_cells:
        out += ["**Beside Serf** (user events of the same size at the same rate, through random agents): wire bytes "
                "per write or event, write->all t100 medians (over the writes/events that reached every agent), the "
                "median delivery time to each agent, and writes/events that never reached every agent (within the "
                "bench's --deliver-timeout).", ""]
        out += md_table(["step", "ours", "scenario", "ours B/write", "serf B/event", "ours/serf bytes",
                         "ours t100 ms", "serf t100 ms", "ours/serf t100", "ours each ms", "serf each ms",
                         "never all: ours / serf"], serf_cells, right=range(3, 11))
        out.append("")
    crit = [r for r in rows if ok(r) and r.get("latency_by_class")]
    if crit:
        cells = []
        for r in crit:
            c = r["latency_by_class"]
            budget = f"budget {r['scenario']['budget']} B/s" if r["scenario"].get("budget") else "no budget"
            cells.append([r["_step"], label(r).split(" (")[0], budget, fmt(c["critical"]["t100_median_ms"]),
                          fmt(c["normal"]["t100_median_ms"]), fmt(c.get("cpu_spread_per_write_ms")),
                          fmt(c["critical"].get("t100_over_cpu_spread"), 2),
                          fmt(c["normal"].get("t100_over_cpu_spread"), 2),
                          fmt(c.get("critical_over_normal_median"), 2),
                          met(c.get("critical_over_normal_median"), TARGETS["critical_ratio"])])
        out += ["**Critical against normal writes** (every 10th write `?priority=critical`; target <= 0.5x):", ""]
        out += md_table(["step", "scenario", "budget", "critical t100 median ms", "normal t100 median ms",
                         "one write's CPU / cores ms", "critical in it", "normal in it", "critical/normal", "met"],
                        cells, right=range(3, 9))
        if any(r["latency_by_class"].get("cpu_spread_per_write_ms") is not None for r in crit):
            out += ["", "One write's CPU / cores: the agents' CPU per delivery x (N-1) / the cores they share "
                    "(bench_load `cpu_spread_per_write_ms`; all of the agents' CPU, membership, digests and HTTP "
                    "included, so a write's own share is somewhat less), the time one write's deliveries fill "
                    "every core. With more agents than cores each delivery waits for a core, so t100 cannot go "
                    "far below it by any route; a critical write costs every member one apply as a normal one "
                    "does. Where both classes sit near 1 in that unit, normal writes wait for nothing a priority "
                    "could skip; where normal writes sit far above it (queued behind a byte budget, or a saturated "
                    "machine), the critical class shows its lead.", ""]
        else:
            out.append("")
    out += critical_sim_table(run)
    out += observer_headline(rows)
    out += topology_headline(run)
    return out


def critical_sim_table(run: Run) -> list[str]:
    """The critical scenario where each agent has a CPU of its own (bench_critical_sim.py, the simulator)."""
    sim = run.critical_sim
    if not sim or not sim.get("rows"):
        return []
    cells = []
    for r in sim["rows"]:
        p = r["params"]
        cells.append([f"N={p['n']} {p['rate']:g}/s {p['size']} B", str(p["seed"]),
                      f"{1000 * p['cpu_per_packet']:g} ms / {1e6 * p['cpu_per_send']:g} us",
                      f"{1000 * p['latency']:g} ms + up to {1000 * p['jitter']:g} ms",
                      fmt(r["critical"]["t100_median_ms"], 2), fmt(r["normal"]["t100_median_ms"], 2),
                      fmt(r["critical"]["t100_p99_ms"], 2), fmt(r["normal"]["t100_p99_ms"], 2),
                      fmt(r["critical_over_normal_median"], 2), str(r["never_all"]),
                      met(r["critical_over_normal_median"], TARGETS["critical_ratio"])])
    return ["**The same scenario with one CPU per agent** (bench_critical_sim.py: the product's cores in the "
            "simulator, virtual time; every member charged its own CPU per datagram handled and per datagram sent, "
            "one after another, as a pod with a core of its own would be; 1 write in "
            f"{sim['rows'][0]['params']['critical_every']} critical): what the "
            "2-core loopback run above cannot show.", "",
            *md_table(["scenario", "seed", "CPU handled / sent", "link", "critical t100 median ms",
                       "normal t100 median ms", "critical p99 ms", "normal p99 ms", "critical/normal",
                       "never all", "met"], cells, right=range(4, 10)), ""]


def observer_of(r: dict[str, Any]) -> str:
    """How the row's deliveries were seen: the agents' apply stamps (trace) or watch streams (watch; rows from
    before the trace say nothing and were watched)."""
    return str((r.get("apparatus") or {}).get("observer", "watch"))


def observer_headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The same scenario seen by both observers (the `observer` step against its `load` row): what the watch
    streams cost the agents and add to the stamps."""
    cells = []
    for w in rows:
        if not (ok(w) and w["_step"] == "observer"):
            continue
        sc = w["scenario"]
        t = next((r for r in rows if ok(r) and r["_step"] == "load" and path_of(r) == path_of(w)
                  and (r["scenario"]["n"], r["scenario"]["rate"], r["scenario"]["size"], r["scenario"]["mode"])
                  == (sc["n"], sc["rate"], sc["size"], sc["mode"])), None)
        for r in (t, w):
            if r is None:
                continue
            cpu = (r.get("cpu_s_per_delivery") or {}).get("during_writes") or {}
            cells.append([observer_of(r), label(r), fmt(t100(r)), fmt(t100(r, "t100_p99_ms")), fmt(r.get("x_floor"), 2),
                          fmt(cpu.get("per_delivery_ms"), 3), fmt(r.get("roots_equal_after_last_write_s"), 2)])
    if not cells:
        return []
    return ["**Observer** (the same scenario seen through the agents' own apply stamps, this report's observer, "
            "and through a watch stream per agent, the observer of earlier reports: the streams are load of their "
            "own, a watch line per delivery):", "",
            *md_table(["observer", "scenario", "t100 median ms", "t100 p99 ms", "x floor", "CPU ms/delivery",
                       "roots equal s"], cells, right=range(2, 7)), ""]


def targets_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cells = []
    groups = repeat_groups(rows)
    for r in rows:
        sc = r["scenario"]
        if not ok(r) or sc["impl"] != "ours" or r["_step"] not in ("load", "modes") or sc["size"] != 1024:
            continue
        roots = r.get("roots_equal_after_last_write_s")
        p99 = f"{fmt(t100(r, 't100_p99_ms'))} ms ({met(t100(r, 't100_p99_ms'), TARGETS['t100_p99_ms'])})"
        for (step, *scenario), runs in groups.items():  # the same scenario on fresh clusters, in another step
            if step != r["_step"] and tuple(scenario) == scenario_key(r):
                s = repeat_summary(runs)
                p99 += (f"; {step} step: {s['met']} of {s['runs']} runs met; median p99 "
                        f"{fmt(s['p99_median_ms'])} ms")
        cells.append([f"N={sc['n']}, {sc['rate']:g}/s", who(r),
                      f"{fmt(r.get('x_floor'), 2)} ({met(r.get('x_floor'), TARGETS['x_floor'])})",
                      f"{pctf(r.get('membership_share'))} "
                      f"({met(r.get('membership_share'), TARGETS['membership_share'])})",
                      f"{fmt(t100(r))} ms ({met(t100(r), TARGETS['t100_median_ms'])})", p99,
                      f"{fmt(roots, 2)} s ({met(roots, TARGETS['roots_equal_s'])})"])
    out = md_table(["scenario", "mode", "x floor (<= 2.5)", "membership+conv. (<= 10 %)", "t100 median (<= 60 ms)",
                    "t100 p99 (<= 250 ms)", "roots equal (<= 1 s)"], cells) if cells else []
    issue = [r for r in rows if r["scenario"]["label"] == "issue8" and ok(r)]  # bench_load's 8-agent label
    if issue:
        out += ["", "8-agent scenario (80 writes of 200 B at 10/s), IP-level agent-to-agent traffic while writing "
                "(target <= 30 kB/s):", ""]
        out += md_table(["impl/mode", "kB/s", "x floor", "t100 median ms", "met"],
                        [[who(r), fmt(r.get("kBps_during_writes")), fmt(r.get("x_floor"), 2), fmt(t100(r)),
                          met(r.get("kBps_during_writes"), TARGETS["eight_kBps"]) if who(r) != "serf" else "-"]
                         for r in issue], right=(1, 2, 3))
    return out


def scenario_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rows the same scenario, whichever run of it they are."""
    sc = r["scenario"]
    return (sc["impl"], sc["n"], sc["rate"], sc["size"], sc["mode"], tuple(sc["sets"]), sc.get("src", ""))


def repeat_groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """(step, *scenario_key) -> the rows of a scenario its step ran several times (`--repeat`; failed runs
    included), in run order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r["scenario"].get("repeats", 1) > 1:
            out.setdefault((r["_step"], *scenario_key(r)), []).append(r)
    for runs in out.values():
        runs.sort(key=lambda r: r["scenario"]["repeat"])
    return out


def repeat_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many runs met the p99 target (a failed run did not), and the median of the runs' p99s; the same for
    the p99 after the first second (None where the JSON predates it)."""
    def of(key: str) -> list[float]:
        return [float(v) for r in runs if ok(r) and (v := r["latency"].get(key)) is not None]

    whole, later = of("t100_p99_ms"), of("t100_p99_after_first_s_ms")
    return {"runs": len(runs), "met": sum(x <= TARGETS["t100_p99_ms"] for x in whole),
            "p99_median_ms": statistics.median(whole) if whole else None,
            "met_after_first_s": sum(x <= TARGETS["t100_p99_ms"] for x in later),
            "after_first_s_median_ms": statistics.median(later) if later else None}


def repeat_sections(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One section per repeated scenario: each fresh-cluster run's figures, then how many met the p99 target."""
    out: list[str] = []
    for (step, *_), runs in repeat_groups(rows).items():
        sc = runs[0]["scenario"]
        path = path_of(runs[0])
        where = "on the tree" if path == "tree" and sc["mode"] == "push-pull" else f"({who(runs[0])})"
        more = f", {sc['size']} B" if sc["size"] != 1024 else ""
        sets = extra_sets(runs[0])
        more += f" ({', '.join(sets)})" if sets else ""
        cells = []
        for r in runs:
            if not ok(r):
                cells.append([r["scenario"]["repeat"], f"ERROR: {r['error'][:100]}", *[""] * 7])
                continue
            lat = r["latency"]
            cpu = (r.get("cpu_s_per_delivery") or {}).get("during_writes") or {}
            cells.append([r["scenario"]["repeat"], fmt(lat.get("t100_median_ms")), fmt(lat.get("t100_p99_ms")),
                          fmt(lat.get("t100_p99_after_first_s_ms")), fmt(lat.get("first_s_t100_median_ms")),
                          fmt(r.get("x_floor"), 2), fmt(cpu.get("per_delivery_ms"), 3),
                          fmt(r.get("roots_equal_after_last_write_s"), 2), fmt(r["load_before"][0])])
        s = repeat_summary(runs)
        target = fmt(TARGETS["t100_p99_ms"], 0)
        after = (f"{s['met_after_first_s']} of {s['runs']} met it, median {fmt(s['after_first_s_median_ms'])} ms"
                 if s["after_first_s_median_ms"] is not None else "- (not in this run's JSON)")
        out += [f"## Repeatability: N={sc['n']}, {sc['rate']:g} writes/s {where}{more}, {sc['repeats']} fresh "
                "clusters in a row", "",
                f"Step `{step}`: the same scenario run after run, each on a cluster started for it. Write->all "
                "t100 in ms; \"after 1st s\": the writes sent at least 1 s after the first write (the first writes "
                "meet a cluster that has only just joined); \"1st s median\": the writes before that; CPU per "
                "delivery while writing; 1-minute load when the writes started.", "",
                *md_table(["run", "t100 median ms", "t100 p99 ms", "p99 after 1st s ms", "1st s median ms",
                           "x floor", "CPU ms/delivery", "roots equal s", "1-min load at start"], cells,
                          right=range(0, 9)), "",
                f"{s['met']} of {s['runs']} runs met t100 p99 <= {target} ms; median of the runs' p99s "
                f"{fmt(s['p99_median_ms'])} ms. p99 after the first second: {after}.", ""]
    return out


def main_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    head = ["step", "impl/mode", "N", "writes/s", "value B", "sets", "acked", "B/write", "x floor", "kB/s (writes)",
            "membership+conv.", "t100 median ms", "t100 p99 ms", "never all", "roots equal s", "CPU %/agent",
            "live agents declared dead / suspected", "idle B/s/agent", "load before→after"]
    cells = []
    for r in rows:
        sc = r["scenario"]
        sets = ", ".join(extra_sets(r)) or "-"
        if not ok(r):
            cells.append([step_cell(r), who(r), sc["n"], f"{sc['rate']:g}", sc["size"], sets,
                          f"ERROR: {r['error'][:100]}", *[""] * (len(head) - 7)])
            continue
        m = r.get("membership_under_load")
        cells.append([step_cell(r), who(r), sc["n"], f"{sc['rate']:g}", sc["size"], sets, r["writes_acked"],
                      fmt(r.get("bytes_per_write")), fmt(r.get("x_floor"), 2), fmt(r.get("kBps_during_writes")),
                      pctf(r.get("membership_share")), fmt(t100(r)), fmt(t100(r, "t100_p99_ms")),
                      r["latency"]["incomplete"], fmt(r.get("roots_equal_after_last_write_s"), 2),
                      fmt((r.get("cpu_pct_per_agent") or {}).get("mean")),
                      "-" if not m else f"{m['false_positives']} / {m['suspected_members']}",
                      fmt((r.get("idle") or {}).get("Bps_per_agent")),
                      f"{'/'.join(fmt(x) for x in r['load_before'])} → {'/'.join(fmt(x) for x in r['load_after'])}"])
    return md_table(head, cells, right=(2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 15, 17))


def types_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    typed = [r for r in rows if ok(r) and r.get("bytes_by_type")]
    kinds = type_order(typed)
    if not kinds:
        return ["(no byte figures: nftables and AF_PACKET need root)"]
    cells = []
    for r in typed:
        w = max(1, r["writes_acked"])
        cells.append([step_cell(r), label(r), who(r),
                      *[fmt(round(r["bytes_by_type"][k] / w)) if r["bytes_by_type"].get(k) else "" for k in kinds],
                      pctf(r.get("capture_kept"))])
    return ["Bytes per write by message type, IP level. UDP: the agents' exact message counts by type x each type's "
            "mean wire size in the decoded capture (headers shared by size), scaled to the nftables UDP total. TCP: "
            "push-pull and anti-entropy by the agents' own byte counters, scaled to the nftables TCP total. "
            "The capture is a random sample the kernel takes (1 in K datagrams, K for ~500 kept a second: the "
            "whole traffic in small runs). \"capture kept\": the share of that sample the Python capture decoded "
            "(the kernel drops the rest while it is busy; the mean sizes come from those it kept).", "",
            *md_table(["step", "scenario", "impl/mode", *kinds, "capture kept"], cells,
                      right=range(3, 4 + len(kinds)))]


#: Data first, then membership and convergence, then whatever else a run counted (Serf's totals).
TYPE_ORDER = ("state", "pull", "ihave", "graft", "prune", "tcp:antientropy", "alive", "suspect", "dead", "digest",
              "coordinate", "ping", "ack", "nack", "ping_req", "tcp:pushpull")


def type_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen = {k for r in rows for k in r["bytes_by_type"]}
    return [k for k in TYPE_ORDER if k in seen] + sorted(seen - set(TYPE_ORDER))


def sweep_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    sw = [r for r in rows if ok(r) and r["_step"] == "sweep"]
    if not sw:
        return []
    cells = []
    for r in sw:
        sets = dict(s.split("=", 1) for s in r["scenario"]["sets"])
        cells.append([path_of(r) or "-", sets.get("gossip.fanout", "-"), sets.get("gossip.retransmitMult", "-"),
                      fmt(r.get("x_floor"), 2), fmt(t100(r)), fmt(t100(r, "t100_p99_ms")), r["latency"]["incomplete"],
                      pctf(r.get("membership_share"))])
    return md_table(["path", "fanout", "retransmitMult", "x floor", "t100 median ms", "t100 p99 ms", "never all",
                     "membership+conv."], cells, right=range(1, 7))


def budget_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    b = [r for r in rows if ok(r) and r["_step"] == "budget"]
    cells = []
    for r in b:
        c = r.get("agent_counters") or {}
        writing = r.get("out_Bps_per_agent_during_writes") or {}
        whole = r.get("out_Bps_per_agent") or {}
        cells.append([label(r).split(" (")[0], fmt(r["scenario"].get("budget") or None),
                      f"{fmt(writing.get('mean'))} / {fmt(writing.get('max'))}",
                      f"{fmt(whole.get('mean'))} / {fmt(whole.get('max'))}",
                      json.dumps(c.get("budget_deferred_by_class") or {}, sort_keys=True),
                      json.dumps(c.get("budget_dropped_by_class") or {}, sort_keys=True)])
    if not cells:
        return []
    return md_table(["scenario", "budget B/s", "out B/s per agent while writing (mean / max)",
                     "over the window (mean / max)", "deferred by class", "dropped by class"], cells)


def counters_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cells = []
    for r in rows:
        c = r.get("agent_counters")
        if not ok(r) or not c:
            continue
        w = max(1, r["writes_acked"])
        msg = ", ".join(f"{k} {v / w:.1f}" for k, v in sorted(c["messages_out_by_type"].items(), key=lambda kv: -kv[1]))
        drops = ", ".join(f"{k} {v:.0f}" for k, v in sorted(c["dropped"].items())) or "0"
        cells.append([step_cell(r), label(r), who(r), msg, drops])
    if not cells:
        return []
    return ["`gossip_messages_total{direction=\"out\"}` by type, summed over the agents, per write; drops by reason.",
            "", *md_table(["step", "scenario", "impl/mode", "messages per write by type", "drops"], cells)]


# == sections: idle ==========================================================================================
#: Issue #11's "idle figures no worse than today's": per-agent figures measured before the dissemination work,
#: 2026-12-03 on the 2-vCPU AMD EPYC VM, commit 2f7e524 (the tree before #11's work), `bench_cluster.py --impls
#: ours,serf --scenarios idle --n 50 --idle-seconds 60`, default settle (15 s); Serf in the same invocation.
#: Measured again (15:31 UTC) once bench_cluster.py ran our agents as the image does (bytecode compiled before
#: they start, PYTHONNODEBUGRANGES=1: `AGENT_ENV`): 2f7e524's RSS 39.9 -> 39.3 MiB that way; the other figures
#: as before (CPU 0.204, payload 87.2, wire 151.8 B/s; Serf 0.248, 15.0, 247.6, 308.6). Measured again
#: (18:09 UTC) once the image, and so `AGENT_ENV`, ran agents optimized (-OO, bytecode compiled so): 2f7e524's
#: RSS 39.3 -> 37.9 MiB; the other ratios as before (0.77x CPU, 0.35x payload, 0.49x wire).
IDLE_REFERENCE: dict[str, dict[str, float]] = {
    "ours": {"cpu": 0.233, "rss": 37.9, "payload": 87.3, "wire": 152.0},
    "serf": {"cpu": 0.301, "rss": 15.0, "payload": 249.2, "wire": 310.6},
}
IDLE_REFERENCE_COMMIT = "2f7e524"

#: The idle figures: key -> (label, unit, path in bench_cluster.py's idle result, decimals).
IDLE_FIGURES: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "cpu": ("CPU, mean", "% of a core", ("cpu_pct_mean",), 3),
    "rss": ("RSS, mean", "MiB", ("rss_mib_mean",), 1),
    "payload": ("payload (nft)", "B/s", ("traffic", "payload_Bps"), 1),
    "wire": ("wire (nft)", "B/s", ("traffic", "wire_Bps"), 1),
    "pps": ("UDP packets", "/s", ("traffic", "udp_pps"), 2),
}
#: How far this run's ours/Serf ratio may sit above the reference's (ratios compared as shown, to 2 decimals).
#: CPU: +10 % (idle CPU readings drift ~10 % between runs of the same tree); RSS: the reference ratio rounded
#: up to one decimal (2.53 -> 2.60: a MiB of interpreter noise); bytes: no slack.
#: key -> (the limit from the reference ratio, how the table says it).
IDLE_SLACK: dict[str, tuple[Callable[[float], float], str]] = {
    "cpu": (lambda ref: ref * 1.10, " (+10 %)"),
    "rss": (lambda ref: math.ceil(round(ref * 10, 6)) / 10, " (rounded up to 0.1)"),
    "payload": (lambda ref: ref, ""),
    "wire": (lambda ref: ref, ""),
}


def idle_reference_ratio(key: str) -> float:
    return IDLE_REFERENCE["ours"][key] / IDLE_REFERENCE["serf"][key]


def idle_limit(key: str) -> float:
    """The highest ours/Serf ratio that meets the target (2 decimals)."""
    return round(IDLE_SLACK[key][0](round(idle_reference_ratio(key), 2)), 2)


def idle_value(res: dict[str, Any] | None, key: str) -> float | None:
    v: Any = (res or {}).get("idle")
    for k in IDLE_FIGURES[key][2]:
        v = v.get(k) if isinstance(v, dict) else None
    return float(v) if isinstance(v, int | float) else None


def idle_met(ours: float | None, serf: float | None, key: str) -> str:
    if ours is None or not serf:
        return "-"
    return "yes" if round(ours / serf, 2) <= idle_limit(key) else "NO"


def idle_windows(idle: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The idle steps in plan order (others after them, by name)."""
    order = list(IDLE_STEPS)
    return sorted(idle.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def idle_section(idle: dict[str, dict[str, Any]]) -> list[str]:
    """Each idle window, ours beside Serf, then one target row per figure: the window's ours/Serf ratio against
    the reference's (issue #11's "today")."""
    windows = idle_windows(idle)
    cells, notes = [], []
    for step, data in windows:
        meta, res = data.get("meta") or {}, data.get("results") or {}
        settle = (meta.get("args") or {}).get("settle_seconds")
        where = f"{step} (N={meta.get('n', '?')}, settle {fmt(settle, 0)} s)"
        ours, serf = res.get("ours"), res.get("serf")
        for impl, r in (("ours", ours), ("Serf", serf)):
            if r is None:
                continue
            i = r.get("idle")
            if not i:
                cells.append([where, impl, "no idle figures (the cluster did not start or converge: see "
                              f"{step}.txt)", *[""] * 7])
                continue
            load = f"{fmt(i['load_before'][0], 2)} → {fmt(i['load_after'][0], 2)}" if "load_after" in i else "-"
            cells.append([where, impl, fmt(i.get("seconds")),
                          *[fmt(idle_value(r, k), IDLE_FIGURES[k][3]) for k in IDLE_FIGURES],
                          fmt(i.get("cpu_pct_max"), 3), load])
        if meta.get("n") != IDLE_N:
            notes.append(f"`{step}`: N={meta.get('n', '?')}, the reference's N={IDLE_N}: its verdicts "
                         "below compare unlike clusters (a pipeline check, not a measurement).")
        if serf is None:
            notes.append(f"`{step}`: Serf is not in this run (not installed, or not asked for): ours only, no "
                         "ratio and no target verdict.")
        else:
            cells.append([where, "**ours/Serf**", "",
                          *[ratio(idle_value(ours, k), idle_value(serf, k)) for k in IDLE_FIGURES], "", ""])
    ref_o, ref_s = IDLE_REFERENCE["ours"], IDLE_REFERENCE["serf"]
    targets: list[list[str]] = []
    verdicts: dict[str, list[tuple[str, str]]] = {step: [] for step, _ in windows}
    for k in IDLE_SLACK:
        label, unit, _, nd = IDLE_FIGURES[k]
        row = [f"{label}, {unit}", f"{fmt(ref_o[k], nd)} / {fmt(ref_s[k], nd)}", f"{idle_reference_ratio(k):.2f}x",
               f"<= {idle_limit(k):.2f}x{IDLE_SLACK[k][1]}"]
        for step, data in windows:
            res = data.get("results") or {}
            o, s = idle_value(res.get("ours"), k), idle_value(res.get("serf"), k)
            met = idle_met(o, s, k)
            row += [ratio(o, s), met]
            verdicts[step].append((label.split(",")[0], met))
        targets.append(row)
    summary = []
    for step, vs in verdicts.items():
        judged = [(lab, v) for lab, v in vs if v != "-"]
        missed = [lab for lab, v in judged if v == "NO"]
        summary.append(f"`{step}` " + (f"{len(judged) - len(missed)} of {len(judged)} met"
                                       + (f" (not: {', '.join(missed)})" if missed else "") if judged
                                       else "not judged (no Serf beside)"))
    return ["The dissemination work's target: idle figures no worse than before it, beside Serf. bench_cluster.py's "
            "idle scenario: N agents on 127.0.0.1 with memberlist's LAN timings, ours and then Serf (never at once, "
            "each on a cluster started for it), measured after a settle time: CPU per agent (% of one core, "
            "/proc), RSS, traffic per agent from nftables counters on the agents' ports (wire: IP bytes; payload: "
            "less 28 B per UDP packet and 52 B per TCP segment). Two windows in a full run: "
            + "; ".join(f"`{name}` after {settle or 15} s of settling, {what}"
                        for name, (settle, what) in IDLE_STEPS.items()) + ".", "",
            *md_table(["window", "impl", "s", *[f"{lab}, {unit}" for lab, unit, _, _ in IDLE_FIGURES.values()],
                       "CPU max, % of a core", "1-min load"], cells, right=range(2, 9)), "",
            *[f"{n}" for n in notes], *([""] if notes else []),
            f"Targets: this run's ours/Serf against the same ratio measured before the dissemination work (commit "
            f"{IDLE_REFERENCE_COMMIT}, 2026-12-03, the 2-vCPU AMD EPYC VM, N={IDLE_N}, 60 s after the default 15 s "
            "settle, its agents run as the image runs them: optimized (-OO) bytecode, no debug ranges; Serf in the "
            "same invocation). Ratios, not absolute figures: the machine's load moves both "
            "implementations alike. CPU gets 10 % of slack (idle CPU readings drift that much between runs of one "
            "tree).", "",
            *md_table(["figure", f"{IDLE_REFERENCE_COMMIT}: ours / Serf", f"{IDLE_REFERENCE_COMMIT} ours/Serf",
                       "target ours/Serf",
                       *[c for step, _ in windows for c in (f"{step} ours/Serf", "met")]],
                      targets, right=[1, 2, 3, *range(4, 4 + 2 * len(windows), 2)]), "",
            "Met: " + "; ".join(summary) + "."]


# == sections: topology =========================================================================================
def topology_headline(run: Run) -> list[str]:
    out: list[str] = []
    topo = run.topology
    if topo:
        p = topo["params"]
        summ = topo["protocol"]["summary"]
        cells = [[r["mode"], fmt(r["fraction"], 3), fmt(r["write_cross_bytes_reduction"], 2),
                  met(r["write_cross_bytes_reduction"], TARGETS["cross_zone_cut"], above=True),
                  fmt(r["idle_cross_bytes_reduction"], 2), fmt(r["t100_vs_random"], 2),
                  met(r["t100_vs_random"], TARGETS["zone_t100_ratio"]), fmt(r["detection_vs_random"], 3),
                  met(r["detection_vs_random"], TARGETS["detection_ratio"]), r["false_positives"],
                  r["unfinished_writes"]] for r in summ if r["mode"] == "aware"]
        if cells:
            out += [f"**Zone-aware against random peer choice** (simulator, N={p['protocol_nodes']} real Node cores "
                    "in 3 zones, 1 ms inside, 20/35/50 ms between; same seed): how many times fewer cross-zone "
                    "bytes (target >= 4x), write->all t100 (<= 1.2x) and crash detection (<= 1.1x) against random "
                    "choice.", ""]
            out += md_table(["mode", "crossZoneFraction", "cross-zone bytes cut, writes", ">= 4x",
                             "cut, idle", "t100 / random", "<= 1.2x", "detection / random", "<= 1.1x",
                             "false positives", "writes never all"], cells, right=range(1, 11))
            out.append("")
        final = final_convergence(topo)
        if final:
            out += [f"**Vivaldi** (simulator, N={p['nodes']}): median relative RTT error after {p['seconds']} "
                    "virtual seconds (target <= 15 %): " + "; ".join(
                        f"{k} {pctf(v)} ({met(v, TARGETS['vivaldi_error'])})" for k, v in final.items()) + ".", ""]
    real = run.topology_real
    if real:
        comp = real.get("comparison") or {}
        res = {r["mode"]: r for r in real.get("results", [])}
        errs = {m: ((r.get("rtt") or {}).get("summary") or {}).get("median_rel_error_cross") for m, r in res.items()}
        out += [f"**Real agents in namespaces** ({real.get('when', '?')}; groups {real.get('args', {}).get('groups')}; "
                f"load before {real.get('load_before')}): cross-zone bytes cut aware/uniform "
                f"{fmt(comp.get('idle_cross_bytes_cut'), 2)}x idle, {fmt(comp.get('write_cross_bytes_cut'), 2)}x "
                f"during writes (target >= 4x); t100 median aware/uniform {fmt(comp.get('t100_median_ratio'), 2)}x; "
                "estimated vs measured cross-zone RTT, median relative error: "
                + ", ".join(f"{m} {pctf(e)}" for m, e in sorted(errs.items())) + " (target <= 25 %)"
                + (f"; crash detection (every survivor saw a killed agent dead), median over the "
                   f"{(res['aware'].get('detection') or {}).get('kills')} victims aware/uniform "
                   f"{fmt(comp['detection_median_ratio'], 3)}x (target <= 1.1x), p90 "
                   f"{fmt(comp.get('detection_p90_ratio'), 3)}x"
                   if comp.get("detection_median_ratio") is not None and "aware" in res else "") + ".", ""]
    return out


def final_convergence(topo: dict[str, Any]) -> dict[str, float]:
    last: dict[str, tuple[float, float]] = {}
    for r in topo["convergence"]:
        if r["variant"] != "default":
            continue
        t = float(r["virtual_s"])
        if r["topology"] not in last or t >= last[r["topology"]][0]:
            last[r["topology"]] = (t, float(r["median_rel_error"]))
    return {k: v[1] for k, v in sorted(last.items())}


def topology_sections(run: Run) -> list[str]:
    out: list[str] = []
    topo = run.topology
    if topo:
        p = topo["params"]
        out += ["### Simulator", "",
                f"Parameters: {json.dumps(p, sort_keys=True)}; CPU seconds {json.dumps(topo.get('cpu_s'))}.", "",
                f"Vivaldi convergence, N={p['nodes']} (median and p90 relative error over all pairs; "
                "`vs probe`: estimate just before each probe against that probe's measured RTT):", ""]
        conv = [r for r in topo["convergence"]]
        out += md_table(["topology", "variant", "virtual s", "median error", "p90 error", "vs probe", "intra-zone"],
                        [[r["topology"], r["variant"], r["virtual_s"], pctf(r["median_rel_error"]),
                          pctf(r["p90_rel_error"]), pctf(r["median_vs_probe"]), pctf(r["intra_zone_median"])]
                         for r in conv if r["virtual_s"] in (p["every"], p["seconds"] // 2, p["seconds"])],
                        right=range(2, 7))
        out += ["", f"The choice rule alone, N={p['mix_nodes']} in 3 equal zones, 3 peers per round, "
                f"{p['seeds']} push epidemics per row:", ""]
        out += md_table(["crossZoneFraction", "cross-zone share of picks", "cut vs uniform", "rounds to all zones",
                         "rounds to all", "rounds / uniform", "unfinished"],
                        [[r["cross_zone_fraction"], pctf(r["cross_zone_share"]), fmt(r["reduction_vs_uniform"], 2),
                          fmt(r["rounds_to_all_zones"], 2), fmt(r["rounds_to_all"], 2),
                          fmt(r["rounds_vs_uniform"], 3), r["unfinished_runs"]] for r in topo["choice"]],
                        right=range(1, 7))
        out += ["", f"The protocol, N={p['protocol_nodes']} Node cores, {p['protocol_writes']} writes of 256 B at "
                "2/s, then 10 s idle, then 3 crashes (bytes as the codec sizes them, split by zone):", ""]
        out += md_table(["mode", "fraction", "write bytes same zone", "write bytes cross zone", "idle same",
                         "idle cross", "t100 median s", "t100 max s", "detection median s", "false positives",
                         "RTT error median"],
                        [[r["mode"], fmt(r["fraction"], 3), fmt(r["write_bytes_same"]), fmt(r["write_bytes_cross"]),
                          fmt(r["idle_bytes_same"]), fmt(r["idle_bytes_cross"]),
                          fmt(statistics.median(r["spread_t100"]), 4) if r["spread_t100"] else "-",
                          fmt(max(r["spread_t100"]), 4) if r["spread_t100"] else "-",
                          fmt(statistics.median(r["detection"]), 2) if r["detection"] else "-",
                          r["false_positives"], pctf(r["rtt_error_median"])] for r in topo["protocol"]["runs"]],
                        right=range(1, 11))
    real = run.topology_real
    if real:
        out += ["", "### Real agents in network namespaces (bench_topology_real.py)", "",
                f"{real.get('when', '?')}, arguments {json.dumps(real.get('args', {}), sort_keys=True)[:400]}, "
                f"load before {real.get('load_before')}.", ""]
        cells = []
        for r in real.get("results", []):
            rtt = (r.get("rtt") or {}).get("summary") or {}
            idle = (r.get("idle_bytes") or {}).get("summary") or {}
            wb = (r.get("write_bytes") or {}).get("summary") or {}
            w = r.get("writes") or {}
            fp = r.get("false_positives") or {}
            det = r.get("detection") or {}
            cells.append([r.get("mode"), r.get("n"), fmt(r.get("join_s")), pctf(rtt.get("median_rel_error_cross")),
                          fmt(idle.get("cross_bytes")), fmt(idle.get("same_bytes")), pctf(idle.get("cross_share")),
                          fmt(wb.get("cross_bytes")), fmt(wb.get("same_bytes")),
                          fmt((w.get("t100") or {}).get("median_ms")), f"{w.get('complete')}/{w.get('writes')}",
                          len(fp.get("non_alive_views") or []) + int(fp.get("dead_log_lines") or 0)
                          + len(det.get("false_positives") or []),
                          f"{fmt(det.get('all_dead_median_s'), 2)} / {fmt(det.get('all_dead_p90_s'), 2)} "
                          f"({det.get('kills')})" if det else "-",
                          "error: " + r["error"][:80] if r.get("error") else ""])
        out += md_table(["mode", "N", "join s", "RTT error (cross)", "idle cross B", "idle same B", "idle cross share",
                         "writes cross B", "writes same B", "t100 median ms", "complete", "false positives",
                         "detection median / p90 s (kills)", ""],
                        cells, right=range(1, 13))
    return out


# == plots =====================================================================================================
def plots(run: Run, out: Path) -> tuple[list[tuple[str, str]], str | None]:
    """(file, caption) of every plot made, and why there are none when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (`.venv/bin/pip install -r requirements-bench.txt`)"
    matplotlib.rcParams.update({"font.size": 8, "svg.hashsalt": "report", "axes.grid": True, "grid.alpha": 0.3})
    out.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, caption: str) -> None:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        from PIL import Image
        buf.seek(0)
        img = Image.open(buf).convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT,
                                                  dither=Image.Dither.NONE)
        img.save(out / name, format="PNG", optimize=True)
        made.append((name, caption))

    for maker in (plot_latency_cdf, plot_bytes_vs_n, plot_bytes_by_type, plot_tradeoff, plot_critical,
                  plot_rtt_scatter, plot_bytes_by_zone, plot_t100_vs_fraction):
        maker(run, plt, save)
    return made, None


Save = Callable[[Any, str, str], None]


def matplotlib_ticker() -> Any:
    import matplotlib.ticker
    return matplotlib.ticker


def plain_log_ticks(axis: Any) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, ... in plain numbers (not 2x10^1)."""
    t = matplotlib_ticker()
    axis.set_major_locator(t.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(t.FormatStrFormatter("%g"))
    axis.set_minor_formatter(t.NullFormatter())


def _cdf(ax: Any, xs: Sequence[float], total: int, **kw: Any) -> None:
    xs = sorted(xs)
    if xs:
        ax.step(xs, [(i + 1) / max(1, total) for i in range(len(xs))], where="post", **kw)


def plot_latency_cdf(run: Run, plt: Any, save: Save) -> None:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in run.rows:
        if ok(r) and r["_step"] not in ("sweep", "critical", "budget"):
            sc = r["scenario"]
            groups.setdefault((r["_step"], sc["n"], sc["rate"], sc["size"]), []).append(r)
    chosen = [(k, g) for k, g in groups.items() if any(x["scenario"]["impl"] == "serf" for x in g)
              and any(x["scenario"]["impl"] == "ours" for x in g)]
    if not chosen:
        return
    cols = min(3, len(chosen))
    nrows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), squeeze=False)
    for ax, (k, g) in zip(axes.flat, chosen, strict=False):
        for r in g:
            lost = r["latency"]["incomplete"]
            _cdf(ax, r["latency"]["t100_ms"], r["writes_acked"],
                 label=who(r) + (f" ({lost} never all)" if lost else ""))
        ax.set_xscale("log")
        ax.set_title(f"{k[0]}: N={k[1]}, {k[2]:g}/s, {k[3]} B")
        ax.set_xlabel("write → all agents (ms)")
        ax.set_ylabel("fraction of writes")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    save(fig, "latency_cdf.png", "CDF of write→all latency (t100), ours on the tree and flooding against Serf user "
         "events of the same size and rate; a curve ending below 1: writes that never reached every agent")


def plot_bytes_vs_n(run: Run, plt: Any, save: Save) -> None:
    series: dict[tuple[str, float, int], list[tuple[int, float]]] = {}
    overloaded: list[tuple[int, float]] = []
    for r in run.rows:
        sc = r["scenario"]
        wanted = r["_step"] in ("load", "serf", "eight", "issue8") or is_large(r["_step"])
        if ok(r) and r.get("x_floor") is not None and wanted and sc["rate"] == 10:
            series.setdefault((who(r), sc["rate"], sc["size"]), []).append((sc["n"], float(r["x_floor"])))
            if (r.get("membership_under_load") or {}).get("suspected_members"):
                overloaded.append((sc["n"], float(r["x_floor"])))
    if not series:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, ((w, _rate, size), pts) in enumerate(sorted(series.items())):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if size < 1000 else "s",
                linestyle="-" if size < 1000 else "--", color=f"C{i % 10}", label=f"{w}, {size} B")
    if overloaded:
        ax.scatter([p[0] for p in overloaded], [p[1] for p in overloaded], marker="x", s=60, color="red", zorder=5,
                   label="live agents suspected (overloaded run)")
    ax.axhline(TARGETS["x_floor"], color="k", linestyle=":", linewidth=1, label="target 2.5x floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_locator(matplotlib_ticker().NullLocator())
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("agents (N)")
    ax.set_ylabel("wire bytes per write / floor")
    ax.set_title("bytes per write vs N, 10 writes/s")
    ax.legend(fontsize=6)
    save(fig, "bytes_per_write_vs_n.png", "Wire bytes per write in floors ((N-1) copies of key + value + version) "
         "against N at 10 writes/s; Serf: bytes per user event; a red x: live agents were suspected during that run, "
         "so it measured an overloaded machine")


def plot_bytes_by_type(run: Run, plt: Any, save: Save) -> None:
    typed = [r for r in run.rows if ok(r) and r.get("bytes_by_type") and r["scenario"]["impl"] == "ours"
             and r["_step"] in ("load", "modes", "serf", "serf100", "eight", "issue8")]
    if not typed:
        return
    kinds = type_order(typed)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.24 * len(typed)))
    lefts = [0.0] * len(typed)
    colors = plt.get_cmap("tab20").colors
    ys = list(range(len(typed)))[::-1]   # the first row on top
    for ci, k in enumerate(kinds):
        vals = [r["bytes_by_type"].get(k, 0) / max(1, r["writes_acked"]) / r["floor_bytes_per_write"] for r in typed]
        ax.barh(ys, vals, left=lefts, label=k, color=colors[ci % len(colors)])
        lefts = [a + v for a, v in zip(lefts, vals, strict=True)]
    ax.axvline(TARGETS["x_floor"], color="k", linestyle=":", linewidth=1)
    ax.set_yticks(ys, [f"{r['_step']}: N={r['scenario']['n']} {r['scenario']['rate']:g}/s {r['scenario']['size']} B, "
                       f"{who(r)}" for r in typed], fontsize=6)
    ax.set_xlabel("bytes per write, in floors (dotted: the 2.5x target)")
    ax.set_title("bytes by message type")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, "bytes_by_type.png", "Bytes per write by message type, in floors (membership and convergence: ping, "
         "ack, alive, digest, push-pull; data: state, pull, ihave, graft, prune, anti-entropy)")


def plot_tradeoff(run: Run, plt: Any, save: Save) -> None:
    sw = [r for r in run.rows if ok(r) and r["_step"] == "sweep"]
    if not sw:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    series: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]] = {}
    for r in sw:
        sets = dict(s.split("=", 1) for s in r["scenario"]["sets"])
        series.setdefault((path_of(r) or "default", int(sets.get("gossip.fanout", 3))), []).append(
            (int(sets.get("gossip.retransmitMult", 4)), r))
    for i, ((path, fan), pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda p: p[0])
        style = {"color": f"C{i % 10}", "linestyle": "-" if path == "tree" else "--"}
        a1.plot([p[0] for p in pts], [t100(p[1]) or float("nan") for p in pts], marker="o",
                label=f"{path}, fanout {fan}", **style)
        xs = [p[1].get("x_floor") or float("nan") for p in pts]
        ys = [t100(p[1]) or float("nan") for p in pts]
        a2.plot(xs, ys, marker="o", label=f"{path}, fanout {fan}", **style)
        for (mult, _), x, y in zip(pts, xs, ys, strict=True):
            a2.annotate(f"m{mult}", (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points")
    n, rate, size = sw[0]["scenario"]["n"], sw[0]["scenario"]["rate"], sw[0]["scenario"]["size"]
    a1.set(xlabel="gossip.retransmitMult", ylabel="write→all t100 median (ms)", yscale="log",
           title=f"latency vs retransmits, N={n}, {rate:g}/s, {size} B")
    a2.set(xlabel="wire bytes per write / floor", ylabel="write→all t100 median (ms)", yscale="log",
           title="bytes against latency (m: retransmitMult)")
    for a in (a1, a2):
        plain_log_ticks(a.yaxis)
    a1.legend(fontsize=6)
    a2.legend(fontsize=6)
    save(fig, "fanout_retransmit.png", "Latency against gossip.fanout and gossip.retransmitMult, and the "
         "bytes/latency trade-off curve they draw, on the tree (solid) and flooding (dashed)")


def plot_critical(run: Run, plt: Any, save: Save) -> None:
    crit = [r for r in run.rows if ok(r) and r.get("latency_by_class")]
    if not crit:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, r in enumerate(crit):
        c = r["latency_by_class"]
        tag = f"{r['_step']} N={r['scenario']['n']} {r['scenario']['size']} B" + (
            f", budget {r['scenario']['budget']}" if r["scenario"].get("budget") else "")
        for cls, style in (("critical", "-"), ("normal", ":")):
            xs = c[cls].get("t100_ms")
            if xs is not None:
                _cdf(ax, xs, c[cls]["writes"], color=f"C{i % 10}", linestyle=style, label=f"{tag}: {cls}")
            else:  # older JSON: medians only
                ax.axvline(c[cls]["t100_median_ms"] or float("nan"), color=f"C{i % 10}", linestyle=style,
                           label=f"{tag}: {cls} median")
    ax.set_xscale("log")
    ax.set(xlabel="write → all agents (ms)", ylabel="fraction of writes",
           title="critical vs normal writes under 100 writes/s")
    ax.legend(fontsize=6)
    save(fig, "critical.png", "write→all t100 of critical writes (solid) against normal writes (dotted) under the "
         "same 100 writes/s background, with and without a byte budget")


def plot_rtt_scatter(run: Run, plt: Any, save: Save) -> None:
    panels: list[tuple[str, list[tuple[float, float]]]] = []
    if run.topology:
        panels += [(f"simulator: {k}, N={run.topology['params']['nodes']}", [(a, b) for a, b in v])
                   for k, v in run.topology["scatter_ms"].items()]
    if run.topology_real:
        for r in run.topology_real.get("results", []):
            rtt = r.get("rtt") or {}
            measured = (rtt.get("summary") or {}).get("measured_ms") or {}
            pts = [(float(measured[k]), float(e)) for k, es in (rtt.get("scatter") or {}).items() if k in measured
                   for e in es if e is not None]
            if pts:
                panels.append((f"real agents ({r['mode']}), cross-zone pairs", pts))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), squeeze=False)
    for ax, (title, pts) in zip(axes.flat, panels, strict=True):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, alpha=0.5)
        top = max(max(p) for p in pts)
        ax.plot([0, top], [0, top], color="grey", linewidth=1)
        ax.set(xlabel="measured (true) RTT, ms", ylabel="estimated RTT, ms", title=title)
    save(fig, "rtt_scatter.png", "Estimated (Vivaldi) against measured RTT: the simulator's true RTT per pair, "
         "and for real agents the ICMP-measured RTT of each zone pair")


def plot_bytes_by_zone(run: Run, plt: Any, save: Save) -> None:
    # One row per source (the simulator, real agents): their scales differ. Bars: label, write same, write cross,
    # idle same, idle cross.
    sources: list[tuple[str, list[tuple[str, float, float, float, float]]]] = []
    if run.topology:
        sources.append((f"simulator, N={run.topology['params']['protocol_nodes']}", [
            ("random" if r["mode"] == "random" else f"aware {r['fraction']:g}", r["write_bytes_same"],
             r["write_bytes_cross"], r["idle_bytes_same"], r["idle_bytes_cross"])
            for r in run.topology["protocol"]["runs"]]))
    if run.topology_real:
        bars = []
        for r in run.topology_real.get("results", []):
            wb = (r.get("write_bytes") or {}).get("summary") or {}
            ib = (r.get("idle_bytes") or {}).get("summary") or {}
            if wb:
                bars.append((str(r["mode"]), wb.get("same_bytes", 0), wb.get("cross_bytes", 0),
                             ib.get("same_bytes", 0), ib.get("cross_bytes", 0)))
        if bars:
            sources.append(("real agents in namespaces", bars))
    if not sources:
        return
    fig, axes = plt.subplots(len(sources), 2, figsize=(8, 3.2 * len(sources)), squeeze=False)
    for row, (source, bars) in zip(axes, sources, strict=True):
        xs = range(len(bars))
        for ax, (i, phase) in zip(row, ((0, "during writes"), (2, "idle")), strict=True):
            mb = [b[1:] for b in bars]  # the four byte counts of each bar (sliced off its label: all floats)
            ax.bar(xs, [m[i] / 1e6 for m in mb], label="same zone", color="C0")
            ax.bar(xs, [m[i + 1] / 1e6 for m in mb], bottom=[m[i] / 1e6 for m in mb], label="cross zone",
                   color="C3")
            ax.set_xticks(xs, [b[0] for b in bars])
            ax.set(ylabel="MB", title=f"{source}: bytes by zone, {phase}")
            ax.legend(fontsize=6)
    save(fig, "bytes_by_zone.png", "Bytes inside zones and across zones, random (uniform) against zone-aware choice "
         "at each crossZoneFraction (simulator; real agents when the run includes them)")


def plot_t100_vs_fraction(run: Run, plt: Any, save: Save) -> None:
    topo = run.topology
    if not topo:
        return
    runs = topo["protocol"]["runs"]
    aware = sorted((r for r in runs if r["mode"] == "aware" and r["spread_t100"]), key=lambda r: r["fraction"])
    base = next((r for r in runs if r["mode"] == "random" and r["spread_t100"]), None)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    if aware:
        a1.plot([r["fraction"] for r in aware], [1000 * statistics.median(r["spread_t100"]) for r in aware],
                marker="o", label="aware, median")
        a1.plot([r["fraction"] for r in aware], [1000 * max(r["spread_t100"]) for r in aware], marker="x",
                linestyle=":", label="aware, max")
    if base:
        a1.axhline(1000 * statistics.median(base["spread_t100"]), color="grey", label="random, median")
        a1.axhline(1000 * max(base["spread_t100"]), color="grey", linestyle=":", label="random, max")
    a1.set(xlabel="topology.crossZoneFraction", ylabel="write→all t100 (virtual ms)",
           title=f"protocol, N={topo['params']['protocol_nodes']}, 3 zones")
    a1.legend(fontsize=6)
    ch = [r for r in topo["choice"] if r["cross_zone_fraction"] != "uniform"]
    a2.plot([float(r["cross_zone_fraction"]) for r in ch], [r["rounds_vs_uniform"] for r in ch], marker="o",
            label="rounds to all / uniform")
    a2.plot([float(r["cross_zone_fraction"]) for r in ch], [r["cross_zone_share"] for r in ch], marker="s",
            label="cross-zone share of picks")
    a2.set(xlabel="crossZoneFraction", title=f"choice rule, N={topo['params']['mix_nodes']}")
    a2.legend(fontsize=6)
    save(fig, "t100_vs_fraction.png", "write→all t100 against topology.crossZoneFraction (simulator), and the "
         "choice rule's cost (rounds) against its cross-zone share")


# == the report =================================================================================================
def run_section(run: Run) -> list[str]:
    m = run.manifest
    out: list[str] = []
    if m:
        mach = m.get("machine", {})
        vers = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        loads = [x for s in m.get("steps", []) for x in (s["load_before"][0], s["load_after"][0])]
        per_row = [float(x) for r in run.rows if "load_before" in r for x in (r["load_before"][0], r["load_after"][0])]
        out += [f"- run: {m.get('started')} → {m.get('finished', '(unfinished)')} UTC, "
                f"`bench/report.py {' '.join(m.get('argv', []))}`",
                f"- machine: {mach.get('host')}, {mach.get('cpus')} CPUs ({mach.get('cpu_model') or '?'}), "
                f"{fmt(mach.get('memory_mb'))} MB memory, {mach.get('platform')}",
                f"- versions: {vers}",
                f"- load average (1/5/15 min) at start {m.get('load_start')}, at end {m.get('load_end', '-')}; "
                f"1-minute load over the steps: median {fmt(statistics.median(loads) if loads else None)}, "
                f"max {fmt(max(loads) if loads else None)} on {mach.get('cpus')} CPUs"
                + (f"; at the start and end of each load scenario: median {fmt(statistics.median(per_row))}, max "
                   f"{fmt(max(per_row))}" if per_row else "")
                + ". The machine was shared with other work: absolute latencies and CPU are noisy; bytes and ratios "
                "within the run are the robust figures.", ""]
        cells = []
        for s in m.get("steps", []):
            what = f"SKIPPED: {s['skipped']}" if s.get("skipped") else s["what"]
            cmd = " ".join(s.get("command") or []).replace(f"{ROOT}/", "")  # paths as from the repository root
            if not cmd and s.get("params"):
                cmd = json.dumps(s["params"], sort_keys=True)
            rc = s.get("rc")
            cells.append([s["name"], what, f"`{cmd}`" if cmd else "", fmt(s.get("wall_s")),
                          f"{s['load_before'][0]} → {s['load_after'][0]}", "" if rc in (0, None) else f"exit {rc}"])
        out += md_table(["step", "what", "command / parameters", "wall s", "1-min load", ""], cells)
    elif run.metas:
        out += md_table(["file", "date (UTC)", "machine", "versions", "load at start → end", "arguments"],
                        [[x["file"], x["date"], x["machine"], ", ".join(f"{k} {v}" for k, v in x["versions"].items()),
                          f"{x['load_start']} → {x.get('load_end', '-')}", f"`{' '.join(x['argv'])}`"]
                         for x in run.metas])
    return out


def write_report(run: Run, images: Sequence[tuple[str, str]], why_no_plots: str | None, plot_dir: Path,
                 report_path: Path, notes: Sequence[str] = ()) -> str:
    rel = Path(os.path.relpath(plot_dir, report_path.parent))
    rows = run.rows
    lines = ["# Bench report: dissemination under load, topology", "",
             "Generated by `bench/report.py` (command in bench/README.md) from one run's raw JSON (bench/out/, not in "
             "git). Do not edit by hand. Method, definitions and caveats: the docstrings of bench/bench_load.py, "
             "bench/bench_topology.py, bench/bench_topology_real.py, bench/bench_cluster.py (idle) and "
             "bench/README.md.", "",
             "## The run", "", *run_section(run), "", *[f"Note: {n}" for n in notes], *([""] if notes else []),
             "Definitions: floor = (N-1) x (key + value + 16 B version) per write; bytes are IP-level agent-to-agent "
             "(127.0.0.1 → 127.0.0.1 on the agents' ports; the bench's HTTP client uses 127.0.0.2 and is not "
             "counted), from the first write until the last acknowledgement + 3 s and every rumor queue is empty; "
             "kB/s is over the writes alone; membership+conv. = ping, ack, nack, ping_req, alive, suspect, dead, "
             "digest, coordinate and push-pull bytes; t100 = PUT sent → the change on the last agent's watch "
             "stream (Serf: its \"Received event\" log line); \"never all\": writes some agent had not applied "
             "within the bench's --deliver-timeout.", "",
             "## Ratios measured in this run", "", *headline(run)]
    lines += ["## Targets: dissemination under load", "", *targets_table(rows), ""]
    if run.idle:
        lines += ["## Idle beside Serf", "", *idle_section(run.idle), ""]
    lines += repeat_sections(rows)
    sw = sweep_table(rows)
    if sw:
        lines += ["## Fanout and retransmits: the latency/bytes trade-off", "", *sw, ""]
    bt = budget_table(rows)
    if bt:
        lines += ["## Byte budget", "", *bt, ""]
    lines += ["## Bytes by message type", "", *types_table(rows), ""]
    lines += ["## All load scenarios", "", *main_table(rows), ""]
    ct = counters_table(rows)
    if ct:
        lines += ["## The agents' own counters", "", *ct, ""]
    if run.topology or run.topology_real:
        lines += ["## Topology", "", *topology_sections(run), ""]
    if not (run.topology_real):
        lines += ["Real agents in network namespaces (bench_topology_real.py) are not in this run: "
                  "`report.py --run --topology-real` (root) or `--topology-real-json FILE` includes them.", ""]
    lines += ["## Plots", ""]
    if why_no_plots:
        lines += [f"(no plots: {why_no_plots})", ""]
    for name, caption in images:
        lines += [f"**{caption}.**", "", f"![{name}]({(rel / name).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run the plan first (into a new bench/out/run-*/)")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--n", default="10,50", help="cluster sizes of the load steps (default %(default)s; 10,50,200 adds "
                   "the reduced 200-agent step, which saturates a shared 2-core machine for ~10 min)")
    p.add_argument("--steps", default="", help="comma list: run only these steps of the plan")
    p.add_argument("--quick", action="store_true", help="seconds-long windows and a tiny simulation (a pipeline "
                   "check, not a measurement)")
    p.add_argument("--no-topology", action="store_true", help="leave the simulator step out")
    p.add_argument("--topology-real", action="store_true",
                   help="also run bench_topology_real.py (root, network namespaces; nothing else may use them)")
    p.add_argument("--topology-real-arg", action="append", default=[], metavar="ARG",
                   help="argument for bench_topology_real.py (repeatable)")
    p.add_argument("--topology-real-json", type=Path, help="include this bench_topology_real.py output")
    p.add_argument("--bench-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every bench_load.py step (repeatable); the idle steps "
                   "(bench_cluster.py) take its --base-port")
    p.add_argument("--from", dest="run_dir", type=Path, help="the run directory to report (default: the latest)")
    p.add_argument("--output", type=Path, default=REPORT, help="report path (default bench/REPORT.md)")
    p.add_argument("--plots", "--out-dir", type=Path, default=PLOTS, help="where the PNGs go (default bench/plots/)")
    p.add_argument("--note", action="append", default=[],
                   help="a sentence about the run for the report (e.g. a step stopped by hand, and why)")
    p.add_argument("files", nargs="*", type=Path, help="loose bench_load.py JSON files to report instead")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.n.split(",") if x.strip()]
    steps = plan(sizes, quick=args.quick, topology=not args.no_topology, topology_real=args.topology_real,
                 real_args=args.topology_real_arg)
    if args.steps:
        wanted = {s.strip() for s in args.steps.split(",")}
        unknown = wanted - {s.name for s in steps}
        if unknown:
            p.error(f"--steps: unknown {sorted(unknown)}; the plan has {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in wanted]
    if args.list:
        for s in steps:
            shown = json.dumps(s.params, sort_keys=True) if s.params else " ".join(s.args)
            print(f"{s.name:14} {s.kind:13} {s.what}\n{'':28} {shown}")
        return 0
    run_dir = args.run_dir
    if args.run:
        run_dir = new_run_dir()
        print(f"report: running {len(steps)} steps into {run_dir}", file=sys.stderr, flush=True)
        execute(steps, run_dir, sys.argv[1:] if argv is None else list(argv), args.bench_arg)
    elif run_dir is None and not args.files:
        run_dir = latest_run_dir()
        if run_dir is None:
            print("report: no run in bench/out/ (run with --run)", file=sys.stderr)
            return 1
    run = read_run(run_dir, args.files, args.topology_real_json)
    if not run.rows and not run.topology and not run.topology_real and not run.idle:
        print(f"report: nothing to report in {run_dir or args.files}", file=sys.stderr)
        return 1
    images, why = plots(run, args.plots)
    args.output.write_text(write_report(run, images, why, args.plots, args.output, args.note))
    print(f"report: wrote {args.output} and {len(images)} plots in {args.plots}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
