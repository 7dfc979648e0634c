"""The replicated state with real agent processes on 127.0.0.1 (issue 3's numbers).

1. latency: a write at one of N (50) agents, readable at all N. Every agent has a watch stream open
   (`GET /v1/watch?prefix=bench/`) to this process; for each write (at a random agent, one at a time) the
   latency is from just before the PUT is sent to the moment the change arrives on the *last* agent's stream
   (an agent emits it right after applying the write, i.e. when a read there would return it). Reported:
   median and p95 over the writes, plus the per-agent (any agent) median.
2. anti-entropy: two agents whose stores hold the same K (100,000) keys except D (10) — built directly as
   snapshots in their data dirs, so no time goes into loading — start; the second joins the first and the
   push-pull-on-join Merkle exchange repairs the difference. Reported: bytes (both directions, all sessions,
   from the agents' metrics) until the roots agree, and the state size for scale. The pure protocol bound is
   in bench/bench_anti_entropy.py.
3. load: R (1,000) writes/s spread round-robin over M (10) agents for S (20) s, from one asyncio client.
   Reported: the rate achieved, write latency, the time from the last acknowledged write until every
   agent's published root (GET /v1/status) is equal, and CPU (% of one core over the write window) and RSS
   per agent (from /proc).

    python bench/bench_state.py [--only latency,ae,load] [--agents 50] [--writes 30] [--ae-keys 100000]
                                [--ae-diff 10] [--load-agents 10] [--rate 1000] [--duration 20] [--json]

"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from gossip_agent.cli.client import parse_metrics
from gossip_agent.cli.cluster import AgentProcess, LocalCluster, free_port_block
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore

SPEC: dict[str, Any] = {"preset": "lan", "antiEntropy": {"interval": "10s"}, "storage": {"fsync": "interval"}}
TICKS = os.sysconf("SC_CLK_TCK")


def agent_config(name: str, port: int, seeds: list[str], data: Path, **extra: Any) -> dict[str, Any]:
    cfg = {**SPEC, "name": name, "bindAddress": "127.0.0.1", "advertiseAddress": "127.0.0.1", "port": port,
           "seeds": seeds, "storage": {**SPEC["storage"], "dataDir": str(data / name)}}
    cfg.update(extra)
    return cfg


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def wait_joined(session: aiohttp.ClientSession, agents: list[AgentProcess], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        statuses = await asyncio.gather(*(status(session, a) for a in agents))
        if all(s is not None and s["members"]["alive"] == len(agents) and "state" in s for s in statuses):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{len(agents)} agents did not all see each other within {timeout}s")


async def status(session: aiohttp.ClientSession, a: AgentProcess) -> dict[str, Any] | None:
    try:
        async with session.get(f"http://{a.addr}/v1/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return dict(await r.json()) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def roots(session: aiohttp.ClientSession, agents: list[AgentProcess]) -> set[str | None]:
    statuses = await asyncio.gather(*(status(session, a) for a in agents))
    return {None if s is None else s["state"]["root"] for s in statuses}


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- 1. latency ----------------------------------------------------------------------------------------------
async def bench_latency(root: Path, n: int, writes: int) -> dict[str, Any]:
    base = free_port_block(n)
    seeds = [f"127.0.0.1:{base + i}" for i in range(3)]
    with LocalCluster(root / "latency", log_level="warning") as c:
        agents = [c.start(agent_config(f"l{i}", base + i, seeds, root / "latency" / "data")) for i in range(n)]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            join_s = await wait_joined(session, agents, 120.0)
            await asyncio.sleep(2.0)  # let the first metadata round settle
            arrivals: dict[str, dict[str, float]] = {}
            ready = 0

            async def watch(a: AgentProcess) -> None:
                nonlocal ready
                async with session.get(f"http://{a.addr}/v1/watch?prefix=bench/",
                                       timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for line in r.content:
                        event = json.loads(line)
                        if event.get("event") == "watching":
                            ready += 1
                        elif event.get("event") == "put":
                            arrivals.setdefault(event["key"], {}).setdefault(a.name, time.perf_counter())

            watchers = [asyncio.create_task(watch(a)) for a in agents]
            while ready < n:
                await asyncio.sleep(0.05)
            rng = random.Random(1)
            all_lat: list[float] = []
            any_lat: list[float] = []
            for i in range(writes):
                key = f"bench/{i}"
                writer = agents[rng.randrange(n)]
                t0 = time.perf_counter()
                async with session.put(f"http://{writer.addr}/v1/kv/{key}", data=os.urandom(100)) as r:
                    assert r.status == 200, await r.text()
                deadline = time.perf_counter() + 10.0
                while len(arrivals.get(key, {})) < n and time.perf_counter() < deadline:
                    await asyncio.sleep(0.002)
                seen = arrivals.get(key, {})
                if len(seen) == n:
                    all_lat.append(max(seen.values()) - t0)
                any_lat.extend(t - t0 for name, t in seen.items() if name != writer.name)
                await asyncio.sleep(0.2)
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            rss = [proc_rss_mib(a.pid) for a in agents]
    return {"agents": n, "writes": writes, "joined_s": round(join_s, 2), "complete": len(all_lat),
            "all_median_ms": round(statistics.median(all_lat) * 1000, 1) if all_lat else None,
            "all_p95_ms": round(pct(all_lat, 95) * 1000, 1) if all_lat else None,
            "each_median_ms": round(statistics.median(any_lat) * 1000, 1) if any_lat else None,
            "rss_mib_median": round(statistics.median(rss), 1)}


# -- 2. anti-entropy -----------------------------------------------------------------------------------------
def write_store(data_dir: Path, store: KvStore) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "snapshot").write_bytes(msgpack.packb(store.snapshot(), use_bin_type=True))
    (data_dir / "replica-id").write_text(store.node + "\n")


async def bench_anti_entropy(root: Path, keys: int, diff: int) -> dict[str, Any]:
    rng = random.Random(7)
    t0 = 1_700_000_000_000
    a = KvStore("ae0@aaaaaa", StateConfig(), record_changes=False)
    b = KvStore("ae1@bbbbbb", StateConfig(), record_changes=False)
    for i in range(keys):
        entry = a.local_put(f"ns/key-{i:07d}", rng.randbytes(64), t0 + i)
        b.apply_remote(entry)
    for j, i in enumerate(rng.sample(range(keys), diff)):
        (a if j % 2 else b).local_put(f"ns/key-{i:07d}", rng.randbytes(64), t0 + keys + 1000)
    state_bytes = len(msgpack.packb(a.snapshot(), use_bin_type=True))
    data = root / "ae" / "data"
    write_store(data / "ae0", a)
    write_store(data / "ae1", b)
    base = free_port_block(2)
    slow = {"antiEntropy": {"interval": "600s"}}
    with LocalCluster(root / "ae", log_level="warning") as c:
        first = c.start(agent_config("ae0", base, [], data, **slow))
        async with aiohttp.ClientSession() as session:
            while await status(session, first) is None:
                await asyncio.sleep(0.1)
            started = time.monotonic()
            second = c.start(agent_config("ae1", base + 1, [f"127.0.0.1:{base}"], data, **slow))
            while True:
                r = await roots(session, [first, second])
                if len(r) == 1 and None not in r:
                    break
                if time.monotonic() - started > 120:
                    raise RuntimeError("the two replicas did not agree within 120 s")
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            total = 0.0
            sessions = rounds = repaired = 0.0
            for agent in (first, second):
                m = parse_metrics(agent.client.metrics())
                total += sum(v for k, v in m.items() if k.startswith("gossip_antientropy_bytes_total"))
                sessions += m.get("gossip_antientropy_sessions_total", 0)
                rounds += m.get("gossip_antientropy_rounds_total", 0)
                repaired += sum(v for k, v in m.items() if k.startswith("gossip_antientropy_keys_repaired_total")
                                and ('"pulled"' in k or '"pushed_in"' in k))
    return {"keys": keys, "differing": diff, "ae_bytes": int(total), "sessions": int(sessions),
            "rounds": int(rounds), "keys_repaired": int(repaired), "state_bytes": state_bytes,
            "start_to_agreement_s": round(elapsed, 2)}


# -- 3. sustained load ---------------------------------------------------------------------------------------
async def bench_load(root: Path, m: int, rate: int, duration: float) -> dict[str, Any]:
    base = free_port_block(m)
    seeds = [f"127.0.0.1:{base + i}" for i in range(3)]
    with LocalCluster(root / "load", log_level="warning") as c:
        agents = [c.start(agent_config(f"w{i}", base + i, seeds, root / "load" / "data")) for i in range(m)]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_joined(session, agents, 60.0)
            await asyncio.sleep(2.0)
            cpu0 = [proc_cpu_seconds(a.pid) for a in agents]
            latencies: list[float] = []
            errors = 0
            value = os.urandom(100)
            sem = asyncio.Semaphore(256)

            async def write(i: int) -> None:
                nonlocal errors
                agent = agents[i % m]
                async with sem:
                    t = time.perf_counter()
                    try:
                        async with session.put(f"http://{agent.addr}/v1/kv/load/{i % 20000}", data=value) as r:
                            await r.read()
                            if r.status != 200:
                                errors += 1
                                return
                    except aiohttp.ClientError:
                        errors += 1
                        return
                    latencies.append(time.perf_counter() - t)

            tasks: list[asyncio.Task[None]] = []
            started = time.perf_counter()
            total = int(rate * duration)
            for i in range(total):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(write(i)))
            await asyncio.gather(*tasks)
            stopped = time.perf_counter()
            window = stopped - started
            cpu = [(proc_cpu_seconds(a.pid) - c0) / window * 100 for a, c0 in zip(agents, cpu0, strict=True)]
            rss = [proc_rss_mib(a.pid) for a in agents]
            converged: float | None = None
            timeline: list[tuple[float, int]] = []
            while time.perf_counter() - stopped < 60:
                r = await roots(session, agents)
                timeline.append((round(time.perf_counter() - stopped, 2), len(r)))
                if len(r) == 1 and None not in r:
                    converged = time.perf_counter() - stopped
                    break
                await asyncio.sleep(0.05)
            repaired = 0.0
            if os.environ.get("BENCH_DEBUG"):
                udp = [line.split() for line in Path("/proc/net/udp").read_text().splitlines()[1:]]
                print("udp drops:", sum(int(f[-1]) for f in udp), file=sys.stderr)
            for a in agents:
                mm = parse_metrics(a.client.metrics())
                if os.environ.get("BENCH_DEBUG"):
                    print(a.name, {k: v for k, v in mm.items() if "dropped" in k or "rumors" in k
                                   or "stream_ops" in k or "queue" in k}, file=sys.stderr)
                repaired += sum(v for k, v in mm.items() if k.startswith("gossip_antientropy_keys_repaired_total")
                                and ('"pulled"' in k or '"pushed_in"' in k))
            changes = [t for i, t in enumerate(timeline) if i == 0 or t[1] != timeline[i - 1][1]]
            conv_status = [s for s in await asyncio.gather(*(status(session, a) for a in agents)) if s]
    return {"agents": m, "target_rate": rate, "duration_s": duration,
            "achieved_rate": round(len(latencies) / window, 1), "errors": errors,
            "write_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "write_p95_ms": round(pct(latencies, 95) * 1000, 1) if latencies else None,
            "converged_after_stop_s": None if converged is None else round(converged, 2),
            "distinct_roots_timeline": changes, "keys_repaired_by_anti_entropy": int(repaired),
            "keys": conv_status[0]["state"]["keys"] if conv_status else None,
            "cpu_pct_per_agent": {"median": round(statistics.median(cpu), 1), "max": round(max(cpu), 1)},
            "rss_mib_per_agent": {"median": round(statistics.median(rss), 1), "max": round(max(rss), 1)}}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, row in results.items():
        lines.append(f"[{name}]")
        for key, value in row.items():
            lines.append(f"  {key:<26} {value}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    only = set(args.only.split(","))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        root = Path(tmp)
        if "latency" in only:
            results["latency"] = await bench_latency(root, args.agents, args.writes)
        if "ae" in only:
            results["anti_entropy"] = await bench_anti_entropy(root, args.ae_keys, args.ae_diff)
        if "load" in only:
            results["load"] = await bench_load(root, args.load_agents, args.rate, args.duration)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="latency,ae,load")
    p.add_argument("--agents", type=int, default=50)
    p.add_argument("--writes", type=int, default=30)
    p.add_argument("--ae-keys", type=int, default=100_000)
    p.add_argument("--ae-diff", type=int, default=10)
    p.add_argument("--load-agents", type=int, default=10)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
