"""Agent configuration: one frozen object, presets, and validation with errors a user can act on.

The file format is YAML with camelCase keys, and its sections (`membership`, `gossip`, `antiEntropy`,
`state`, `storage`, `security`) are the same as a GossipCluster's `spec`: the operator copies the spec's
sections into the agent's ConfigMap, and `gossipctl up` hands a manifest's spec to the agents it starts.
So there is one mapping from user words to agent settings, and it lives here.

Defaults follow hashicorp/memberlist (`DefaultLANConfig`, `DefaultLocalConfig`, `DefaultWANConfig`):
those numbers have years of production behind them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossip_agent.core.text import first_control_char

GOSSIP_MODES = ("push", "pull", "push-pull")
PROBE_SCHEDULES = ("aligned", "shuffled")
CONFLICT_POLICIES = ("lww", "siblings")
FSYNC_POLICIES = ("always", "interval", "never")
TLS_CLIENT_AUTH = ("optional", "required")
PRESETS = ("lan", "local", "wan")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names the key and what is allowed."""


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """SWIM failure detection and Lifeguard settings."""

    # Time between probes of one member. memberlist LAN: 1 s. Lower detects faster but costs traffic.
    probe_interval: float = 1.0
    # Wait this long for a direct ack before asking others (ping-req). Must be below probe_interval, and
    # above the network's 99th-percentile round trip, or healthy members get suspected.
    probe_timeout: float = 0.5
    # Members asked to ping a target that missed its direct ack. 3 keeps false positives rare at 10% loss.
    indirect_checks: int = 3
    # Suspicion timeout multiplier: min timeout = mult * max(1, log10(N)) * probe_interval.
    suspicion_mult: int = 4
    # Lifeguard: the suspicion timeout starts at max_timeout_mult * min and shrinks with confirmations.
    suspicion_max_timeout_mult: int = 6
    # Lifeguard local health: probe interval and timeout are scaled by (1 + score), score ≤ this - 1.
    awareness_max_multiplier: int = 8
    # Dead and left members are kept (and still gossiped to) this long, then reaped from the table.
    reap_after: float = 30.0
    # Fall back to a TCP (HTTP) ping when UDP fails both directly and indirectly (memberlist does too):
    # it tells a member behind a UDP-only fault apart from a dead one.
    tcp_fallback_probe: bool = True
    # "aligned": members share one randomized ring and a round number from the wall clock, so every member is
    # probed by exactly one other in every interval and a failure is noticed within ~1 interval, not after an
    # exponential wait (a tail of several intervals). "shuffled": memberlist's per-member shuffled order.
    probe_schedule: str = "aligned"
    # Timeout of a stream (HTTP) exchange: push-pull sync, TCP probe, anti-entropy.
    stream_timeout: float = 10.0
    # Members declared dead (not left) are retried with a push-pull sync this often, so a healed partition
    # merges again even after the dead were reaped (Serf's reconnect; memberlist leaves it to its user).
    reconnect_interval: float = 30.0
    # ... for at most this long after their death.
    reconnect_timeout: float = 24 * 3600.0
    # Most members the table holds (self, dead and left included). A new member past it is refused and counted
    # (gossip_dropped_total{reason="member_cap"}): forged Alive floods cannot grow memory, CPU per probe round
    # or push-pull size without bound. 5000 is ~2x the largest cluster the benchmarks run (2,000 members in the
    # simulator), and keeps a full push-pull (~100 B a member) under the 2 MiB stream cap.
    max_members: int = 5000


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Dissemination settings."""

    mode: str = "push-pull"
    # Random peers that receive a gossip packet every interval. memberlist LAN: 3.
    fanout: int = 3
    interval: float = 0.2
    # A rumor is retransmitted retransmit_mult * ceil(log10(N + 1)) times, then dropped from the queue.
    retransmit_mult: int = 4
    # Forward a fresh rumor at once to `fanout` peers instead of waiting for the next gossip tick.
    immediate_forward: bool = True
    # Full membership (and, with agent state, Merkle root) sync with one random peer this often.
    push_pull_interval: float = 30.0
    # Largest UDP packet we send; piggybacked rumors are packed up to it.
    mtu: int = 1400
    # Largest accepted member metadata (encoded bytes), so a member cannot bloat every packet.
    max_meta_bytes: int = 512


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Merkle anti-entropy with a random peer."""

    interval: float = 10.0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Replicated key-value state."""

    conflict_policy: str = "lww"
    # Per key prefix overrides, longest prefix wins: {"carts/": "siblings"}.
    conflict_policies: Mapping[str, str] = field(default_factory=dict)
    max_key_bytes: int = 256
    max_value_bytes: int = 64 * 1024
    # Tombstones are collected once every current member has seen them, or after this TTL at the latest.
    tombstone_ttl: float = 24 * 3600.0
    # A timestamp (client causal context, rumor, anti-entropy or replicated entry) more than this far ahead of
    # our clock is refused (400, or a counted drop) instead of dragging our clock into the future: one forged
    # HLC near 2^63 used to stop every later write from replicating. Honest clocks (NTP) differ by far less;
    # an honest entry refused for a skewed writer clock is accepted once our clock catches up (anti-entropy).
    max_clock_drift_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Durability: an append-only log and periodic snapshots in data_dir (None = in memory only)."""

    data_dir: str | None = None
    fsync: str = "interval"
    fsync_interval: float = 0.05
    snapshot_every: int = 10_000


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Paths to secret material; empty = plaintext (fine on loopback, not in a cluster)."""

    keyring_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    # Bearer tokens of the HTTP API, one `scope:token` a line (scope `read` or `write`; write implies read).
    # Unset: the API is open (local development; the agent logs a warning). Probes and /metrics stay open.
    api_tokens_file: str | None = None
    # "required": every API request except /healthz, /readyz and /metrics must present a client certificate
    # that tlsCaFile verifies (checked per request, so kubelet probes and scrapes without one still work).
    tls_client_auth: str = "optional"
    # Sealed UDP packets older (or further ahead) than this by their sealing time are dropped as replays, and
    # a nonce seen within it is dropped too (gossip_dropped_total{reason="replay"}). It must exceed the clock
    # skew between members plus the network delay; keyring rotation does not matter (the stamp is inside the
    # authenticated plaintext, whatever key sealed it).
    replay_window: float = 60.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything an agent needs to run. Build with `AgentConfig.preset(...)` or `from_mapping(...)`."""

    name: str = "agent"
    bind_address: str = "0.0.0.0"
    port: int = 7946
    advertise_address: str | None = None
    advertise_port: int | None = None
    # "host:port" entries; a host may be a DNS name (e.g. a headless Service), re-resolved on every retry.
    seeds: tuple[str, ...] = ()
    preset: str = "lan"
    meta: Mapping[str, str] = field(default_factory=dict)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    anti_entropy: AntiEntropyConfig = field(default_factory=AntiEntropyConfig)
    state: StateConfig = field(default_factory=StateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @staticmethod
    def preset_config(preset: str = "lan", **overrides: Any) -> AgentConfig:
        """A config with a preset's timings (memberlist's LAN/local/WAN numbers) and top-level overrides."""
        base = AgentConfig(preset=preset, membership=_PRESET_MEMBERSHIP[preset], gossip=_PRESET_GOSSIP[preset])
        cfg = dataclasses.replace(base, **overrides)
        validate(cfg)
        return cfg


_PRESET_MEMBERSHIP = {
    "lan": MembershipConfig(),
    "local": MembershipConfig(
        probe_interval=1.0, probe_timeout=0.2, indirect_checks=1, suspicion_mult=3, reap_after=15.0,
        stream_timeout=1.0, reconnect_interval=10.0,
    ),
    "wan": MembershipConfig(
        probe_interval=5.0, probe_timeout=3.0, suspicion_mult=6, reap_after=60.0, stream_timeout=30.0,
    ),
}
_PRESET_GOSSIP = {
    "lan": GossipConfig(),
    "local": GossipConfig(interval=0.1, retransmit_mult=2, push_pull_interval=15.0),
    "wan": GossipConfig(fanout=4, interval=0.5, push_pull_interval=60.0),
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number (seconds) or a string like "500ms", "1s", "2m", "1h"."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '500ms' or '1s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ConfigError(f"{key}: expected a duration like '500ms', '1s', '2m', got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration like '500ms' or '1s', got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return seconds


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_SECTIONS: dict[str, tuple[str, type[Any]]] = {
    "membership": ("membership", MembershipConfig),
    "gossip": ("gossip", GossipConfig),
    "antiEntropy": ("anti_entropy", AntiEntropyConfig),
    "state": ("state", StateConfig),
    "storage": ("storage", StorageConfig),
    "security": ("security", SecurityConfig),
}
# Keys that may appear in a GossipCluster spec but mean nothing to an agent (the operator's business).
_IGNORED_TOP = frozenset({
    "replicas", "image", "imagePullPolicy", "resources", "pod", "paused", "podDisruptionBudget", "apiVersion",
    "kind", "metadata", "storageSize", "storageClassName",
})
# Keys inside a section that only the operator reads (volume size, Secret names).
_IGNORED_IN_SECTION = {
    "storage": frozenset({"size", "storageClassName", "ephemeral"}),
    "security": frozenset({"gossipKeySecret", "tlsSecret"}),
}


def _convert(section: str, fld: dataclasses.Field[Any], value: Any) -> Any:
    key = f"{section}.{_camel(fld.name)}" if section else _camel(fld.name)
    default = fld.default if fld.default is not dataclasses.MISSING else None
    ftype = str(fld.type)
    if value is None:
        if "None" in ftype:
            return None
        raise ConfigError(f"{key}: must be set")
    if ftype == "float":
        return parse_duration(value, key) if _is_duration(fld.name) else _number(value, key)
    if ftype == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if ftype == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if ftype in ("str", "str | None"):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if ftype == "Mapping[str, str]":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in value.items()):
            raise ConfigError(f"{key}: expected a map of strings, got {value!r}")
        return dict(value)
    if ftype == "int | None":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if ftype == "tuple[str, ...]":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of 'host:port' strings, got {value!r}")
        return tuple(v.strip() for v in value)
    raise AssertionError(f"unhandled config field type {ftype} for {key} (default {default!r})")


def _is_duration(name: str) -> bool:
    return name.endswith(("interval", "timeout", "_after", "_ttl", "_window"))


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _build(cls: type[Any], section: str, data: Mapping[str, Any], base: Any) -> Any:
    fields = {_camel(f.name): f for f in dataclasses.fields(cls)}
    ignored = _IGNORED_TOP | set(_SECTIONS) if not section else _IGNORED_IN_SECTION.get(section, frozenset())
    unknown = sorted(set(data) - set(fields) - ignored)
    if unknown:
        where = f"section '{section}'" if section else "top level"
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(fields))}")
    changes = {f.name: _convert(section, f, data[camel]) for camel, f in fields.items()
               if camel in data and f.name not in {s[0] for s in _SECTIONS.values()}}
    return dataclasses.replace(base, **changes)


