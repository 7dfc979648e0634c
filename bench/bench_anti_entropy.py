"""Anti-entropy cost between two 100,000-key replicas that differ in d keys (issue 3's target).

Runs the pure protocol in-process (`anti_entropy.exchange`) and accounts every request and response at its
msgpack-encoded size (`ae_codec.encoded_size`). The bound from the issue, per d:
    2 x (d x entry + 2 x hash x d x log2(n / d))   bytes,  and < 20 round trips,
with `entry` the mean encoded size of the entries that differ and `hash` = 32 (sha256).

    python bench/bench_anti_entropy.py [--keys 100000] [--diffs 1,10,100,1000] [--seed 1] [--json]
                                       [--bits 2 --depth 8]   (the Merkle shape; bits=4 depth=4: fan-out 16)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from typing import TypedDict

import msgpack

from gossip_agent.core.ae_codec import encoded_size
from gossip_agent.core.anti_entropy import exchange
from gossip_agent.core.kvstore import KvStore, entry_to_plain
from gossip_agent.core.merkle import HASH_BYTES

VALUE_BYTES = 64
T0 = 1_700_000_000_000


def build(n: int, rng: random.Random, bits: int, depth: int) -> tuple[KvStore, KvStore]:
    """Two identical replicas of n keys (b receives a's entries, as anti-entropy would deliver them)."""
    a = KvStore("node-a", record_changes=False, merkle_bits=bits, merkle_depth=depth)
    b = KvStore("node-b", record_changes=False, merkle_bits=bits, merkle_depth=depth)
    for i in range(n):
        entry = a.local_put(f"ns/key-{i:07d}", rng.randbytes(VALUE_BYTES), T0 + i)
        b.apply_remote(entry)
    return a, b


def diverge(a: KvStore, b: KvStore, n: int, d: int, now_ms: int, rng: random.Random) -> list[str]:
    """Make d keys differ: a third written on a, a third on b, a third concurrently on both."""
    keys = [f"ns/key-{i:07d}" for i in rng.sample(range(n), d)]
    for j, key in enumerate(keys):
        if j % 3 in (0, 2):
            a.local_put(key, rng.randbytes(VALUE_BYTES), now_ms)
        if j % 3 in (1, 2):
            b.local_put(key, rng.randbytes(VALUE_BYTES), now_ms)
    return keys


def entry_size(store: KvStore, key: str) -> int:
    """The msgpack-encoded size of a key's entry (every key `diverge` wrote is present on both replicas)."""
    entry = store.entry(key)
    assert entry is not None, key
    packed: bytes = msgpack.packb(entry_to_plain(entry), use_bin_type=True)
    return len(packed)


class Row(TypedDict):
    """One d of a run: the session's bytes and round trips against the issue's bound (the --json output)."""

    keys: int
    d: int
    fanout: int
    depth: int
    bytes: int
    sent: int
    received: int
    roundTrips: int
    entryBytes: float
    bound: int
    ratio: float
    pushed: int
    pulled: int
    seconds: float
    buildSeconds: float


def run(n: int, diffs: list[int], seed: int, bits: int = 2, depth: int = 8) -> list[Row]:
    rng = random.Random(seed)
    started = time.perf_counter()
    a, b = build(n, rng, bits, depth)
    build_s = time.perf_counter() - started
    rows: list[Row] = []
    now = T0 + n + 1000
    for d in diffs:
        keys = diverge(a, b, n, d, now, rng)
        entry_bytes = sum(entry_size(s, k) for s in (a, b) for k in keys) / (2 * d)
        bound = 2 * (d * entry_bytes + 2 * HASH_BYTES * d * math.log2(n / d))
        a.root_hex(), b.root_hex()  # settle the lazy hash refresh of the writes, so "secs" is the protocol
        t = time.perf_counter()
        report = exchange(a, b, now, size_of=encoded_size)
        elapsed = time.perf_counter() - t
        if a.root_hex() != b.root_hex():
            raise SystemExit(f"d={d}: replicas still differ after one session")
        rows.append({"keys": n, "d": d, "fanout": 1 << bits, "depth": depth, "bytes": report.bytes_total,
                     "sent": report.bytes_sent,
                     "received": report.bytes_received, "roundTrips": report.rounds,
                     "entryBytes": round(entry_bytes, 1), "bound": round(bound),
                     "ratio": round(report.bytes_total / bound, 3),
                     "pushed": report.pushed, "pulled": report.pulled, "seconds": round(elapsed, 3),
                     "buildSeconds": round(build_s, 2)})
        now += 1000
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--diffs", default="1,10,100,1000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bits", type=int, default=2, help="bits per Merkle level (fan-out 2**bits)")
    parser.add_argument("--depth", type=int, default=8)
    args = parser.parse_args(argv)
    rows = run(args.keys, [int(d) for d in args.diffs.split(",")], args.seed, args.bits, args.depth)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'keys':>7} {'d':>5} {'bytes':>9} {'bound':>9} {'ratio':>6} {'rtt':>4} {'entry B':>8} {'pushed':>7} "
          f"{'pulled':>7} {'secs':>6}")
    for r in rows:
        print(f"{r['keys']:>7} {r['d']:>5} {r['bytes']:>9} {r['bound']:>9} {r['ratio']:>6} {r['roundTrips']:>4} "
              f"{r['entryBytes']:>8} {r['pushed']:>7} {r['pulled']:>7} {r['seconds']:>6}")
    print(f"(Merkle fan-out {1 << args.bits}, depth {args.depth}; built two {args.keys}-key replicas in "
          f"{rows[0]['buildSeconds'] if rows else 0} s)")
    ok = all(r["ratio"] <= 1.0 and r["roundTrips"] < 20 for r in rows)
    print("within the issue's bound (bytes <= bound, round trips < 20):", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
