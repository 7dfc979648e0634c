"""The replicated state layer of one member as a pure state machine: what the membership `Node` is to SWIM.

Drivers (io/state_service.py with sockets and files, sim/state.py with virtual links, tests) feed it events
and the time, and perform the effects it returns; `next_deadline()` says when to call `tick` next. It never
reads a clock, does no I/O and draws randomness only from the `Rng` it was given, so the simulator can run
the product's state layer at a thousand members and a test can step it by hand.

Two times come in, because the layer needs both: `now` (monotonic seconds, like the Node's) for every
schedule, and `wall` (seconds since the epoch) for what other members compare: HLC timestamps of writes,
tombstone ages and convergence times.

What it decides (each rule used to live in the agent's 100 ms housekeeping loop):
- the store (core/kvstore.py): local writes, rumors, pulled values and anti-entropy repairs all merge here,
  and every change it makes leaves as a `Persist` effect (log it before anything is acknowledged);
- dissemination: a local write's whole state is a `Broadcast` (or, too big for a packet, an announcement
  whose receivers `FetchValue` from the origin); rumors already seen (by hash) and announcements already
  handled are remembered in bounded memories and dropped before any decoding;
- convergence digests: our root, key count and HLC are published as a digest (`PublishDigest`, carried
  beside the membership traffic, core/digests.py) once the replica is quiet for DIGEST_QUIET, or once per
  `antiEntropy.interval` while writes keep coming (`digest_max_wait`); it costs no incarnation bump and no
  membership rumor;
- convergence and repair: the members' roots, known from their digests (or, for a member too old to send
  digests, from the metadata its member events carry), feed the convergence tracker and the repair
  planner; a peer divergent for a while gets an `AntiEntropyWith` (one whose digest is only late, older
  than our HLC, after DIGEST_LATE at the earliest), and so does a
  random peer every `antiEntropy.interval` (jittered) and the first peer after we (re)join;
- tombstones every member acknowledges (all publish our root) are collected after ACK_GRACE_MS; writers of
  members gone longer than `state.tombstoneTtl` are retired (core/replica.py's `Retirement`);
- durability policy: `Fsync` every `storage.fsyncInterval` while records are unsynced (policy `interval`),
  `Snapshot` every `storage.snapshotEvery` records and when the retired set changed (only the snapshot
  carries it).

Nothing is polled: each rule has a deadline, and an idle member has only the retirement check (every
RETIRE_EVERY), its periodic anti-entropy and, while it holds tombstones or a graveyard, the TTL check (at
most every GC_IDLE_MAX) left.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gossip_agent.core.anti_entropy import (
    AeRequest,
    AeResponse,
    AnswerMerge,
    Limits,
    PushMerge,
    Session,
    answer_limits,
    request_limits,
    respond,
)
from gossip_agent.core.codec_limits import CodecLimits, StateCodecError
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.convergence import ConvergenceStatus, ConvergenceTracker, parse_state_meta
from gossip_agent.core.digests import ROOT_PREFIX_BYTES, PublishPacing
from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import C, CausalContext, Change, Entry, InvalidEntry, KvStore, entry_digest
from gossip_agent.core.messages import Address, Digest, MemberSnapshot, MemberState
from gossip_agent.core.replica import (
    Announcement,
    RepairPlanner,
    Retirement,
    RetirementPlan,
    decode_payload,
    encode_announcement,
    member_of,
    status_block,
)
from gossip_agent.core.rng import Rng
from gossip_agent.core.state_codec import encode_rumor

# Digest publication: once the replica has been quiet DIGEST_QUIET, or at the latest `digest_max_wait` after the
# first unpublished change while writes keep coming. What convergence needs is the root a replica holds when
# the writes stop, and that is published within DIGEST_QUIET of the last change; a root published while writes
# keep changing it is stale a moment later, yet costs what any publication costs (a row pushed by every member
# and reconciled on probes: at N = 50 about 7 KB, as much as seven 1 KiB writes' payloads). DIGEST_QUIET is
# longer than the gaps of a steady stream (10 writes/s leave gaps of 0.1-0.2 s between changes at a replica):
# with a shorter one each such lull published a row that the next write made stale (0.15 s published the first
# lull of every stream, and every lull more than 2 s after the previous publication).
DIGEST_QUIET = 0.3
DIGEST_MIN_WAIT = 1.0
# A peer whose digest shows an older HLC than ours may simply not have published since it got our newer
# writes: its root is not taken as divergent until DIGEST_LATE after we first saw ours ahead of its digest
# (the time a peer that has the writes takes to publish them, DIGEST_QUIET, and for the digest to spread).
# Bounded per digest, so a peer that truly lacks writes is repaired from at most DIGEST_LATE later (and it
# repairs from us meanwhile: our digest shows it a newer HLC, which it does not wait for).
DIGEST_LATE = DIGEST_QUIET + 0.4
# A divergent peer is repaired from once both roots were stable this long, at most once per gap (in pull mode
# longer: `repair_hold`).
REPAIR_HOLD = 0.3
REPAIR_MIN_GAP = 0.5
# Sessions that change nothing double the gap up to this (RepairPlanner): a difference no session can repair costs
# a session per 30 s, not two a second.
REPAIR_MAX_GAP = 30.0
# A far divergent peer is repaired from only once our zone agrees and our root was stable this long
# (RepairPlanner): a far member's newer digest reaches us through the few packets that cross zones (a changed
# row is pushed FRESH_SENDS times by each of a zone's members, crossZoneFraction of them across), in about a
# second; a far root still different after this is a real difference, not a stale row.
FAR_REPAIR_HOLD = 2.0
# Tombstones acknowledged by every member are collected after this grace (lets the others see the same
# agreement before the first collection changes a root).
ACK_GRACE_MS = 3000
GC_EVERY = 1.0
# With no acknowledgement in its grace, collection waits only for the TTL (tombstones a member never
# confirmed, and the graveyard): checked this often, at most GC_IDLE_MAX, so an idle member does not wake
# every GC_EVERY for a whole TTL after one delete; a collection is at most a tenth of the TTL late.
GC_IDLE_MAX = 60.0
# Retirement of reaped writers: a scan of the whole store, and the TTL it waits for is a day by default.
RETIRE_EVERY = 60.0
# The scan walks this many names (context entries and versions; one per CRDT key) per slice, a slice every
# RETIRE_SLICE_GAP, so other events run between slices (`_retire_slice`): ~10 ms of the event loop at a time, a
# million keys of three writers in ~0.8 s of scanning. In one go it held the loop ~0.4 s per million keys.
RETIRE_SLICE_NAMES = 50_000
RETIRE_SLICE_GAP = 0.01
# Then the plan takes this many names (writers, member names, absences) per step (`Retirement.plan_steps`):
# ~1.3 us a name, ~13 ms a step. In one go, a million made-up writers' names held the loop ~1.3 s.
RETIRE_PLAN_NAMES = 10_000
# A change (ours or a member's published root) is looked at this long after the first one: a burst of
# member events costs one observation, and convergence times keep this resolution.
OBSERVE_DELAY = 0.1
# Anti-entropy messages: entries per message (approximate) stay well below the HTTP body cap (4 MiB).
AE_LIMITS = Limits(max_entry_bytes=2 << 20)
# A session deferred for a byte budget comes back no sooner than this (a peer's Retry-After may say longer).
AE_RETRY_MIN = 0.5
# Remembered large-value announcements (key, digest): a repeat is not pulled or forwarded again.
ANNOUNCE_MEMORY = 4096
# Rumor payloads seen recently (by hash): epidemic spread delivers each one several times, and a repeat is
# dropped before decoding (decoding and merging dominate an agent's CPU under write load).
SEEN_MEMORY = 16384
_NEVER = math.inf
_NEVER_HELD = -math.inf


# -- effects ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Persist:
    """Append these changes to the log, then tell the watchers (prune changes alter no value). Perform it
    before acknowledging anything: the effects that follow assume it succeeded."""

    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Gossip this state rumor payload (`Node.broadcast_state`); a newer one for `key` replaces it.
    `critical`: the client flagged the write `?priority=critical` (it jumps the rumor queue)."""

    payload: bytes
    key: str
    critical: bool = False


