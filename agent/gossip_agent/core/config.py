"""Agent configuration: one frozen object, presets, and the one parser of the settings a user writes.

The file format is YAML with camelCase keys, and its sections (`membership`, `gossip`, `antiEntropy`,
`state`, `storage`, `security`) are the same as a GossipCluster's `spec`: the operator copies the spec's
sections into the agent's ConfigMap, and `gossipctl up` hands a manifest's spec to the agents it starts.

Every setting is declared once, here: its field carries a `Setting` (why it exists, its unit, its range, whether
a GossipCluster may set it). The parser below, the operator's checks (which call this parser), the CRD's agent
sections and the configuration reference in docs/agent-api.md all read these declarations
(`core/settings_schema.py`; `tools/gen_settings.py` writes the CRD and the doc, a test fails when they drift).
Adding a setting is one field here plus that command.

Defaults follow hashicorp/memberlist (`DefaultLANConfig`, `DefaultLocalConfig`, `DefaultWANConfig`):
those numbers have years of production behind them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from gossip_agent.core.text import first_control_char
from gossip_agent.core.topology import DEFAULT_CROSS_ZONE_FRACTION, parse_zone

GossipMode = Literal["push", "pull", "push-pull"]
BroadcastPath = Literal["tree", "flood"]
ProbeSchedule = Literal["aligned", "shuffled"]
ConflictPolicy = Literal["lww", "siblings"]
FsyncPolicy = Literal["always", "interval", "never"]
TlsClientAuth = Literal["optional", "required"]
Preset = Literal["lan", "local", "wan"]
TopologyMode = Literal["aware", "random"]
GOSSIP_MODES: tuple[str, ...] = get_args(GossipMode)
BROADCAST_PATHS: tuple[str, ...] = get_args(BroadcastPath)
PROBE_SCHEDULES: tuple[str, ...] = get_args(ProbeSchedule)
CONFLICT_POLICIES: tuple[str, ...] = get_args(ConflictPolicy)
FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)
TLS_CLIENT_AUTH: tuple[str, ...] = get_args(TlsClientAuth)
PRESETS: tuple[str, ...] = get_args(Preset)
TOPOLOGY_MODES: tuple[str, ...] = get_args(TopologyMode)

# A duration is a decimal number with a unit: "500ms", "1.5s", "2m", "1h" (the CRD's pattern, and a subset of
# what CEL's duration() and Go's time.ParseDuration read). A bare number is refused: is `1` a second or a
# millisecond? The length bound keeps a hostile value from costing anything.
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
DURATION_MAX_LENGTH = 32
_DURATION_RE = re.compile(DURATION_PATTERN)
# Seconds per unit, largest first (format_duration picks the largest that writes the value exactly).
_DURATION_UNITS: Mapping[str, float] = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ConfigError(ValueError):
    """Settings are missing, malformed or out of range; each problem names the key and what is allowed."""

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Setting:
    """What one config field means to a user: the single description every layer reads.

    `why` is one line for the CRD and the docs. `duration`: written "500ms" / "1s" / "2m" / "1h", held in
    seconds. `minimum`/`maximum` bound numbers (seconds for durations); `above` makes the minimum exclusive.
    `max_items` bounds a map. `in_spec`: a GossipCluster may set it (paths and addresses are the operator's to
    fill in, so they are not). `crd_default`: the CRD stores the default in every object; only for settings
    every agent image knows and whose default no preset changes (a newer setting left unset keeps older agent
    images working, and a preset's value must not be overwritten by a stored one). `crd_maximum`: False when
    the CRD states the maximum as a CEL rule whose message says why (crds/: gossip.fanout).
    """

    why: str
    duration: bool = False
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    max_items: int | None = None
    in_spec: bool = True
    crd_default: bool = False
    crd_maximum: bool = True


_T = TypeVar("_T")


def setting(default: _T, why: str, **facts: Any) -> _T:
    """A dataclass field with a default and its `Setting`."""
    return field(default=default, metadata={"setting": Setting(why, **facts)})


def setting_factory(factory: Callable[[], _T], why: str, **facts: Any) -> _T:
    """A dataclass field with a mutable default (built per instance) and its `Setting`."""
    return field(default_factory=factory, metadata={"setting": Setting(why, **facts)})


# The shortest timer interval a setting may ask for: "above 0" let 1e-28ms through, an agent that would spin.
MIN_INTERVAL = 0.001
# Upper bounds of timings, far beyond any sane use, so that no value overflows a timer (asyncio refuses a
# deadline of 1e300 s; `now + interval` as inf stopped a loop for good) or silently turns a feature off.
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# A periodic stream exchange with "0s disables" runs at most once a second otherwise (a 1 ms push-pull or
# reconnect interval was a sync storm).
MIN_SYNC_INTERVAL = 1.0

KEY_BYTES_CEILING = 4096
"""The longest key any agent accepts from a peer, whatever its own state.maxKeyBytes (that setting's maximum).
maxKeyBytes limits what clients may write; a key written under an earlier, larger limit (the limit lowered
since) must still replicate, or a replica that starts empty never converges and the key strands the cluster."""
VALUE_BYTES_CEILING = 16 * 1024 * 1024
"""The largest value any agent accepts from a peer (state.maxValueBytes' maximum), for the same reason."""


def _duration(default: float, why: str, **facts: Any) -> float:
    return setting(default, why, duration=True, **facts)


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """SWIM failure detection (Lifeguard). Unset timings take the preset's value."""

    probe_interval: float = _duration(
        1.0, "Time between probes of one member; lower detects failures faster but costs traffic.",
        minimum=MIN_INTERVAL, maximum=MINUTE)
    probe_timeout: float = _duration(
        0.5, "Wait this long for a direct ack before asking others (ping-req); must be below probeInterval and "
        "above the network's 99th-percentile round trip.", minimum=MIN_INTERVAL, maximum=MINUTE)
    indirect_checks: int = setting(
        3, "Members asked to ping a target that missed its direct ack (3 keeps false positives rare at 10% loss).",
        minimum=0, maximum=16)
    suspicion_mult: int = setting(
        4, "Suspicion timeout multiplier: the minimum timeout is suspicionMult * max(1, log10(N)) * probeInterval.",
        minimum=1, maximum=100)
    suspicion_max_timeout_mult: int = setting(
        6, "Lifeguard: a suspicion starts at this many times the minimum timeout and shrinks with confirmations.",
        minimum=1, maximum=100, crd_default=True)
    awareness_max_multiplier: int = setting(
        8, "Lifeguard local health: probe interval and timeout are scaled by up to this factor while this member "
        "misses acks.", minimum=1, maximum=64, crd_default=True)
    reap_after: float = _duration(
        30.0, "Dead and left members are kept (and still gossiped) this long, then removed from the table.",
        minimum=1.0, maximum=DAY)
    # memberlist falls back to TCP too: it tells a member behind a UDP-only fault apart from a dead one.
    tcp_fallback_probe: bool = setting(
        True, "Ping over TCP (HTTP) when UDP fails both directly and indirectly.", crd_default=True)
    # "aligned": members share one randomized ring and a round number from the wall clock, so every member is
    # probed by exactly one other in every interval and a failure is noticed within ~1 interval, not after an
    # exponential wait (a tail of several intervals). "shuffled": memberlist's per-member shuffled order.
    probe_schedule: ProbeSchedule = setting(
        "aligned", "aligned (each member probed once per interval, rounds from the wall clock) or shuffled "
        "(memberlist's per-member shuffled round-robin).")
    stream_timeout: float = _duration(
        10.0, "Timeout of a stream (HTTP) exchange: push-pull sync, TCP probe, anti-entropy.", minimum=MIN_INTERVAL,
        maximum=5 * MINUTE)
    # Serf's reconnect; memberlist leaves it to its user.
    reconnect_interval: float = _duration(
        30.0, "Members declared dead (not left) are retried with a push-pull sync this often, so a healed "
        "partition merges again; 0s disables, else at least 1s.", minimum=0.0, maximum=DAY)
    reconnect_timeout: float = _duration(
        24 * 3600.0, "Dead members are retried for at most this long after their death.", minimum=0.0,
        maximum=30 * DAY)
    # 5000 is ~2x the largest cluster the benchmarks run (2,000 members in the simulator), and keeps a full
    # push-pull (~100 B a member) under the 2 MiB stream cap.
    max_members: int = setting(
        5000, "Most members the table holds (self, dead and left included); more are refused and counted, so "
        "forged joins cannot grow memory or probe rounds without bound.", unit="members", minimum=16,
        maximum=1_000_000)


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Rumor dissemination. Unset timings take the preset's value."""

    mode: GossipMode = setting(
        "push-pull",
        "Who starts a rumor exchange. push: rumors go out unasked (piggybacked on probes, forwarded at once with "
        "immediateForward, sent to fanout peers each interval); the lowest latency, and idle it costs nothing "
        "beyond probes. pull: every interval an agent asks fanout peers for their rumors, and rumors leave an agent "
        "only in answers (not piggybacked, not forwarded; a leaving agent still pushes its leave, with what it "
        "holds); a write waits for peers to ask, so it spreads in hundreds of milliseconds to a second (push: a few "
        "milliseconds), and idle its own requests back off to one per probeInterval while probes and their acks "
        "ask too, which still costs more bytes than push. A request names, once to each peer, the writes the "
        "asker holds, which answers leave out; an answer carries the rest of what is queued, up to 8 packets "
        "(one packet capped an agent at about fanout/interval writes taken in a second). "
        "push-pull: push, plus a pull request in gossip packets while rumors are queued (backing off, as pull's, "
        "while asking brings nothing), so a peer that missed a rumor gets it back; push's latency for a few more "
        "bytes, and idle it is as quiet as push.",
        crd_default=True)
    fanout: int = setting(
        3, "Random peers that receive a gossip packet every interval.", minimum=1, maximum=16, crd_maximum=False)
    interval: float = _duration(0.2, "Gossip tick.", minimum=MIN_INTERVAL, maximum=MINUTE)
    retransmit_mult: int = setting(
        4, "A rumor is retransmitted retransmitMult * ceil(log10(N + 1)) times, then dropped from the queue.",
        minimum=1, maximum=100)
    immediate_forward: bool = setting(
        True, "Forward a fresh rumor at once to fanout peers instead of waiting for the next gossip tick.",
        crd_default=True)
    push_pull_interval: float = _duration(
        30.0, "Full membership sync (TCP push-pull) with one random peer this often; 0s disables, else at least "
        "1s.", minimum=0.0, maximum=DAY)
    mtu: int = setting(
        1400, "Largest UDP packet sent; piggybacked rumors are packed up to it.", unit="bytes", minimum=576,
        maximum=65000, crd_default=True)
    max_meta_bytes: int = setting(
        512, "Largest accepted member metadata (encoded), so a member cannot bloat every packet; at most mtu/2.",
        unit="bytes", minimum=16, maximum=32500, crd_default=True)
    max_bytes_per_second: int = setting(
        0, "Outgoing peer traffic budget per agent (gossip and anti-entropy); 0 = unlimited. Probes, acks and "
        "ping-reqs always go (failure detection never starves) but carry only the rumors the budget allows; "
        "critical rumors (membership changes, writes with ?priority=critical) go first, the rest wait in the queue "
        "(counted as deferred) and what the queue evicts is dropped (counted). Anti-entropy sessions and answers "
        "use what gossip leaves (answers over it: HTTP 429, retry later). Lower spends fewer bytes for a slower "
        "spread under load.",
        unit="bytes/s", minimum=0, maximum=1_000_000_000)
    max_burst_bytes: int = setting(
        0, "How many bytes the budget lets out at once after a quiet spell; 0 = one second of maxBytesPerSecond "
        "(never below mtu).", unit="bytes", minimum=0, maximum=1_000_000_000)
    # Plumtree (core/plumtree.py): state writes cost about one full copy per member instead of
    # retransmitMult * ceil(log10(N + 1)) from every member. Membership rumors always flood.
    broadcast: BroadcastPath = setting(
        "tree", "How state writes spread in push and push-pull modes. tree: pushed along a spanning tree that "
        "gossip builds and repairs (fanout eager neighbours per agent, ids announced to the others every "
        "second interval, a missing payload fetched after interval/2), about one copy per agent; flood: every "
        "agent retransmits each write retransmitMult * ceil(log10(N + 1)) times, like membership rumors. pull mode "
        "always floods (answers to pulls).")
    # core/coalesce.py: one packet header for several writes to a tree neighbour, for up to this much latency
    # per hop; critical writes never wait.
    coalesce_delay: float = _duration(
        0.012, "Broadcast tree: a normal write's push to a neighbour that had a packet from this agent less than "
        "this long ago waits until then, so a stream of writes shares one packet per neighbour (fewer packet "
        "headers, up to this much latency per tree hop); a write after a quiet spell, and every critical write, "
        "goes at once, and so does a push too large to share a packet with another (twice its size over the packet "
        "room: 1 KiB values at the default packet size), which would only wait. 0s sends every push at once.",
        minimum=0.0, maximum=1.0)


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Merkle anti-entropy with a random peer."""

    interval: float = _duration(
        10.0, "Merkle anti-entropy with a random peer this often. Also the longest a replica's convergence digest "
        "(its Merkle root) waits to be published while writes keep changing it (at least 1 s); once they stop, it is "
        "published 0.3 s after the last one (up to 1.2 s after a stream whose lulls published). To stop "
        "anti-entropy, set enabled: false.", minimum=MIN_INTERVAL,
        maximum=DAY, crd_default=True)
    enabled: bool = setting(True, "Run anti-entropy at all.", crd_default=True)


CRDT_MERGE_HEADROOM = 4
"""A local operation never grows a CRDT state past the write limit (StateConfig.crdt_write_limit), so a larger
state only arises by merging operations made concurrently at several agents, and every replica must accept that
merge or the cluster diverges for good (a replica that merged refused its peers' smaller states' merge, and they
refused its larger one). Peers' states are accepted up to CRDT_STATE_CEILING, this multiple of the largest write
limit any agent may be configured with (state.maxCrdtBytes' maximum): past it, it takes five agents each filling
a state to that maximum at once; such a merge is refused, counted and logged (state_too_large)."""
MAX_CRDT_BYTES = 256 * 1024
"""state.maxCrdtBytes' maximum (and its default): CRDT_STATE_CEILING / CRDT_MERGE_HEADROOM."""
CRDT_STATE_CEILING = CRDT_MERGE_HEADROOM * MAX_CRDT_BYTES
"""The largest encoded CRDT state any agent accepts from a peer or produces by a merge (1 MiB), whatever its own
state.maxCrdtBytes / maxValueBytes: those limit local operations only. A limit derived from the agent's own
config stranded keys: an agent whose maxValueBytes was lowered refused the states the rest of the cluster held
and merged, so the key never converged there. Fixed, and no larger, because a state costs CPU and memory in
proportion to its size on every decode and merge, in one step of the event loop (a hostile OR-set of minimal
elements at 4.8 MiB: ~1.3 s to decode, ~2.4 s to merge, ~176 MiB built; at this ceiling about a quarter), so
no peer can make one merge cost more; an agent at the default limits accepted up to 256 KiB before, and the
setting's maximum follows from the ceiling."""


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Replicated key-value state."""

    conflict_policy: ConflictPolicy = setting(
        "lww", "lww (last writer wins by HLC) or siblings (keep concurrent values).", crd_default=True)
    conflict_policies: Mapping[str, ConflictPolicy] = setting_factory(
        dict, 'Per key prefix overrides, longest prefix wins: {"carts/": siblings}.', max_items=64)
    max_key_bytes: int = setting(
        256, "Longest key a client may write. Lowering it refuses only new keys: keys written under a larger "
        "limit still replicate (agents accept keys from peers up to the maximum) and can be read and deleted.",
        unit="bytes", minimum=1, maximum=KEY_BYTES_CEILING, crd_default=True)
    max_value_bytes: int = setting(
        64 * 1024, "Largest value a client may write. Lowering it refuses only new values: plain values written "
        "under a larger limit still replicate (agents accept them from peers up to the maximum); a CRDT's state "
        "is bounded by maxCrdtBytes and this limit (see maxCrdtBytes).",
        unit="bytes", minimum=1, maximum=VALUE_BYTES_CEILING, crd_default=True)
    # A CRDT operation costs time proportional to the whole state, on the writer's event loop and on every peer's
    # (a 2.5 MB OR-set: 0.5-0.9 s per add), so CRDT states have a cap of their own however large values may be.
    max_crdt_bytes: int = setting(
        MAX_CRDT_BYTES, "Largest encoded CRDT state (counter, set, register) a local operation may grow, or the "
        "maxValueBytes if smaller (413 past it). Operations made at once at several agents may merge into a larger "
        "state, and every agent accepts and merges peers' states up to a fixed ceiling of "
        f"{CRDT_STATE_CEILING // (1 << 20)} MiB ({CRDT_MERGE_HEADROOM} times this setting's maximum), whatever its "
        "own limits.", unit="bytes", minimum=1, maximum=MAX_CRDT_BYTES)
    tombstone_ttl: float = _duration(
        24 * 3600.0, "Tombstones are collected once every current member has seen them, or after this at the "
        "latest.", minimum=1.0, maximum=365 * DAY, crd_default=True)
    # One forged HLC near 2^63 used to stop every later write from replicating. Honest clocks (NTP) differ by far
    # less; an honest entry refused for a skewed writer clock is accepted once our clock catches up.
    critical_writes_per_second: int = setting(
        50, "Writes a second that ?priority=critical may make critical at this agent (one client: half of it); "
        "writes over it are made as normal ones (answer header X-Gossip-Priority: normal, counted). 0: no limit.",
        unit="writes/s", minimum=0, maximum=1_000_000)
    max_clock_drift_ms: int = setting(
        60_000, "Timestamps further ahead of this agent's clock than this are refused (400, or a counted drop), "
        "so one far-future write cannot stop every later write from winning.", unit="ms", minimum=1,
        maximum=86_400_000)

    @property
    def crdt_write_limit(self) -> int:
        """Largest encoded CRDT state a local operation may grow (smaller states, or shrinking, always pass)."""
        return min(self.max_value_bytes, self.max_crdt_bytes)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Durability: an append-only log and periodic snapshots in data_dir (None = in memory only)."""

    data_dir: str | None = setting(
        None, "Directory of the log and snapshots; unset keeps state in memory only.", in_spec=False)
    fsync: FsyncPolicy = setting(
        "interval", "always (every write), interval (every fsyncInterval) or never (the OS decides).",
        crd_default=True)
    fsync_interval: float = _duration(0.05, "How often the log is synced with fsync: interval.", minimum=MIN_INTERVAL,
                                      maximum=MINUTE, crd_default=True)
    snapshot_every: int = setting(
        10_000, "Log records between snapshots.", unit="records", minimum=1, maximum=100_000_000,
        crd_default=True)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Paths to secret material; empty = plaintext (fine on loopback, not in a cluster)."""

    keyring_file: str | None = setting(
        None, "Gossip keyring: base64 32-byte keys, one a line, primary first; unset: packets are not sealed.",
        in_spec=False)
    tls_cert_file: str | None = setting(None, "TLS certificate of the HTTP API and peer streams.", in_spec=False)
    tls_key_file: str | None = setting(None, "Key of tlsCertFile.", in_spec=False)
    tls_ca_file: str | None = setting(None, "CA that verifies peers (and client certificates).", in_spec=False)
    # Unset: the API is open (local development; the agent logs a warning). Probes and /metrics stay open.
    api_tokens_file: str | None = setting(
        None, "Bearer tokens of the HTTP API, one scope:token a line (scope read or write; write implies read).",
        in_spec=False)
    # Checked per request, so kubelet probes and scrapes without a client certificate still work.
    tls_client_auth: TlsClientAuth = setting(
        "optional", "required: every API request except /healthz, /readyz and /metrics must present a client "
        "certificate that tlsCaFile verifies.", in_spec=False)
    # The stamp is inside the authenticated plaintext, so keyring rotation does not matter.
    replay_window: float = _duration(
        60.0, "Sealed packets older or newer than this by their sealing time, or seen before within it, are "
        "dropped as replays; must exceed the clock skew between members.", minimum=1.0, maximum=3600.0)


# Below 1% far picks an update could sit in one zone for many rounds (Demers' trap; 0 is the trap itself).
MIN_CROSS_ZONE_FRACTION = 0.01


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    """Zones and network coordinates: which peers are near, and how much traffic may cross zones
    (docs/topology.md)."""

    # Where a member runs differs per pod, so the operator fills in zoneFile (a downward-API file) instead.
    zone: str | None = setting(
        None, "This agent's zone (a label value, e.g. eu-west-1a); unset: read zoneFile, else unknown.",
        in_spec=False)
    zone_file: str | None = setting(
        None, "File holding this agent's zone, re-read every few seconds (the operator mounts the pod's zone "
        "annotation here); missing or empty: zone unknown.", in_spec=False)
    # 0.15: cross-zone picks drop (2/3) / 0.15 = 4.4x with 3 equal zones (core/topology.py has the measurements).
    cross_zone_fraction: float = setting(
        DEFAULT_CROSS_ZONE_FRACTION, "Share of gossip, indirect-probe and sync peers chosen outside this agent's "
        "zone (or far by estimated RTT); lower cuts cross-zone traffic, 1 is uniform choice.",
        minimum=MIN_CROSS_ZONE_FRACTION, maximum=1.0)
    mode: TopologyMode = setting(
        "aware", "aware (prefer near peers, keep crossZoneFraction far) or random (uniform choice, as without "
        "topology); with no zone or coordinates known both choose uniformly.")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything an agent needs to run. Build with `AgentConfig.preset_config(...)` or `from_mapping(...)`."""

    name: str = setting("agent", "Member name, unique in the cluster (1..128 bytes of UTF-8 text).", in_spec=False)
    bind_address: str = setting("0.0.0.0", "Address the UDP and HTTP sockets bind.", in_spec=False)
    # port and preset are top-level keys of a GossipCluster spec too (the operator reads them: spec.port).
    port: int = setting(7946, "Port of UDP gossip and HTTP alike; 0 picks a free one.", minimum=0, maximum=65535)
    advertise_address: str | None = setting(
        None, "Address peers reach this agent at (default: bindAddress). Members gossip IP literals only: a DNS "
        "name here is resolved once at startup (IPv4 preferred), and startup fails if it does not resolve.",
        in_spec=False)
    advertise_port: int | None = setting(None, "Port peers reach this agent at (default: port).", minimum=1,
                                         maximum=65535, in_spec=False)
    seeds: tuple[str, ...] = setting(
        (), "host:port entries to join through; a host may be a DNS name, re-resolved on every retry.",
        in_spec=False)
    preset: Preset = setting("lan", "Base timings: memberlist's lan, local or wan numbers.")
    meta: Mapping[str, str] = setting_factory(dict, "Metadata gossiped with this member.", in_spec=False)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    anti_entropy: AntiEntropyConfig = field(default_factory=AntiEntropyConfig)
    state: StateConfig = field(default_factory=StateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)

    @staticmethod
    def preset_config(preset: str = "lan", **overrides: Any) -> AgentConfig:
        """A config with a preset's timings (memberlist's LAN/local/WAN numbers) and top-level overrides."""
        base = AgentConfig(preset=preset,  # type: ignore[arg-type]
                           membership=PRESET_MEMBERSHIP[preset], gossip=PRESET_GOSSIP[preset])
        cfg = dataclasses.replace(base, **overrides)
        validate(cfg)
        return cfg


PRESET_MEMBERSHIP: Mapping[str, MembershipConfig] = {
    "lan": MembershipConfig(),
    "local": MembershipConfig(
        probe_interval=1.0, probe_timeout=0.2, indirect_checks=1, suspicion_mult=3, reap_after=15.0,
        stream_timeout=1.0, reconnect_interval=10.0,
    ),
    "wan": MembershipConfig(
        probe_interval=5.0, probe_timeout=3.0, suspicion_mult=6, reap_after=60.0, stream_timeout=30.0,
    ),
}
PRESET_GOSSIP: Mapping[str, GossipConfig] = {
    "lan": GossipConfig(),
    "local": GossipConfig(interval=0.1, retransmit_mult=2, push_pull_interval=15.0),
    "wan": GossipConfig(fanout=4, interval=0.5, push_pull_interval=60.0),
}

# The config file's sections: camelCase key, AgentConfig attribute, dataclass.
SECTIONS: tuple[tuple[str, str, type[Any]], ...] = (
    ("membership", "membership", MembershipConfig),
    ("gossip", "gossip", GossipConfig),
    ("antiEntropy", "anti_entropy", AntiEntropyConfig),
    ("state", "state", StateConfig),
    ("storage", "storage", StorageConfig),
    ("security", "security", SecurityConfig),
    ("topology", "topology", TopologyConfig),
)
_SECTION_ATTRS = frozenset(attr for _, attr, _ in SECTIONS)


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a duration string: "500ms", "1.5s", "2m", "1h" (DURATION_PATTERN)."""
    match = _DURATION_RE.fullmatch(value) if isinstance(value, str) and len(value) <= DURATION_MAX_LENGTH else None
    if match is None:
        raise ConfigError(f"{key}: expected a duration with a unit like '500ms', '1s', '2m' or '1h', got {value!r}")
    unit = match.group(2)
    return float(value[: -len(unit)]) * _DURATION_UNITS[unit]


def format_duration(seconds: float) -> str:
    """The text that `parse_duration` reads back to exactly `seconds`: "24h", "30s", "500ms", or "0.0125s" (a
    value too small or too precise for the parser's 32 characters is still spelled out, for error messages)."""
    if seconds == 0:
        return "0s"
    for unit, size in _DURATION_UNITS.items():
        count = round(seconds / size)
        if count >= 1 and count * size == seconds:
            return f"{count}{unit}"
    # repr is the shortest text that reads back exactly; Decimal spells its exponent form out ("1e-31" -> "0.0…01").
    # Imported here: only odd durations reach this line, and `decimal` (with `numbers`) costs every agent ~0.2 MiB
    # of RSS for a path an idle agent does not take (test_idle_imports.py).
    from decimal import Decimal

    return format(Decimal(repr(float(seconds))), "f") + "s"


def camel(name: str) -> str:
    """The camelCase key users write for a snake_case attribute."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def setting_of(fld: dataclasses.Field[Any]) -> Setting:
    found = fld.metadata.get("setting")
    if not isinstance(found, Setting):
        raise AssertionError(f"config field {fld.name} has no Setting")
    return found


_FIELDS: dict[type[Any], tuple[tuple[dataclasses.Field[Any], Any, Setting], ...]] = {}


def settings_fields(cls: type[Any]) -> tuple[tuple[dataclasses.Field[Any], Any, Setting], ...]:
    """(field, resolved type, Setting) of every setting of a config dataclass, in declaration order."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple((f, hints[f.name], setting_of(f)) for f in dataclasses.fields(cls)
                             if f.name not in _SECTION_ATTRS)
    return _FIELDS[cls]


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def choices(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a Literal type (after Optional), else None."""
    inner, _ = _optional(tp)
    return get_args(inner) if get_origin(inner) is Literal else None


def convert(key: str, tp: Any, meta: Setting, value: Any) -> Any:
    """The one converter from what a user wrote to the field's Python value; ConfigError names the key."""
    inner, nullable = _optional(tp)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{key}: must be set")
    if get_origin(inner) is Literal:
        allowed = get_args(inner)
        if value not in allowed or not isinstance(value, str):
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if inner is float:
        if meta.duration:
            return parse_duration(value, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if get_origin(inner) is Mapping:
        value_type = get_args(inner)[1]
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a map with string keys, got {value!r}")
        if meta.max_items is not None and len(value) > meta.max_items:
            raise ConfigError(f"{key}: at most {meta.max_items} entries, got {len(value)}")
        return {k: convert(f"{key}[{k!r}]", value_type, meta, v) for k, v in value.items()}
    if get_origin(inner) is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of 'host:port' strings, got {value!r}")
        return tuple(v.strip() for v in value)
    raise AssertionError(f"unhandled config field type {inner!r} for {key}")


def to_text(meta: Setting, value: float) -> str:
    """A number as a user writes it: "1s" for durations, "4096" otherwise."""
    if meta.duration:
        return format_duration(value)
    return str(value) if isinstance(value, int) or not value.is_integer() else str(int(value))


def _range_problem(key: str, meta: Setting, value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    low, high = meta.minimum, meta.maximum
    too_low = low is not None and (value <= low if meta.above else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return None
    got = to_text(meta, value)
    if meta.above and high is None:
        return f"{key}: must be above {to_text(meta, low or 0)}, got {got}"
    if high is None:
        return f"{key}: must be at least {to_text(meta, low or 0)}, got {got}"
    if low is None:
        return f"{key}: must be at most {to_text(meta, high)}, got {got}"
    return f"{key}: must be {to_text(meta, low)}..{to_text(meta, high)}, got {got}"


def _build(cls: type[Any], section: str, data: Mapping[str, Any], base: Any, problems: list[str]) -> Any:
    fields = {camel(f.name): (f, tp, meta) for f, tp, meta in settings_fields(cls)}
    allowed = set(fields) | ({c for c, _, _ in SECTIONS} if not section else set())
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        where = f"section '{section}'" if section else "top level"
        problems.append(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(allowed))}")
    changes = {}
    for name, (f, tp, meta) in fields.items():
        if name in data:
            try:
                changes[f.name] = convert(f"{section}.{name}" if section else name, tp, meta, data[name])
            except ConfigError as exc:
                problems.extend(exc.problems)
    return dataclasses.replace(base, **changes)


def from_mapping(data: Mapping[str, Any], *, base: AgentConfig | None = None) -> AgentConfig:
    """Build and validate a config from a camelCase mapping (a YAML config file or the agent sections of a
    GossipCluster spec).

    Unknown keys are errors (a typo must not silently fall back to a default). A `preset` key picks the
    base timings, which the mapping's own keys then override. ConfigError lists every problem found.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    preset = data.get("preset", base.preset if base else "lan")
    if preset not in PRESETS:
        raise ConfigError(f"preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
    if base is None or preset != base.preset:
        base = AgentConfig.preset_config(preset) if base is None else dataclasses.replace(
            base, preset=preset, membership=PRESET_MEMBERSHIP[preset], gossip=PRESET_GOSSIP[preset])
    problems: list[str] = []
    cfg: AgentConfig = _build(AgentConfig, "", data, base, problems)
    for key, attr, cls in SECTIONS:
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            problems.append(f"{key}: expected a mapping, got {type(section).__name__}")
            continue
        cfg = dataclasses.replace(cfg, **{attr: _build(cls, key, section, getattr(cfg, attr), problems)})
    given = frozenset(data.get("membership") or {}) if isinstance(data.get("membership"), Mapping) else frozenset()
    problems.extend(check(cfg, preset_note="probeInterval" not in given))
    if problems:
        raise ConfigError(*problems)
    return cfg


def to_mapping(cfg: AgentConfig) -> dict[str, Any]:
    """The camelCase mapping that `from_mapping` reads back to an equal config."""
    out: dict[str, Any] = {}
    for f, _, meta in settings_fields(AgentConfig):
        out[camel(f.name)] = _plain(meta, getattr(cfg, f.name))
    for key, attr, cls in SECTIONS:
        section = getattr(cfg, attr)
        out[key] = {camel(f.name): _plain(meta, getattr(section, f.name)) for f, _, meta in settings_fields(cls)}
    return out


def _plain(meta: Setting, value: Any) -> Any:
    if meta.duration and isinstance(value, float):
        return format_duration(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def validate(cfg: AgentConfig) -> None:
    """Raise ConfigError listing every problem of a config built in code (ranges and cross-field rules)."""
    problems = check(cfg)
    if problems:
        raise ConfigError(*problems)


def _zone_problem(zone: str) -> str | None:
    """What is wrong with a configured zone (core/topology.parse_zone's message), or None. An empty zone is
    refused here: unset it instead."""
    try:
        return None if parse_zone(zone) is not None else "must not be empty (leave it unset)"
    except ValueError as exc:
        return str(exc)


def check(cfg: AgentConfig, *, preset_note: bool = False) -> list[str]:
    """Every problem of `cfg`: each setting's range, then the rules that relate settings.

    `preset_note`: probeInterval was not set by the user, so a message about it names the preset it came from.
    """
    problems: list[str] = []
    for key, attr, cls in (("", "", AgentConfig), *SECTIONS):
        obj = getattr(cfg, attr) if attr else cfg
        for f, _, meta in settings_fields(cls):
            name = f"{key}.{camel(f.name)}" if key else camel(f.name)
            if (problem := _range_problem(name, meta, getattr(obj, f.name))) is not None:
                problems.append(problem)
    m, g = cfg.membership, cfg.gossip
    rules: list[tuple[bool, str]] = [
        # A name from the environment can hold lone surrogates (undecodable bytes): no peer could decode it.
        (not any("\ud800" <= ch <= "\udfff" for ch in cfg.name), "name: must be valid UTF-8 text"),
        (bool(cfg.name) and len(cfg.name.encode("utf-8", "surrogatepass")) <= 128, "name: must be 1..128 bytes"),
        # Peers refuse names with control characters (core/codec.py: terminal injection), so must we.
        (first_control_char(cfg.name) is None, "name: no control characters"),
        (m.probe_interval <= 0 or m.probe_timeout <= 0 or m.probe_timeout < m.probe_interval,
         f"membership.probeTimeout ({format_duration(m.probe_timeout)}) must be above 0 and below "
         f"membership.probeInterval ({format_duration(m.probe_interval)}"
         f"{', the ' + cfg.preset + ' preset' if preset_note else ''})"),
        (m.reconnect_interval == 0 or m.reconnect_interval >= MIN_SYNC_INTERVAL,
         f"membership.reconnectInterval: must be 0s (off) or at least 1s, got {format_duration(m.reconnect_interval)}"),
        (g.push_pull_interval == 0 or g.push_pull_interval >= MIN_SYNC_INTERVAL,
         f"gossip.pushPullInterval: must be 0s (off) or at least 1s, got {format_duration(g.push_pull_interval)}"),
        (g.max_meta_bytes * 2 <= g.mtu,
         f"gossip.maxMetaBytes ({g.max_meta_bytes}) must be at most half of gossip.mtu ({g.mtu})"),
        ("" not in cfg.state.conflict_policies,
         "state.conflictPolicies: a key prefix must not be empty (use state.conflictPolicy for all keys)"),
        (bool(cfg.security.tls_cert_file) == bool(cfg.security.tls_key_file),
         "security: tlsCertFile and tlsKeyFile must be given together"),
        (cfg.security.tls_client_auth != "required"
         or (bool(cfg.security.tls_cert_file) and bool(cfg.security.tls_ca_file)),
         "security.tlsClientAuth: required needs tlsCertFile, tlsKeyFile and tlsCaFile (the CA that verifies "
         "client certificates)"),
    ]
    fraction = cfg.topology.cross_zone_fraction
    rules.append((fraction == fraction,  # NaN passes the range check (every comparison is False)
                  f"topology.crossZoneFraction: must be {MIN_CROSS_ZONE_FRACTION}..1, got {fraction!r}"))
    if cfg.topology.zone is not None:
        rules.append((_zone_problem(cfg.topology.zone) is None,
                      f"topology.zone: {_zone_problem(cfg.topology.zone)}"))
    for seed in cfg.seeds:
        host, sep, port = seed.rpartition(":")
        rules.append((bool(sep) and bool(host) and port.isdigit() and 0 < int(port) < 65536,
                      f"seeds: {seed!r} is not 'host:port'"))
    # Values a config built in code can hold although the parser would never produce them.
    for key, value, allowed in (
        ("membership.probeSchedule", m.probe_schedule, PROBE_SCHEDULES),
        ("gossip.mode", g.mode, GOSSIP_MODES),
        ("gossip.broadcast", g.broadcast, BROADCAST_PATHS),
        ("state.conflictPolicy", cfg.state.conflict_policy, CONFLICT_POLICIES),
        ("storage.fsync", cfg.storage.fsync, FSYNC_POLICIES),
        ("security.tlsClientAuth", cfg.security.tls_client_auth, TLS_CLIENT_AUTH),
        ("topology.mode", cfg.topology.mode, TOPOLOGY_MODES),
    ):
        rules.append((value in allowed, f"{key}: must be one of {', '.join(allowed)}, got {value!r}"))
    rules.extend((policy in CONFLICT_POLICIES,
                  f"state.conflictPolicies[{prefix!r}]: must be one of {', '.join(CONFLICT_POLICIES)}, got {policy!r}")
                 for prefix, policy in cfg.state.conflict_policies.items())
    problems.extend(message for ok, message in rules if not ok)
    return problems
