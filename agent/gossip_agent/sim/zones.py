"""The real protocol across zones: random vs topology-aware peer choice, measured with real Node cores.

Unlike sim/topology.py (the pure choice rule in rounds), this drives the membership simulator
(sim/cluster.py): N Nodes in 3 zones (1 ms RTT inside a zone, 20 / 35 / 50 ms between zones), a converged
start, probes timed into network coordinates (`measure_rtt`), then

1. a write phase: a steady load of `writes` state rumors (`payload_bytes` each) from spread-out members,
   one every `write_every` virtual seconds, then `settle` seconds; for each write the time until every member
   had it (write -> all, t100; a write some member never got, as a push epidemic now and then leaves one
   behind at N = 1,000 until anti-entropy repairs it, counts as unfinished); the bytes sent over the phase
   (datagrams and push-pull streams, plaintext as the codec sizes them) split into same zone and cross zone;
2. an idle phase of `idle_seconds`: the same split with no writes (probes, their acks and coordinates, and
   push-pull syncs only);
3. a failure phase: `crashes` members crash one at a time; for each, the time until every live member saw
   it DEAD, and every false DEAD of a running member is counted.

`compare` runs the same seed with `topology.mode` random and aware. Deterministic given the seed.

`by_type=True` also splits the write phase's cross-zone bytes by what carried them (`message_class`: state
payloads, announcements, grafts, link requests, prunes, probes and acks, membership rumors, digests,
coordinates, coordinate rows, pull requests, packet headers, push-pull streams): where a topology change
should cut, measured rather than guessed.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig, BroadcastPath, TopologyConfig
from gossip_agent.core.effects import Send
from gossip_agent.core.messages import (
    Ack,
    Alive,
    Dead,
    Digest,
    DigestSummary,
    Graft,
    IHave,
    Message,
    Nack,
    NetCoordinate,
    PeerCoordinates,
    Ping,
    PingReq,
    Prune,
    PullRequest,
    ShortIds,
    ShortKind,
    StateRumor,
    Suspect,
)
from gossip_agent.core.vivaldi import estimate_rtt
from gossip_agent.sim.cluster import PayloadLog, Simulation, make_config

ZONES = ("zone-a", "zone-b", "zone-c")
#: RTTs (seconds): 1 ms inside a zone; a-b 20 ms, a-c 35 ms, b-c 50 ms (the docs' 3-zone topology).
INTRA_RTT = 0.001
INTER_RTT = {frozenset(("zone-a", "zone-b")): 0.020, frozenset(("zone-a", "zone-c")): 0.035,
             frozenset(("zone-b", "zone-c")): 0.050}


def zone_rtt(a: str, b: str) -> float:
    return INTRA_RTT if a == b else INTER_RTT[frozenset((a, b))]


@dataclass(slots=True)
class ZoneRun:
    """What one run measured (seconds are virtual)."""

    mode: str
    nodes: int
    fraction: float = 1.0
    write_bytes_same: int = 0
    write_bytes_cross: int = 0
    idle_bytes_same: int = 0
    idle_bytes_cross: int = 0
    spread_t100: list[float] = field(default_factory=list)
    unfinished_writes: int = 0
    detection: list[float] = field(default_factory=list)
    undetected: int = 0
    false_positives: int = 0
    rtt_error_median: float | None = None
    # Median |estimate - true RTT| / true RTT over sampled pairs of members in different zones at the end of
    # the run: what `GET /v1/rtt` would answer across zones. (rtt_error_median mixes in the 1 ms pairs inside
    # a zone, whose relative error is large in any mode and which dominate the probes under aware choice.)
    cross_zone_rtt_error: float | None = None
    # Coordinates not held at the end of the warm-up (pairs (member, peer) over live members): first-hand only,
    # a member holds those of the members it probed; rows pass on the others.
    coordinates_missing: int = 0
    # With by_type: the write phase's cross-zone bytes by message class (see message_class); "header" is the
    # packets' own bytes, "push-pull" the membership streams.
    write_cross_by_type: dict[str, int] = field(default_factory=dict)
    # With by_type: the Nodes' tree counters (core/node.py stats: tree_pushes, tree_grafts, ...) summed over
    # the write phase.
    write_tree_stats: dict[str, int] = field(default_factory=dict)

    @property
    def write_cross_share(self) -> float:
        return self.write_bytes_cross / max(1, self.write_bytes_same + self.write_bytes_cross)

    @property
    def idle_cross_share(self) -> float:
        return self.idle_bytes_cross / max(1, self.idle_bytes_same + self.idle_bytes_cross)

    @property
    def t100_median(self) -> float:
        return statistics.median(self.spread_t100) if self.spread_t100 else float("inf")

    @property
    def detection_median(self) -> float:
        return statistics.median(self.detection) if self.detection else float("inf")


_CLASSES: dict[type, str] = {
    StateRumor: "payload", IHave: "ihave", Prune: "prune", Ping: "probe", Ack: "probe", Nack: "probe",
    PingReq: "probe", Alive: "membership", Suspect: "membership", Dead: "membership", Digest: "digest",
    DigestSummary: "digest", NetCoordinate: "coordinate", PeerCoordinates: "coordinate-rows",
    PullRequest: "pull",
}
_SHORT_CLASSES = {int(ShortKind.IHAVE): "ihave", int(ShortKind.GRAFT): "graft", int(ShortKind.PULL): "pull"}


def message_class(m: Message) -> str:
    """What a message is for, as `by_type` counts it: an empty GRAFT is a link request, not a graft."""
    if isinstance(m, Graft):
        return "graft" if m.ids else "link-request"
    if isinstance(m, ShortIds):
        return _SHORT_CLASSES.get(m.kind, "offer")
    return _CLASSES.get(type(m), type(m).__name__)


class _TypeCounter:
    """An `on_send` hook of the simulator: cross-zone datagram bytes by message class (sizes as the
    simulator's "estimate" mode counts them: each message's size, the rest of the packet is "header")."""

    def __init__(self, sim: Simulation, zones: Sequence[str]) -> None:
        self.sim, self.zones = sim, zones
        self.bytes: dict[str, int] = {}
        self.on = False

    def __call__(self, now: float, i: int, e: Send) -> None:
        if not self.on:
            return
        j = self.sim.index.get(e.to)
        if j is None or self.zones[i] == self.zones[j]:
            return
        counts = self.bytes
        total = 0
        for m in e.packet.messages:
            size = codec.message_size(m)
            total += size
            key = message_class(m)
            counts[key] = counts.get(key, 0) + size
        n = len(e.packet.messages)
        counts["header"] = counts.get("header", 0) + self.sim._header[i] + (1 if n < 16 else 3)


def zone_config(mode: str, fraction: float, base: AgentConfig | None = None, *,
                broadcast: BroadcastPath = "tree") -> AgentConfig:
    cfg = base or make_config("lan")
    return dataclasses.replace(cfg, topology=TopologyConfig(mode=mode,  # type: ignore[arg-type]
                                                            cross_zone_fraction=fraction),
                               gossip=dataclasses.replace(cfg.gossip, broadcast=broadcast))


def run_zones(n: int, mode: str, *, seed: int = 1, fraction: float = 0.15, writes: int = 20,
              write_every: float = 0.5, payload_bytes: int = 256, idle_seconds: float = 10.0, crashes: int = 3,
              warmup: float = 10.0, settle: float = 3.0, detect_timeout: float = 60.0,
              broadcast: BroadcastPath = "tree", by_type: bool = False) -> ZoneRun:
    """One run (see the module docstring); `broadcast`: how the writes spread (gossip.broadcast); `by_type`:
    split the write phase's cross-zone bytes by message class."""
    sim = Simulation(n, seed=seed, config=zone_config(mode, fraction, broadcast=broadcast), bytes_mode="estimate",
                     delegate_factory=lambda i: PayloadLog(), measure_rtt=True)
    zones = [ZONES[i % len(ZONES)] for i in range(n)]
    sim.set_zones(zones, zone_rtt)
    counter = _TypeCounter(sim, zones)
    if by_type:
        sim.on_send.append(counter)
    sim.start_joined()
    sim.run_for(warmup)
    run = ZoneRun(mode, n, fraction if mode == "aware" else 1.0)
    run.coordinates_missing = sum(len(sim.live()) - 1 - node.topology.coordinates_known
                                  for i in sim.live() if (node := sim.nodes[i]) is not None)
    logs = [d for d in sim.delegates if isinstance(d, PayloadLog)]
    before = sim.stats.copy()
    tree_before = _tree_stats(sim)
    counter.on = True
    t_start = sim.now
    sent: list[tuple[bytes, float]] = []

    def write(w: int) -> None:
        payload = f"w{w}:".encode() + bytes(max(0, payload_bytes - 8))
        live = sim.live()
        origin = live[(w * 7919 + seed) % len(live)]
        log = sim.delegates[origin]
        assert isinstance(log, PayloadLog)
        log.on_state_rumor(payload, sim.now)
        sent.append((payload, sim.now))
        sim.broadcast(origin, payload)

    for w in range(writes):  # a steady write load: one write every write_every seconds, whatever the spread
        sim.at(t_start + w * write_every, functools.partial(write, w))
    sim.run_until(t_start + writes * write_every + settle)
    for payload, t0 in sent:
        if all(payload in d.first_seen for d in logs):
            run.spread_t100.append(max(d.first_seen[payload] for d in logs) - t0)
        else:
            run.unfinished_writes += 1
    run.write_bytes_same = sim.stats["bytes_same_zone"] - before["bytes_same_zone"]
    run.write_bytes_cross = sim.stats["bytes_cross_zone"] - before["bytes_cross_zone"]
    counter.on = False
    if by_type:
        datagrams = sum(counter.bytes.values())
        run.write_cross_by_type = dict(sorted(counter.bytes.items()))
        run.write_cross_by_type["push-pull"] = run.write_bytes_cross - datagrams
        after = _tree_stats(sim)
        run.write_tree_stats = {k: after[k] - tree_before.get(k, 0) for k in sorted(after)}
    before = sim.stats.copy()
    sim.run_for(idle_seconds)
    run.idle_bytes_same = sim.stats["bytes_same_zone"] - before["bytes_same_zone"]
    run.idle_bytes_cross = sim.stats["bytes_cross_zone"] - before["bytes_cross_zone"]
    for c in range(crashes):
        live = sim.live()
        victim = live[(c * 104729 + 17 * seed) % len(live)]
        sim.crash(victim)
        if sim.run_until_condition(lambda v=victim: sim.detection_time(v) is not None,  # type: ignore[misc]
                                   timeout=detect_timeout, check_every=0.05) is None:
            run.undetected += 1
        else:
            elapsed = sim.detection_time(victim)
            assert elapsed is not None
            run.detection.append(elapsed)
        sim.run_for(2.0)
    run.false_positives = len(sim.false_positives)  # every false DEAD of the run, from the start
    errors = sim.rtt_errors[-20 * n:]
    run.rtt_error_median = statistics.median(errors) if errors else None
    run.cross_zone_rtt_error = _cross_zone_error(sim, zones, seed)
    return run