@dataclass(frozen=True, slots=True)
class PublishDigest:
    """Publish our convergence digest (`Node.publish_root_digest`): it numbers it above `seq_floor` (the wall
    time in ms, so a restarted member still numbers above what it published before)."""

    root: str
    keys: int
    hlc_ms: int
    seq_floor: int


@dataclass(frozen=True, slots=True)
class AntiEntropyWith:
    """Run one anti-entropy session with this peer: `start_anti_entropy`, then `on_anti_entropy_reply` per
    answer, `anti_entropy_failed` if the peer cannot be reached. One session at a time is enough."""

    peer: str
    addr: Address


@dataclass(frozen=True, slots=True)
class FetchValue:
    """Pull `key`'s whole state from `origin` (it announced a state too big for a packet); report with
    `on_fetched` or `fetch_failed`."""

    key: str
    origin: Address


@dataclass(frozen=True, slots=True)
class Fsync:
    """Make the logged records durable (policy `interval`)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Write a snapshot of the store as it is now (capture it before the next event)."""


@dataclass(frozen=True, slots=True)
class Note:
    """Something an operator should read in the log."""

    level: Literal["debug", "info", "error"]
    text: str


StateEffect = Persist | Broadcast | PublishDigest | AntiEntropyWith | FetchValue | Fsync | Snapshot | Note


class StateStats:
    """Counters bumped on hot paths, exported on scrape."""

    def __init__(self) -> None:
        self.writes: Counter[str] = Counter()          # op: put, delete, counter, set
        self.rumors: Counter[str] = Counter()          # applied, duplicate, dropped, announced_pull, ...
        self.ae: Counter[str] = Counter()              # sessions, rounds, failures, in_sync, served
        self.ae_bytes: Counter[str] = Counter()        # direction: sent, received
        self.ae_repaired: Counter[str] = Counter()     # side: pulled (ours changed), pushed (theirs changed)
        self.write_concern: Counter[str] = Counter()   # met, timeout
        self.log_records = 0
        self.snapshots = 0
        self.replayed = 0
        self.watch_dropped = 0
        self.recovery: Counter[str] = Counter()        # snapshot_unreadable, record_unreadable


@dataclass(slots=True)
class _Peer:
    addr: Address
    state: MemberState
    root: str | None  # published root (None: publishes none, or garbage)
    keys: int | None = None  # the key count published with it (None: none published)


@dataclass(slots=True)
class _View:
    """The members as the member events told us, with the counts convergence needs kept incrementally."""

    peers: dict[str, _Peer] = field(default_factory=dict)
    alive: dict[str, None] = field(default_factory=dict)      # insertion-ordered: deterministic peer choice
    counted_roots: Counter[str | None] = field(default_factory=Counter)  # of members counted (not left)
    # Key counts published beside the roots of counted members that publish one (None: a root without a count).
    counted_keys: Counter[int | None] = field(default_factory=Counter)
    counted: int = 0

    def set(self, name: str, addr: Address, state: MemberState, root: str | None, keys: int | None = None) -> None:
        self.remove(name)
        self.peers[name] = _Peer(addr, state, root, keys)
        if state == MemberState.ALIVE:
            self.alive[name] = None
        if state != MemberState.LEFT:
            self.counted_roots[root] += 1
            self.counted += 1
            if root is not None:
                self.counted_keys[keys] += 1

    def may_publish(self, keys: int) -> bool:
        """Whether a counted member may publish the root of a replica of `keys` live keys: one publishes that
        key count (or a root without one). Equal roots mean equal contents, and so equal key counts: when no
        member publishes ours, none publishes our root, and our root need not be computed to know it."""
        counts = self.counted_keys
        return counts.get(keys, 0) > 0 or counts.get(None, 0) > 0

    def remove(self, name: str) -> None:
        old = self.peers.pop(name, None)
        if old is None:
            return
        self.alive.pop(name, None)
        if old.state != MemberState.LEFT:
            self.counted -= 1
            self.counted_roots[old.root] -= 1
            if not self.counted_roots[old.root]:
                del self.counted_roots[old.root]
            if old.root is not None:
                self.counted_keys[old.keys] -= 1
                if not self.counted_keys[old.keys]:
                    del self.counted_keys[old.keys]


