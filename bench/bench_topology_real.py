"""Topology with real agents: groups of agent processes in network namespaces, a real delay between groups.

Each group is a zone: its hosts share a bridge, and traffic between groups goes through a router namespace
that delays it (iptables NFQUEUE + tests/chaos/nfq_delay.py; no `tc netem` on our machines) and counts its
bytes per ordered pair of groups (nftables counters; traffic inside a group is counted on the bridges).
The harness is tests/chaos/zones_netns.py (needs root, nft/iptables and PyPI netfilterqueue).

For each mode (a fresh set of namespaces and agents each time, one mode after the other):
  join        N agents start (the first of each group seeds the rest); time until every agent sees all N alive;
  settle      --settle seconds of normal running (probes feed the coordinates), then up to --coord-timeout
              more until every agent holds every member's coordinate (the time it took is reported);
  rtt         ICMP round trips between one host of each pair of groups (median of 20; the "measured" RTT),
              beside the agents' estimates (`GET /v1/rtt?from=a&to=b` asked at a, for every ordered pair):
              median estimate per group pair, its error against the measured RTT, and how many agents'
              estimates separate their own group from the others (by median, and strictly: every other-group
              estimate above every own-group one);
  bytes       split by protocol: UDP (probes, gossip) and TCP (push-pull and anti-entropy streams);
  idle bytes  agent-to-agent bytes per group pair over --idle seconds (router counters), cross-zone share;
  writes      --writes PUTs at --rate/s to random agents; every agent's watch stream (GET /v1/watch) stamps the
              arrival; write->all t100 per write (median, p90, max) and the bytes per group pair meanwhile;
  failures    members any agent reports suspect or dead, and "member X dead" log lines (0 expected: nobody
              fails here, so any is a false positive);
  kills       with --kill (instead of the last --tail seconds of watching): --kills agents (default 6) spread
              over the groups are killed (SIGKILL), one every --kill-stagger seconds; for each, the time until
              every survivor had it dead (the detection time; median and p90 over the victims, and the
              aware/uniform ratio of both), split into first suspicion, first "dead" and the spread of the
              news, all read from the survivors' own logs; a survivor suspected or declared dead by a survivor
              meanwhile is a false suspicion / false positive.

Modes: `aware` (each agent knows its zone: topology.zone, crossZoneFraction as configured, default 0.15) and
`uniform` (the same agents with topology-aware peer choice off: uniform random choice, as before). With
`--base-tree DIR` (a checkout of an earlier version, e.g. `git worktree add /tmp/base HEAD~1`) the mode `base`
is `aware` run by that tree's agent (PYTHONPATH=DIR/agent): before and after a change in one invocation,
compared like aware (`base_comparison`: base against uniform; `aware_vs_base`: how many times fewer
cross-zone bytes aware sends than base).

    sudo .venv/bin/python bench/bench_topology_real.py [--groups 10,10,10] [--rtt-ms 20,35,50]
         [--modes aware,uniform] [--settle 40] [--idle 30] [--writes 30] [--rate 2]
         [--kill [--kills 6] [--kill-stagger 0.5]] [--json [FILE]]

`--rtt-ms` lists the round trip of each pair of groups in order (0-1, 0-2, ..., 1-2, ...), split evenly between
the two directions; one value applies to every pair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.netns import AgentProc, environment_problem, join_netns  # noqa: E402
from tests.chaos.zones_netns import (  # noqa: E402
    CrossZoneSniffer,
    ZonedAgents,
    ZonedTestbed,
    ZoneLayout,
    delayer_problem,
    icmp_rtts,
    zone_name,
)

T = TypeVar("T")
MAX_AGENTS = 200


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def pct(xs: Sequence[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# ---- modes ----------------------------------------------------------------------------------------------------


def mode_spec(mode: str, base: Mapping[str, Any], group: int, fraction: float | None) -> dict[str, Any]:
    """What `mode` adds to the config of an agent of `group`."""
    spec: dict[str, Any] = json.loads(json.dumps(base))
    topology = dict(spec.get("topology") or {})
    if mode in ("aware", "base"):
        topology["zone"] = zone_name(group)
        if fraction is not None:
            topology["crossZoneFraction"] = fraction
    elif mode == "uniform":
        topology.update(UNIFORM)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if topology:
        spec["topology"] = topology
    return spec


# How the agent is told to choose peers uniformly at random (topology-aware choice off).
UNIFORM: dict[str, Any] = {"mode": "random"}


# ---- talking to every agent from the router namespace ----------------------------------------------------------


class RouterLoop:
    """An asyncio loop in a thread that joined the router namespace: it reaches every group's hosts directly
    (local to the router, so its requests are neither delayed nor counted as agent-to-agent traffic)."""

    def __init__(self, ns: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ns,), name="router-loop", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self, ns: str) -> None:
        def body() -> None:
            asyncio.set_event_loop(self.loop)
            self._ready.set()
            self.loop.run_forever()

        join_netns(ns)
        body()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 600.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# ---- one run ---------------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, mode: str, layout: ZoneLayout, workdir: Path) -> None:
        self.args = args
        self.mode = mode
        self.layout = layout
        self.workdir = workdir
        self.result: dict[str, Any] = {"mode": mode, "groups": list(layout.sizes), "n": sum(layout.sizes)}

    def start_agents(self, net: ZonedAgents) -> list[AgentProc]:
        return net.start_all(lambda group: mode_spec(self.mode, {}, group, self.args.fraction))

    def execute(self) -> dict[str, Any]:
        bed = ZonedTestbed(self.layout, self.workdir)  # not `as bed`: Testbed.__enter__ is typed as the base class
        with bed:
            base = yaml.safe_load(self.args.spec) if self.args.spec else {"preset": "lan"}
            net = ZonedAgents(bed, base)
            router = RouterLoop(bed.router_ns)
            self.sniffer = CrossZoneSniffer(bed) if self.args.by_type else None
            try:
                return self._execute(bed, net, router)
            finally:
                if self.sniffer is not None:
                    self.sniffer.close()
                router.close()

    def _execute(self, bed: ZonedTestbed, net: ZonedAgents, router: RouterLoop) -> dict[str, Any]:
        args, res = self.args, self.result
        n = len(bed.hosts)
        t0 = time.monotonic()
        agents = self.start_agents(net)
        names = [a.name for a in agents]
        deadline = t0 + args.join_timeout
        joined = False
        while time.monotonic() < deadline:
            if net.sees(agents, {name: ("alive",) for name in names}):
                joined = True
                break
            time.sleep(1.0)
        res["join_s"] = r3(time.monotonic() - t0) if joined else None
        if not joined:
            res["error"] = "not every agent saw all alive before --join-timeout"
            res["diagnostics"] = net.diagnostics()[-4000:]
            return res
        log(f"{self.mode}: {n} agents joined in {res['join_s']} s; settling {args.settle} s")
        bad_views: set[tuple[str, str, str]] = set()

        def watch_views(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for a in agents:
                    view = net.members(a) or {}
                    for who, state in view.items():
                        if state != "alive":
                            bad_views.add((a.name, who, state))
                time.sleep(max(1.0, seconds / 10))

        watch_views(args.settle)
        # A member learns a peer's coordinate from that peer's ack, so it knows all of them once its probe
        # round robin has passed every member (~N probe intervals, longer under Lifeguard's slowdown, and
        # members that joined mid-round wait a second round). Wait for that, bounded, rather than hope the
        # settle time was long enough: the time it took is part of the result.
        res["coordinates_complete_s"] = self.wait_for_coordinates(net, agents, args.coord_timeout, watch_views)
        log(f"{self.mode}: every coordinate known {res['coordinates_complete_s']} s after the settle")
        res["rtt"] = self.measure_rtt(bed, net, agents)
        log(f"{self.mode}: rtt {json.dumps(res['rtt'].get('summary'))}")
        res["coordinates"] = self.own_coordinates(bed, net, agents)
        log(f"{self.mode}: own coordinates {json.dumps(res['coordinates']['summary'])}")
        b0, s0 = bed.pair_bytes_by_proto(), self.sniffed()
        watch_views(args.idle)
        b1, s1 = bed.pair_bytes_by_proto(), self.sniffed()
        res["idle_bytes"] = self.bytes_summary(b0, b1, args.idle)
        if self.sniffer is not None:
            res["idle_by_type"] = by_type(s0, s1)
        log(f"{self.mode}: idle bytes {json.dumps(res['idle_bytes']['summary'])}")
        res["writes"] = router.call(self.writes(agents), timeout=args.writes / args.rate + 300)
        b2, s2 = bed.pair_bytes_by_proto(), self.sniffed()
        res["write_bytes"] = self.bytes_summary(b1, b2, res["writes"].get("window_s") or 1.0)
        if self.sniffer is not None:
            res["write_by_type"] = by_type(s1, s2)
        log(f"{self.mode}: t100 {json.dumps(res['writes'].get('t100'))}, "
            f"bytes {json.dumps(res['write_bytes']['summary'])}")
        if not args.kill:
            # With the failure phase next, it watches instead: it reads every survivor's member events.
            watch_views(args.tail)
        dead_lines = {a.name: net.dead_reports(a) for a in agents}
        res["false_positives"] = {
            "non_alive_views": sorted(f"{o} saw {w} {s}" for o, w, s in bad_views),
            "dead_log_lines": sum(len(v) for v in dead_lines.values()),
        }
        if args.kill:
            t_phase, load_before = time.monotonic(), loadavg()
            res["detection"] = self.detection(bed, agents)
            res["detection"]["phase_s"] = r3(time.monotonic() - t_phase)
            # The machine's 1-minute load before and after the phase: timings compare across modes only when
            # both ran on a machine that was not starving the agents (the modes run minutes apart).
            res["detection"]["load_1min"] = [x[0] for x in (load_before, loadavg()) if x]
            d = res["detection"]
            log(f"{self.mode}: {d['kills']} killed, every survivor saw each dead after median "
                f"{d['all_dead_median_s']} s (p90 {d['all_dead_p90_s']} s; first suspicion "
                f"{d['first_suspect_median_s']} s, first dead {d['first_dead_median_s']} s), undetected "
                f"{d['undetected']}, false positives {d['false_positives']}, false suspicions "
                f"{len(d['false_suspicions'])}; phase {d['phase_s']} s")
        res["queue_drops"] = bed.queue_drops()
        res["load_after"] = loadavg()
        return res

    def sniffed(self) -> dict[str, int]:
        return self.sniffer.counts() if self.sniffer is not None else {}

    # -- detection ---------------------------------------------------------------------------------------------
    def detection(self, bed: ZonedTestbed, agents: Sequence[AgentProc]) -> dict[str, Any]:
        """Kill --kills agents (SIGKILL by PID: a crash, no leave), spread over the groups, one every
        --kill-stagger seconds, and time, for each, how long until every surviving agent had it dead.

        Times come from the survivors' own logs ("member X suspect/dead" lines, stamped to the millisecond by
        the agent when it applied the change), not from polling their HTTP API: 30 agents polled ten times a
        second were a load of their own on a 2-core machine, and a poll adds its period to the time measured.
        Per victim: first suspicion (anyone), first "dead" (the suspicion timeout running out somewhere),
        every survivor's "dead" (`all_dead_s`: the detection time; `median_dead_s` over the survivors).
        `all_dead - first_dead` is how long the news took to spread, `first_dead - first_suspect` the
        suspicion timeout as Lifeguard's confirmations shortened it: the split shows where a mode loses time.
        A survivor logged suspect or dead by a survivor after the first kill is a false suspicion / positive."""
        args = self.args
        victims = pick_victims(bed, agents, args.kills)
        survivors = [a for a in agents if a not in victims]
        offsets = {a.name: log_size(a) for a in survivors}
        killed_at: dict[str, float] = {}
        for i, victim in enumerate(victims):
            if i:
                time.sleep(args.kill_stagger)
            bed.kill(victim.proc)
            killed_at[victim.name] = time.time()
        wanted = {(a.name, v.name) for a in survivors for v in victims}
        events: list[tuple[float, str, str, str]] = []  # (wall time, observer, member, kind)
        deadline = time.monotonic() + args.detect_timeout
        while True:
            for a in survivors:
                offsets[a.name], new = read_member_events(a, offsets[a.name])
                events += [(t, a.name, who, kind) for t, who, kind in new]
            seen_dead = {(o, who) for _, o, who, kind in events if kind == "dead"}
            if wanted <= seen_dead or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        first_kill = min(killed_at.values())
        victim_names = set(killed_at)
        per_victim: list[dict[str, Any]] = []
        for v in victims:
            t0 = killed_at[v.name]
            dead: dict[str, float] = {}
            suspect: list[float] = []
            for t, o, who, kind in events:
                if who != v.name or t < t0 - 0.01:
                    continue
                if kind == "dead":
                    dead.setdefault(o, t - t0)
                elif kind == "suspect":
                    suspect.append(t - t0)
            times = sorted(dead.values())
            per_victim.append({
                "victim": v.name, "group": bed.group_of[v.host.index], "saw_dead": len(times),
                "first_suspect_s": r3(min(suspect)) if suspect else None,
                "first_dead_s": r3(times[0]) if times else None,
                "median_dead_s": r3(statistics.median(times)) if times else None,
                "all_dead_s": r3(times[-1]) if len(times) == len(survivors) else None})
        wrong = sorted({f"{o} saw {who} {kind}" for t, o, who, kind in events
                        if t >= first_kill - 0.01 and who not in victim_names and kind in ("suspect", "dead")})
        detected = [float(p["all_dead_s"]) for p in per_victim if p["all_dead_s"] is not None]
        medians = [float(p["median_dead_s"]) for p in per_victim if p["median_dead_s"] is not None]

        def median_of(key: str) -> float | None:
            xs = [float(v[key]) for v in per_victim if v[key] is not None]
            return r3(statistics.median(xs)) if xs else None

        return {"kills": len(victims), "stagger_s": args.kill_stagger, "observers": len(survivors),
                "undetected": len(victims) - len(detected),
                # The detection time of a victim: until every survivor had it dead; median and p90 over victims.
                "all_dead_median_s": r3(statistics.median(detected)) if detected else None,
                "all_dead_p90_s": r3(pct(detected, 90)),
                "median_dead_median_s": r3(statistics.median(medians)) if medians else None,
                "first_suspect_median_s": median_of("first_suspect_s"),
                "first_dead_median_s": median_of("first_dead_s"),
                "victims": per_victim,
                "false_positives": [w for w in wrong if w.endswith(" dead")],
                "false_suspicions": [w for w in wrong if w.endswith(" suspect")]}

    # -- rtt ---------------------------------------------------------------------------------------------------
    @staticmethod
    def wait_for_coordinates(net: ZonedAgents, agents: Sequence[AgentProc], timeout: float,
                             watch_views: Callable[[float], None]) -> float | None:
        """Seconds until every agent holds a coordinate for every member, polled while watching views; None
        if `timeout` passed first (the RTT measurement then counts the missing pairs)."""
        t0 = time.monotonic()
        while True:
            complete = True
            for a in agents:
                body = net.get(a, "/v1/coordinates")
                if body is None or len(json.loads(body).get("coordinates", ())) < len(agents):
                    complete = False
                    break
            if complete:
                return r3(time.monotonic() - t0)
            if time.monotonic() - t0 >= timeout:
                return None
            watch_views(2.0)

    def measure_rtt(self, bed: ZonedTestbed, net: ZonedAgents, agents: Sequence[AgentProc]) -> dict[str, Any]:
        groups = bed.groups()
        measured: dict[str, float] = {}
        for a, b in itertools.combinations(range(len(groups)), 2):
            rtts = icmp_rtts(groups[a][0].ns, groups[b][-1].addr, count=20)
            measured[f"{a}-{b}"] = statistics.median(rtts) * 1000 if rtts else float("nan")
        rng = random.Random(7)
        estimates: dict[str, list[float]] = {}
        errors_rel: list[float] = []
        missing = 0
        strict = by_median = observers = 0
        for x in agents:
            gx = bed.group_of[x.host.index]
            mine: list[float] = []
            theirs: list[float] = []
            for y in agents:
                if x is y:
                    continue
                gy = bed.group_of[y.host.index]
                if gx == gy and rng.random() > self.args.same_zone_sample:
                    continue
                body = net.get(x, f"/v1/rtt?from={x.name}&to={y.name}")
                if body is None:
                    missing += 1
                    continue
                est = rtt_ms_of(json.loads(body))
                if est is None:
                    missing += 1
                    continue
                key = f"{min(gx, gy)}-{max(gx, gy)}"
                estimates.setdefault(key, []).append(est)
                (mine if gx == gy else theirs).append(est)
                if gx != gy and key in measured:
                    errors_rel.append(abs(est - measured[key]) / measured[key])
            if mine and theirs:
                observers += 1
                strict += max(mine) < min(theirs)
                by_median += statistics.median(mine) < statistics.median(theirs)
        same = [e for k, v in estimates.items() for e in v if k.split("-")[0] == k.split("-")[1]]
        cross = [e for k, v in estimates.items() for e in v if k.split("-")[0] != k.split("-")[1]]
        per_pair = {}
        for key, vals in sorted(estimates.items()):
            row: dict[str, Any] = {"estimates": len(vals), "median_est_ms": r3(statistics.median(vals)),
                                   "p10_est_ms": r3(pct(vals, 10)), "p90_est_ms": r3(pct(vals, 90))}
            if key in measured:
                row["measured_ms"] = r3(measured[key])
                row["median_rel_error"] = r3(abs(statistics.median(vals) - measured[key]) / measured[key])
            per_pair[key] = row
        summary = {
            "measured_ms": {k: r3(v) for k, v in measured.items()},
            "median_rel_error_cross": r3(statistics.median(errors_rel)) if errors_rel else None,
            "p90_rel_error_cross": r3(pct(errors_rel, 90)),
            "max_same_zone_est_ms": r3(max(same)) if same else None,
            "min_cross_zone_est_ms": r3(min(cross)) if cross else None,
            "separated": bool(same and cross and min(cross) > max(same)),
            "median_same_zone_est_ms": r3(statistics.median(same)) if same else None,
            "median_cross_zone_est_ms": r3(statistics.median(cross)) if cross else None,
            "observers": observers,
            "observers_separating_strictly": strict,
            "observers_separating_by_median": by_median,
            "missing": missing,
        }
        return {"summary": summary, "pairs": per_pair,
                "scatter": {k: [r3(v) for v in vals] for k, vals in estimates.items()}}

    @staticmethod
    def own_coordinates(bed: ZonedTestbed, net: ZonedAgents, agents: Sequence[AgentProc]) -> dict[str, Any]:
        """Each agent's own coordinate (error estimate, height, adjustment in ms), its probe round trips (count,
        how many took 5 ms or more, from the gossip_probe_rtt_seconds histogram) and the samples refused as
        later than the probe timeout: why the estimates are what they are (a high error, a large adjustment,
        few far samples, stalls)."""
        rows: dict[str, Any] = {}
        histogram: dict[str, int] = {}  # probe round trips of all agents, cumulative by upper bound (s)
        for a in agents:
            body = net.get(a, "/v1/coordinates")
            metrics = net.get(a, "/metrics")
            if body is None:
                continue
            own = json.loads(body)["coordinates"][0]
            row: dict[str, Any] = {"group": bed.group_of[a.host.index], "error": r3(own["error"]),
                                   "height_ms": r3(own["height"] * 1000), "adjustment_ms": r3(own["adjustment"] * 1000)}
            if metrics is not None:
                text = metrics.decode(errors="replace")
                buckets = {le: int(float(v)) for le, v in
                           re.findall(r'gossip_probe_rtt_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text)}
                late = re.search(r'gossip_coordinate_rejections_total\{reason="rtt_too_large"\} ([0-9.e+]+)', text)
                row["samples_too_late"] = int(float(late.group(1))) if late else 0
                if "+Inf" in buckets and "0.005" in buckets:
                    row["probes"] = buckets["+Inf"]
                    row["probes_far"] = buckets["+Inf"] - buckets["0.005"]
                    for le, count in buckets.items():
                        histogram[le] = histogram.get(le, 0) + count
            rows[a.name] = row
        def med(key: str) -> float | None:
            vals = [r[key] for r in rows.values() if r.get(key) is not None]
            return r3(statistics.median(vals)) if vals else None
        summary = {k: med(k) for k in ("error", "height_ms", "adjustment_ms", "probes", "probes_far",
                                       "samples_too_late")}
        return {"summary": summary, "agents": rows, "probe_rtt_histogram": histogram}

    # -- bytes -------------------------------------------------------------------------------------------------
    def bytes_summary(self, before: Mapping[tuple[int, int, str], int], after: Mapping[tuple[int, int, str], int],
                      seconds: float) -> dict[str, Any]:
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        cross = sum(v for (a, b, _), v in delta.items() if a != b)
        same = sum(v for (a, b, _), v in delta.items() if a == b)
        total = cross + same
        by_proto: dict[str, dict[str, int]] = {}
        pairs: dict[str, int] = {}
        for (a, b, proto), v in sorted(delta.items()):
            row = by_proto.setdefault(proto, {"cross": 0, "same": 0})
            row["cross" if a != b else "same"] += v
            pairs[f"{a}-{b}"] = pairs.get(f"{a}-{b}", 0) + v
        return {"summary": {"cross_bytes": cross, "same_bytes": same,
                            "cross_share": r3(cross / total) if total else None,
                            "cross_bytes_per_s": r3(cross / seconds), "seconds": r3(seconds),
                            "by_proto": by_proto},
                "pairs": pairs}

    # -- writes ------------------------------------------------------------------------------------------------
    async def writes(self, agents: Sequence[AgentProc]) -> dict[str, Any]:
        args = self.args
        tag = f"{self.mode}-{time.monotonic_ns() % 10**9}"
        prefix = f"bench/{tag}/"
        arrivals: dict[str, dict[str, float]] = {}
        ready: set[str] = set()
        key_rx = re.compile(rb'"key": ?"(bench/[^"]*)"')
        rng = random.Random(args.seed)
        sent: dict[str, float] = {}
        errors = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def watch(a: AgentProc) -> None:
                url = f"http://{a.addr}:{a.port}/v1/watch?prefix={prefix}"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for line in r.content:
                        now = time.perf_counter()
                        if b'"watching"' in line:
                            ready.add(a.name)
                            continue
                        m = key_rx.search(line)
                        if m:
                            arrivals.setdefault(m.group(1).decode(), {}).setdefault(a.name, now)

            watchers = [asyncio.create_task(watch(a)) for a in agents]
            try:
                end = time.monotonic() + 60
                while len(ready) < len(agents) and time.monotonic() < end:
                    await asyncio.sleep(0.05)
                if len(ready) < len(agents):
                    return {"error": f"only {len(ready)} of {len(agents)} watch streams opened"}
                t_start = time.perf_counter()
                for i in range(args.writes):
                    due = t_start + i / args.rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    a = agents[rng.randrange(len(agents))]
                    key = f"{prefix}{i}"
                    sent[key] = time.perf_counter()
                    try:
                        async with session.put(f"http://{a.addr}:{a.port}/v1/kv/{key}", data=os.urandom(64),
                                               timeout=aiohttp.ClientTimeout(total=30)) as r:
                            await r.read()
                            if r.status != 200:
                                errors += 1
                    except (aiohttp.ClientError, TimeoutError):
                        errors += 1
                n = len(agents)
                end = time.monotonic() + args.drain
                while time.monotonic() < end:
                    if all(len(arrivals.get(k, {})) >= n for k in sent):
                        break
                    await asyncio.sleep(0.1)
                window = time.perf_counter() - t_start
            finally:
                for w in watchers:
                    w.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
        t100 = [max(arrivals[k].values()) - t for k, t in sent.items() if len(arrivals.get(k, {})) >= n]
        return {"writes": len(sent), "errors": errors, "complete": len(t100), "incomplete": len(sent) - len(t100),
                "window_s": r3(window),
                "t100": {"median_ms": r3(1000 * statistics.median(t100)) if t100 else None,
                         "p90_ms": r3(1000 * (pct(t100, 90) or 0)) if t100 else None,
                         "max_ms": r3(1000 * max(t100)) if t100 else None},
                "t100_ms": [r3(1000 * x) for x in t100]}


# ---- the failure phase's victims and the agents' logs --------------------------------------------------------


def pick_victims(bed: ZonedTestbed, agents: Sequence[AgentProc], kills: int) -> list[AgentProc]:
    """`kills` agents spread over the groups in turn (group 0, 1, 2, 0, ...), evenly apart inside each
    group, never a group's first host (it seeded the others); the same hosts in every mode."""
    by_host = {a.host.index: a for a in agents}
    pools = [[by_host[h.index] for h in group[1:] if h.index in by_host] for group in bed.groups()]
    want = [0] * len(pools)
    for i in range(kills):
        want[i % len(pools)] += 1
    if any(w > len(pool) for w, pool in zip(want, pools, strict=True)):
        raise ValueError(f"--kills {kills}: more than the groups' non-seed members")
    chosen = [[pool[(j * len(pool)) // w] for j in range(w)] if w else [] for w, pool in zip(want, pools, strict=True)]
    return [chosen[i % len(pools)][i // len(pools)] for i in range(kills)]


def log_size(agent: AgentProc) -> int:
    with contextlib.suppress(OSError):
        return agent.proc.log_path.stat().st_size
    return 0


# "2026-11-30 17:00:00,123 WARNING gossip_agent.io.runtime: member zone-b-12 dead (10.0.1.3:7946, incarnation 0)"
# (the agent's log format, io/runtime.py's member events; the stamp is the agent's local time).
MEMBER_EVENT = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ \S+ member (\S+) (suspect|dead|alive) \(",
                          re.MULTILINE)


def read_member_events(agent: AgentProc, offset: int) -> tuple[int, list[tuple[float, str, str]]]:
    """(new offset, [(wall time, member, "suspect"/"dead"/"alive")]) from the complete lines that `agent`
    logged after byte `offset`; at most 4 MiB per call (the rest on the next)."""
    try:
        with agent.proc.log_path.open("rb") as f:
            f.seek(offset)
            chunk = f.read(4 << 20)
    except OSError:
        return offset, []
    end = chunk.rfind(b"\n") + 1
    out = []
    for m in MEMBER_EVENT.finditer(chunk, 0, end):
        stamp = time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        out.append((stamp, m.group(3).decode(errors="replace"), m.group(4).decode()))
    return offset + end, out


def _path(result: Mapping[str, Any], *keys: str) -> float | None:
    value: Any = result
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def _ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is 0 (e.g. no idle byte crossed zones at all)."""
    return r3(num / den) if num is not None and den else None


def comparison(a: Mapping[str, Any], u: Mapping[str, Any]) -> dict[str, float | None]:
    """Aware against uniform: how many times fewer cross-zone bytes, t100 and detection ratios."""
    out = {
        "idle_cross_bytes_cut": _ratio(_path(u, "idle_bytes", "summary", "cross_bytes"),
                                       _path(a, "idle_bytes", "summary", "cross_bytes")),
        "write_cross_bytes_cut": _ratio(_path(u, "write_bytes", "summary", "cross_bytes"),
                                        _path(a, "write_bytes", "summary", "cross_bytes")),
        "t100_median_ratio": _ratio(_path(a, "writes", "t100", "median_ms"), _path(u, "writes", "t100", "median_ms")),
        "t100_p90_ratio": _ratio(_path(a, "writes", "t100", "p90_ms"), _path(u, "writes", "t100", "p90_ms")),
    }
    if "detection" in a and "detection" in u:
        # Detection of a victim: until every survivor had it dead; median and p90 over the victims.
        out["detection_median_ratio"] = _ratio(_path(a, "detection", "all_dead_median_s"),
                                               _path(u, "detection", "all_dead_median_s"))
        out["detection_p90_ratio"] = _ratio(_path(a, "detection", "all_dead_p90_s"),
                                            _path(u, "detection", "all_dead_p90_s"))
    return out


def by_type(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Sniffed cross-zone bytes (and packet counts) of one phase, largest first."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return dict(sorted(((k, v) for k, v in delta.items() if v), key=lambda kv: -kv[1]))


def rtt_ms_of(answer: Mapping[str, Any]) -> float | None:
    """The estimate in an answer of GET /v1/rtt, in ms."""
    for key, scale in (("rttMs", 1.0), ("rtt_ms", 1.0), ("rttSeconds", 1000.0), ("rtt", 1000.0),
                       ("seconds", 1000.0)):
        value = answer.get(key)
        if isinstance(value, int | float):
            return float(value) * scale
    return None


# ---- main ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pythonpath(path: str | None) -> Iterator[None]:
    """Agents started meanwhile import gossip_agent from `path` first (they inherit our environment)."""
    if path is None:
        yield
        return
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path if not old else f"{path}{os.pathsep}{old}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def layout_from(groups: Sequence[int], rtts: Sequence[float]) -> ZoneLayout:
    pairs = list(itertools.combinations(range(len(groups)), 2))
    if len(rtts) == 1:
        rtts = list(rtts) * len(pairs)
    if len(rtts) != len(pairs):
        raise SystemExit(f"--rtt-ms: one value, or one per pair of groups ({len(pairs)})")
    return ZoneLayout.symmetric(groups, dict(zip(pairs, rtts, strict=True)))


def table(results: Sequence[Mapping[str, Any]]) -> str:
    cols = ["mode", "n", "join_s", "coords_s", "rtt_err_med", "sep_median", "sep_strict", "idle_cross_B/s",
            "idle_cross_share", "write_cross_B", "t100_med_ms", "t100_p90_ms", "t100_max_ms", "complete", "false_pos"]
    rows = [cols]
    for r in results:
        rtt = (r.get("rtt") or {}).get("summary") or {}
        idle = (r.get("idle_bytes") or {}).get("summary") or {}
        wb = (r.get("write_bytes") or {}).get("summary") or {}
        w = r.get("writes") or {}
        t = w.get("t100") or {}
        fp = r.get("false_positives") or {}
        rows.append([str(x) for x in (
            r["mode"], r["n"], r.get("join_s"), r.get("coordinates_complete_s"), rtt.get("median_rel_error_cross"),
            f"{rtt.get('observers_separating_by_median')}/{rtt.get('observers')}",
            f"{rtt.get('observers_separating_strictly')}/{rtt.get('observers')}",
            idle.get("cross_bytes_per_s"), idle.get("cross_share"), wb.get("cross_bytes"), t.get("median_ms"),
            t.get("p90_ms"), t.get("max_ms"), f"{w.get('complete')}/{w.get('writes')}",
            len(fp.get("non_alive_views") or []) + int(fp.get("dead_log_lines") or 0))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default="10,10,10", help="hosts per group (zone), comma list")
    p.add_argument("--rtt-ms", default="20,35,50", help="round trip per pair of groups (ms), comma list")
    p.add_argument("--modes", default="aware,uniform")
    p.add_argument("--fraction", type=float, default=None, help="topology.crossZoneFraction (default: the agent's)")
    p.add_argument("--spec", default="", help="base agent config (YAML/JSON text); default {preset: lan}")
    p.add_argument("--settle", type=float, default=40.0, help="seconds of running before the RTT measurement")
    p.add_argument("--coord-timeout", type=float, default=120.0,
                   help="after --settle, wait up to this long for every agent to know every coordinate")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle traffic counted")
    p.add_argument("--writes", type=int, default=30)
    p.add_argument("--rate", type=float, default=2.0, help="writes per second")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last writes to arrive")
    p.add_argument("--tail", type=float, default=5.0, help="seconds of watching views after the writes")
    p.add_argument("--join-timeout", type=float, default=180.0)
    p.add_argument("--same-zone-sample", type=float, default=1.0, help="share of same-zone pairs asked for /v1/rtt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--by-type", action="store_true",
                   help="sniff cross-zone packets on the router and split their bytes by message type / stream")
    p.add_argument("--kill", action="store_true",
                   help="at the end, kill --kills agents and time their detection by all others (false positives too)")
    p.add_argument("--kills", type=int, default=6, help="agents killed with --kill, spread over the groups")
    p.add_argument("--kill-stagger", type=float, default=0.5, help="seconds between two kills")
    p.add_argument("--detect-timeout", type=float, default=60.0,
                   help="after the last kill, wait up to this long for every survivor to see every victim dead")
    p.add_argument("--base-tree", default=None, metavar="DIR",
                   help="also run mode base: aware with the agent of this earlier checkout (before/after)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE")
    args = p.parse_args(argv)
    groups = [int(x) for x in args.groups.split(",") if x.strip()]
    if not 1 < sum(groups) <= MAX_AGENTS:
        p.error(f"2..{MAX_AGENTS} agents in all")
    if args.writes < 1 or args.rate <= 0:
        p.error("--writes >= 1 and --rate > 0")
    if args.kill and not (1 <= args.kills <= sum(groups) - 2 * len(groups) and 0 <= args.kill_stagger <= 60):
        p.error("--kills: 1 .. agents - 2 per group (a group's first host is never killed, one must survive); "
                "--kill-stagger 0..60")
    problem = environment_problem() or delayer_problem()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    layout = layout_from(groups, [float(x) for x in args.rtt_ms.split(",") if x.strip()])
    results = []
    started = time.time()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    base_agent: Path | None = None
    if args.base_tree:
        base_agent = Path(args.base_tree).resolve() / "agent"
        if not (base_agent / "gossip_agent").is_dir():
            p.error(f"--base-tree: no agent/gossip_agent under {args.base_tree}")
        if "base" not in modes:
            modes.insert(1, "base")
    elif "base" in modes:
        p.error("mode base needs --base-tree")
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"bench-topo-real-{mode}-") as tmp, \
                _pythonpath(str(base_agent) if mode == "base" else None):
            log(f"{mode}: {sum(groups)} agents in groups {groups}, load {loadavg()}")
            results.append(Run(args, mode, layout, Path(tmp)).execute())
    out = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)), "args": vars(args),
           "load_before": loadavg(), "results": results}
    print(table(results))
    by_mode = {r["mode"]: r for r in results}
    if "aware" in by_mode and "uniform" in by_mode:
        out["comparison"] = c = comparison(by_mode["aware"], by_mode["uniform"])
        print(f"aware vs uniform: cross-zone bytes cut {c['idle_cross_bytes_cut']}x idle, "
              f"{c['write_cross_bytes_cut']}x during writes; t100 median {c['t100_median_ratio']}x, "
              f"p90 {c['t100_p90_ratio']}x")
        if "detection_median_ratio" in c:
            da, du = by_mode["aware"]["detection"], by_mode["uniform"]["detection"]
            print(f"detection of {da['kills']} killed agents (until every survivor saw each dead), median (p90): "
                  f"{da['all_dead_median_s']} s ({da['all_dead_p90_s']} s) aware, {du['all_dead_median_s']} s "
                  f"({du['all_dead_p90_s']} s) uniform: {c['detection_median_ratio']}x ({c['detection_p90_ratio']}x); "
                  f"undetected {da['undetected']} / {du['undetected']}; false positives "
                  f"{len(da['false_positives'])} / {len(du['false_positives'])}")
    if "base" in by_mode and "uniform" in by_mode:
        out["base_comparison"] = b = comparison(by_mode["base"], by_mode["uniform"])
        print(f"base vs uniform: cross-zone bytes cut {b['idle_cross_bytes_cut']}x idle, "
              f"{b['write_cross_bytes_cut']}x during writes; t100 median {b['t100_median_ratio']}x")
    if "base" in by_mode and "aware" in by_mode:
        out["aware_vs_base"] = ab = comparison(by_mode["aware"], by_mode["base"])
        print(f"aware vs base: cross-zone bytes cut {ab['idle_cross_bytes_cut']}x idle, "
              f"{ab['write_cross_bytes_cut']}x during writes; t100 median {ab['t100_median_ratio']}x")
    if args.json:
        text = json.dumps(out, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
