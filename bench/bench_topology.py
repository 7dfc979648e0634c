"""Topology: Vivaldi convergence, the cost/benefit of near/far peer choice, and the protocol across zones.

Tables 1 and 2 run the pure cores only (`core/vivaldi.py`, `core/topology.py`) through the standalone
drivers in `gossip_agent/sim/topology.py`; table 3 runs real Node cores in the membership simulator
(`gossip_agent/sim/zones.py`). All in virtual time; no agent processes, no network. Three tables:

1. Convergence: median relative RTT error (estimate vs base RTT, over all pairs) against virtual time, on the
   3-zone topology (1 ms inside a zone, 20/35/50 ms between) and a random geometric one (100 ms square plus
   0.2-2 ms access delays), each node probing one random peer per virtual second. Also p90, the median
   intra-zone error, `median_vs_probe` (estimate just before a probe vs that probe's measured RTT, over the
   probes since the previous checkpoint: what an agent can observe), and rows for Serf's cc = 0.25 and for a
   harsher jitter profile.
2. Choice: for each cross-zone fraction f, the share of chosen peers in another zone (3 equal zones), the
   reduction against uniform random choice, and a push epidemic over the chosen peers (fanout 3): rounds until
   every zone and every member is informed, against uniform choice.
3. Protocol: N real Nodes (default 1,000) in 3 zones with per-zone-pair latency, `topology.mode` random vs
   aware: cross-zone bytes under a steady write load (2 writes/s) and idle, write -> all t100, crash
   detection time and false positives (about a minute of CPU per mode and seed at N = 1,000).

    python bench/bench_topology.py [--nodes 200] [--seconds 120] [--mix-nodes 1000] [--seeds 20]
                                   [--fractions 0.05,0.1,0.15,0.2,0.3,0.5,0.667] [--protocol-nodes 1000]
                                   [--protocol-seeds 1,2] [--protocol-writes 30] [--payload-bytes 256]
                                   [--protocol-broadcast tree,flood] [--by-type]
                                   [--json [FILE]] [--plot DIR]

`--by-type` adds a table of the protocol run's cross-zone bytes under writes by message class (payloads,
announcements, grafts, prunes, probes, coordinates, rows, digests, headers, push-pull) and the tree's counters.

`--plot DIR` writes PNGs (convergence curves, estimated-vs-measured RTT scatter, rounds vs fraction) if
matplotlib happens to be installed; it is not a dependency of the project.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, get_args

from gossip_agent.core.config import BroadcastPath
from gossip_agent.core.topology import TopologyPolicy
from gossip_agent.core.vivaldi import Coordinate, VivaldiConfig, estimate_rtt
from gossip_agent.sim.topology import (
    HEAVY_JITTER,
    Jitter,
    Topology,
    choice_cross_zone_share,
    random_geometric,
    relative_errors,
    simulate_coordinates,
    spread_rounds,
    three_zones,
)
from gossip_agent.sim.zones import summary, sweep

TOPOLOGIES: dict[str, Callable[[int, random.Random], Topology]] = {
    "3-zones": three_zones,
    "geometric": random_geometric,
}


def intra_zone_median(topology: Topology, coords: list[Coordinate]) -> float:
    n = topology.size
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if topology.zones[i] == topology.zones[j]]
    return statistics.median(relative_errors(topology, coords, pairs))


def convergence(nodes: int, seconds: int, seed: int, every: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    variants: list[tuple[str, VivaldiConfig | None, Jitter | None]] = [
        ("default", None, None),
        ("serf-cc0.25", VivaldiConfig(cc=0.25), None),
        ("heavy-jitter", None, HEAVY_JITTER),
    ]
    rows: list[dict[str, Any]] = []
    scatter: dict[str, Any] = {}
    for topo_name, build in TOPOLOGIES.items():
        topology = build(nodes, random.Random(seed))
        for variant, config, jitter in variants:
            points: list[tuple[float, float, float, float | None]] = []

            def checkpoint(t: float, coords: list[Coordinate], topology: Topology = topology,
                           points: list[tuple[float, float, float, float | None]] = points) -> None:
                errors = sorted(relative_errors(topology, coords))
                p90 = errors[int(0.9 * (len(errors) - 1))]
                intra = intra_zone_median(topology, coords)
                points.append((t, statistics.median(errors), p90, intra))

            started = time.process_time()
            run = simulate_coordinates(topology, seconds, seed=seed, config=config, jitter=jitter,
                                       checkpoint_every=every, on_checkpoint=checkpoint)
            cpu = time.process_time() - started
            sample_errors = dict(run.sample_curve)
            for t, median, p90, intra in points:
                rows.append({"topology": topo_name, "variant": variant, "virtual_s": t,
                             "median_rel_error": round(median, 4), "p90_rel_error": round(p90, 4),
                             "median_vs_probe": round(sample_errors[t], 4),
                             "intra_zone_median": round(intra, 3) if intra is not None else None,
                             "run_cpu_s": round(cpu, 2)})
            if variant == "default":
                coords = run.coordinates()
                rng = random.Random(seed)
                pairs = [tuple(rng.sample(range(nodes), 2)) for _ in range(2000)]
                scatter[topo_name] = [(topology.rtt[i][j], estimate_rtt(coords[i], coords[j])) for i, j in pairs]
    return rows, scatter


def choice(mix_nodes: int, fractions: list[float], seeds: int) -> list[dict[str, Any]]:
    zones = [f"zone-{i % 3}" for i in range(mix_nodes)]
    policies: list[tuple[str, TopologyPolicy | None]] = [("uniform", None)]
    policies += [(f"{f:g}", TopologyPolicy(cross_zone_fraction=f)) for f in fractions]
    base_share = base_rounds = 0.0
    rows: list[dict[str, Any]] = []
    for label, policy in policies:
        share = choice_cross_zone_share(zones, k=3, policy=policy, seed=1, draws=20_000)
        runs = [spread_rounds(zones, fanout=3, policy=policy, seed=s) for s in range(seeds)]
        done = [r.rounds_to_all for r in runs if r.rounds_to_all is not None]
        rounds = statistics.mean(done) if done else float("nan")
        zone_rounds = statistics.mean(r.rounds_to_all_zones or 0 for r in runs)
        if policy is None:
            base_share, base_rounds = share, rounds
        rows.append({
            "cross_zone_fraction": label, "cross_zone_share": round(share, 4),
            "reduction_vs_uniform": round(base_share / share, 2) if share else None,
            "rounds_to_all_zones": round(zone_rounds, 2), "rounds_to_all": round(rounds, 2),
            "rounds_max": max(done) if done else None, "rounds_vs_uniform": round(rounds / base_rounds, 3),
            "unfinished_runs": len(runs) - len(done),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.rjust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).rjust(widths[k]) for k in keys))


def plot(directory: str, conv: list[dict[str, Any]], scatter: dict[str, Any], mix: list[dict[str, Any]]) -> None:
    try:
        import matplotlib  # optional, only for --plot
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; --plot skipped", file=sys.stderr)
        return
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots()
    for key in sorted({(r["topology"], r["variant"]) for r in conv}):
        pts = [(r["virtual_s"], r["median_rel_error"]) for r in conv if (r["topology"], r["variant"]) == key]
        ax.plot(*zip(*pts, strict=True), label=" ".join(key))
    ax.axhline(0.15, linestyle=":", color="grey")
    ax.set(xlabel="virtual seconds", ylabel="median relative RTT error", title="Vivaldi convergence, N=200")
    ax.legend()
    fig.savefig(out / "topology_convergence.png")
    for name, pts in scatter.items():
        fig, ax = plt.subplots()
        ax.scatter([p[0] * 1000 for p in pts], [p[1] * 1000 for p in pts], s=3)
        top = max(max(p) for p in pts) * 1000
        ax.plot([0, top], [0, top], color="grey")
        ax.set(xlabel="base RTT (ms)", ylabel="estimated RTT (ms)", title=f"estimated vs measured, {name}")
        fig.savefig(out / f"topology_scatter_{name}.png")
    fig, ax = plt.subplots()
    fr = [r for r in mix if r["cross_zone_fraction"] != "uniform"]
    ax.plot([float(r["cross_zone_fraction"]) for r in fr], [r["rounds_vs_uniform"] for r in fr], marker="o",
            label="rounds to all / uniform")
    ax.plot([float(r["cross_zone_fraction"]) for r in fr], [r["cross_zone_share"] for r in fr], marker="s",
            label="cross-zone share of picks")
    ax.set(xlabel="cross-zone fraction", title="near/far choice: cost and benefit")
    ax.legend()
    fig.savefig(out / "topology_fraction.png")
    print(f"plots written to {out}/", file=sys.stderr)


def protocol(nodes: int, seeds: list[int], writes: int, payload_bytes: int,
             fractions: list[float], paths: Sequence[BroadcastPath] = ("tree",),
             by_type: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Random vs topology-aware choice (at each fraction) in the membership simulator
    (gossip_agent/sim/zones.py), per broadcast path of the writes and seed. With `by_type` (a list), one row
    per run is appended to it: the write phase's cross-zone bytes by message class, and the tree's counters."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        for seed in seeds:
            t0 = time.process_time()
            runs = sweep(nodes, fractions, seed=seed, writes=writes, payload_bytes=payload_bytes, broadcast=path,
                         by_type=by_type is not None)
            cpu = time.process_time() - t0
            for row in summary(runs):
                rows.append({"broadcast": path, "seed": seed, **row, "cpu_s": round(cpu, 1)})
            if by_type is not None:
                by_type.extend({"broadcast": path, "seed": seed, "mode": r.mode, "fraction": r.fraction,
                                **r.write_cross_by_type,
                                **{k: v for k, v in r.write_tree_stats.items() if k in _TREE_COUNTERS}}
                               for r in runs)
    return rows


_TREE_COUNTERS = ("tree_pushes", "tree_duplicates", "tree_grafts", "tree_prunes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--every", type=int, default=10, help="checkpoint interval, virtual seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix-nodes", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=20, help="epidemic runs per fraction")
    parser.add_argument("--fractions", default="0.05,0.1,0.15,0.2,0.3,0.5,0.667")
    parser.add_argument("--protocol-nodes", type=int, default=1000,
                        help="N of the random-vs-aware protocol run (real Nodes in the simulator); 0 skips it")
    parser.add_argument("--protocol-seeds", default="1", help="comma list of seeds for the protocol run")
    parser.add_argument("--protocol-writes", type=int, default=30)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--protocol-fractions", default="0.15",
                        help="cross-zone fractions of the aware runs (comma list; each ~40 s of CPU at N=1,000)")
    parser.add_argument("--protocol-broadcast", default="tree",
                        help="gossip.broadcast of the protocol run's writes (comma list of tree, flood; flood is "
                             "immediate forwarding, then gossip rounds)")
    parser.add_argument("--by-type", action="store_true",
                        help="also split the protocol run's cross-zone bytes under writes by message class "
                             "(payloads, announcements, grafts, prunes, probes, digests, coordinates, rows, "
                             "headers, push-pull)")
    parser.add_argument("--json", nargs="?", const="-", default=None)
    parser.add_argument("--plot", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 2000 or not 3 <= args.mix_nodes <= 20000 or args.seconds < 1 or args.every < 1:
        parser.error("--nodes 2..2000, --mix-nodes 3..20000, --seconds and --every >= 1")
    fractions = [float(x) for x in args.fractions.split(",") if x]
    paths = [x for x in args.protocol_broadcast.split(",") if x]
    if not paths or any(x not in get_args(BroadcastPath) for x in paths):
        parser.error(f"--protocol-broadcast: a comma list of {', '.join(get_args(BroadcastPath))}")
    conv, scatter = convergence(args.nodes, args.seconds, args.seed, args.every)
    mix = choice(args.mix_nodes, fractions, args.seeds)
    by_type: list[dict[str, Any]] | None = [] if args.by_type else None
    proto = protocol(args.protocol_nodes, [int(x) for x in args.protocol_seeds.split(",") if x],
                     args.protocol_writes, args.payload_bytes,
                     [float(x) for x in args.protocol_fractions.split(",") if x],
                     paths, by_type) if args.protocol_nodes else []
    if args.json is not None:
        doc: dict[str, Any] = {"convergence": conv, "choice": mix, "protocol": proto}
        if by_type is not None:
            doc["protocol_by_type"] = by_type
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    if args.json != "-":
        print(f"# Vivaldi convergence, N={args.nodes}, one probe per node per virtual second")
        print_table(conv)
        print(f"\n# near/far choice, N={args.mix_nodes} in 3 equal zones, k=3, {args.seeds} epidemics per row")
        print_table(mix)
        if proto:
            print(f"\n# the protocol, N={args.protocol_nodes} real Nodes in 3 zones (1 ms inside, 20/35/50 ms "
                  f"between), {args.protocol_writes} writes of {args.payload_bytes} B at 2/s, then idle, then "
                  "crashes")
            print_table(proto)
        if by_type:
            print("\n# cross-zone bytes under writes by message class (header: packet bytes besides the "
                  "messages; push-pull: membership streams)")
            keys = sorted({k for r in by_type for k in r} - {"broadcast", "seed", "mode", "fraction"})
            print_table([{"broadcast": r["broadcast"], "seed": r["seed"], "mode": r["mode"],
                          "fraction": r["fraction"], **{k: r.get(k, 0) for k in keys}} for r in by_type])
    if args.plot:
        plot(args.plot, conv, scatter, mix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