def digest_max_wait(config: AgentConfig) -> float:
    """The longest our digest waits while writes keep changing the replica: one anti-entropy interval. During a
    stream a published root is stale within a write; it serves the repair planner (a member whose digest
    shows it lacking writes is repaired from), and a member that truly lacks writes is repaired by the
    periodic anti-entropy within that interval anyway. So each member's row is at most this old during a
    stream (plus its spread, under a second), and a stream of T seconds costs about T / interval + 1
    publications per member instead of one every few seconds. Never under DIGEST_MIN_WAIT: an anti-entropy
    interval of milliseconds (allowed, for tests) must not make every member publish that often."""
    return max(DIGEST_MIN_WAIT, config.anti_entropy.interval)


def repair_hold(config: AgentConfig) -> float:
    """How long both roots must hold still before a divergent peer is repaired from (RepairPlanner's `hold`).

    Push modes: REPAIR_HOLD, since a write reaches every member in milliseconds and a difference that outlasts
    it is one the rumors missed. Pull mode spreads a write in hundreds of milliseconds, answer by answer, so a
    root that held still REPAIR_HOLD was mostly a lull between two answers and the repair raced the pulls
    already on their way: bench_load's 8 agents at 10 writes/s drew 65 sessions (110 kB of TCP, a quarter of
    pull's bytes, against 14 kB in push) that brought 28 of the 560 deliveries. It waits one probe interval
    instead: within it even a member whose requests backed off has asked (idle pull requests come down to one
    a probe interval, and probes ask too), and at the full pace it asked every member of a small cluster
    twice. In the simulator (same scenario, 5 seeds) that left 9-16 sessions (push: 12-15) and t100 as it was
    (median 170 ms, p99 248-370 ms both ways)."""
    if config.gossip.mode == "pull":
        return max(REPAIR_HOLD, config.membership.probe_interval)
    return REPAIR_HOLD


