"""`python -m gossip_agent.sim`: join a simulated cluster, crash a few members, print what happened.

Phases, all in virtual time: (1) every node starts within `--spread` seconds and joins through the seeds,
until all see all alive (join convergence); (2) `--crash` random members crash at once and the run goes on
for `--duration` seconds, measuring detection times, false positives and steady traffic (bytes estimated from
the codec's message sizes during this phase only, as it costs time).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

from gossip_agent.core.config import PRESETS
from gossip_agent.sim.cluster import Simulation, make_config
from gossip_agent.sim.network import LinkProfile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gossip_agent.sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preset", choices=PRESETS, default="lan")
    p.add_argument("--loss", type=float, default=0.0, help="random datagram loss, 0..1 (whole run)")
    p.add_argument("--latency", type=float, default=0.001, help="one-way latency, seconds")
    p.add_argument("--jitter", type=float, default=0.001, help="extra uniform random latency, seconds")
    p.add_argument("--duration", type=float, default=60.0, help="virtual seconds after join convergence")
    p.add_argument("--crash", type=int, default=1, help="members crashed once the cluster converged")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--spread", type=float, default=5.0, help="nodes start within this many seconds")
    p.add_argument("--join-timeout", type=float, default=300.0, help="virtual seconds allowed to converge")
    p.add_argument("--no-immediate-forward", action="store_true")
    p.add_argument("--no-tcp-fallback", action="store_true", help="UDP-only probing (pure SWIM+Lifeguard)")
    p.add_argument("--indirect-checks", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    membership: dict[str, Any] = {}
    if args.no_tcp_fallback:
        membership["tcp_fallback_probe"] = False
    if args.indirect_checks is not None:
        membership["indirect_checks"] = args.indirect_checks
    gossip: dict[str, Any] = {"immediate_forward": False} if args.no_immediate_forward else {}
    config = make_config(args.preset, membership=membership, gossip=gossip)
    sim = Simulation(args.nodes, seed=args.seed, config=config,
                     link=LinkProfile(latency=args.latency, jitter=args.jitter, loss=args.loss))
    wall0 = time.perf_counter()
    sim.start_all(seeds=args.seeds, spread=args.spread)
    joined = sim.run_until_condition(sim.converged, timeout=args.join_timeout, check_every=0.25)
    wall_join = time.perf_counter() - wall0
    out: dict[str, Any] = {
        "nodes": args.nodes, "seed": args.seed, "preset": args.preset, "loss": args.loss,
        "join_converged_at": joined, "join_wall_seconds": round(wall_join, 2),
        "join_messages": sim.stats["messages_sent"], "join_syncs": sim.stats["syncs"],
    }
    if joined is None:
        out["error"] = f"did not converge within {args.join_timeout} virtual seconds"
        return out

    rng = random.Random(f"crash:{args.seed}")
    victims = rng.sample([i for i in sim.live() if i not in sim.seeds], min(args.crash, args.nodes - 1 -
                                                                           len(sim.seeds)))
    before = sim.stats.copy()
    t0, wall1 = sim.now, time.perf_counter()
    sim.bytes_mode = "estimate"
    fp_before = len(sim.false_positives)
    for v in victims:
        sim.crash(v)
    sim.run_for(args.duration)
    wall_run = time.perf_counter() - wall1
    n_live = len(sim.live())
    detections = {sim.names[v]: sim.detection_time(v) for v in victims}
    out.update({
        "crashed": len(victims),
        "detection_seconds": {k: None if v is None else round(v, 3) for k, v in detections.items()},
        "false_positives": len(sim.false_positives) - fp_before,
        "false_positives_during_join": fp_before,
        "suspicions": sim.stats["event_suspect"] - before["event_suspect"],
        "refutations": sum(n.stats["refutations"] for n in sim.nodes if n is not None),
        "messages_per_node_per_s": round(sim.rate("messages_sent", before, args.duration, n_live), 2),
        "packets_per_node_per_s": round(sim.rate("packets_sent", before, args.duration, n_live), 2),
        "bytes_per_node_per_s": round(sim.rate("bytes_sent", before, args.duration, n_live), 1),
        "sync_rows_per_node_per_s": round(sim.rate("sync_rows", before, args.duration, n_live), 2),
        "wall_per_virtual_second": round(wall_run / max(sim.now - t0, 1e-9), 4),
        "stuck_deadlines": sim.stats["stuck_deadlines"],
    })
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if isinstance(value, dict):
                done = [v for v in value.values() if v is not None]
                text = (f"{len(done)}/{len(value)} detected; min {min(done):.2f}s, max {max(done):.2f}s"
                        if done else f"0/{len(value)} detected")
                print(f"{key:<{width}}  {text}")
            else:
                print(f"{key:<{width}}  {value}")
    return 0 if "error" not in summary else 1


if __name__ == "__main__":
    sys.exit(main())
