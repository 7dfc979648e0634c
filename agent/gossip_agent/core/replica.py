"""Composition rules of one replica that need no I/O: who the replica is, what a state rumor carries, when
to publish our Merkle root, which peer to repair from, and when a write concern is met.

Why a module of its own: the state service (io/state_service.py) wires the store, the log, the Node and
HTTP together; the decisions it takes on the way are small but easy to get subtly wrong, and here they
take `now` as an argument and can be tested without sockets or clocks.

- Replica ids. Version vectors name writers; a node whose data dir was wiped restarts its dot counters at
  1, and dots its peers have already seen would be taken for old news (the new writes lost). So the writer
  id is the member name plus an *epoch* picked when a store starts empty: `demo-0@5f3a9c`.
- Rumor payloads. A key's whole state travels in one rumor when it fits a packet. When it does not (big
  values, many siblings) an *announcement* (key, digest of the state, origin address) travels instead and
  receivers that hold another digest pull the state over HTTP; anti-entropy remains the backstop.
- Root publication. Membership metadata carries our Merkle root; updating it bumps our incarnation and
  broadcasts an Alive, so it is rate-limited (`MetaPublisher`) and only sent when it changed.
- Divergence repair. A peer whose published root has differed from ours for a while, and is not itself
  still changing, is a better anti-entropy partner than a random one (`RepairPlanner`): after writes stop
  the cluster converges in about one hold time plus one exchange instead of one anti-entropy interval.
- Write concern. `w=N` means N holders including us; `WriteConcern` counts acknowledgements by peer.
- Retirement (bounded version vectors). A writer whose member name has been missing from the member table
  (reaped: not alive, suspect, dead or left) continuously for longer than `state.tombstoneTtl` is retired:
  its entries are pruned from contexts (`KvStore.retire_nodes`, safety rule in core/vector_clock.py); a
  name that comes back is unretired. `Retirement` keeps the absence clocks; the store says which writers
  are safe to prune (`KvStore.context_writers`); our own replica id is never retired.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gossip_agent.core import codec
from gossip_agent.core.codec_limits import DEFAULT_LIMITS, CodecLimits, StateCodecError
from gossip_agent.core.convergence import META_HLC, META_KEYS, META_ROOT, parse_state_meta
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.keys import key_problem
from gossip_agent.core.kvstore import Entry
from gossip_agent.core.messages import Address, MemberSnapshot, MemberState, PullRequest, StateRumor
from gossip_agent.core.state_codec import decode_rumor

ANNOUNCE = 6
"""Format tag of a large-value announcement (state_codec's rumor is tag 1)."""
EPOCH_SEPARATOR = "@"
MAX_WRITE_CONCERN = 64
_DIGEST_BYTES = 32


# -- replica ids ------------------------------------------------------------------------------------------
def replica_id(name: str, epoch: str) -> str:
    """The writer id of a store: member name and the epoch of its (current) data."""
    if not epoch or not epoch.isalnum():
        raise ValueError(f"replica epoch must be a non-empty alphanumeric string, got {epoch!r}")
    return f"{name}{EPOCH_SEPARATOR}{epoch}"


def member_of(replica: str) -> str:
    """The member name in a replica id (the id itself if it has no epoch)."""
    name, sep, _ = replica.rpartition(EPOCH_SEPARATOR)
    return name if sep else replica


# -- rumor payloads ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Announcement:
    """A key's state is too big for a packet: it exists, here is its digest, pull it from `origin`."""

    key: str
    digest: bytes
    origin: Address


def encode_announcement(ann: Announcement) -> bytes:
    data: bytes = msgpack.packb([ANNOUNCE, ann.key, ann.digest, ann.origin[0], ann.origin[1]], use_bin_type=True)
    return data


def decode_payload(payload: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Entry | Announcement:
    """A state rumor payload: a whole entry, or an announcement. Raises StateCodecError (malformed) or
    EntryOverLimit (well-formed, but its entry or announced key is refused: counted by reason)."""
    if payload[:2] == bytes((0x95, ANNOUNCE)):
        return _decode_announcement(payload, limits)
    return decode_rumor(payload, limits)


def _decode_announcement(payload: bytes, limits: CodecLimits) -> Announcement:
    if len(payload) > 64 + limits.max_key_bytes + 256:
        raise StateCodecError(f"announcement of {len(payload)} bytes is too long")
    try:
        data = msgpack.unpackb(payload, raw=False, max_str_len=len(payload), max_bin_len=len(payload),
                               max_array_len=8, max_map_len=0, max_ext_len=0)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as err:
        raise StateCodecError(f"malformed announcement: {err}") from None
    if not (isinstance(data, list) and len(data) == 5 and data[0] == ANNOUNCE and isinstance(data[1], str)
            and isinstance(data[2], bytes) and len(data[2]) == _DIGEST_BYTES and isinstance(data[3], str)
            and isinstance(data[4], int) and not isinstance(data[4], bool) and 0 < data[4] < 65536):
        raise StateCodecError("announcement: expected [6, key, 32-byte digest, host, port]")
    try:
        size = len(data[1].encode())
    except UnicodeEncodeError:
        raise StateCodecError("announcement: key is not valid UTF-8") from None
    if not 0 < size <= limits.max_key_bytes or len(data[3]) > 255:
        raise StateCodecError("announcement: key or host too long")
    problem = key_problem(data[1])
    if problem is not None:  # (counted as the entry it announces would be: a fetch would be refused anyway)
        raise EntryOverLimit("invalid_key", f"announcement: {problem}")
    return Announcement(data[1], data[2], (data[3], data[4]))


def inline_budget(mtu: int, sender: str, sender_addr: Address) -> int:
    """Largest state rumor payload that always fits a gossip packet of `sender` (with the pull request
    that push-pull gossip adds to each packet): larger states are announced instead."""
    reserve = codec.message_size(PullRequest(sender, sender_addr)) + 16
    rumor_overhead = codec.message_size(StateRumor(b"\x00" * 70000)) - 70000
    return mtu - codec.packet_overhead(sender) - reserve - rumor_overhead


# -- metadata ---------------------------------------------------------------------------------------------
class MetaPublisher:
    """Publish our state metadata at most every `min_interval` seconds, and only when it changed."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self.published: dict[str, str] = {}
        self._at = float("-inf")

    def due(self, now: float, meta: Mapping[str, str]) -> bool:
        return dict(meta) != self.published and now - self._at >= self.min_interval

    def due_at(self, meta: Mapping[str, str]) -> float:
        """When `meta` may be published (inf: it is what we publish already)."""
        return float("inf") if dict(meta) == self.published else self._at + self.min_interval

    def done(self, now: float, meta: Mapping[str, str]) -> None:
        self.published = dict(meta)
        self._at = now


def merged_meta(current: Mapping[str, str], state: Mapping[str, str]) -> dict[str, str]:
    """Our full metadata: what the member already publishes (config labels) with the state keys replaced."""
    out = {k: v for k, v in current.items() if k not in (META_ROOT, META_KEYS, META_HLC)}
    out.update(state)
    return out


def counted_members(members: Iterable[MemberSnapshot], me: str) -> dict[str, str | None]:
    """{member: published root or None} for every member still counted as part of the cluster: alive,
    suspect, or dead but not reaped (a member we cannot hear from cannot be assumed to agree). Members that
    left gracefully are not counted."""
    out: dict[str, str | None] = {}
    for m in members:
        if m.name == me or m.state == MemberState.LEFT:
            continue
        published = parse_state_meta(m.meta)
        out[m.name] = published.root if published is not None else None
    return out


# -- repair target ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Seen:
    root: str | None
    since: float


@dataclass(slots=True)
class RepairPlanner:
    """Which peer to run anti-entropy with now, beyond the periodic random one.

    A peer qualifies when its published root differs from ours, has not changed for `hold` seconds (it is
    not mid-way through receiving rumors), and ours has not changed for `hold` seconds either. At most one
    such repair per `min_gap` seconds.

    BACK OFF WHEN REPAIRS CHANGE NOTHING. A difference no session can repair (a peer that refuses our state)
    drew a session every `min_gap` forever: 145-370 KB/s per agent of anti-entropy on an idle cluster. So each
    session that ends having changed nothing on either side (`finished`) doubles the gap before the next, up to
    `max_gap`; one that changed something, or a root that changes (ours or a peer's: there is news to repair),
    puts it back to `min_gap`.

    NEAR FIRST, FAR ONLY WHEN THE ZONE AGREES. With topology-aware choice (core/topology.py) a far member's
    digest reaches us mostly through the few packets that cross zones, so the far root we hold is often one
    the far member has long replaced: during a stream of writes it stays "stable and divergent" while every
    near root keeps moving, and a planner that took any stable divergent root sent most repairs across zones
    to pull data the far member's rumors had brought us already (measured: anti-entropy was 60 % of the
    cross-zone bytes of a write burst). So when the caller says which peers are near (`near`):
    - a near divergent peer is always preferred (it costs no cross-zone bytes);
    - a far one qualifies only once no near peer's root differs from ours (our zone agrees: what the far
      root has that ours lacks, no near member has either) and ours has been stable `far_hold` seconds
      (long enough for the far members' newer digests to reach us, so a stale far root is not repaired).
    Convergence is kept: when the far zone alone holds a change, our zone agrees on the root without it and
    the far repair runs `far_hold` after it settled; and the periodic anti-entropy partner is still far with
    probability crossZoneFraction (Demers' guaranteed far share), whatever this planner does.
    """

    hold: float
    min_gap: float
    far_hold: float = 0.0
    max_gap: float = 0.0  # (below min_gap: no backoff)
    _peers: dict[str, _Seen] = field(default_factory=dict)
    _mine: _Seen = field(default_factory=lambda: _Seen(None, 0.0))
    _last: float = float("-inf")
    _gap: float = field(default=-1.0, init=False)

    def __post_init__(self) -> None:
        self._gap = self.min_gap

    @property
    def gap(self) -> float:
        """The time between two repairs now: `min_gap`, doubled by each session that changed nothing."""
        return self._gap

    def observe(self, now: float, my_root: str, roots: Mapping[str, str | None]) -> None:
        """Everything at once: our root and every peer's (peers missing from `roots` are forgotten)."""
        self.mine(now, my_root)
        for name in [n for n in self._peers if n not in roots]:
            del self._peers[name]
        for name, root in roots.items():
            self.peer(now, name, root)

    def mine(self, now: float, my_root: str) -> None:
        """Our root now (a change restarts our hold)."""
        if self._mine.root != my_root:
            self._mine = _Seen(my_root, now)
            self._gap = self.min_gap

    def rename_mine(self, my_root: str) -> None:
        """Our root, unchanged since the last `mine`, now known by another name (the state core names a root it
        did not compute by its tree's version): the hold goes on."""
        self._mine = _Seen(my_root, self._mine.since)

    def peer(self, now: float, name: str, root: str | None) -> None:
        """One peer's published root now (incremental form of `observe`, fed by member events)."""
        seen = self._peers.get(name)
        if seen is None or seen.root != root:
            self._peers[name] = _Seen(root, now)
            self._gap = self.min_gap

    def forget(self, name: str) -> None:
        self._peers.pop(name, None)

    def earliest(self) -> float:
        """No pick can succeed before this time (our hold and the gap since the last repair)."""
        return max(self._last + self._gap, self._mine.since + self.hold)

    def pick(self, now: float, live: Iterable[str], choice: float,
             near: Callable[[str], bool | None] | None = None) -> str | None:
        """A peer to repair from, or None. `choice` in [0, 1) picks among the candidates (the caller's RNG)."""
        return self.plan(now, live, choice, near)[0]

    def plan(self, now: float, live: Iterable[str], choice: float,
             near: Callable[[str], bool | None] | None = None) -> tuple[str | None, float]:
        """`pick`, and the time a pick is next worth trying if there is none now (inf: no divergent peer).
        `near(name)` says whether a peer is near (None: not known, e.g. no topology; such a peer is neither
        preferred nor held back): see the class docstring."""
        if now < self.earliest():
            return None, self.earliest()
        mine = self._mine.root
        near_ready: list[str] = []
        far_ready: list[str] = []
        near_moving = False  # a near peer's root differs from ours: our zone does not agree yet
        later = float("inf")
        for name in live:
            seen = self._peers.get(name)
            if seen is None or seen.root is None or seen.root == mine:
                continue
            is_far = near is not None and near(name) is False
            if not is_far:
                near_moving = True
            if now >= seen.since + self.hold:  # the deadline's own expression: no rounding gap to spin in
                (far_ready if is_far else near_ready).append(name)
            elif not is_far:
                later = min(later, seen.since + self.hold)
            else:
                later = min(later, max(seen.since + self.hold, self._mine.since + self.far_hold))
        if near_ready:
            near_ready.sort()
            return near_ready[min(len(near_ready) - 1, int(choice * len(near_ready)))], self.earliest()
        if far_ready and not near_moving:
            far_from = self._mine.since + self.far_hold
            if now >= far_from:
                far_ready.sort()
                return far_ready[min(len(far_ready) - 1, int(choice * len(far_ready)))], self.earliest()
            later = min(later, far_from)
        return None, later

    def started(self, now: float) -> None:
        self._last = now

    def finished(self, changed: bool) -> None:
        """A session with a divergent peer ended; `changed`: it changed a key on either side (pushes the peer
        refused do not count). See the class docstring."""
        self._gap = self.min_gap if changed else max(self.min_gap, min(self.max_gap, 2 * self._gap))


# -- retirement -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetirementPlan:
    retire: frozenset[str]    # replica ids whose member has been gone longer than the TTL
    unretire: frozenset[str]  # retired replica ids whose member is back


@dataclass(slots=True)
class Retirement:
    """When each member name (of the writers a store names) was first seen missing from the member table.

    `seen(name)` resets a name's absence at once (a member event between two `plan` calls); `plan` is the
    periodic check. Absence is measured from the first check (or reap) that saw it, so it is never
    overestimated; after a restart every absence starts again.
    """

    ttl: float
    _absent_since: dict[str, float] = field(default_factory=dict)

    def seen(self, name: str) -> None:
        self._absent_since.pop(name, None)

    def plan(self, now: float, *, writers: Iterable[str], retired: Collection[str], present: Collection[str],
             me: str) -> RetirementPlan:
        """`writers`: replica ids the store names and has not retired; `retired`: those it has; `present`:
        member names in the member table (any state); `me`: our own replica id."""
        for step in self.plan_steps(now, writers=writers, retired=retired, present=present, me=me):
            if step is not None:
                return step
        raise AssertionError("plan_steps ends with the plan")  # (unreachable)

    def plan_steps(self, now: float, *, writers: Iterable[str], retired: Collection[str], present: Collection[str],
                   me: str, budget: int | None = None) -> Iterator[RetirementPlan | None]:
        """`plan`, `budget` names at a time: yields None after each `budget` names handled (writers, member names,
        absences, retired ids), the plan last. Why: a store may name a million writers (a peer's entries may name
        16,384 each), and one plan of them held the event loop ~1.3 s; the state core takes a step per tick
        (core/state_node.py). `writers` and `retired` must not change while the steps run; `seen` may."""
        absent_since = self._absent_since
        work = 0
        by_name: dict[str, list[str]] = {}
        for replica in writers:
            if replica != me:
                by_name.setdefault(member_of(replica), []).append(replica)
            work += 1
            if budget is not None and work >= budget:
                work = 0
                yield None
        retire: set[str] = set()
        for name, replicas in by_name.items():
            if name in present or name == member_of(me):
                absent_since.pop(name, None)
            else:
                since = absent_since.setdefault(name, now)
                if now - since > self.ttl:
                    retire.update(replicas)
            work += 1
            if budget is not None and work >= budget:
                work = 0
                yield None
        for name in list(absent_since):  # (a copy: `seen` may drop names between steps)
            if name not in by_name:
                absent_since.pop(name, None)
            work += 1
            if budget is not None and work >= budget:
                work = 0
                yield None
        unretire: set[str] = set()
        for replica in retired:
            if member_of(replica) in present:
                unretire.add(replica)
            work += 1
            if budget is not None and work >= budget:
                work = 0
                yield None
        yield RetirementPlan(frozenset(retire), frozenset(unretire))


# -- write concern ----------------------------------------------------------------------------------------
def parse_write_concern(raw: str | None, *, default: int = 1) -> int:
    """`?w=N` → N (1..MAX_WRITE_CONCERN); ValueError naming the problem. `all` is not supported: the cluster
    size changes under a write, so a client should say how many holders it needs."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):  # "²".isdigit() is True; int() refuses it
        raise ValueError(f"w must be an integer 1..{MAX_WRITE_CONCERN} (holders including this agent), "
                         f"got {raw[:20]!r}")
    w = int(raw)
    if not 1 <= w <= MAX_WRITE_CONCERN:
        raise ValueError(f"w must be 1..{MAX_WRITE_CONCERN} (holders including this agent), got {w}")
    return w


@dataclass(slots=True)
class WriteConcern:
    """Bookkeeping of one write with `w` required holders (we hold it already)."""

    w: int
    acked: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def holders(self) -> int:
        return 1 + len(self.acked)

    @property
    def needed(self) -> int:
        return max(0, self.w - self.holders)

    @property
    def met(self) -> bool:
        return self.holders >= self.w

    def ack(self, peer: str) -> None:
        self.acked.add(peer)

    def fail(self, peer: str) -> None:
        self.failed[peer] = self.failed.get(peer, 0) + 1

    def next_targets(self, live: Iterable[str], in_flight: Iterable[str], order: Iterable[float],
                     slow: Iterable[str] = ()) -> list[str]:
        """Peers to ask now: enough to cover what is still needed, never one that acknowledged or is being
        asked; peers that failed fewer times first, then in the caller's random `order` (one float per
        live peer). Asks still in flight but `slow` (past the caller's hedge delay) no longer count toward
        what is covered: one paused peer must not hold a write for its whole timeout while others are free."""
        busy = set(in_flight)
        room = self.needed - len(busy - set(slow))
        if room <= 0:
            return []
        ranked = sorted((self.failed.get(name, 0), rank, name) for name, rank in zip(live, order, strict=False)
                        if name not in self.acked and name not in busy)
        return [name for _, _, name in ranked[:room]]

    def timeout_message(self, timeout: float) -> str:
        return (f"write concern not met: {self.holders} of {self.w} members acknowledged the write within "
                f"{timeout:g}s; it is stored on this agent (and logged) and may still converge to the others")


def hedge_delay(timeout: float) -> float:
    """How long a replication ask may stay unanswered before another peer is asked too: a fifth of the
    write's timeout, between 0.1 s (a healthy peer on a busy machine answers well within it) and 1 s."""
    return min(1.0, max(0.1, timeout / 5))


def status_block(root: str, keys: int, hlc_ms: int, tombstones: int, replica: str) -> dict[str, Any]:
    """The `state` object of `GET /v1/status` (docs/agent-api.md)."""
    return {"root": root, "keys": keys, "hlc": hlc_ms, "tombstones": tombstones, "replica": replica}
