"""Critical against normal writes with one CPU per agent: the simulator, where every member has its own core.

WHY. The issue's priority target (critical t100 <= 0.5x that of normal writes under a 100 writes/s background)
is measured by bench_load.py on loopback, 10 or 50 agent processes sharing the bench machine's 2 cores. There a
write reaches its last agent only after its deliveries' CPU has run on those 2 cores (bench_load
`cpu_spread_per_write_ms`), whatever its route: the critical write's one wide hop (its writer sends it to every
member, core/critical.py) and a normal write's hops down the broadcast tree both wait for the same shared CPU,
and both classes come out near that CPU-bound scale. Deployed, each agent is a pod with a CPU of its own, and a
hop costs one member's handling and one link, not a turn on a machine-wide queue. This bench runs that case: the
product's cores (Node, StateNode, the tree) in the simulator (gossip_agent/sim/, virtual time, deterministic
given the seed), each member charged its own CPU for every datagram it handles (`--cpu-per-packet`) and every
datagram it sends (`--cpu-per-send`, one after another), over links of `--latency` one way plus up to
`--jitter`.

The scenario is bench_load's critical one: a warm-up (each member writes once, at the scenario's rate, and the
digests spread, so members learn who reads which message type), then `--writes` writes of `--size` bytes at
`--rate` a second through random members, every `--critical-every`-th flagged critical. A write's t100 runs from
its put at its writer to the moment the last member applied it (exact virtual times: every member's store notes
each apply, whichever way the value came: rumor, fetch or anti-entropy). Defaults: 0.3 ms of CPU per datagram
handled (what an agent spent per delivery under load on the bench machine, bench/REPORT.md), 13 us per datagram
sent (measured on it: 4.6 us in the Node core choosing and packing each copy of a critical write to 49 members, 8.5
us in the runtime's encode, seal with a keyring and sendto; 4.5 us without a keyring), and the loopback-like link
of 0.1 ms plus up to 0.1 ms; `--latency 0.001 --jitter 0.001` is the simulator's LAN default.

What it showed (300 writes of 1 KiB at 100/s, every 10th critical, seeds 1 / 2 / 3): critical against normal
t100 median at N=10 0.59 / 0.58 / 0.58 against 1.43 / 1.03 / 1.42 ms (0.41x / 0.57x / 0.41x: seed 2's tree was
shallow); N=20 0.72 against 2.10 / 1.93 / 1.52 ms (0.34x-0.47x); N=50 1.09-1.11 against 2.36-2.45 ms
(0.44x-0.46x); N=200 (seeds 1, 2) 1.99 / 1.96 against 5.27 / 4.93 ms (0.38x / 0.40x). At N=50 most of a critical
write's time is its writer sending 49 copies one after another, so the ratio there follows the cost of a send
(earlier runs: 0.40x at 10 us, 0.48x at 20 us, 0.58x at 30 us).

The members join as agents do (seeds, then first contact with each member they learn of), not with ready-made
tables (`StateSimulation.start_joined`). WHY: first contact is where a member learns which peers read the
critical message type (core/readers.py); with ready-made tables a member knew ~23 of 199 others as readers 15 s
in, so at N=200 most copies of a critical write went plain (an older agent drops the type), reached members
holding it already as normal duplicates, and cut tree links: normal writes took 90-170 ms instead of 5 (critical
2.8 ms: 0.02x, a ratio that measured the shortcut, not the product).

    python bench/bench_critical_sim.py [--n 10,50] [--writes 300] [--rate 100] [--size 1024]
                                       [--critical-every 10] [--seeds 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gossip_agent.sim.cluster import make_config
from gossip_agent.sim.network import LinkProfile
from gossip_agent.sim.state import StateSimulation

WARM_UP_S = 10.0
"""Virtual seconds after the warm-up writes: digests spread, and with them who reads which message type."""
DRAIN_S = 30.0
JOIN_SPREAD_S = 5.0
"""Virtual seconds over which the members start (the first `seeds` first), as a rollout starts them."""
JOIN_TIMEOUT_S = 120.0
"""Virtual seconds within which every member must know every other alive."""
"""Virtual seconds after the last write within which every write must have reached every member."""


@dataclass(frozen=True)
class Params:
    """One scenario: the cluster, the writes and each member's CPU and links."""

    n: int
    seed: int = 1
    writes: int = 300
    rate: float = 100.0
    size: int = 1024
    critical_every: int = 10
    cpu_per_packet: float = 0.0003
    cpu_per_send: float = 0.000013
    latency: float = 0.0001
    jitter: float = 0.0001


def _watched(put: Callable[..., None], i: int, n: int, s: StateSimulation,
             pending: dict[str, tuple[float, bool, set[int]]], done: dict[str, list[float]]) -> Callable[..., None]:
    """Member i's store write (`KvStore._put`, which every apply goes through: the writer's own, a rumor's, a
    fetched value's, an anti-entropy repair's), then: the write's arrival at i, stamped at the virtual time
    it happened, and its t100 once every member holds it."""

    def put_and_note(key: str, *args: Any, **kwargs: Any) -> None:
        put(key, *args, **kwargs)
        if key in pending:
            at, critical, have = pending[key]
            have.add(i)
            if len(have) == n:
                done["critical" if critical else "normal"].append(s.sim.now - at)
                del pending[key]

    return put_and_note


