"""Sum the CPU attribution of every profiled agent over the write window (see sitecustomize.py here).

    python bench/cpu_profile/report.py DIR [--top 40]

The window of each agent: from the first to the last one-second snapshot in which it applied changes at more
than a fifth of its peak rate (`StateService._persist` calls: one per write applied, local or delivered).
Figures are summed over agents and given per applied write (`per_apply`, µs of CPU): with N agents, each
write is applied N times, once locally and N-1 times as a delivery.

An agent whose loop the hook cannot attribute (uvloop: see sitecustomize.py) records no callbacks and no
selector time. The report says so first, loudly, and then leaves out the callback, selector and
"unattributed" rows: summed, they would read as "no callback CPU" rather than "not measured".
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

PERSIST = "state_service:StateService._persist"


def _window(snaps: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    counts = [s["funcs"].get(PERSIST, [0.0, 0])[1] for s in snaps]
    rates = [b - a for a, b in itertools.pairwise(counts)]
    if not rates or max(rates) <= 0:
        return None
    hot = [i for i, r in enumerate(rates) if r > max(rates) / 5]
    return snaps[hot[0]], snaps[hot[-1] + 1]


def summarise(directory: Path) -> dict[str, Any]:
    """Every agent's write window (`_window`) summed: totals, and callbacks / functions / gc by name as
    [cpu seconds, calls]."""
    total: dict[str, float] = defaultdict(float)
    handles: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    funcs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    gcg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    agents = 0
    blind: dict[str, int] = defaultdict(int)  # loop -> agents whose callbacks were not attributed
    for path in sorted(directory.glob("*.jsonl")):
        snaps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        w = _window(snaps)
        if w is None:
            continue
        a, b = w
        agents += 1
        if not b.get("callbacks_attributed", True):  # (snapshots from before the field: asyncio's loop)
            blind[str(b.get("loop"))] += 1
        total["wall"] += b["t"] - a["t"]
        total["utime"] += b["utime"] - a["utime"]
        total["stime"] += b["stime"] - a["stime"]
        total["select_cpu"] += b["select"][0] - a["select"][0]
        total["select_calls"] += b["select"][1] - a["select"][1]
        total["select_events"] += b["select"][2] - a["select"][2]
        total["gc_cpu"] += b["gc"][0] - a["gc"][0]
        total["gc_n"] += b["gc"][1] - a["gc"][1]
        for key, dst in (("handles", handles), ("funcs", funcs), ("gc_by_gen", gcg)):
            for k, (cpu, n) in b[key].items():
                c0, n0 = a[key].get(k, [0.0, 0])
                dst[k][0] += cpu - c0
                dst[k][1] += n - n0
    return {"agents": agents, "total": dict(total), "handles": dict(handles), "funcs": dict(funcs),
            "gc_by_gen": dict(gcg), "applies": funcs.get(PERSIST, [0.0, 0])[1], "unattributed_loops": dict(blind)}


def blind_warning(agents: int, blind: dict[str, int]) -> str | None:
    """The banner for agents whose callbacks were not attributed (None: every agent's were)."""
    if not blind:
        return None
    loops = ", ".join(f"{n} on {loop}" for loop, n in sorted(blind.items()))
    return (f"!! CALLBACKS NOT ATTRIBUTED for {sum(blind.values())} of {agents} agents ({loops}): the hook times "
            "asyncio's selector loop only. Callback, selector and unattributed rows are left out; functions, gc "
            "and CPU totals below are measured. Profile with --event-loop asyncio (GOSSIP_EVENT_LOOP=asyncio) "
            "to see callbacks.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    s = summarise(Path(args.dir))
    agents, total, handles, funcs, gcg = s["agents"], s["total"], s["handles"], s["funcs"], s["gc_by_gen"]
    applies = funcs.get(PERSIST, [0.0, 0])[1]
    if not agents or not applies:
        print("no window found")
        return
    warning = blind_warning(agents, s["unattributed_loops"])
    if warning is not None:
        print(warning, file=sys.stderr)
        print(warning)
    cpu = total["utime"] + total["stime"]
    per = 1e6 / applies

    def row(label: str, c: float, n: float) -> str:
        return (f"{label:70s} {c:8.3f} s {100 * c / cpu:5.1f}% {c * per:8.1f} µs/apply "
                f"{n / applies:7.2f}/apply {1e6 * c / n if n else 0:7.1f} µs/call")

    print(f"agents {agents}, window {total['wall'] / agents:.1f} s each, applies {applies}, "
          f"CPU {cpu:.2f} s (user {total['utime']:.2f}, sys {total['stime']:.2f}) = {cpu * per:.1f} µs/apply")
    attributed = sum(c for c, _ in handles.values())
    if warning is None:
        print(row("event-loop callbacks (sum)", attributed, sum(n for _, n in handles.values())))
        print(row("selector select (epoll, wake-ups)", total["select_cpu"], total["select_calls"]))
        print(f"{'':70s} events per select: {total['select_events'] / max(1, total['select_calls']):.2f}")
    print(row("gc (all generations)", total["gc_cpu"], total["gc_n"]))
    for g, (c, n) in sorted(gcg.items()):
        print(row(f"  gc generation {g}", c, n))
    if warning is None:
        print(row("unattributed (other threads, interpreter outside callbacks)",
                  cpu - attributed - total["select_cpu"], 0))
        print("-- callbacks")
        for k, (c, n) in sorted(handles.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(row(k, c, n))
    print("-- functions (inclusive, overlapping)")
    for k, (c, n) in sorted(funcs.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(row(k, c, n))


if __name__ == "__main__":
    main()
