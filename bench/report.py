"""bench/REPORT.md and its plots from bench_load.py's raw JSON — optionally running the benchmark first.

    .venv/bin/pip install -r requirements-bench.txt          # matplotlib, once
    .venv/bin/python bench/report.py --run                     # the default plan (~15-25 min), then the report
    .venv/bin/python bench/report.py                           # the report again from bench/out/*.json

`--run` runs bench_load.py five times into bench/out/ (raw JSON and a text log each): N = 10 and 50 at 10 and
100 writes/s of 1 KiB in each gossip mode; the 8-agent issue scenario (80 writes of 200 B at 10/s, each mode,
Serf beside); Serf user events at 200 B for N = 10 and 50; the fanout x retransmitMult sweep at N = 10; and
critical against normal writes (every 10th write `?priority=critical`, N = 10, 100 writes/s), and the same at
512 B without and with a 30 kB/s per-agent byte budget (`gossip.maxBytesPerSecond`).
`--n` changes the sizes (e.g. `--n 10,50,200` if the machine can hold 200 agents). The report reads every
`bench/out/*.json` (or the files given), so separate runs can be combined.

Writes bench/REPORT.md (machine, versions, load, parameters, targets, tables, ratios) and PNGs in bench/out/
(gitignored): latency CDF ours vs Serf, bytes per write vs N, bytes by message type, latency and bytes vs
fanout/retransmits. Figures on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
REPORT = HERE / "REPORT.md"

TARGETS = {"x_floor": 2.5, "membership_share": 0.10, "t100_median_ms": 60.0, "t100_p99_ms": 250.0,
           "roots_equal_s": 1.0, "issue8_kBps": 30.0}


def run_plan(n: str, extra: Sequence[str]) -> None:
    py = sys.executable
    bench = str(HERE / "bench_load.py")
    OUT.mkdir(exist_ok=True)
    plans = {
        "load": ["--n", n, "--rate", "10,100", "--size", "1024", "--seconds", "10", "--modes",
                 "push,pull,push-pull"],
        "issue8": ["--no-default", "--issue-scenario", "--serf"],
        "serf200": ["--n", ",".join(x for x in n.split(",") if int(x) >= 10), "--rate", "10,100", "--size", "200",
                    "--seconds", "10", "--modes", "push-pull", "--serf"],
        "sweep": ["--no-default", "--sweep", "--size", "1024", "--seconds", "8"],
        "critical": ["--n", "10", "--rate", "100", "--size", "1024", "--seconds", "10", "--modes", "push-pull",
                     "--critical-every", "10"],
        "budget": ["--n", "10", "--rate", "100", "--size", "512", "--seconds", "10", "--modes", "push-pull",
                   "--critical-every", "10", "--budget", "30000"],
    }
    for name, args in plans.items():
        print(f"report: running bench_load.py {' '.join(args)}", file=sys.stderr, flush=True)
        with open(OUT / f"{name}.txt", "w") as log:
            subprocess.run([py, bench, *args, *extra, "--json", str(OUT / f"{name}.json")], stdout=log, check=False)


def load(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sys.path.insert(0, str(HERE))
    import bench_load  # the byte accounting, re-applied to the raw counters (older JSON gets today's method)

    metas, rows = [], []
    for p in paths:
        data = json.loads(p.read_text())
        meta = dict(data["meta"], file=p.name)
        metas.append(meta)
        for r in data["results"]:
            r["_file"] = p.name
            if r["scenario"]["impl"] == "ours" and "error" not in r:
                r.update(bench_load.byte_figures(r, r["writes_acked"], r["scenario"]["n"], r["write_window_s"]))
            rows.append(r)
    return metas, rows


def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def who(r: dict[str, Any]) -> str:
    """Serf, or our gossip mode (with the broadcast path when the run set one: `--broadcasts`)."""
    sc = r["scenario"]
    if sc["impl"] == "serf":
        return "serf"
    path = next((s.split("=", 1)[1] for s in sc["sets"] if s.startswith("gossip.broadcast=")), None)
    return f"{sc['mode']} {path}" if path else str(sc["mode"])


def met(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "yes" if value <= target else "NO"


def main_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ("| scenario | impl/mode | N | writes/s | value B | acked | B/write | x floor | kB/s (writes) | "
            "membership+conv. | alive | t100 median ms | t100 p99 ms | incomplete | roots equal s | "
            "CPU %/agent | incarnation max | live agents declared dead / suspected | idle B/s/agent | "
            "load before→after |")
    cols = head.count("|") - 1
    out = [head, "|" + " --- |" * cols]
    for r in rows:
        sc = r["scenario"]
        if "error" in r:
            out.append(f"| {sc['label']} | {who(r)} | {sc['n']} | {sc['rate']:g} | {sc['size']} | ERROR: "
                       f"{r['error'][:80]} |" + " |" * (cols - 6))
            continue
        lat = r["latency"]
        sets = f" ({', '.join(sc['sets'])})" if sc["sets"] else ""
        out.append(
            f"| {sc['label']}{sets} | {who(r)} | {sc['n']} | {sc['rate']:g} | {sc['size']} | {r['writes_acked']} | "
            f"{fmt(r.get('bytes_per_write'))} | {fmt(r.get('x_floor'), 2)} | {fmt(r.get('kBps_during_writes'))} | "
            f"{pctf(r.get('membership_share'))} | {pctf(r.get('alive_share'))} | {fmt(lat['t100_median_ms'])} | "
            f"{fmt(lat['t100_p99_ms'])} | {lat['incomplete']} | {fmt(r.get('roots_equal_after_last_write_s'), 2)} | "
            f"{fmt((r.get('cpu_pct_per_agent') or {}).get('mean'))} | "
            f"{fmt((r.get('incarnation') or {}).get('max'), 0)} | {overload(r)} | "
            f"{fmt((r.get('idle') or {}).get('Bps_per_agent'))} | "
            f"{'/'.join(fmt(x) for x in r['load_before'])} → {'/'.join(fmt(x) for x in r['load_after'])} |")
    return out


def overload(r: dict[str, Any]) -> str:
    m = r.get("membership_under_load")
    return "-" if not m else f"{m['false_positives']} / {m['suspected_members']}"


def pctf(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| run | scenario | mode | x floor (≤ 2.5) | membership+conv. (≤ 10 %) | t100 median (≤ 60 ms) | "
           "t100 p99 (≤ 250 ms) | roots equal (≤ 1 s) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sc = r["scenario"]
        if "error" in r or sc["impl"] != "ours" or sc["label"] != "load" or sc["size"] != 1024:
            continue
        lat = r["latency"]
        roots = r.get("roots_equal_after_last_write_s")
        out.append(
            f"| {r['_file'].removesuffix('.json')} | N={sc['n']}, {sc['rate']:g}/s | {who(r)} | "
            f"{fmt(r.get('x_floor'), 2)} "
            f"({met(r.get('x_floor'), TARGETS['x_floor'])}) | {pctf(r.get('membership_share'))} "
            f"({met(r.get('membership_share'), TARGETS['membership_share'])}) | {fmt(lat['t100_median_ms'])} ms "
            f"({met(lat['t100_median_ms'], TARGETS['t100_median_ms'])}) | {fmt(lat['t100_p99_ms'])} ms "
            f"({met(lat['t100_p99_ms'], TARGETS['t100_p99_ms'])}) | {fmt(roots, 2)} s "
            f"({met(roots, TARGETS['roots_equal_s'])}) |")
    issue = [r for r in rows if r["scenario"]["label"] == "issue8" and "error" not in r]
    if issue:
        out += ["", "8-agent scenario (80 writes of 200 B at 10/s), IP-level agent-to-agent traffic while writing "
                "(target ≤ 30 kB/s):", "", "| impl/mode | kB/s | x floor | met |", "| --- | --- | --- | --- |"]
        for r in issue:
            out.append(f"| {who(r)} | {fmt(r.get('kBps_during_writes'))} | {fmt(r.get('x_floor'), 2)} | "
                       f"{met(r.get('kBps_during_writes'), TARGETS['issue8_kBps']) if who(r) != 'serf' else '-'} |")
    return out


def types_table(rows: list[dict[str, Any]]) -> list[str]:
    kinds: list[str] = []
    for r in rows:
        for k in r.get("bytes_by_type") or {}:
            if k not in kinds:
                kinds.append(k)
    if not kinds:
        return ["(no byte figures: nft/AF_PACKET need root)"]
    out = ["Bytes per write by message type, IP level: UDP = the agents' exact message counts by type x each "
           "type's mean wire size in the decoded capture (headers shared by size), scaled to the nftables UDP "
           "total; TCP = push-pull and anti-entropy by the agents' own byte counters, scaled to the nftables TCP "
           "total. \"capture kept\": datagrams the Python capture decoded (the rest the kernel dropped while it "
           "was busy; the mean sizes come from those it kept).", "",
           "| scenario | impl/mode | " + " | ".join(kinds) + " | capture kept |",
           "| --- | --- |" + " ---: |" * len(kinds) + " ---: |"]
    for r in rows:
        if "error" in r or not r.get("bytes_by_type"):
            continue
        sc = r["scenario"]
        w = max(1, r["writes_acked"])
        sets = f" ({', '.join(sc['sets'])})" if sc["sets"] else ""
        cells = " | ".join(fmt(round(r["bytes_by_type"].get(k, 0) / w)) if r["bytes_by_type"].get(k) else ""
                           for k in kinds)
        out.append(f"| {sc['label']} N={sc['n']} {sc['rate']:g}/s {sc['size']} B{sets} | {who(r)} | {cells} | "
                   f"{pctf(r.get('capture_kept'))} |")
    return out


def critical_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["Every 10th write PUT with `?priority=critical` under the rest of the load (target: critical t100 ≤ 0.5x "
           "normal). Agents that do not know the parameter ignore it, so before the priority work the ratio is ~1.",
           "", "| run | scenario | mode | critical writes | critical t100 median / p99 ms | normal t100 median / "
           "p99 ms | critical / normal (median) | met |", "| --- | --- | --- | ---: | --- | --- | ---: | --- |"]
    for r in rows:
        c = r.get("latency_by_class")
        if not c or "error" in r:
            continue
        sc = r["scenario"]
        ratio_ = c.get("critical_over_normal_median")
        budget = f", budget {sc['budget']} B/s" if sc.get("budget") else ""
        out.append(f"| {r['_file'].removesuffix('.json')} | N={sc['n']}, {sc['rate']:g}/s, {sc['size']} B{budget} | "
                   f"{sc['mode']} | {c['critical']['writes']} | {fmt(c['critical']['t100_median_ms'])} / "
                   f"{fmt(c['critical']['t100_p99_ms'])} | {fmt(c['normal']['t100_median_ms'])} / "
                   f"{fmt(c['normal']['t100_p99_ms'])} | {fmt(ratio_, 2)} | {met(ratio_, 0.5)} |")
    return out if len(out) > 4 else []


def serf_table(rows: list[dict[str, Any]]) -> list[str]:
    serf = {(r["scenario"]["label"], r["scenario"]["n"], r["scenario"]["rate"], r["scenario"]["size"]): r
            for r in rows if r["scenario"]["impl"] == "serf" and "error" not in r}
    out = ["| scenario | ours mode | ours B/write | serf B/event | ours/serf bytes | ours t100 median ms | "
           "serf t100 median ms | ours/serf t100 | ours p99 | serf p99 |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        sc = r["scenario"]
        key = (sc["label"], sc["n"], sc["rate"], sc["size"])
        s = serf.get(key)
        if s is None or sc["impl"] != "ours" or "error" in r:
            continue
        ob, sb = r.get("bytes_per_write"), s.get("bytes_per_write")
        ol, sl = r["latency"]["t100_median_ms"], s["latency"]["t100_median_ms"]
        out.append(f"| {sc['label']} N={sc['n']} {sc['rate']:g}/s {sc['size']} B | {sc['mode']} | {fmt(ob)} | "
                   f"{fmt(sb)} | {ratio(ob, sb)} | {fmt(ol)} | {fmt(sl)} | {ratio(ol, sl)} | "
                   f"{fmt(r['latency']['t100_p99_ms'])} | {fmt(s['latency']['t100_p99_ms'])} |")
    return out if len(out) > 2 else ["(no Serf rows: serf not installed, or only value sizes above its 512 B limit)"]


def ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}x"


# -- plots ------------------------------------------------------------------------------------------------------
def plots(rows: list[dict[str, Any]], out: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(no plots: matplotlib is not installed — `.venv/bin/pip install -r requirements-bench.txt`)"]
    made: list[str] = []
    ok = [r for r in rows if "error" not in r]

    # 1. CDF of write -> all latency, ours (each mode) vs Serf, per scenario that has Serf.
    groups: dict[tuple[str, int, float, int], list[dict[str, Any]]] = {}
    for r in ok:
        sc = r["scenario"]
        groups.setdefault((sc["label"], sc["n"], sc["rate"], sc["size"]), []).append(r)
    with_serf = [(k, g) for k, g in groups.items() if any(x["scenario"]["impl"] == "serf" for x in g)]
    if with_serf:
        cols = min(3, len(with_serf))
        rows_n = (len(with_serf) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.8 * rows_n), squeeze=False)
        for ax, (k, g) in zip(axes.flat, with_serf, strict=False):
            for r in g:
                # Over every acknowledged write: one some agent never got leaves the curve short of 1.
                xs = sorted(r["latency"]["t100_ms"])
                total = max(1, r["writes_acked"])
                if xs:
                    lost = (f", {r['latency']['incomplete']} never reached all"
                            if r["latency"]["incomplete"] else "")
                    ax.plot(xs, [(i + 1) / total for i in range(len(xs))], label=who(r) + lost)
            ax.set_xscale("log")
            ax.set_title(f"{k[0]}: N={k[1]}, {k[2]:g}/s, {k[3]} B", fontsize=9)
            ax.set_xlabel("write → all agents (ms)")
            ax.set_ylabel("fraction of writes")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(with_serf):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")

    # 2. bytes per write (x floor) vs N, per mode and rate.
    series: dict[tuple[str, float, int], list[tuple[int, float]]] = {}
    lossy: set[tuple[str, float, int]] = set()
    for r in ok:
        sc = r["scenario"]
        if sc["label"] in ("load", "issue8") and r.get("x_floor") is not None:
            key = (who(r), sc["rate"], sc["size"])
            series.setdefault(key, []).append((sc["n"], r["x_floor"]))
            if r["latency"]["incomplete"] * 2 > r["writes_acked"]:
                lossy.add(key)
    if series:
        fig, ax = plt.subplots(figsize=(8, 5))
        colors = plt.get_cmap("tab20").colors
        for ci, ((w, rate, size), pts) in enumerate(sorted(series.items())):
            pts.sort()  # repeated runs of one scenario show as several points at one N
            note = " (most events never reached all)" if (w, rate, size) in lossy else ""
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if size < 1000 else "s",
                    linestyle="-" if rate < 50 else "--", color=colors[ci % len(colors)],
                    label=f"{w}, {rate:g}/s, {size} B{note}")
        ax.axhline(TARGETS["x_floor"], color="k", linestyle="--", linewidth=1, label="target 2.5x floor")
        ax.set_xlabel("agents (N)")
        ax.set_ylabel("wire bytes per write / floor")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "bytes_per_write_vs_n.png", dpi=110)
        plt.close(fig)
        made.append("bytes_per_write_vs_n.png")

    # 3. bytes by message type, stacked, per write.
    typed = [r for r in ok if r.get("bytes_by_type") and r["scenario"]["impl"] == "ours"
             and r["scenario"]["label"] in ("load", "issue8")]
    if typed:
        kinds: list[str] = []
        for r in typed:
            kinds += [k for k in r["bytes_by_type"] if k not in kinds]
        fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(typed) + 2), 5))
        bottoms = [0.0] * len(typed)
        labels = [f"{r['scenario']['label']} N={r['scenario']['n']}\n{r['scenario']['rate']:g}/s "
                  f"{r['scenario']['mode']}" for r in typed]
        colors = plt.get_cmap("tab20").colors
        for ci, k in enumerate(kinds):
            vals = [r["bytes_by_type"].get(k, 0) / max(1, r["writes_acked"]) / r["floor_bytes_per_write"]
                    for r in typed]
            ax.bar(range(len(typed)), vals, bottom=bottoms, label=k, color=colors[ci % len(colors)])
            bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
        ax.axhline(TARGETS["x_floor"], color="k", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(typed)), labels, rotation=60, fontsize=6, ha="right")
        ax.set_ylabel("bytes per write, in floors")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "bytes_by_type.png", dpi=110)
        plt.close(fig)
        made.append("bytes_by_type.png")

    # 4. latency and bytes vs fanout / retransmitMult.
    sweep = [r for r in ok if r["scenario"]["label"] == "sweep"]
    if sweep:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        by_fan: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for r in sweep:
            sets = dict(s.split("=", 1) for s in r["scenario"]["sets"])
            by_fan.setdefault(int(sets.get("gossip.fanout", 3)), []).append(
                (int(sets.get("gossip.retransmitMult", 4)), r))
        for ci, (fan, pts) in enumerate(sorted(by_fan.items())):
            pts.sort(key=lambda p: p[0])
            color = f"C{ci}"
            a1.plot([p[0] for p in pts], [p[1]["latency"]["t100_median_ms"] or float("nan") for p in pts],
                    marker="o", color=color, label=f"fanout {fan}, median")
            a1.plot([p[0] for p in pts], [p[1]["latency"]["t100_p99_ms"] or float("nan") for p in pts],
                    marker="x", linestyle=":", color=color, label=f"fanout {fan}, p99")
            a2.plot([p[0] for p in pts], [p[1].get("x_floor") or float("nan") for p in pts], marker="o",
                    color=color, label=f"fanout {fan}")
        a1.set_xlabel("gossip.retransmitMult")
        a1.set_ylabel("write → all t100 (ms)")
        a1.set_yscale("log")
        a2.set_xlabel("gossip.retransmitMult")
        a2.set_ylabel("bytes per write / floor")
        n = sweep[0]["scenario"]["n"]
        a1.set_title(f"N={n}, {sweep[0]['scenario']['rate']:g}/s, {sweep[0]['scenario']['size']} B", fontsize=9)
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fanout_retransmit.png", dpi=110)
        plt.close(fig)
        made.append("fanout_retransmit.png")
    return made


MODE_ORDER = {"push": 0, "pull": 1, "push-pull": 2, "-": 3}


def row_order(r: dict[str, Any]) -> tuple[Any, ...]:
    sc = r["scenario"]
    order = {"load": 0, "issue8": 1, "critical": 2, "budget": 2, "sweep": 3}
    return (order.get(sc["label"], 9), -sc["size"], sc["n"], sc["rate"],
            sc["impl"] == "serf", MODE_ORDER.get(sc["mode"], 9), sc["sets"])


def write_report(metas: list[dict[str, Any]], rows: list[dict[str, Any]], images: list[str], out: Path) -> str:
    rows = sorted(rows, key=row_order)
    lines = ["# Dissemination under load — generated report", "",
             "Generated by `bench/report.py` from `bench_load.py`'s raw JSON (bench/out/, not in git). "
             "Do not edit by hand. Method, definitions and caveats: the docstring of bench/bench_load.py and "
             "bench/README.md.", ""]
    lines += ["## Runs", "", "| file | date (UTC) | machine | versions | load at start → end | arguments |",
              "| --- | --- | --- | --- | --- | --- |"]
    for m in metas:
        v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
        lines.append(f"| {m['file']} | {m['date']} | {m['machine']} | {v} | {m['load_start']} → "
                     f"{m.get('load_end', '-')} | `{' '.join(m['argv'])}` |")
    loads = [x for r in rows if "load_before" in r for x in (r["load_before"][0], r["load_after"][0])]
    if loads:
        lines += ["", f"1-minute load average across scenarios: median {statistics.median(loads):.1f}, max "
                  f"{max(loads):.1f} (2 cores). On a shared machine absolute latencies and CPU are noisy; byte "
                  "counts and ratios within one run are the robust figures."]
    lines += ["", "Definitions: floor = (N-1) x (key + value + 16 B version) per write; bytes are IP-level "
              "agent-to-agent (127.0.0.1 → 127.0.0.1 on the agents' ports; the bench's client uses 127.0.0.2 and "
              "is not counted), from the first write to the last acknowledgement + 3 s; kB/s is over the writes "
              "alone; membership+conv. = ping, ack, nack, ping_req, alive, suspect, dead and push-pull bytes "
              "(roots travel in Alive metadata today); t100 = PUT sent → change on the last agent's watch "
              "stream (Serf: its \"Received event\" log line).", ""]
    lines += ["## Targets", "", *targets_table(rows)]
    lines += ["", "## All scenarios", "", *main_table(rows)]
    lines += ["", "## Bytes by message type", "", *types_table(rows)]
    crit = critical_table(rows)
    if crit:
        lines += ["", "## Critical writes", "", *crit]
    lines += ["", "## Beside Serf (user events of the same size and rate)", "", *serf_table(rows)]
    counters = [r for r in rows if r.get("agent_counters")]
    if counters:
        lines += ["", "## The agents' own counters (summed over agents, per write)", "",
                  "`gossip_messages_total{direction=out}` by type; `gossip_bytes_total{direction=out}` by kind "
                  "(a UDP datagram is counted under its first message's type only).", "",
                  "| scenario | mode | messages by type | bytes by kind | drops |", "| --- | --- | --- | --- | --- |"]
        for r in counters:
            sc, c = r["scenario"], r["agent_counters"]
            w = max(1, r["writes_acked"])
            msg = ", ".join(f"{k} {v / w:.1f}" for k, v in sorted(c["messages_out_by_type"].items(),
                                                                    key=lambda kv: -kv[1]))
            byt = ", ".join(f"{k} {v / w:,.0f}" for k, v in sorted(c["bytes_out_by_kind"].items(),
                                                                   key=lambda kv: -kv[1]))
            drops = ", ".join(f"{k} {v:.0f}" for k, v in c["dropped"].items()) or "0"
            sets = f" ({', '.join(sc['sets'])})" if sc["sets"] else ""
            lines.append(f"| {sc['label']} N={sc['n']} {sc['rate']:g}/s {sc['size']} B{sets} | {sc['mode']} | "
                         f"{msg} | {byt} | {drops} |")
    if images:
        where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        lines += ["", "## Plots", "", f"PNG files in {where}/ (generated, not in git):", ""]
        lines += [f"- `{where}/{name}`" for name in images]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run the default bench_load.py plan first")
    p.add_argument("--n", default="10,50", help="cluster sizes for --run (default %(default)s)")
    p.add_argument("--bench-arg", action="append", default=[], help="extra argument for bench_load.py runs")
    p.add_argument("--output", default=str(REPORT), help="report path (default bench/REPORT.md)")
    p.add_argument("--out-dir", type=Path, default=OUT, help="where the plots go (default bench/out/)")
    p.add_argument("files", nargs="*", type=Path, help="raw JSON files (default: bench/out/*.json)")
    args = p.parse_args(argv)
    if args.run:
        run_plan(args.n, args.bench_arg)
    files = args.files or sorted(OUT.glob("*.json"))
    if not files:
        print("report: no raw JSON in bench/out/ (run with --run)", file=sys.stderr)
        return 1
    metas, rows = load(files)
    rows.sort(key=row_order)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    images = plots(rows, args.out_dir)
    Path(args.output).write_text(write_report(metas, rows, images, args.out_dir))
    print(f"report: wrote {args.output} and {len(images)} plots in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