def _tree_stats(sim: Simulation) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in sim.nodes:
        if node is not None:
            for k, v in node.stats.items():
                if k.startswith("tree_"):
                    total[k] = total.get(k, 0) + v
    return total


def _cross_zone_error(sim: Simulation, zones: Sequence[str], seed: int, pairs: int = 2000) -> float | None:
    """Median relative error of the coordinates' RTT estimate against the configured RTT, over random pairs
    of live members in different zones (deterministic given the seed)."""
    rng = random.Random(seed)
    live = sim.live()
    errors: list[float] = []
    for _ in range(pairs * 4):
        if len(errors) >= pairs or len(live) < 2:
            break
        a, b = rng.sample(live, 2)
        node_a, node_b = sim.nodes[a], sim.nodes[b]
        if zones[a] == zones[b] or node_a is None or node_b is None:
            continue
        true = zone_rtt(zones[a], zones[b])
        estimate = estimate_rtt(node_a.topology.client.coordinate, node_b.topology.client.coordinate)
        errors.append(abs(estimate - true) / true)
    return statistics.median(errors) if errors else None


def compare(n: int, *, seed: int = 1, fraction: float = 0.15, **kwargs: object) -> dict[str, ZoneRun]:
    """The same run with random and with topology-aware choice."""
    return {mode: run_zones(n, mode, seed=seed, fraction=fraction, **kwargs)  # type: ignore[arg-type]
            for mode in ("random", "aware")}