class StateNode:
    """One member's replica and every decision about it. Not thread-safe; one driver owns it.

    `store`: the recovered replica (the driver loads snapshot and log). `inline_limit`: the largest rumor
    payload that fits a gossip packet (`replica.inline_budget`). `durable`: there is a log to fsync and
    snapshot (a data dir); `logged` records are in it since the last snapshot.
    """

    def __init__(self, config: AgentConfig, store: KvStore, rng: Rng, now: float, *, addr: Address,
                 inline_limit: int, durable: bool = False, logged: int = 0,
                 limits: CodecLimits | None = None, stats: StateStats | None = None) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.rng = rng
        self.addr = addr
        self.inline_limit = inline_limit
        self.durable = durable
        self.limits = limits or CodecLimits()
        self.stats = stats or StateStats()
        self.tracker = ConvergenceTracker()
        self.published: tuple[str, int, int] | None = None  # (root, keys, hlc_ms) of our last digest
        self._digest_max_wait = digest_max_wait(config)
        self._last_change = -math.inf      # our replica's last change
        self._unpublished_since: float | None = None  # first change our digest does not show yet
        self._pacing = PublishPacing(DIGEST_QUIET)  # the quiet grows in a stream's lulls (core/digests.py)
        self._digest_roots: dict[str, str] = {}  # member -> root prefix (hex) from its newest digest
        self._digest_hlc: dict[str, int] = {}  # member -> HLC wall ms of its newest digest
        self._digest_keys: dict[str, int] = {}  # member -> key count of its newest digest
        self._mine_version = -1  # the Merkle tree version the repair planner last heard about (`_tell_mine`)
        self._ahead_since: dict[str, float] = {}  # member -> when we first saw our HLC ahead of its digest
        self.planner = RepairPlanner(repair_hold(config), REPAIR_MIN_GAP, FAR_REPAIR_HOLD, REPAIR_MAX_GAP)
        self.retirement = Retirement(config.state.tombstone_ttl)
        self.stopping = False
        self._view = _View()
        self._announced: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._pulls: set[str] = set()
        self._had_peers = False
        self._logged = logged              # records since the last snapshot
        self._unsynced = False
        self._last_sync = now
        self._observe_at = now             # publish/observe due (a change to look at); _NEVER when clean
        self._dirty_since: float | None = None  # first change not yet observed
        self._repair_at = _NEVER
        self._held: dict[str, float] = {}  # peers being repaired by another session: no partner until then
        self._gc_at = now + GC_EVERY
        self._acked_at = -math.inf         # when tombstones were last acknowledged (collected after the grace)
        self._retire_at = now              # the first check at once (absence clocks start there)
        self._retire_scan: _RetireScan | None = None  # a retirement scan under way, between two slices
        interval = config.anti_entropy.interval
        self._ae_at = now + interval * (0.5 + rng.random()) if config.anti_entropy.enabled else _NEVER
        # Anti-entropy partner choice; the driver sets the membership core's near/far choice
        # (Node.choose_partner, core/topology_state.py). None: uniform.
        self.choose_partner: Callable[[Sequence[str], Rng], str | None] | None = None
        # Whether a member is near us (Node.is_near, core/topology_state.py; None: no topology known): the repair
        # planner prefers near divergent peers and repairs across zones only once our zone agrees (RepairPlanner).
        self.is_near: Callable[[str], bool | None] | None = None

    # -- views ------------------------------------------------------------------------------------------
    def live_peers(self) -> list[tuple[str, Address]]:
        """Alive members other than us, as the member events told us."""
        peers = self._view.peers
        return [(name, peers[name].addr) for name in self._view.alive]

    def status(self, wall: float) -> dict[str, object]:
        """The `state` and `convergence` objects of `GET /v1/status`."""
        s = self.store.stats()
        return {"state": status_block(s.root, s.keys, s.hlc.wall_ms, s.tombstones, self.store.node),
                "convergence": self.tracker.status(wall).to_json()}

    def convergence(self, wall: float) -> ConvergenceStatus:
        return self.tracker.status(wall)

    # -- local writes (StateError subclasses raise before anything changed) --------------------------------
    def put(self, key: str, value: bytes, context: CausalContext | None, now: float,
            wall: float, *, critical: bool = False) -> tuple[Entry, list[StateEffect]]:
        entry = self.store.local_put(key, value, _ms(wall), context)
        return entry, self._local("put", entry, now, critical=critical)

    def delete(self, key: str, context: CausalContext | None, now: float,
               wall: float, *, critical: bool = False) -> tuple[Entry | None, list[StateEffect]]:
        entry = self.store.local_delete(key, _ms(wall), context)
        return entry, self._local("delete", entry, now, critical=critical)

    def update_crdt(self, key: str, kind: type[C], mutate: Callable[[C, str, Hlc], C], op: str, now: float,
                    wall: float) -> tuple[Entry, list[StateEffect]]:
        self.store.update_crdt(key, kind, mutate, _ms(wall))
        entry = self.store.entry(key)
        assert entry is not None
        return entry, self._local(op, entry, now)

    def _local(self, op: str, entry: Entry | None, now: float, *, critical: bool = False) -> list[StateEffect]:
        out: list[StateEffect] = []
        self._commit(out, now)
        if entry is not None:
            self.stats.writes[op] += 1
            self._broadcast(entry, out, critical=critical)
        return out

    def _broadcast(self, entry: Entry, out: list[StateEffect], *, critical: bool = False) -> None:
        payload = encode_rumor(entry)
        self._remember_seen(hash(payload))  # our own rumor coming back is old news
        if len(payload) > self.inline_limit:
            ann = Announcement(entry.key, entry_digest(entry), self.addr)
            self._remember_announcement(ann.key, ann.digest)
            payload = encode_announcement(ann)
            self.stats.rumors["announced"] += 1
        out.append(Broadcast(payload, entry.key, critical))

    # -- state from peers -------------------------------------------------------------------------------
    def on_rumor(self, payload: bytes, now: float, wall: float) -> tuple[bool, list[StateEffect]]:
        """A state rumor the Node received; True if it was new here (the Node then forwards it)."""
        out: list[StateEffect] = []
        if self.stopping:
            return False, out
        ident = hash(payload)
        if ident in self._seen:
            self.stats.rumors["duplicate"] += 1
            return False, out
        self._remember_seen(ident)
        try:
            item = self._decode(payload)
        except (StateCodecError, InvalidEntry) as exc:
            self.stats.rumors["dropped"] += 1
            out.append(Note("debug", f"dropped a state rumor: {exc}"))
            return False, out
        if isinstance(item, Announcement):
            return self._on_announcement(item, out), out
        try:
            changed = self.store.apply_remote(item, _ms(wall))
        except InvalidEntry as exc:
            self.stats.rumors["dropped"] += 1
            out.append(Note("debug", f"dropped a state rumor: {exc}"))
            return False, out
        if not changed:
            self.stats.rumors["duplicate"] += 1
            return False, out
        self.stats.rumors["applied"] += 1
        self._commit(out, now)
        return True, out

    def _remember_seen(self, ident: int) -> None:
        seen = self._seen
        seen[ident] = None
        if len(seen) > SEEN_MEMORY:
            seen.popitem(last=False)

    def _remember_announcement(self, key: str, digest: bytes) -> bool:
        """True if (key, digest) is new here."""
        ident = (key, digest)
        if ident in self._announced:
            return False
        self._announced[ident] = None
        while len(self._announced) > ANNOUNCE_MEMORY:
            self._announced.popitem(last=False)
        return True

    def _on_announcement(self, ann: Announcement, out: list[StateEffect]) -> bool:
        if not self._remember_announcement(ann.key, ann.digest):
            self.stats.rumors["duplicate"] += 1
            return False
        if self.store.merkle.digest_of(ann.key) != ann.digest and ann.key not in self._pulls:
            self._pulls.add(ann.key)
            out.append(FetchValue(ann.key, ann.origin))
        return True  # forward the announcement: others may lack the value too

    def on_fetched(self, key: str, payload: bytes, now: float, wall: float) -> list[StateEffect]:
        """The answer to a `FetchValue`. Raises StateCodecError or InvalidEntry (then call `fetch_failed`)."""
        self._pulls.discard(key)
        entry = self._decode(payload)
        if isinstance(entry, Announcement):
            raise StateCodecError("fetch answered with an announcement")
        out: list[StateEffect] = []
        if self.store.apply_remote(entry, _ms(wall)):
            self._commit(out, now)
            self.stats.rumors["pulled"] += 1
        else:
            self.stats.rumors["pulled_duplicate"] += 1
        return out

    def fetch_failed(self, key: str, why: str) -> list[StateEffect]:
        self._pulls.discard(key)
        self.stats.rumors["pull_failed"] += 1
        return [Note("debug", f"pull of {key!r} failed (anti-entropy will repair it): {why}")]

    def fetch_answer(self, key: str) -> bytes | None:
        """What we answer a peer's fetch of `key` (None: we hold no such key)."""
        entry = self.store.entry(key)
        return None if entry is None else encode_rumor(entry)

    def on_replicate(self, payload: bytes, now: float, wall: float) -> list[StateEffect]:
        """A peer's write-concern push: merge it; perform the effects (it is logged) before acknowledging.
        Raises StateCodecError or InvalidEntry on bad input (counted as a dropped rumor)."""
        out: list[StateEffect] = []
        try:
            entry = self._decode(payload)
            if isinstance(entry, Announcement):
                raise StateCodecError("replicate needs the whole entry")
            if self.store.apply_remote(entry, _ms(wall)):
                self._commit(out, now)
                self.stats.rumors["replicated"] += 1
        except (StateCodecError, InvalidEntry):
            self.stats.rumors["dropped"] += 1
            raise
        return out

    def _decode(self, payload: bytes) -> Entry | Announcement:
        """A state rumor payload (`decode_payload`); an entry the decoder skips as over a ceiling (EntryOverLimit:
        a key, value, counter or CRDT state past what peers may send) is counted and logged as the store's own
        refusals are (`KvStore.refuse_remote`), then raised."""
        try:
            return decode_payload(payload, self.limits)
        except EntryOverLimit as exc:
            self.store.refuse_remote(exc.reason, f"a state rumor: {exc}")
            raise

    def replicate_payload(self, entry: Entry) -> bytes:
        return encode_rumor(entry)

    # -- anti-entropy -----------------------------------------------------------------------------------
    def merge_anti_entropy_push(self, merge: PushMerge, now: float, wall: float) -> list[StateEffect]:
        """Merge the next chunk of a peer's pushed entries and log it (`merge`: `PushMerge(self.store,
        request, AE_LIMITS)`; the driver yields to its event loop between chunks, then calls
        `serve_anti_entropy(..., merged=merge)`)."""
        self.stats.ae_repaired["pushed_in_stale"] += merge.step(_ms(wall))
        out: list[StateEffect] = []
        changes = self._commit(out, now)
        self.stats.ae_repaired["pushed_in"] += sum(1 for c in changes if c.origin == "remote")
        return out

    def serve_anti_entropy(self, request: AeRequest, now: float, wall: float, room: int | None = None,
                           merged: PushMerge | None = None) -> tuple[AeResponse, list[StateEffect]]:
        """Answer one round of a peer's session (raises AntiEntropyError on a request that breaks the
        protocol); what the peer pushed is merged (unless `merged` did, in chunks) and logged. `room`: about
        how many bytes the answer may take (the send budget's `answer_room`; what does not fit is marked
        truncated)."""
        limits = AE_LIMITS if room is None else answer_limits(room, AE_LIMITS)
        response = respond(self.store, request, _ms(wall), limits, merged)
        out: list[StateEffect] = []
        changes = self._commit(out, now)
        self.stats.ae_repaired["pushed_in"] += sum(1 for c in changes if c.origin == "remote")
        self.stats.ae["served"] += 1
        return response, out

    def start_anti_entropy(self, now: float, room: int | None = None) -> Session:
        """A session with a peer begins (the driver sends `session.start()`). `room`: about how many bytes
        each message may take (the send budget's `stream_room`): the session sends more, smaller rounds."""
        self.stats.ae["sessions"] += 1
        self.planner.started(now)
        if self._repair_at < _NEVER:
            self._repair_at = max(self._repair_at, self.planner.earliest())
        return Session(self.store, AE_LIMITS if room is None
                       else request_limits(room, AE_LIMITS, self.store.merkle.fanout))

    def merge_anti_entropy_answer(self, merge: AnswerMerge, now: float, wall: float) -> list[StateEffect]:
        """Merge the next chunk of an answer's entries and log it (the driver yields to its event loop between
        chunks, then calls `on_anti_entropy_reply(..., merged=merge)`). Raises StateCodecError on a malformed
        entry (the chunks before it stay merged and logged: each was valid)."""
        self.stats.ae_repaired["pulled_stale"] += merge.step(_ms(wall))
        out: list[StateEffect] = []
        self._commit(out, now)
        return out

    def on_anti_entropy_reply(self, session: Session, response: AeResponse, now: float, wall: float,
                              merged: AnswerMerge | None = None) -> tuple[AeRequest | None, list[StateEffect]]:
        """One answer of the peer: merge what it sent (unless `merged` did, in chunks); the next request, or
        None when the session is done. Raises AntiEntropyError (then call `anti_entropy_failed`)."""
        self.stats.ae["rounds"] += 1
        request = session.handle(response, _ms(wall), merged)
        out: list[StateEffect] = []
        self._commit(out, now)
        if request is None:
            s = session.stats
            taken = s.pushed - s.push_refused
            self.stats.ae_repaired["pulled"] += s.repaired
            self.stats.ae_repaired["pushed"] += taken
            self.stats.ae_repaired["push_refused"] += s.push_refused
            if s.in_sync:
                self.stats.ae["in_sync"] += 1
            else:
                # Entries of the answer we refused (a limit, the clock drift, a key or kind we never hold) are no
                # progress, and neither is the push they answered: the peer sends its merge of the key back, we
                # refuse it again, and our state of the key pushed is taken again by the next session. Counted
                # as progress, it reset the gap: two agents disagreeing on one key ran a session every 0.5 s
                # each, for good (5 agents, one key: ~8 sessions/s).
                self.planner.finished(changed=s.repaired > 0 or taken > s.refused)
                if self._repair_at < _NEVER:
                    self._repair_at = max(self._repair_at, self.planner.earliest())
            if s.truncated:
                # Work was left (answers capped by the peer's byte budget, or rounds by ours): the next session
                # comes soon with a partner whose root differs, not a whole period later (which left most of
                # a budget unused while the cluster converged after a write load it could not carry).
                self.stats.ae["continued"] += 1
                self._ae_at = min(self._ae_at, now + AE_RETRY_MIN)
        return request, out

    def anti_entropy_failed(self, why: str, now: float) -> list[StateEffect]:
        """A session that failed (the peer's answer undecodable, refused, or the connection lost) changed
        nothing: it feeds the repair backoff as a fruitless session does, else a peer whose every answer fails
        (one entry it cannot decode) drew a repair every hold + 0.5 s forever."""
        self.stats.ae["failures"] += 1
        self.planner.finished(changed=False)
        if self._repair_at < _NEVER:
            self._repair_at = max(self._repair_at, self.planner.earliest())
        out: list[StateEffect] = [Note("debug", f"anti-entropy failed: {why}")]
        self._commit(out, now)
        return out

    def anti_entropy_deferred(self, why: str, retry_after: float, now: float) -> list[StateEffect]:
        """The session stopped for a byte budget (ours, or the peer answered "retry later"): not a failure
        (nothing is wrong with the peer). What it merged so far stays; the periodic anti-entropy comes back
        no later than `retry_after` seconds from now (never sooner than the budget can pay for)."""
        self.stats.ae["deferred"] += 1
        self._ae_at = min(self._ae_at, now + max(AE_RETRY_MIN, retry_after))
        out: list[StateEffect] = [Note("debug", f"anti-entropy deferred: {why}")]
        self._commit(out, now)
        return out

    def anti_entropy_held(self, peer: str | None, until: float, now: float) -> list[StateEffect]:
        """The session pushed nothing after the peer said another session is repairing it (it holds the
        peer's push lease, core/ae_lease.py; ours still pulled to its end): what we would push it, that
        session is pushing, and our budget is better spent on another member. The peer is no partner until
        `until` (periodic or repair); the next session comes soon (AE_RETRY_MIN), with another."""
        self.stats.ae["held"] += 1
        if peer is not None:
            self._held = {name: t for name, t in self._held.items() if t > now}
            self._held[peer] = until
        self._ae_at = min(self._ae_at, now + AE_RETRY_MIN)
        out: list[StateEffect] = []
        self._commit(out, now)
        return out

    def _not_held(self, names: Iterable[str], now: float) -> list[str]:
        held = self._held
        return [n for n in names if held.get(n, _NEVER_HELD) <= now]

    def kick_anti_entropy(self, now: float) -> list[StateEffect]:
        """Run the periodic anti-entropy now (the driver's manual trigger; a (re)join does it by itself)."""
        self._ae_at = now
        out: list[StateEffect] = []
        self._tick_anti_entropy(now, out)
        return out

    def _tick_anti_entropy(self, now: float, out: list[StateEffect]) -> None:
        if now < self._ae_at:
            return
        interval = self.config.anti_entropy.interval
        self._ae_at = now + interval * (0.5 + self.rng.random()) if self.config.anti_entropy.enabled else _NEVER
        peers = self.live_peers()
        if self._held:
            ok = set(self._not_held((name for name, _ in peers), now))
            peers = [p for p in peers if p[0] in ok]
        if not peers:
            return
        if self.choose_partner is None:
            name, addr = peers[int(self.rng.random() * len(peers))]
        else:
            chosen = self.choose_partner([p for p, _ in peers], self.rng)
            if chosen is None or chosen not in self._view.peers:
                return
            name, addr = chosen, self._view.peers[chosen].addr
        peer = self._view.peers[name]
        if peer.root is not None and peer.keys in (None, len(self.store)) and peer.root == self._my_root():
            # The peer publishes our root: nothing to repair, so an idle cluster sends no AE traffic.
            self.stats.ae["skipped_same_root"] += 1
            return
        out.append(AntiEntropyWith(name, addr))

    # -- membership -------------------------------------------------------------------------------------
    def on_member_event(self, event: MemberEvent, now: float) -> list[StateEffect]:
        """A member's liveness or metadata changed (the Node reports each change)."""
        m = event.member
        out: list[StateEffect] = []
        if m.name == self.name:
            return out
        if event.kind is EventKind.REAP:
            self._forget(m.name)
        else:
            self.retirement.seen(m.name)
            self._see(m, now)
        self._dirty(now)
        if event.kind is not EventKind.UPDATE:  # updates (every published root) change no one's liveness
            has_peers = bool(self._view.alive)
            if has_peers and not self._had_peers:
                self._ae_at = now  # we (re)joined: catch up state at once (push-pull catches up membership only)
                self._tick_anti_entropy(now, out)
            self._had_peers = has_peers
        return out

    def _forget(self, name: str) -> None:
        """A member left the member table (reaped): it no longer counts, and what its digests said is dropped."""
        self._view.remove(name)
        self._digest_roots.pop(name, None)
        self._digest_hlc.pop(name, None)
        self._digest_keys.pop(name, None)
        self._ahead_since.pop(name, None)
        self.planner.forget(name)

    def set_members(self, members: Iterable[MemberSnapshot], now: float) -> list[StateEffect]:
        """The whole member table at once (a driver that installs a view without events, e.g. the
        simulator's pre-joined start): members we knew that it lacks are forgotten, as if reaped (else they
        would still count, for convergence and as divergent roots, with no event left to remove them)."""
        present: set[str] = set()
        for m in members:
            if m.name != self.name:
                present.add(m.name)
                self._see(m, now)
        for name in [n for n in self._view.peers if n not in present]:
            self._forget(name)
        self._dirty(now)
        self._had_peers = bool(self._view.alive)
        return []

    def on_root_digest(self, digest: Digest, now: float) -> None:
        """A member's newer convergence digest (the Node merged it: only members it knows, newest only)."""
        if digest.name == self.name:
            return
        root = digest.root.hex()
        self._digest_roots[digest.name] = root
        self._digest_hlc[digest.name] = digest.hlc_ms
        self._digest_keys[digest.name] = digest.keys
        self._ahead_since.pop(digest.name, None)
        peer = self._view.peers.get(digest.name)
        if peer is None or (peer.root == root and peer.keys == digest.keys):
            return
        self._view.set(digest.name, peer.addr, peer.state, root, digest.keys)
        if peer.state == MemberState.ALIVE:
            self.planner.peer(now, digest.name, root)
        self._dirty(now)

    def _my_root(self) -> str:
        """Our root in the form members' roots are compared in: the digest's prefix."""
        return self.store.root_hex()[:2 * ROOT_PREFIX_BYTES]

    def _root_if_published(self) -> str | None:
        """Our root (as `_my_root`) when a counted member may publish it, else None: no member publishes our key
        count, so none publishes our root (`_View.may_publish`). While writes of new keys stream in, our key
        count runs ahead of every published one, and the Merkle paths written since are not hashed at each
        observation (a tick re-hashed ~7 tree nodes per write every ~0.2 s, ~90 % of its CPU), only when a root
        is published or a session compares trees, each node once for all the writes under it. Overwrites of
        existing keys leave the count as it was: then the root is computed at each observation, as before."""
        if not self._view.may_publish(len(self.store)):
            return None
        return self._my_root()

    def _see(self, m: MemberSnapshot, now: float) -> None:
        root = self._digest_roots.get(m.name)
        keys = self._digest_keys.get(m.name)
        if root is None:  # an agent too old to send digests: the root its metadata publishes
            published = parse_state_meta(m.meta)
            root = published.root[:2 * ROOT_PREFIX_BYTES] if published is not None else None
            keys = published.keys if published is not None else None
        self._view.set(m.name, m.addr, m.state, root, keys)
        if m.state == MemberState.ALIVE:
            self.planner.peer(now, m.name, root)
        else:
            self.planner.forget(m.name)

    def _dirty(self, now: float) -> None:
        if self._dirty_since is None:
            self._dirty_since = now
        if self._observe_at == _NEVER:
            self._observe_at = now + OBSERVE_DELAY

    # -- time -------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        d = min(self._observe_at, self._repair_at, self._retire_at, self._ae_at)
        if self.store.holds_garbage():
            d = min(d, self._gc_at)
        if self._unsynced:
            d = min(d, self._last_sync + self.config.storage.fsync_interval)
        return d

    def tick(self, now: float, wall: float) -> list[StateEffect]:
        out: list[StateEffect] = []
        store = self.store
        if now >= self._observe_at:
            self._observe_at = _NEVER
            self._observe(now, wall, out)
        if now >= self._repair_at:
            self._plan_repair(now, out)
        if now >= self._gc_at:
            if now - self._acked_at <= ACK_GRACE_MS / 1000 + GC_EVERY:
                self._gc_at = now + GC_EVERY
            else:
                self._gc_at = now + max(GC_EVERY, min(GC_IDLE_MAX, self.config.state.tombstone_ttl / 10))
            if store.collect_garbage(_ms(wall), ack_grace_ms=ACK_GRACE_MS):
                self._commit(out, now)
        if now >= self._retire_at:
            self._retire_slice(now, wall, out)
        self._tick_anti_entropy(now, out)
        self._durability(now, out)
        return out

    def _observe(self, now: float, wall: float, out: list[StateEffect]) -> None:
        store = self.store
        hlc_ms = store.clock.wall_ms
        self._publish(now, wall, len(store), hlc_ms, out)
        root = self._root_if_published()  # None: no member publishes our root (it is not computed)
        if self._dirty_since is not None:  # whatever agreed at the last observation held until the change
            self.tracker.held(wall - (now - self._dirty_since))
            self._dirty_since = None
        roots = self._view.counted_roots
        named = len(roots) - (None in roots)
        if root is None:
            agree, distinct = 0, named + 1
        else:
            agree, distinct = roots.get(root, 0), named + (root not in roots)
        status = self.tracker.observe_counts(wall, self._view.counted, agree, distinct,
                                             newest_write_ms=hlc_ms or None)
        if status.converged and store.tombstone_count() and store.acknowledge_tombstones(_ms(wall)):
            self._acked_at = now
            self._gc_at = min(self._gc_at, now + ACK_GRACE_MS / 1000)
        self._tell_mine(now, root)
        self._plan_repair(now, out)

    def _tell_mine(self, now: float, root: str | None) -> None:
        """Our root to the repair planner, which needs when it last changed (its hold) and which peers publish
        it. Unknown (None: no member publishes it), it is named by the Merkle tree's version, a name no member
        publishes that changes exactly when the tree does; the same state named later keeps its hold."""
        version = self.store.merkle.version
        if root is None:
            if version != self._mine_version:
                self.planner.mine(now, f"~{version}")  # ("~" is no hex digit: no published root equals it)
        elif version == self._mine_version:
            self.planner.rename_mine(root)
        else:
            self.planner.mine(now, root)
        self._mine_version = version

    def _publish(self, now: float, wall: float, keys: int, hlc_ms: int, out: list[StateEffect]) -> None:
        """Publish our digest when the replica went quiet or the oldest unpublished change waited long enough;
        otherwise come back then. Our root is computed only when it is published, or when the key count and HLC
        published last are ours (then the root tells whether anything changed)."""
        published = self.published
        if published is not None and published[1] == keys and published[2] == hlc_ms \
                and published[0] == self.store.root_hex():
            self._unpublished_since = None
            return
        since = now if self._unpublished_since is None else self._unpublished_since
        quiet_at = self._last_change + self._pacing.quiet(since)
        due = min(quiet_at, since + self._digest_max_wait)
        if now >= due:
            mine = (self.store.root_hex(), keys, hlc_ms)
            out.append(PublishDigest(*mine, seq_floor=_ms(wall)))
            self.published = mine
            self._pacing.published(now, since, lull=now >= quiet_at)
            self._unpublished_since = None
        else:
            self._unpublished_since = since
            self._observe_at = min(self._observe_at, due)

    def _plan_repair(self, now: float, out: list[StateEffect]) -> None:
        if not self._someone_differs():
            self._repair_at = _NEVER  # every member publishes our root (or none): nobody to repair from
            return
        live, late_until = self._not_late(now)
        if self._held:
            live = self._not_held(live, now)
        target, later = self.planner.plan(now, live, self.rng.random(), self.is_near)
        if target is not None:
            self.planner.started(now)
            out.append(AntiEntropyWith(target, self._view.peers[target].addr))
            _, later = self.planner.plan(now, live, 0.0, self.is_near)
        later = min(later, late_until)
        self._repair_at = later

    def _someone_differs(self) -> bool:
        """Whether a counted member publishes a root other than ours (and not none). Two distinct published
        roots already say so, whatever ours is (it can equal one at most): then our root is not computed.
        During a stream of writes that is the common case, and the planner wakes whenever a peer's new
        digest has been stable `REPAIR_HOLD` (7-10 times a second per agent at N = 50 and 100 writes/s, up
        to ~27 in a microbench): computing our root there re-hashed the Merkle paths of the writes since the
        last wake, where the observations (a few a second) share the upper levels of many writes' paths."""
        roots = self._view.counted_roots
        if len(roots) - (None in roots) >= 2:
            return True
        view = self._view
        mine = self._root_if_published()
        agree = roots.get(mine, 0) if mine is not None else 0
        return view.counted - agree - roots.get(None, 0) > 0

    def _not_late(self, now: float) -> tuple[Iterable[str], float]:
        """The alive peers whose digests may count as divergent now, and when the next late one may (or inf).
        (Every repair wake walks all alive peers: the lookups are bound once, outside the loop.)"""
        mine_ms, ahead, late_until = self.store.clock.wall_ms, self._ahead_since, math.inf
        hlc_of, first_seen = self._digest_hlc.get, min(now, self._last_change)
        live: list[str] = []
        for name in self._view.alive:
            if hlc_of(name, mine_ms) >= mine_ms:
                live.append(name)
                continue
            since = ahead.get(name)
            if since is None:
                since = ahead[name] = first_seen
            if now >= since + DIGEST_LATE:
                live.append(name)
            elif since + DIGEST_LATE < late_until:
                late_until = since + DIGEST_LATE
        return live, late_until

    def _retire_slice(self, now: float, wall: float, out: list[StateEffect]) -> None:
        """One step of the periodic retirement check: a slice of the scan (`KvStore.context_writers_from`), then
        steps of the plan (`Retirement.plan_steps`), then the retirement; RETIRE_SLICE_GAP between steps."""
        scan = self._retire_scan
        if scan is None:
            scan = self._retire_scan = _RetireScan()
        scan.steps += 1
        if scan.planning is None:
            scan.after = self.store.context_writers_from(scan.writers, _ms(wall), scan.after, RETIRE_SLICE_NAMES)
            if scan.after is not None:
                self._retire_at = now + RETIRE_SLICE_GAP
                return
            scan.planning = self.retirement.plan_steps(
                now, writers=scan.writers, retired=self.store.retired, present={*self._view.peers, self.name},
                me=self.store.node, budget=RETIRE_PLAN_NAMES)
        plan = next(scan.planning)
        if plan is None:
            self._retire_at = now + RETIRE_SLICE_GAP
            return
        self._retire_scan = None
        self._retire_at = now + RETIRE_EVERY
        self._retire_by(plan, scan.writers, now, wall, out, stepped=scan.steps > 1)

    def _retire(self, now: float, wall: float, out: list[StateEffect]) -> int:
        """The retirement check in one go (`retire_reaped`)."""
        store = self.store
        writers = store.context_writers(_ms(wall))
        plan = self.retirement.plan(now, writers=writers, retired=store.retired,
                                    present={*self._view.peers, self.name}, me=store.node)
        return self._retire_by(plan, writers, now, wall, out, stepped=False)

    def _retire_by(self, plan: RetirementPlan, writers: dict[str, bool], now: float, wall: float,
                   out: list[StateEffect], *, stepped: bool) -> int:
        """Retire what `plan` says. After a check taken in several steps, the writers to retire are checked
        against a whole walk and the member table now: a key changed after its slice was walked may name one
        again (a version of it, or a young state), and its member may be back. Only when something is to be
        retired, which `retire_nodes` pays a walk of the whole store for anyway."""
        store = self.store
        retire = sorted(r for r in plan.retire if writers.get(r))
        if retire and stepped:
            now_safe, present = store.context_writers(_ms(wall)), {*self._view.peers, self.name}
            retire = [r for r in retire if now_safe.get(r) and member_of(r) not in present]
        if plan.unretire:
            store.unretire_nodes(plan.unretire)
            out.append(Note("info", "writers back in the cluster, no longer pruned: " + _names(plan.unretire)))
        if retire:
            keys = store.retire_nodes(retire)
            self._commit(out, now)
            out.append(Note("info", "retired writers of members gone longer than the tombstone TTL: "
                            f"{_names(retire)} ({keys} keys pruned)"))
        if retire or plan.unretire:
            self._snapshot(out)  # the retired set lives in the snapshot
        return len(retire)

    def retire_reaped(self, now: float, wall: float) -> tuple[int, list[StateEffect]]:
        """The retirement check at once (it also runs every RETIRE_EVERY); how many writers it retired."""
        out: list[StateEffect] = []
        return self._retire(now, wall, out), out

    def _durability(self, now: float, out: list[StateEffect]) -> None:
        if not self.durable:
            return
        cfg = self.config.storage
        if self._unsynced and now - self._last_sync >= cfg.fsync_interval:
            self._last_sync = now
            self._unsynced = False
            out.append(Fsync())
        if self._logged >= cfg.snapshot_every:
            self._snapshot(out)

    def _snapshot(self, out: list[StateEffect]) -> None:
        if self.durable:
            self._logged = 0
            self.stats.snapshots += 1
            out.append(Snapshot())

    def stop(self, now: float) -> list[StateEffect]:
        """Shutting down: take no more rumors; the last changes logged and a snapshot."""
        self.stopping = True
        out: list[StateEffect] = []
        self._commit(out, now)
        self._snapshot(out)
        return out

    # -- commit -----------------------------------------------------------------------------------------
    def _commit(self, out: list[StateEffect], now: float) -> list[Change]:
        changes = self.store.drain_changes()
        if changes:
            out.append(Persist(tuple(changes)))
            if self.durable:
                self._logged += len(changes)
                self.stats.log_records += len(changes)
                if self.config.storage.fsync == "interval":
                    self._unsynced = True
            self._last_change = now
            if self._unpublished_since is None:
                self._unpublished_since = now
            self._dirty(now)  # our root changed
        return changes

    def changed(self, now: float) -> None:
        """The driver changed the store behind our back (recovery, a test): look at it soon."""
        self._dirty(now)


@dataclass(slots=True)
class _RetireScan:
    """A retirement check under way: the writers found so far, the last key walked, the plan's steps once the
    walk is complete, and the steps taken."""

    writers: dict[str, bool] = field(default_factory=dict)
    after: str | None = None
    planning: Iterator[RetirementPlan | None] | None = None
    steps: int = 0


def _names(replicas: Iterable[str], shown: int = 20) -> str:
    """Replica ids for a note: the first `shown` in order, and how many in all (a note once named a million)."""
    ordered = sorted(replicas)
    head = ", ".join(ordered[:shown])
    return head if len(ordered) <= shown else f"{head} ... ({len(ordered)} in all)"


def _ms(wall: float) -> int:
    return int(wall * 1000)