def from_mapping(data: Mapping[str, Any], *, base: AgentConfig | None = None) -> AgentConfig:
    """Build and validate a config from a camelCase mapping (a YAML config file or a GossipCluster spec).

    Unknown keys are errors (a typo must not silently fall back to a default). A `preset` key picks the
    base timings, which the mapping's own keys then override.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    preset = data.get("preset", base.preset if base else "lan")
    if preset not in PRESETS:
        raise ConfigError(f"preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
    if base is None or preset != base.preset:
        base = AgentConfig.preset_config(preset) if base is None else dataclasses.replace(
            base, preset=preset, membership=_PRESET_MEMBERSHIP[preset], gossip=_PRESET_GOSSIP[preset])
    cfg: AgentConfig = _build(AgentConfig, "", data, base)
    for camel, (attr, cls) in _SECTIONS.items():
        if camel in data:
            section = data[camel]
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise ConfigError(f"{camel}: expected a mapping, got {section!r}")
            cfg = dataclasses.replace(cfg, **{attr: _build(cls, camel, section, getattr(cfg, attr))})
    validate(cfg)
    return cfg


def to_mapping(cfg: AgentConfig) -> dict[str, Any]:
    """The camelCase mapping that `from_mapping` reads back to an equal config."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[_camel(f.name)] = {_camel(g.name): _plain(getattr(value, g.name)) for g in dataclasses.fields(value)}
        else:
            out[_camel(f.name)] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def validate(cfg: AgentConfig) -> None:
    """Cross-field rules; raises ConfigError naming the setting and the allowed range."""
    m, g = cfg.membership, cfg.gossip
    checks: list[tuple[bool, str]] = [
        # A name from the environment can hold lone surrogates (undecodable bytes): no peer could decode it.
        (not any("\ud800" <= ch <= "\udfff" for ch in cfg.name), "name: must be valid UTF-8 text"),
        (bool(cfg.name) and len(cfg.name.encode("utf-8", "surrogatepass")) <= 128, "name: must be 1..128 bytes"),
        # Peers refuse names with control characters (core/codec.py: terminal injection), so must we.
        (first_control_char(cfg.name) is None, "name: no control characters"),
        (0 <= cfg.port <= 65535, f"port: must be 0..65535, got {cfg.port}"),
        (cfg.advertise_port is None or 1 <= cfg.advertise_port <= 65535, "advertisePort: must be 1..65535"),
        (m.probe_interval > 0, "membership.probeInterval: must be > 0"),
        (0 < m.probe_timeout < m.probe_interval,
         f"membership.probeTimeout ({m.probe_timeout}s) must be > 0 and below probeInterval ({m.probe_interval}s)"),
        (0 <= m.indirect_checks <= 16, "membership.indirectChecks: must be 0..16"),
        (1 <= m.suspicion_mult <= 100, "membership.suspicionMult: must be 1..100"),
        (1 <= m.suspicion_max_timeout_mult <= 100, "membership.suspicionMaxTimeoutMult: must be 1..100"),
        (1 <= m.awareness_max_multiplier <= 64, "membership.awarenessMaxMultiplier: must be 1..64"),
        (m.stream_timeout > 0, "membership.streamTimeout: must be > 0"),
        (16 <= m.max_members <= 1_000_000, f"membership.maxMembers: must be 16..1000000, got {m.max_members}"),
        (1 <= cfg.state.max_clock_drift_ms <= 86_400_000,
         f"state.maxClockDriftMs: must be 1..86400000 (1 day), got {cfg.state.max_clock_drift_ms}"),
        (1.0 <= cfg.security.replay_window <= 3600.0,
         f"security.replayWindow: must be 1s..1h, got {cfg.security.replay_window}s"),
        (m.reconnect_interval >= 0, "membership.reconnectInterval: must be >= 0 (0 disables reconnects)"),
        (m.probe_schedule in PROBE_SCHEDULES,
         f"membership.probeSchedule: must be one of {', '.join(PROBE_SCHEDULES)}, got {m.probe_schedule!r}"),
        (g.mode in GOSSIP_MODES, f"gossip.mode: must be one of {', '.join(GOSSIP_MODES)}, got {g.mode!r}"),
        (1 <= g.fanout <= 16, f"gossip.fanout: must be 1..16, got {g.fanout}"),
        (g.interval > 0, "gossip.interval: must be > 0"),
        (1 <= g.retransmit_mult <= 100, "gossip.retransmitMult: must be 1..100"),
        (g.push_pull_interval >= 0, "gossip.pushPullInterval: must be >= 0 (0 disables periodic sync)"),
        (576 <= g.mtu <= 65000, f"gossip.mtu: must be 576..65000, got {g.mtu}"),
        (16 <= g.max_meta_bytes <= g.mtu // 2, "gossip.maxMetaBytes: must be 16..mtu/2"),
        (cfg.anti_entropy.interval > 0, "antiEntropy.interval: must be > 0"),
        (cfg.state.conflict_policy in CONFLICT_POLICIES,
         f"state.conflictPolicy: must be one of {', '.join(CONFLICT_POLICIES)}, got {cfg.state.conflict_policy!r}"),
        (all(p in CONFLICT_POLICIES for p in cfg.state.conflict_policies.values()),
         f"state.conflictPolicies: values must be one of {', '.join(CONFLICT_POLICIES)}"),
        (1 <= cfg.state.max_key_bytes <= 4096, "state.maxKeyBytes: must be 1..4096"),
        (1 <= cfg.state.max_value_bytes <= 16 * 1024 * 1024, "state.maxValueBytes: must be 1..16Mi"),
        (cfg.storage.fsync in FSYNC_POLICIES,
         f"storage.fsync: must be one of {', '.join(FSYNC_POLICIES)}, got {cfg.storage.fsync!r}"),
        (bool(cfg.security.tls_cert_file) == bool(cfg.security.tls_key_file),
         "security: tlsCertFile and tlsKeyFile must be given together"),
        (cfg.security.tls_client_auth in TLS_CLIENT_AUTH,
         f"security.tlsClientAuth: must be one of {', '.join(TLS_CLIENT_AUTH)}, got {cfg.security.tls_client_auth!r}"),
        (cfg.security.tls_client_auth != "required"
         or (bool(cfg.security.tls_cert_file) and bool(cfg.security.tls_ca_file)),
         "security.tlsClientAuth: required needs tlsCertFile, tlsKeyFile and tlsCaFile (the CA that verifies "
         "client certificates)"),
    ]
    for seed in cfg.seeds:
        host, sep, port = seed.rpartition(":")
        checks.append((bool(sep) and bool(host) and port.isdigit() and 0 < int(port) < 65536,
                       f"seeds: {seed!r} is not 'host:port'"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