def sweep(n: int, fractions: Sequence[float], *, seed: int = 1, **kwargs: object) -> list[ZoneRun]:
    """Random choice, then aware choice at each cross-zone fraction (same seed): cost against mixing."""
    return [run_zones(n, "random", seed=seed, **kwargs),  # type: ignore[arg-type]
            *(run_zones(n, "aware", seed=seed, fraction=f, **kwargs) for f in fractions)]  # type: ignore[arg-type]


def summary(runs: Sequence[ZoneRun]) -> list[dict[str, object]]:
    """Rows for a report: shares, ratios against the first run (random), spread and detection."""
    base = runs[0]
    rows: list[dict[str, object]] = []
    for r in runs:
        rows.append({
            "mode": r.mode, "nodes": r.nodes, "fraction": r.fraction,
            "write_cross_share": round(r.write_cross_share, 4),
            "write_cross_bytes_reduction": round(base.write_bytes_cross / max(1, r.write_bytes_cross), 2),
            "idle_cross_share": round(r.idle_cross_share, 4),
            "idle_cross_bytes_reduction": round(base.idle_bytes_cross / max(1, r.idle_bytes_cross), 2),
            "t100_median_s": round(r.t100_median, 4),
            "t100_max_s": round(max(r.spread_t100, default=float("inf")), 4),
            "t100_vs_random": round(r.t100_median / base.t100_median, 3),
            "unfinished_writes": r.unfinished_writes,
            "detection_median_s": round(r.detection_median, 3),
            "detection_vs_random": round(r.detection_median / base.detection_median, 3),
            "undetected": r.undetected, "false_positives": r.false_positives,
            "rtt_error_median": None if r.rtt_error_median is None else round(r.rtt_error_median, 3),
            "cross_zone_rtt_error": None if r.cross_zone_rtt_error is None else round(r.cross_zone_rtt_error, 3),
            "coordinates_missing_after_warmup": r.coordinates_missing,
        })
    return rows
