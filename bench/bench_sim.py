"""Simulator scale: how long a cluster of N real Node cores takes to join, to detect a crash, and to run.

Two starts per size (`--starts`):
- `join`: all nodes start within `--spread` seconds and join through 3 seeds, until every node sees every node
  alive. Every member's Alive rumor reaches every member ~retransmit-limit times: N² work, the slow part.
- `joined`: every node starts as a member of an already converged cluster (`Simulation.start_joined`), the
  way to run steady-state behaviour at scale.
Then (after `--settle` virtual seconds) one member crashes and the run continues until every live node saw it
DEAD (at most `--detect-timeout` virtual seconds). Reported per size and start: join convergence (virtual s),
wall time of the start, crash detection time (virtual s), wall time of the whole run, wall seconds per
virtual second of the steady phase, and messages, packets and bytes (codec-sized, plaintext) per node per
second in that phase.

Last (`--rumor`, on by default), one member broadcasts a state payload and the run lasts until every live node
had it: virtual milliseconds until half of them, 99 % and all had it (`rumor_half_ms`, `rumor_p99_ms`,
`rumor_all_ms`), on the broadcast path `--broadcast` (the agent's default, tree: the broadcast tree's eager
pushes and lazy announcements; flood: immediate forwarding to fanout peers, an early gossip round a quarter
interval later, then each member's regular gossip beat). A rumor some member never got within `--rumor-timeout` is
reported as `rumor_missing` members (a push epidemic now and then leaves one behind at N = 1,000; state
anti-entropy, not simulated here, repairs it).

Every node holds the full member table, so memory grows with N² (~0.45 KB per row measured at N=1,000):
sizes that would not fit in available memory are skipped with a note, and a join that exceeds
`--max-wall` seconds is reported as unfinished.

    python bench/bench_sim.py [--sizes 1000,10000,100000] [--starts join,joined] [--seed 1] [--loss 0.0]
                              [--broadcast flood|tree] [--no-rumor] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from typing import Any

from gossip_agent.core.effects import EventKind
from gossip_agent.sim import LinkProfile, PayloadLog, Simulation, make_config

ROW_BYTES = 450  # measured: resident bytes per member-table row (N² rows) at N = 1,000


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def run_size(n: int, start: str, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"nodes": n, "start": start}
    need = ROW_BYTES * n * n
    if need > 0.7 * available_memory():
        row["note"] = (f"skipped: needs ~{need / 2**30:.0f} GiB (N² member rows), "
                       f"{available_memory() / 2**30:.0f} GiB available")
        return row
    base = make_config()
    config = dataclasses.replace(base, gossip=dataclasses.replace(base.gossip, broadcast=args.broadcast))
    sim = Simulation(n, seed=args.seed, config=config, link=LinkProfile(loss=args.loss),
                     delegate_factory=lambda i: PayloadLog())
    wall0 = time.perf_counter()
    joined: float | None = None
    if start == "joined":
        sim.start_joined(seeds=3)
        joined = sim.now
    else:
        sim.start_all(seeds=3, spread=args.spread)
    while joined is None and sim.now < args.join_timeout:
        joined = sim.run_until_condition(sim.converged, timeout=1.0, check_every=0.5)
        if joined is not None or time.perf_counter() - wall0 > args.max_wall:
            break
    row["join_wall_s"] = round(time.perf_counter() - wall0, 1)
    row["join_virtual_s"] = None if joined is None else round(joined, 2)
    row["join_messages_per_node"] = round(sim.stats["messages_sent"] / n)
    if joined is None:
        row["note"] = f"join unfinished at t={sim.now:.1f}s (wall budget {args.max_wall:.0f}s)"
        return row

    sim.run_for(args.settle)
    sim.bytes_mode = "estimate"
    before, t0, wall1 = sim.stats.copy(), sim.now, time.perf_counter()
    victim = sim.live()[-1]
    sim.crash(victim)
    detected = sim.run_until_condition(
        lambda: sim.time_all_saw(victim, EventKind.DEAD, since=t0) is not None,
        timeout=args.detect_timeout, check_every=0.25)
    seconds = sim.now - t0
    live = len(sim.live())
    row.update({
        "detect_virtual_s": None if detected is None else round(detected - t0, 2),
        "wall_per_virtual_s": round((time.perf_counter() - wall1) / seconds, 3),
        "msgs_per_node_s": round(sim.rate("messages_sent", before, seconds, live), 2),
        "packets_per_node_s": round(sim.rate("packets_sent", before, seconds, live), 2),
        "bytes_per_node_s": round(sim.rate("bytes_sent", before, seconds, live), 1),
        "false_positives": len(sim.false_positives),
        "run_wall_s": round(time.perf_counter() - wall0, 1),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    })
    if args.rumor:
        sim.run_for(2.0)  # the DEAD rumors drain from the queues first
        row.update(rumor_spread(sim, args.rumor_timeout))
    return row


def rumor_spread(sim: Simulation, timeout: float) -> dict[str, Any]:
    """One state payload broadcast from a live member: virtual ms until half, 99 % and all live members had
    it (the origin has it at once), or how many never had it within `timeout` virtual seconds."""
    live = sim.live()
    logs = [d for i in live if isinstance(d := sim.delegates[i], PayloadLog)]
    payload = b"bench-sim-rumor"
    origin = live[len(live) // 3]
    origin_log = sim.delegates[origin]
    assert isinstance(origin_log, PayloadLog)
    origin_log.on_state_rumor(payload, sim.now)
    t0 = sim.now
    sim.broadcast(origin, payload)
    sim.run_until_condition(lambda: all(payload in d.first_seen for d in logs), timeout=timeout, check_every=0.005)
    missing = sum(1 for d in logs if payload not in d.first_seen)
    if missing:
        return {"rumor_missing": missing}
    times = sorted(d.first_seen[payload] - t0 for d in logs)
    return {"rumor_half_ms": round(times[len(times) // 2] * 1000, 1),
            "rumor_p99_ms": round(times[int(len(times) * 0.99)] * 1000, 1),
            "rumor_all_ms": round(times[-1] * 1000, 1), "rumor_missing": 0}


COLUMNS = ("nodes", "start", "join_virtual_s", "join_wall_s", "join_messages_per_node", "detect_virtual_s",
           "wall_per_virtual_s", "msgs_per_node_s", "packets_per_node_s", "bytes_per_node_s", "false_positives",
           "run_wall_s", "max_rss_mb", "rumor_half_ms", "rumor_p99_ms", "rumor_all_ms", "rumor_missing")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--starts", default="join,joined", help="join (from nothing), joined (pre-converged)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--spread", type=float, default=5.0, help="nodes start within this many virtual seconds")
    p.add_argument("--settle", type=float, default=30.0,
                   help="virtual seconds between join and the crash (lets the join's rumors drain)")
    p.add_argument("--join-timeout", type=float, default=300.0, help="virtual seconds")
    p.add_argument("--detect-timeout", type=float, default=120.0, help="virtual seconds")
    p.add_argument("--max-wall", type=float, default=600.0, help="wall seconds allowed for one join")
    p.add_argument("--broadcast", choices=("flood", "tree"), default=make_config().gossip.broadcast,
                   help="gossip.broadcast of the simulated nodes (the rumor's path); flood: immediate forwarding")
    p.add_argument("--rumor", action=argparse.BooleanOptionalAction, default=True,
                   help="measure one rumor's spread at the end")
    p.add_argument("--rumor-timeout", type=float, default=30.0, help="virtual seconds")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    starts = [s.strip() for s in args.starts.split(",")]
    if any(s not in ("join", "joined") for s in starts):
        p.error("--starts: join and/or joined")
    for n in (int(s) for s in args.sizes.split(",")):
        for start in starts:
            rows.append(run_size(n, start, args))
            if not args.json:
                print(f"{n} nodes ({start}) done", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = {c: max(len(c), *(len(str(r.get(c, "-"))) for r in rows)) for c in COLUMNS}
    print("  ".join(c.rjust(widths[c]) for c in COLUMNS))
    for r in rows:
        print("  ".join(str(r.get(c, "-")).rjust(widths[c]) for c in COLUMNS))
        if "note" in r:
            print(f"  ({r['nodes']} nodes: {r['note']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