def t100_by_class(p: Params) -> dict[str, list[float]]:
    """Write -> all times (virtual seconds) of the critical and the normal writes; "never" lists the writes that
    missed a member DRAIN_S after the last write (as 0.0 entries, one each)."""
    s = StateSimulation(p.n, seed=p.seed, config=make_config("lan"),
                        link=LinkProfile(latency=p.latency, jitter=p.jitter),
                        cpu_per_packet=p.cpu_per_packet, cpu_per_send=p.cpu_per_send)
    # Joined as agents join (seeds, then first contact with each member learnt): `start_joined`'s ready-made
    # tables skip first contact, where members learn which of them read the critical type (core/readers.py),
    # so critical copies to the others went plain, and at N=200 their duplicates cut tree links (see WHY).
    s.sim.start_all(seeds=3, spread=JOIN_SPREAD_S)
    if s.sim.run_until_condition(s.sim.converged, timeout=JOIN_TIMEOUT_S, check_every=0.5) is None:
        raise RuntimeError(f"N={p.n} seed {p.seed}: the members did not all join within {JOIN_TIMEOUT_S} s")
    for i in range(p.n):  # one write each, at the scenario's rate: N writes at once would prune the young tree
        s.put(i, f"warm/{i}", b"w")  # into a forest, which the measured writes would then repair by grafts
        s.sim.run_for(1.0 / p.rate)
    s.sim.run_for(WARM_UP_S)

    pending: dict[str, tuple[float, bool, set[int]]] = {}  # key -> (put at, critical, members holding it)
    done: dict[str, list[float]] = {"critical": [], "normal": [], "never": []}
    for i, store in s.stores.items():
        store._put = _watched(store._put, i, p.n, s, pending, done)  # type: ignore[method-assign]
    rng = random.Random(p.seed)
    start = s.sim.now
    for w in range(1, p.writes + 1):
        s.sim.run_until(start + (w - 1) / p.rate)
        writer = rng.randrange(p.n)
        key = f"k{w}"
        critical = p.critical_every > 0 and w % p.critical_every == 0
        pending[key] = (s.sim.now, critical, set())
        s.put(writer, key, bytes(p.size), critical=critical)
    end = s.sim.now + DRAIN_S
    while pending and s.sim.now < end:
        s.sim.run_for(0.1)
    done["never"] = [0.0] * len(pending)
    return done


def summarise(p: Params, done: dict[str, list[float]], wall_s: float) -> dict[str, Any]:
    """One row: per class the writes, median and p99 t100 (ms), and the critical/normal ratio of medians."""
    row: dict[str, Any] = {"params": asdict(p), "wall_s": round(wall_s, 1), "never_all": len(done["never"])}
    for cls in ("critical", "normal"):
        xs = sorted(done[cls])
        row[cls] = {"writes": len(xs),
                    "t100_median_ms": round(1000 * statistics.median(xs), 3) if xs else None,
                    "t100_p99_ms": round(1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))], 3) if xs else None}
    c, m = row["critical"]["t100_median_ms"], row["normal"]["t100_median_ms"]
    row["critical_over_normal_median"] = round(c / m, 2) if c is not None and m else None
    return row


def run(sizes: list[int], seeds: list[int], **kw: Any) -> dict[str, Any]:
    """Every size and seed, one after the other (each deterministic)."""
    rows = []
    for n in sizes:
        for seed in seeds:
            p = Params(n=n, seed=seed, **kw)
            t0 = time.monotonic()
            row = summarise(p, t100_by_class(p), time.monotonic() - t0)
            print(f"N={n} seed {seed}: critical {row['critical']['t100_median_ms']} ms, normal "
                  f"{row['normal']['t100_median_ms']} ms median t100 ({row['critical_over_normal_median']}x), "
                  f"never all {row['never_all']}, {row['wall_s']} s wall", file=sys.stderr, flush=True)
            rows.append(row)
    return {"critical_sim": {"rows": rows}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Params(n=0)
    ap.add_argument("--n", default="10,50", help="comma list of cluster sizes (default %(default)s)")
    ap.add_argument("--seeds", default="1", help="comma list of seeds (default %(default)s)")
    ap.add_argument("--writes", type=int, default=d.writes)
    ap.add_argument("--rate", type=float, default=d.rate, help="writes per virtual second")
    ap.add_argument("--size", type=int, default=d.size, help="value bytes")
    ap.add_argument("--critical-every", type=int, default=d.critical_every)
    ap.add_argument("--cpu-per-packet", type=float, default=d.cpu_per_packet, help="seconds per datagram handled")
    ap.add_argument("--cpu-per-send", type=float, default=d.cpu_per_send, help="seconds per datagram sent")
    ap.add_argument("--latency", type=float, default=d.latency, help="one-way link latency, seconds")
    ap.add_argument("--jitter", type=float, default=d.jitter, help="up to this much more, seconds")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    out = run([int(x) for x in a.n.split(",")], [int(x) for x in a.seeds.split(",")], writes=a.writes,
              rate=a.rate, size=a.size, critical_every=a.critical_every, cpu_per_packet=a.cpu_per_packet,
              cpu_per_send=a.cpu_per_send, latency=a.latency, jitter=a.jitter)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    else:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
