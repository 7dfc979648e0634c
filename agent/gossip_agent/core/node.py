"""The SWIM node: membership, probing, suspicion and dissemination as one pure state machine.

Drivers (the asyncio runtime, the simulator, tests) feed it packets and the current time and perform the
effects it returns. It never reads a clock: `tick(now)` runs whatever is due, `next_deadline()` says when to
call it next.

Protocol (SWIM with Lifeguard, as in hashicorp/memberlist):
- every probe interval, ping the next member of a randomized round-robin order (by default aligned across
  members, so each member is probed once per interval: see probe_schedule); without an ack within the probe
  timeout, ask `indirect_checks` members to ping it for us (they nack if they hear nothing); without any ack
  by the end of the interval, suspect it;
- a suspicion becomes a death after a timeout that shrinks as independent members confirm it (Lifeguard);
  the suspect refutes by raising its incarnation;
- membership changes and state updates are rumors: piggybacked on every packet with a retransmit limit,
  pushed to `fanout` peers each gossip interval, and (optionally) forwarded at once when fresh;
- `gossip.mode` says who starts an exchange: `push` sends rumors unasked; `pull` asks `fanout` peers for
  theirs each pull round and sends rumors only in answers (no piggybacking, no forwarding; its one exception is
  our own leave, pushed with whatever we still hold, since a member that is gone answers nobody); `push-pull`
  pushes, and asks in its gossip packets; pull requests back off while they bring nothing, name to each peer
  once the state payloads the asker holds (core/pull_ids.py: the responder remembers, and answers leave those
  out), and draw no answer when the responder has nothing to send; pull mode asks every member in turn, and
  first an asker whose request named what we lack (core/pull_targets.py);
- a full push-pull sync with a random member every push-pull interval, and with seeds on join, repairs
  whatever rumors missed;
- state rumors, with `gossip.broadcast: tree` in push modes, travel along an epidemic broadcast tree instead
  (core/plumtree.py: eager pushes, lazy IHAVEs, GRAFT/PRUNE), about one copy per member; members not known to
  read tree messages still get them from the queue above.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gossip_agent.core import codec, probe_order, probe_schedule
from gossip_agent.core.awareness import Awareness
from gossip_agent.core.broadcast import BroadcastQueue, retransmit_limit
from gossip_agent.core.coalesce import Coalescer
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.critical import direct_reach, relay_extras
from gossip_agent.core.critical_relay import CriticalRelay
from gossip_agent.core.digests import (
    DIGEST_ALLOWANCE,
    MAX_DIGEST_MESSAGES,
    REPAIR_ALLOWANCE,
    DigestExchange,
    DigestTable,
    Merge,
)
from gossip_agent.core.effects import Effect, EventKind, JoinSeeds, LeaveDone, MemberEvent, Send, SyncWith, TcpProbe
from gossip_agent.core.held_floods import HeldFloods
from gossip_agent.core.hello_queue import HelloQueue, hellos_pay
from gossip_agent.core.hosts import host_key, same_host
from gossip_agent.core.joining import JoinSchedule
from gossip_agent.core.membership import Member, MemberTable
from gossip_agent.core.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Digest,
    DigestSummary,
    Graft,
    IHave,
    MemberSnapshot,
    MemberState,
    Message,
    Nack,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PingReq,
    Prune,
    PullRequest,
    PushPullState,
    Rumor,
    ShortIds,
    ShortKind,
    StateRumor,
    Suspect,
)
from gossip_agent.core.plumtree import (
    ID_BYTES,
    MAX_IDS_PER_MESSAGE,
    SHORT_ID_BYTES,
    SHORT_ID_SHIFT,
    Plumtree,
    message_id,
    short_id,
)
from gossip_agent.core.probe_seq import ProbeSeqs
from gossip_agent.core.probe_seq import key_from as probe_key_from
from gossip_agent.core.pull_ids import HeldClaims, RecentIds
from gossip_agent.core.pull_targets import PullOrder
from gossip_agent.core.readers import DIGESTS, PEER_COORDINATES, SHORT_IDS, Readers
from gossip_agent.core.rng import Rng
from gossip_agent.core.send_budget import (
    DEFERRED_KEY,
    SendBudget,
    budget_deferred,
    budget_stats,
    effective_burst,
)
from gossip_agent.core.suspicion import Suspicion, suspicion_min_timeout
from gossip_agent.core.topology_state import ZONE_META_KEY, TopologyState

_NEVER = math.inf
# Relays nack a little before the prober's indirect window closes, so the nack arrives in time to count.
_NACK_FRACTION = 0.8
# Failed members remembered for reconnects; past this the oldest are forgotten.
_MAX_FORMER = 1024
# Indirect probes we run for others at once at most (ping-reqs beyond are dropped and counted).
_MAX_RELAYS = 256
# Link requests remembered from members we do not know yet (their Alive is on its way), oldest forgotten first.
_MAX_EARLY_LINKS = 64
# After an immediate forward, the next gossip round comes this fraction of an interval later.
_EARLY_GOSSIP_FRACTION = 0.25
# Rumor message classes, as a tuple: isinstance with a tuple is cheaper than with a union, per message.
_RUMOR_TYPES = (Alive, Suspect, Dead, StateRumor)
_TREE_TYPES = (IHave, Graft, Prune)
_IHAVE_FRAME = 5  # an IHAVE's bytes besides its ids: array, type, bin header (up to bin16)
# At most this many ids on a probe's pull request (a ping must stay small; a gossip round's request names the rest).
MAX_PROBE_PULL_IDS = 16
# Pull mode asks at the full pace for this many rounds (of `fanout` requests) after news arrived, then backs off.
BUSY_ROUNDS = 2
_SHORT_PULL_FRAME = 6  # a short pull request's bytes besides its ids: array, type, kind, bin header (up to bin16)
# The tree's lazy interval in gossip ticks: announcements leave at every second tick (in between, they ride on
# the tick's gossip packets to their peers). At every tick, bench_load's 8 agents at 10 writes/s sent ~1.7
# announcement packets per agent and tick (one per lazy link of which it is the first end), ~12 % of all
# bytes, for repairs a healthy tree never needs; every second tick halves the packets (more ids in each) and
# a lost eager link is repaired within 2.5 gossip intervals (graft timeout included) instead of 1.5.
_LAZY_TICKS = 2
# The follow-up sync after a join, in gossip intervals (0.5 s with LAN timings).
_FOLLOWUP_SYNC_INTERVALS = 2.5
# After `leave`, how long at most we keep running so our leave rumor spreads (seconds): we stop earlier once
# it has left our queue (sent its retransmit limit) or nobody is left to tell.
LEAVE_LINGER = 1.0


class StateDelegate(Protocol):
    """The replicated state layer, as the membership core sees it."""

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        """Apply a state rumor; True if it was new here (then it is re-broadcast and forwarded)."""
        ...

    def on_root_digest(self, digest: Digest, now: float) -> None:
        """A member's convergence digest newer than any we held (core/digests.py)."""
        ...


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    incarnation: int
    indirect_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    # The members asked to ping the target for us: an ack or nack for this probe counts only from the target
    # itself or one of them (core/probe_seq.py: the number is unguessable, the name is checked too).
    helpers: tuple[str, ...] = ()
    nacked: set[str] | None = None


@dataclass(slots=True)
class _Relay:
    """A ping we send on behalf of another member's ping-req."""

    origin_addr: Address
    origin_seq: int
    nack_at: float
    expire_at: float
    origin: str | None = None  # the asking member, when origin_addr is its table address (else answers go bare)
    target: str = ""  # the member we ping for it: only its ack is relayed


def _allowance(digests: list[Digest | DigestSummary]) -> int:
    """Bytes to keep free for these digests: the fixed allowance when a packet carries any."""
    return DIGEST_ALLOWANCE if digests else 0


def _digest_bytes(digests: Sequence[Digest | DigestSummary]) -> int:
    """What these digests cost on the wire (the send budget charges this, not the allowance)."""
    return sum(codec.message_size(d) for d in digests)


def _delivery_path(tree: Plumtree, ident: int, source: str | None, critical: bool) -> str:
    """The stats key of how a payload new to us came (bench_load reports them): over an eager link, as the
    answer to our graft (a repaired eager path: the latency tail), as a critical write's direct copy, or
    otherwise (a pull answer, the writer's flood to members not known to read the tree, a lost link request)."""
    if tree.grafted(ident):  # (before eager: grafting made the announcer an eager neighbour)
        return "tree_delivered_graft"
    if source is not None and source in tree.eager:
        return "tree_delivered_eager"
    return "tree_delivered_critical_direct" if critical else "tree_delivered_other"


def meta_size(meta: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 2 for k, v in meta.items())


def split_push_pull(state: PushPullState, rows: int | None) -> list[PushPullState]:
    """`state` in parts of at most `rows` rows (one part without a bound); merging the parts in order is
    merging the whole."""
    members = state.members
    if rows is None or len(members) <= rows:
        return [state]
    return [PushPullState(state.sender, members[i:i + rows], state.join) for i in range(0, len(members), rows)]


class Node:
    """One member's view of the cluster. Not thread-safe; one driver owns it."""

    def __init__(self, config: AgentConfig, addr: Address, rng: Rng, now: float,
                 delegate: StateDelegate | None = None, *, incarnation: int = 0, clock_offset: float = 0.0,
                 leave_linger: float = LEAVE_LINGER, probe_key: bytes | None = None) -> None:
        # Read-only after construction: a running core is never reconfigured (the one setting a driver may
        # switch live, immediate forwarding, has its own method and field below).
        self.config = config
        # Wall-clock time minus `now`: aligned probing numbers its rounds by the wall clock, shared by all
        # members. The driver reports wall-clock readings (`observe_wall_clock`); a step only misaligns rounds
        # for a moment.
        self._clock_offset = clock_offset
        self._immediate_forward = config.gossip.immediate_forward
        # False in pull mode: rumors leave only in answers to pull requests (see _gossip).
        self._pushes = config.gossip.mode != "pull"
        # Pull mode: the current pull interval (backs off while pulls bring nothing), and whether a fresh rumor
        # arrived (or was queued here) since the last pull round.
        self._pull_interval = config.gossip.interval
        self._pull_activity = False
        self._busy_pulls = 0  # pull mode: requests still at the full pace since the last fresh rumor
        # push-pull: when the next gossip round carries pull requests (they back off as in pull mode).
        self._next_pull_at = now
        # Short ids of the state payloads received lately, named once to each peer in pull requests, and what
        # askers' requests named, left out of our answers (core/pull_ids.py).
        self._recent_ids = RecentIds()
        self._held_claims = HeldClaims()
        self._pull_order = PullOrder()  # pull mode: whom to ask next, each member in turn (core/pull_targets.py)
        self._pull_next: str | None = None  # pull mode: an asker whose request named what we lack: asked next
        # ...at most once per cycle's worth of pull rounds (one per member we probe) each: the ids of a hint are
        # the asker's word, and made-up ones in every request would make it our only pull target.
        self._pull_hints_followed: set[str] = set()
        self._pull_rounds = 0
        self.name = config.name
        self.addr = addr
        self.rng = rng
        self.delegate = delegate
        self.incarnation = incarnation
        self.meta: dict[str, str] = dict(config.meta)
        # Zones, network coordinates and near/far peer choice (core/topology_state.py); our zone rides in meta.
        # Which peers read which newer message types (core/readers.py): one registry for digests, the tree and
        # coordinates.
        self.readers = Readers()
        self.topology = TopologyState(config.topology, max_peers=config.membership.max_members,
                                      readers=self.readers, max_sample_rtt=config.membership.probe_timeout)
        zone_unannounced = False
        if self.topology.local_zone is not None:
            # A zone that does not fit gossip.maxMetaBytes is known here but not announced (as in set_zone).
            with_zone = {**self.meta, ZONE_META_KEY: self.topology.local_zone}
            zone_unannounced = meta_size(with_zone) > config.gossip.max_meta_bytes
            if not zone_unannounced:
                self.meta = with_zone
        elif ZONE_META_KEY in self.meta:  # a zone given as plain metadata counts too, if it is a valid one
            self.topology.set_local_zone(self.topology.zone_of(self.meta))
        if meta_size(self.meta) > config.gossip.max_meta_bytes:
            raise ValueError(f"metadata is larger than gossip.maxMetaBytes ({config.gossip.max_meta_bytes} B)")
        self.awareness = Awareness(config.membership.awareness_max_multiplier)
        self.queue = BroadcastQueue(config.gossip.retransmit_mult)
        # gossip.maxBytesPerSecond: what optional (rumor) bytes may go; probes and acks always go (send_budget).
        self.send_budget = SendBudget(config.gossip.max_bytes_per_second, effective_burst(
            config.gossip.max_bytes_per_second, config.gossip.max_burst_bytes, config.gossip.mtu), now)
        self._critical_fresh = False  # a critical rumor was queued since the last immediate forward
        self._critical_relay = CriticalRelay()  # critical writes from peers relayed as critical, per member
        self.table = MemberTable()
        self.root_digests = DigestTable(self.name, config.membership.max_members)
        # Members that sent us digests: they read them, so ours ride on our packets to them. An older agent
        # drops a whole packet holding a message type it does not know, so the others get ours only in a
        # packet of their own beside each probe once our highest offer went unanswered (see _probe_offers).
        self._digest_readers = self.readers.view(DIGESTS)
        # Members to greet with our highest offer, paced (core/hello_queue.py): each end then knows the other's
        # level first-hand within a round trip, not at the first probe between them (~N probe intervals).
        self._hellos = HelloQueue(config.membership.max_members, now)
        self._digest_exchange = DigestExchange(self.root_digests)
        # State rumors along a broadcast tree (push modes only: pull never pushes). Lazy announcements once per
        # gossip interval (a quarter interval sent ~1.7x the announcement packets, for repairs ~150 ms sooner
        # that a healthy tree never needs), a missing payload grafted half an interval after its announcement.
        g0 = config.gossip
        self._tree_on = g0.broadcast == "tree" and self._pushes
        self.tree = Plumtree(self.name, eager_target=g0.fanout, lazy_interval=g0.interval * _LAZY_TICKS,
                             graft_timeout=g0.interval / 2, rng=rng)
        self.tree.is_far = self._is_far  # far picks start lazy, near announcers are grafted first
        # Normal pushes wait up to gossip.coalesceDelay for later writes to the same neighbour (core/coalesce.py).
        # (A packet of pushes carries no digests: see _tree_send.)
        self._coalesce: Coalescer[StateRumor] = Coalescer(g0.coalesce_delay, g0.mtu - codec.packet_overhead(self.name))
        # Link requests (empty GRAFTs) from members not yet in our table: name -> the host it came from.
        self._early_links: dict[str, str] = {}
        # Our writes waiting one gossip interval before the tree's flood fallback (core/held_floods.py).
        self._held_floods: HeldFloods[tuple[StateRumor, str | None]] = HeldFloods()
                # When the tree next looks for neighbours while it wants some (at once, then every gossip interval):
        # a member without links misses every write made meanwhile, and nothing announces those to it later.
        self._tree_fill_at = now
        self._gossip_ticks = 0  # gossip ticks so far: every _LAZY_TICKS-th flushes the tree's announcements
        self.table.add(Member(self.name, addr, incarnation, MemberState.ALIVE, dict(self.meta), now))
        self.stats: Counter[str] = Counter()
        if zone_unannounced:
            self.stats["zone_not_announced"] += 1
        self.leaving = False
        self._leave_linger = leave_linger
        self._leave_until = _NEVER
        self._leave_done = False
        self._join = JoinSchedule(rng, config.membership.stream_timeout)
        self._refuted = False
        # Unguessable probe numbers (core/probe_seq.py): the agent injects an OS-random key; without one (the
        # simulator) it is one draw from the seeded Rng here, none per probe.
        self._seqs = ProbeSeqs(probe_key if probe_key is not None else probe_key_from(rng))
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe_phase = rng.random() * config.membership.probe_interval
        self._last_round: int | None = None
        # Aligned probing by zone (core/probe_order.py): the groups, for which ring object and which version of
        # the members' zones (bumped when a member's zone in its metadata changes).
        self._zone_version = 0
        self._zone_rings: dict[str, probe_order.Ring] = {}
        self._zone_rings_for: tuple[list[tuple[int, str]], int] | None = None
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._graveyard: deque[tuple[float, str]] = deque()
        # Failed (not left) members to retry after a partition: name -> (address, died at). Bounded.
        self._former: dict[str, tuple[Address, float]] = {}
        m, g = config.membership, config.gossip
        # Spread the first probe and gossip over one interval so members started together don't align.
        self._next_probe = now + self._probe_phase
        if m.probe_schedule == "aligned":
            self._next_probe = self._next_round_at(now)
        self._next_gossip = now + rng.random() * g.interval
        self._gossip_beat = self._next_gossip  # the ticker's phase: its beats are this plus whole intervals
        self._next_push_pull = now + g.push_pull_interval * (1 + rng.random()) if g.push_pull_interval else _NEVER
        self._next_reconnect = now + m.reconnect_interval if m.reconnect_interval else _NEVER
        self._followup_sync_at = _NEVER
        self._next_digest_sync = now
        self._header = codec.packet_overhead(self.name)

    # -- views -----------------------------------------------------------------------------------------
    def members(self) -> list[MemberSnapshot]:
        return [m.snapshot() for m in self.table]

    def counts(self) -> dict[MemberState, int]:
        return self.table.counts()

    def member(self, name: str) -> MemberSnapshot | None:
        m = self.table.get(name)
        return m.snapshot() if m else None

    def member_state(self, name: str) -> MemberState | None:
        """How we see `name` now (None: not in our table, e.g. never heard of or reaped)."""
        m = self.table.get(name)
        return m.state if m is not None else None

    @property
    def join_attempts(self) -> int:
        """Join attempts made so far (`join` calls)."""
        return self._join.attempts

    def queue_depth(self) -> int:
        """Rumors waiting for (re)transmission."""
        return len(self.queue)

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; probes slow down by a factor (1 + score)."""
        return self.awareness.score

    @property
    def joined(self) -> bool:
        """True once another member is known alive (or no seeds were given)."""
        return not self._join.active or self.table.n_alive > 1

    # -- driver entry points ---------------------------------------------------------------------------
    def observe_wall_clock(self, wall: float, now: float) -> None:
        """The wall clock read `wall` at `now`: aligned probing numbers its rounds by the wall clock, which
        members share, so the driver reports it before ticking (and a wall-clock step is followed)."""
        self._clock_offset = wall - now
        if math.isfinite(wall) and 0 < wall < 1e13:  # a sane wall clock (seconds since 1970) bounds digest numbers
            self.root_digests.observe_wall(now, int(wall * 1000))

    def set_immediate_forward(self, enabled: bool) -> None:
        """Switch immediate forwarding of fresh rumors on or off (an experiment's knob; the only setting a
        running core takes: everything else in `config` is fixed at construction)."""
        self._immediate_forward = enabled

    def observe_rtt(self, name: str, rtt: float, now: float) -> float | None:
        """A probe round trip to `name` measured by the driver (io/probe_rtt.py), in seconds: a Vivaldi sample
        against the coordinate `name` sent with its ack. Returns the relative error of the estimate made just
        before it (for metrics), or None if unused."""
        if name == self.name or name not in self.table:
            return None
        return self.topology.observe_rtt(name, rtt, now, self.rng, self.is_near(name))

    def choose_partner(self, names: Sequence[str], rng: Rng) -> str | None:
        """One of `names` for anti-entropy (core/state_node.py): near/far as gossip peers are
        (core/topology_state.py), a plain uniform draw from `rng` while no topology is known."""
        return self.topology.choose_one(names, rng, lambda n: m.meta if (m := self.table.get(n)) else None)

    def is_near(self, name: str) -> bool | None:
        """Whether member `name` is near us (same zone, or a low estimated RTT: core/topology_state.py); None
        while no topology is known (every peer alike)."""
        if not self.topology.active():
            return None
        return self.topology.is_near(name, m.meta if (m := self.table.get(name)) else {})

    def _is_far(self, name: str) -> bool:
        """Far under topology-aware choice (not near); False while no topology is known (core/plumtree.py)."""
        return self.is_near(name) is False

    def set_zone(self, zone: str | None, now: float) -> list[Effect]:
        """Our zone (validated by core.topology.parse_zone; None: unknown) changed, e.g. the zone file was
        rewritten: it goes into our metadata, re-announced with a bumped incarnation."""
        if not self.topology.set_local_zone(zone):
            return []
        meta = dict(self.meta)
        if zone is None:
            meta.pop(ZONE_META_KEY, None)
        else:
            meta[ZONE_META_KEY] = zone
            if meta_size(meta) > self.config.gossip.max_meta_bytes:
                # Known here (our own peer choice uses it) but not announced, and no stale zone left in our
                # metadata; update_meta would raise, and the zone was already set above.
                self.stats["zone_not_announced"] += 1
                meta.pop(ZONE_META_KEY)
        return self.update_meta(meta, now)

    def join(self, seeds: Sequence[Address], now: float) -> list[Effect]:
        """One join attempt: push-pull (join=True) with each seed address. Call it once at start with the
        resolved seeds; the Node asks for later attempts itself (`JoinSeeds`: failed attempts with backoff, and
        rejoins after losing every peer, see core/joining.py), and the driver answers each with this call."""
        targets = [s for s in dict.fromkeys(seeds) if s != self.addr]
        # A join attempt means this node was given seeds: it counts as joined only once another member is alive,
        # even when no seed resolved to anyone else this round (DNS records of peers still starting); otherwise
        # a pod that started before its peers' DNS names existed stayed alone, "joined" and ready, for good.
        self._join.attempted(targets, now)
        if targets:
            # One follow-up sync with a random member shortly after: members that joined at the same moment
            # through other seeds were not in the seed's view yet, and would otherwise wait for a rumor.
            self._followup_sync_at = now + _FOLLOWUP_SYNC_INTERVALS * self.config.gossip.interval
            # Announce ourselves too (memberlist does): a second, independent source of our Alive rumor.
            self._announce_self(now)
        return [SyncWith(s, join=True) for s in targets]

    def bootstrap(self, members: Sequence[MemberSnapshot], now: float) -> None:
        """Install a known view quietly: no events, no rumors, no join (the simulator's pre-joined start,
        which lets steady-state runs at thousands of members skip the N² rumors of a join from nothing).
        Rows about us or already known are ignored; metadata mappings are shared, not copied."""
        for row in members:
            if row.name == self.name or row.name in self.table:
                continue
            self.table.add(Member(row.name, row.addr, row.incarnation, row.state, row.meta, now))
            self._probe_order.append(row.name)
        self.rng.shuffle(self._probe_order)
        self._join.active = True  # seeded as far as rejoining goes: it joins the seeds again if it loses everyone

    def push_pull_state(self, join: bool) -> PushPullState:
        return PushPullState(self.name, tuple(m.snapshot() for m in self.table), join)

    def serve_push_pull(self, remote: PushPullState, *,
                        chunk_rows: int | None = None) -> tuple[PushPullState, list[PushPullState]]:
        """A peer's push-pull reached us: (our answer, the merges to run), in memberlist's order. The answer is
        our view from *before* merging theirs: the initiator learns what we knew, and its own rows are not
        echoed back to it. Feed each returned part to `merge_push_pull`, in order; with `chunk_rows` the view
        comes in parts of that many rows, so a driver can yield between them (a forged view of thousands of
        rows must not stall the event loop)."""
        return self.push_pull_state(False), split_push_pull(remote, chunk_rows)

    def merge_push_pull(self, remote: PushPullState, now: float, *, source_host: str | None = None) -> list[Effect]:
        """Merge a full membership view. Dead or suspect rows count as suspicions only: we let the member
        refute, as a newcomer's stale view must not kill anyone. `source_host`: the host the stream came from
        (its connection proves it), when the driver knows it; a joiner's digest table goes only there."""
        out: list[Effect] = []
        for row in remote.members:
            known = self.table.get(row.name)
            if known is not None and row.name != self.name and (
                    row.incarnation < known.incarnation
                    or (row.incarnation == known.incarnation and (row.state == known.state
                                                                  or row.state == MemberState.ALIVE))):
                continue  # nothing new in this row: skip building a rumor for it
            rumor: Rumor
            if row.state == MemberState.ALIVE:
                rumor = Alive(row.name, row.incarnation, row.addr, row.meta)
            elif row.state == MemberState.LEFT:
                rumor = Dead(row.name, row.incarnation, row.name)
            else:
                rumor = Suspect(row.name, row.incarnation, remote.sender)
            self._apply_rumor(rumor, now, remote.sender, out)
        self._refuted = False  # the stream exchange itself carries our refutation back
        if remote.join and any(row.name == remote.sender for row in remote.members):
            # A joiner's view (its own row is in one part only, so this runs once per join): push-pull's
            # stream format has no room for digests that older agents would read, so they follow by UDP.
            self._send_digest_table(remote.sender, now, out, source_host)
            self._send_coordinate_table(remote.sender, now, out, source_host)
        return out

    def sync_failed(self, to: Address, now: float) -> list[Effect]:
        self.stats["sync_failed"] += 1
        self._join.sync_failed(to, now, self.joined)
        return []

    def tcp_probe_ok(self, seq: int, now: float) -> list[Effect]:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self.stats["tcp_fallback_acks"] += 1
            self._probe = None
        return []

    def tcp_probe_refused(self, seq: int, now: float) -> list[Effect]:
        """The target's host refused the stream connection: nothing listens on its port, so the probe has
        failed for certain. Suspect now instead of at the end of the probe interval (detection gets up to
        half an interval faster); as the target is to blame, our own health score is left alone."""
        probe = self._probe
        out: list[Effect] = []
        if probe is not None and probe.seq == seq:
            self._probe = None
            self.stats["tcp_refused"] += 1
            self._probe_failed(probe, now, out, blame_self=False)
        return out

    @property
    def _rumor_population(self) -> int:
        """Live members counting us, as the rumor queue's "everyone has it" check needs: once we leave we are
        LEFT, no longer among the table's live members, and without the +1 our own leave rumor would be
        retired one recipient short (several members leaving at once then saw each other die)."""
        return self.table.n_live + (1 if self.leaving else 0)

    def leave(self, now: float) -> list[Effect]:
        """Broadcast our graceful leave. The driver keeps running (ticks, packets) until `LeaveDone`."""
        if self.leaving:
            return []
        self.leaving = True
        self.send_budget.refill(now)
        self._leave_until = now + self._leave_linger
        me = self.table.get(self.name)
        assert me is not None
        self.table.set_state(me, MemberState.LEFT, now)
        self._probe = None
        out: list[Effect] = []
        self._enqueue(Dead(self.name, self.incarnation, self.name), None)
        self._forward(now, None, out)
        return out

    def broadcast_state(self, payload: bytes, now: float, *, key: str | None = None,
                        critical: bool = False) -> list[Effect]:
        """Send a state rumor. Tree path: pushed at once to the tree's eager neighbours (a `critical` one also
        to `fanout` random others), announced to the lazy ones. Flood path: queued (piggybacked, bounded
        retransmits; a later rumor with the same `key` replaces an unsent earlier one) and forwarded at once
        if configured. `critical`: ahead of every other rumor, to more peers, and marked on the wire so relays
        keep it ahead."""
        out: list[Effect] = []
        self.send_budget.refill(now)
        rumor = StateRumor(payload, critical)
        skey = None if key is None else "s:" + key
        if self._tree_on:
            ident = message_id(payload)
            self.tree.receive(ident, None, now)
            # A critical write goes straight to every member in clusters up to CRITICAL_DIRECT (core/critical.py).
            extra = [m.name for m in self._random_peers(direct_reach(self.table.n_alive - 1), exclude=None,
                                                          live_only=True, alive_only=True)
                     if m.name not in self.tree.eager] if critical else []
            if self._tree_spread(ident, rumor, None, now, out, extra=extra):
                # The flood fallback waits one gossip interval for the tree to deliver (core/held_floods.py).
                dropped = self._held_floods.hold((rumor, skey), now + self.config.gossip.interval)
                if dropped:  # older agents get those by anti-entropy only
                    self.stats["tree_held_floods_dropped"] += dropped
            return out
        self._enqueue(rumor, None, key=skey, sid=self._note_held(payload, now))
        self._fresh_rumor(now, None, out)
        return out

    def publish_root_digest(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int = 0,
                            now: float | None = None) -> bool:
        """Our replica's convergence digest: it rides in the digest allowance of the packets we send anyway
        (no incarnation bump, no rumor, no event). False if it equals the one we publish. `seq_floor` is the
        wall clock in ms; with `now`, it also bounds the sequence numbers we take from peers."""
        if self.root_digests.publish(root_hex, keys, hlc_ms, seq_floor=seq_floor, now=now) is None:
            return False
        self.stats["digests_published"] += 1
        return True

    def update_meta(self, meta: Mapping[str, str], now: float) -> list[Effect]:
        """Change our metadata: bumps our incarnation and broadcasts a fresh Alive."""
        if meta_size(meta) > self.config.gossip.max_meta_bytes:
            raise ValueError(f"metadata is larger than gossip.maxMetaBytes ({self.config.gossip.max_meta_bytes} B)")
        if dict(meta) == self.meta:
            return []
        self.meta = dict(meta)
        self.send_budget.refill(now)
        self.incarnation = min(self.incarnation + 1, codec.MAX_INCARNATION)
        self._announce_self(now)
        out: list[Effect] = []
        self._fresh_rumor(now, None, out)
        return out

    def handle_packet(self, packet: Packet, src: Address, now: float) -> list[Effect]:
        out: list[Effect] = []
        self.send_budget.refill(now)
        fresh = False
        # Rumors first: an Ack to a Ping in the same packet then carries whatever they made us say
        # (e.g. the refutation of a suspicion piggybacked on the Ping by Lifeguard's buddy system).
        # Whether the packet came from its named sender's table host, as the table stood before its rumors: a
        # forged duplicate push "from" a tree neighbour must not count against that neighbour's link.
        from_host = self._at_table_host(packet.sender, src)
        rest = False  # whether the packet holds anything besides rumors (a tree push holds payloads only)
        for msg in packet.messages:
            if not isinstance(msg, _RUMOR_TYPES):
                rest = True
            elif self._apply_rumor(msg, now, packet.sender, out, from_host=from_host):
                fresh = True
        if rest:
            self._handle_rest(packet, src, now, out)
        elif not from_host:
            self._from_table_host(packet.sender, src)  # (counts it)
        self._repair_digests(packet.sender, now, out)
        if self._refuted:
            # Answer an accusation to the accuser at once: it is the member about to spread it further.
            # (Not in pull mode: the refutation waits for pulls like any rumor.)
            self._refuted = False
            sender = self.table.get(packet.sender)
            if sender is not None and self._pushes:
                self._send(sender.addr, sender.name, [], out)
        if fresh and not self.leaving:
            self._fresh_rumor(now, packet.sender, out)
        return out

    def _handle_rest(self, packet: Packet, src: Address, now: float, out: list[Effect]) -> None:
        """`handle_packet` for a packet's messages other than rumors (applied first): digests, probes, pull
        requests, coordinates and the tree's control messages. A packet of payloads alone (most packets under
        a stream of writes: the tree's pushes) skips this."""
        reply_pull: Address | None = None
        held: frozenset[int] = frozenset()  # what a short pull request says the asker holds
        # What a packet shows about its sender's release (core/readers.py) counts only from the sender's table
        # host: a spoofed packet raising an older agent's level would make us send it packets it drops whole.
        shows = self._from_table_host(packet.sender, src)
        self._on_digests(packet, now, shows)  # before a Ping: its Ack then answers them
        grafted: set[int] = set()  # ids answered to this packet's grafts (at most MAX_GRAFT_ANSWER in all)
        rows_taken = False  # one message of second-hand coordinates a packet (an honest one holds one at most)
        coordinate_taken = False  # and one coordinate of the sender's own
        # One ping and one ping-req a packet: an honest packet holds one at most, and each draws an answer (a
        # datagram of 200 pings naming a member's own address drew 3.5x its bytes of acks with riders there).
        pinged = relayed = acked = False
        for msg in packet.messages:
            if isinstance(msg, _RUMOR_TYPES):  # digests: _on_digests
                continue
            if isinstance(msg, Ping):
                if pinged:
                    self.stats["pings_over_limit"] += 1
                    continue
                pinged = True
                self._on_ping(msg, src, out, now)
            elif isinstance(msg, Ack):
                if acked:
                    # An honest packet holds one ack at most: more are guesses at our sequence numbers.
                    self.stats["acks_over_limit"] += 1
                    continue
                acked = True
                self._on_ack(msg, packet.sender, now, out)
            elif isinstance(msg, PingReq):
                if relayed:
                    self.stats["pings_over_limit"] += 1
                    continue
                relayed = True
                self._on_ping_req(msg, now, out)
            elif isinstance(msg, Nack):
                self._on_nack(msg, packet.sender)
            elif isinstance(msg, PullRequest):
                reply_pull = self._pull_reply_address(packet.sender)
            elif isinstance(msg, ShortIds):
                if self._on_short_ids(msg, packet.sender, out, now, grafted, shows=shows):
                    reply_pull = self._pull_reply_address(packet.sender)
                    # What the asker holds is believed only from its host: a forged request would have us
                    # count our rumors as sent to it, and it would never get them (until anti-entropy).
                    if shows:
                        self._held_claims.note(packet.sender, msg.ids, now)
                        held = self._held_claims.held(packet.sender, now, self._held_window())
                        self._pull_hint(packet.sender, msg.ids, now)
            elif isinstance(msg, NetCoordinate):
                # From live members only: a coordinate of a member we hold dead or left would bring it back to
                # the RTT table and /v1/coordinates (it refutes first if it is alive after all). One a packet, as
                # an honest one holds: each is checked and renumbered in every peer's walk of updates.
                if coordinate_taken:
                    self.stats["coordinates_over_limit"] += 1
                elif not shows and self.table.is_live(packet.sender):  # not from its host: a name anyone can claim
                    self.stats["coordinates_not_from_member_host"] += 1
                elif packet.sender != self.name and self.table.is_live(packet.sender):
                    coordinate_taken = True
                    self.topology.on_coordinate(packet.sender, msg, now, shows=shows)
                else:
                    self.stats["coordinates_unknown_member"] += 1
            elif isinstance(msg, PeerCoordinates):
                if rows_taken:
                    self.stats["coordinate_rows_over_limit"] += 1
                elif not shows and self.table.is_live(packet.sender):  # (rows of a forged name: every walk)
                    self.stats["coordinates_not_from_member_host"] += 1
                elif packet.sender != self.name and self.table.is_live(packet.sender):
                    rows_taken = True
                    self.topology.on_rows(packet.sender, msg, now, self.table.is_live, self.name, shows=shows)
                else:
                    self.stats["coordinates_unknown_member"] += 1
            elif isinstance(msg, _TREE_TYPES):
                self._on_tree_message(msg, packet.sender, now, out, grafted, shows=shows, src_host=src[0])
        if reply_pull is not None and len(self.queue):
            # Only an answer that carries rumors goes (with digests beside them, in their allowance): an empty
            # one was a packet for digests that ride on the next packet to the asker anyway.
            reserve = DIGEST_ALLOWANCE if packet.sender in self._digest_readers else 0
            limit = self._answer_limit()
            rumors = self._take(self._budget(reserve), packet.sender, limit=limit, held=held)
            if not rumors and reserve and len(self.queue):
                # A rumor too large to sit beside the digest allowance: in a packet of its own.
                large = self._take(self._budget(), packet.sender, limit=limit, held=held)
                if large:
                    self._charge(0)
                    out.append(Send(reply_pull, Packet(self.name, tuple(large))))
            if rumors:
                digests = self._digests_for(packet.sender)
                self._charge(_digest_bytes(digests))
                out.append(Send(reply_pull, Packet(self.name, (*rumors, *digests))))

    def tick(self, now: float) -> list[Effect]:
        """Run everything due at `now`: probes, probe timeouts, gossip, push-pull, suspicion expiry, reaping."""
        out: list[Effect] = []
        self.send_budget.refill(now)
        self._tick_probe(now, out)
        if len(self._hellos):
            self._tick_hello(now, out)
        self._tick_relays(now, out)
        self._tick_suspicions(now, out)
        self._tick_reap(now, out)
        gossip_tick = now >= self._next_gossip
        if gossip_tick:
            self._gossip_ticks += 1
            if not self._pushes:
                # One peer at a time, `fanout` a pull interval: each request names what the answers before it
                # brought (asked at once, every holder answered with the same write).
                self._gossip(now, out)
                self._next_gossip = now + self._next_pull_interval() / self.config.gossip.fanout
            else:
                if len(self.queue) or self.root_digests.has_fresh() or self.root_digests.summary_due():
                    self._gossip(now, out)
                self._next_gossip = self._next_beat(now)
        if self._tree_on:
            self._flood_held(now, out)
            # Announcements leave at the gossip tick, after the round's packets took theirs along (plumtree.tick).
            self._tick_tree(now, out, flush=gossip_tick and self._gossip_ticks % _LAZY_TICKS == 0)
        if now >= self._followup_sync_at:
            self._followup_sync_at = _NEVER
            peer = self._random_peers(1, exclude=None, live_only=True, alive_only=True)
            if peer:
                out.append(SyncWith(peer[0].addr, join=False))
        if now >= self._next_reconnect:
            self._reconnect(now, out)
        if now >= self._next_push_pull and not self.leaving:
            self._next_push_pull = now + self._push_pull_interval()
            peer = self._random_peers(1, exclude=None, live_only=True)
            if peer:
                out.append(SyncWith(peer[0].addr, join=False))
        rejoin = self._join.due(now, self.joined, self.leaving)
        if rejoin is not None:
            self.stats["rejoin_requests" if rejoin else "join_retries"] += 1
            out.append(JoinSeeds(rejoin))
        if self.leaving and not self._leave_done and (now >= self._leave_until or not self._leave_spreading()):
            self._leave_done = True
            out.append(LeaveDone())
        return out

    def _leave_spreading(self) -> bool:
        """Our leave rumor (and whatever else is queued) still has someone to go to."""
        return len(self.queue) > 0 and self.table.n_live > 0

    def next_deadline(self) -> float:
        """The earliest time at which `tick` has something to do (a time already past: at once).
        The driver asks after every packet: plain comparisons, no generator or `min` call per term."""
        leaving = self.leaving
        deadline = self._followup_sync_at
        if not leaving and self._next_push_pull < deadline:
            deadline = self._next_push_pull
        if leaving:
            if not self._leave_done:
                at = self._leave_until if self._leave_spreading() else 0.0
                if at < deadline:
                    deadline = at
        elif self._join.active and self.table.n_alive <= 1:  # (`not self.joined`, inlined: the hot path)
            at = self._join.deadline(False)
            if at < deadline:
                deadline = at
        if self._former and self._next_reconnect < deadline:
            deadline = self._next_reconnect
        if not leaving and len(self._hellos):
            at = self._hellos.next_deadline()
            if at < deadline:
                deadline = at
        probe = self._probe
        if probe is None:
            # While a probe is in flight the next one waits for its end (below), even if its round began.
            if not leaving and len(self._probe_order) and self._next_probe < deadline:
                deadline = self._next_probe
        else:
            at = probe.end_at if probe.indirect_sent else probe.indirect_at
            if at < deadline:
                deadline = at
        if self._next_gossip < deadline and (
                len(self.queue) or self.config.gossip.mode == "pull" or self.root_digests.has_fresh()
                or self.root_digests.summary_due()):
            deadline = self._next_gossip
        if self._tree_on:
            at = self.tree.next_deadline()
            if at < deadline:
                deadline = at
            at = self._coalesce.next_deadline()
            if at < deadline:
                deadline = at
            at = self._held_floods.next_deadline()
            if at < deadline:
                deadline = at
            if (self._tree_fill_at < deadline and self.tree.wanted() and not leaving
                    and self.table.n_alive - 1 > self.tree.picked):
                deadline = self._tree_fill_at  # (members left to pick: else no idle wake-ups)
        for relay in self._relays.values():
            if relay.nack_at < deadline:
                deadline = relay.nack_at
            if relay.expire_at < deadline:
                deadline = relay.expire_at
        for suspicion in self._suspicions.values():
            at = suspicion.deadline()
            if at < deadline:
                deadline = at
        if self._graveyard:
            at = self._graveyard[0][0] + self.config.membership.reap_after
            if at < deadline:
                deadline = at
        return deadline

    # -- probing ---------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        """A sequence number for a ping of ours (a probe, or one relayed for a ping-req): unguessable
        (core/probe_seq.py), and none in use by an outstanding probe or relay."""
        while True:
            seq = self._seqs.next()
            if seq not in self._relays and (self._probe is None or self._probe.seq != seq):
                return seq

    def _next_round_at(self, now: float) -> float:
        """`now`-clock time at which our next aligned round starts."""
        interval, wall = self.config.membership.probe_interval, now + self._clock_offset
        r = probe_schedule.round_of(wall, self._probe_phase, interval)
        return probe_schedule.round_start(r + 1, self._probe_phase, interval) - self._clock_offset

    def _aligned_target(self, now: float) -> Member | None:
        """This round's target on the shared ring; None if we already probed in this round."""
        ring = self.table.ring()
        n = len(ring)
        key = self.table.ring_key(self.name)
        me = bisect.bisect_left(ring, (key, self.name)) if key is not None else n
        if n < 2 or me >= n or ring[me][1] != self.name:
            return self._next_target()  # not on the ring (yet): fall back to the shuffled order
        r = probe_schedule.round_of(now + self._clock_offset, self._probe_phase, self.config.membership.probe_interval)
        if r == self._last_round:
            return None
        self._last_round = r
        zone_target = self._zone_ring_target(ring, r)
        if zone_target is not None:
            return zone_target
        return self.table.get(ring[(me + probe_schedule.shift(r, n - 1)) % n][1])

    def _zone_ring_target(self, ring: list[tuple[int, str]], r: int) -> Member | None:
        """With topology awareness, round `r`'s target along our zone's own ring (core/probe_order.py); None
        in a far round, or when we have no zone ring to probe along."""
        topo = self.topology
        if topo.mode != "aware" or probe_order.far_round(
                r, max(probe_order.FAR_PROBE_SHARE, topo.policy.cross_zone_fraction)):
            return None
        if self._zone_rings_for is None or self._zone_rings_for[0] is not ring \
                or self._zone_rings_for[1] != self._zone_version:
            def zone_of(name: str) -> str | None:
                m = self.table.get(name)
                return None if m is None else topo.zone_of(m.meta)
            self._zone_rings = probe_order.zone_groups(ring, zone_of)
            self._zone_rings_for = (ring, self._zone_version)
        group = self._zone_rings.get(self.name)
        if group is None or len(group) < 2 or len(group) == len(ring):
            return None
        key = self.table.ring_key(self.name)
        me = bisect.bisect_left(group, (key, self.name)) if key is not None else len(group)
        if me >= len(group) or group[me][1] != self.name:
            return None
        return self.table.get(group[(me + probe_schedule.shift(r, len(group) - 1)) % len(group)][1])

    def _next_target(self) -> Member | None:
        """Round-robin over a shuffled order (SWIM's bounded detection time), reshuffled every pass."""
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                name = self._probe_order[self._probe_index]
                self._probe_index += 1
                m = self.table.get(name)
                if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                    return m
            self._probe_order = [n for n in self._probe_order if n in self.table]
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _tick_probe(self, now: float, out: list[Effect]) -> None:
        m = self.config.membership
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._send_indirect(probe, now, out)
            if now >= probe.end_at:
                self._probe = None
                self._probe_failed(probe, now, out)
        if self.leaving or now < self._next_probe or self._probe is not None:
            return
        aligned = m.probe_schedule == "aligned"
        if aligned and self.awareness.score == 0:
            self._next_probe = self._next_round_at(now)
        else:
            # Lifeguard stretches the interval of an unhealthy member: it skips rounds, others still probe.
            self._next_probe = now + self.awareness.scale(m.probe_interval)
        target = self._aligned_target(now) if aligned else self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(seq, target.name, target.incarnation,
                             indirect_at=now + self.awareness.scale(m.probe_timeout),
                             end_at=now + self.awareness.scale(m.probe_interval))
        msgs: list[Message] = [Ping(seq, target.name, self.name, self.addr)]
        if target.state == MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly, so it can refute at once.
            msgs.append(Suspect(target.name, target.incarnation, self.name))
        msgs += self._probe_pull(target.name, now)
        self.stats["probes"] += 1
        lower = self._probe_offers(target, now, out)
        self._send(target.addr, target.name, msgs, out)
        own = self.root_digests.get(self.name)
        if lower and target.name not in self._digest_readers and own is not None:
            # Not known to read digests (yet): our row and summary in a packet apart, which an older agent
            # drops alone; a newer one answers with what we lack and is a reader from then on.
            offer_digests: list[Digest | DigestSummary] = [own, self.root_digests.summary(True)]
            self._charge(_digest_bytes(self._count_digests("offer", offer_digests)))
            out.append(Send(target.addr, Packet(self.name, tuple(offer_digests))))
            self.stats["digest_offers"] += 1

    def _probe_offers(self, target: Member, now: float, out: list[Effect]) -> bool:
        """The offers (packets of their own, which an older agent drops alone) that go before a probe to a
        member whose level we do not know; True if the lower ones are due (the digest offer after the probe).

        At first contact only our highest offer goes (`_hello_offer`): a member of this release answers it,
        and then reads everything lower too. The lower offers (coordinate, rows, digests) follow only once the
        highest went unanswered for a probe timeout (a hello's, or an earlier probe's): an older agent gets them
        from our next probe of it on. Within a probe timeout of our first offer, none (the answer may be on its
        way)."""
        hello, level = self._hello_offer()
        if self.readers.level(target.name) >= level:
            return False
        first = self.readers.offered_at(target.name)
        if first is not None and now - first < self.config.membership.probe_timeout:
            return False
        lower = first is not None
        if lower and not self.topology.reads_coordinates(target.name):
            # Not known to read coordinates: ours in a packet apart, first, which an older agent drops alone;
            # a newer one then puts its own on its acks. (Pings carry none: the prober's sample needs only the
            # target's, and every ping would pay ~50 bytes.)
            offer = self.topology.coordinate_message()
            self._send_apart(target.addr, offer, out)
            self.stats["coordinate_offers"] += 1
        if (lower or level == PEER_COORDINATES) and not self.topology.reads_rows(target.name):
            # Second-hand coordinates likewise (type 18; the previous release reads 14 but not 18): an empty
            # message in a packet of its own; a newer agent answers with rows on its acks, a reader from then on.
            # (The offer carried two rows: in a young cluster, where most probes are first contacts, offers
            # were a third of all row bytes, and the rows reach the peer on acks anyway.)
            rows = PeerCoordinates(())
            self._send_apart(target.addr, rows, out)
            self.stats["coordinate_row_offers"] += 1
        if level == SHORT_IDS and not self.readers.reads(target.name, SHORT_IDS):
            # Short ids (type 19: pull requests, tree ids) likewise: an offer apart, answered by a newer agent's.
            self._send_apart(target.addr, hello, out)
            self.stats["short_id_offers"] += 1
        self.readers.offered(target.name, now)
        return lower

    def _hello_offer(self) -> tuple[ShortIds | PeerCoordinates, int]:
        """Our highest offer and its level: short ids (type 19) when we use them (`_offers_short_ids`), which a
        member of this release answers with its own (`_on_short_ids`); else (push mode on the flood path) an
        empty message of second-hand coordinates (type 18), which a newer member reads (its level shows) and
        answers on its acks. Either shows every lower level too (core/readers.py)."""
        if self._offers_short_ids():
            return ShortIds(ShortKind.OFFER), SHORT_IDS
        return PeerCoordinates(()), PEER_COORDINATES

    def _tick_hello(self, now: float, out: list[Effect]) -> None:
        """Greet the members due (core/hello_queue.py) with our highest offer, in a packet of its own (an older
        agent drops it alone), charged to the send budget like the offers beside probes. Members that showed
        their level meanwhile, that we already offered to, or that are no longer live, are skipped, and so is
        everyone while the cluster is too large for greetings to pay (`hellos_pay`)."""
        if self.leaving:
            return
        offer, level = self._hello_offer()
        table, readers = self.table, self.readers
        # A large cluster learns levels from probes: there the greetings would cost more than they save.
        pays = hellos_pay(table.n_live, retransmit_limit(self.config.gossip.retransmit_mult, table.n_live))

        def needs_none(name: str) -> bool:
            return (not pays or not table.is_live(name) or name == self.name or readers.level(name) >= level
                    or readers.offered_at(name) is not None)

        shown: Counter[str] | None = None

        def vouched(host: str) -> int:
            """Live members at `host` (a `host_key`: every spelling of one IP, an IPv6 /64) that showed
            themselves first-hand (a reader level): room for more hellos there (core/hello_queue.py ONE HOST).
            One pass over the table, only once a host is at its cap."""
            nonlocal shown
            if shown is None:
                shown = Counter(host_key(m.addr[0]) for m in table
                                if readers.level(m.name) > 0 and table.is_live(m.name))
            return shown[host]

        hellos = self._hellos
        held = hellos.held_back
        for name in hellos.due(now, needs_none, vouched):
            member = table.get(name)
            assert member is not None  # (live: needs_none)
            self._send_apart(member.addr, offer, out)
            readers.offered(name, now)
            self.stats["hellos"] += 1
        if hellos.held_back != held:
            self.stats["hellos_held"] += hellos.held_back - held

    def _send_indirect(self, probe: _Probe, now: float, out: list[Effect]) -> None:
        probe.indirect_sent = True
        target = self.table.get(probe.target)
        if target is None:
            return
        helpers = self._random_peers(self.config.membership.indirect_checks, exclude=probe.target, live_only=True,
                                     alive_only=True)
        for helper in helpers:
            req = PingReq(probe.seq, target.name, target.addr, self.name, self.addr, want_nack=True)
            self._send(helper.addr, helper.name, [req], out)
        probe.expected_nacks = len(helpers)
        probe.helpers = tuple(h.name for h in helpers)
        self.stats["ping_reqs"] += len(helpers)
        if self.config.membership.tcp_fallback_probe:
            out.append(TcpProbe(target.addr, target.name, probe.seq))

    def _probe_failed(self, probe: _Probe, now: float, out: list[Effect], *, blame_self: bool = True) -> None:
        self.stats["probe_failures"] += 1
        # Lifeguard: if helpers did not even nack, the problem is likely us; without helpers, assume us too.
        if not blame_self:
            pass
        elif probe.expected_nacks:
            self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self.awareness.apply_delta(1)
        target = self.table.get(probe.target)
        if target is None or target.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        # Probing a suspect that still does not answer is our own independent confirmation (memberlist too).
        # The accusation names the incarnation the probe was sent to: if the member refuted meanwhile, it is
        # stale and ignored, instead of re-accusing the refutation (which made incarnations climb).
        self._apply_rumor(Suspect(target.name, probe.incarnation, self.name), now, None, out)

    def _on_ping(self, msg: Ping, src: Address, out: list[Effect], now: float) -> None:
        if msg.target != self.name:
            self.stats["ping_wrong_target"] += 1
            return
        ack = Ack(msg.seq, self.table.digest)
        if not self._at_table_address(msg.source, msg.source_addr):
            # A ping names where its ack goes. To an address that is not the claimed member's table address (a
            # forged ping pointing at a victim; or, for a moment, a member at a new address we have not heard of
            # yet) goes the bare ack: no rumors, digests, announcements, coordinate rows, not even our coordinate
            # (+35 B: a forged ping drew 2.3x its size with it, ~20x with the riders). An honest prober always
            # writes its table address; it only misses one RTT sample while its move spreads.
            self._send_bare(msg.source_addr, [ack], out)
            self.stats["acks_bare"] += 1
            return
        self._send(msg.source_addr, msg.source,
                   [ack, *self._coordinate_for(msg.source, now), *self._probe_pull(msg.source, now)], out)

    def _piggybacks_to(self, name: str | None) -> bool:
        """Whether a probe, ack or ping-req to `name` carries rumors: always, except to a far member under
        topology-aware choice, then with probability crossZoneFraction (probe targets stay round-robin, so
        without this two thirds of the piggybacked bytes would still cross zones; core/topology_state.py)."""
        if name is None or not self.topology.active():
            return True
        member = self.table.get(name)
        return member is None or self.topology.piggybacks_to(name, member.meta, self.rng)

    def _coordinate_for(self, name: str, now: float) -> tuple[NetCoordinate | PeerCoordinates, ...]:
        """Our coordinate for an ack to `name`, if it reads coordinates, and a few second-hand ones if it
        reads those, piggybacked as rumors are (core/topology_state.py)."""
        if not self.topology.reads_coordinates(name):
            return ()
        passed = self.topology.rows_on_ack(name, now, self._piggybacks_to(name)) \
            if self.topology.reads_rows(name) else None
        own = (self.topology.coordinate_message(),) if self.topology.own_on_ack(name, now) else ()
        return own if passed is None else (*own, passed)

    def _on_ping_req(self, msg: PingReq, now: float, out: list[Effect]) -> None:
        m = self.config.membership
        if len(self._relays) >= _MAX_RELAYS:
            # Each relay is remembered for a probe interval and scanned by next_deadline: a flood of ping-reqs
            # must not grow that without bound (honest ones: a few per failed probe in the cluster).
            self.stats["ping_reqs_over_cap"] += 1
            return
        seq = self._next_seq()
        # Both addresses come from the request: what we send to one that is not its member's table address is
        # the bare ping / ack / nack (a forged ping-req must not make us a reflector either).
        origin = msg.source if self._at_table_address(msg.source, msg.source_addr) else None
        self._relays[seq] = _Relay(msg.source_addr, msg.seq,
                                   nack_at=now + m.probe_timeout * _NACK_FRACTION if msg.want_nack else _NEVER,
                                   expire_at=now + m.probe_interval, origin=origin, target=msg.target)
        ping = Ping(seq, msg.target, self.name, self.addr)
        if self._at_table_address(msg.target, msg.target_addr):
            self._send(msg.target_addr, msg.target, [ping], out)
        else:
            self._send_bare(msg.target_addr, [ping], out)

    def _on_ack(self, msg: Ack, sender: str, now: float, out: list[Effect]) -> None:
        """An ack closes our probe only with its exact (sequence number, member) pair: from the target, or
        from a helper we asked; a relay's ping only from the member it pinged. Anything else is counted
        (`acks_unmatched`) and changes nothing: a forged ack must not keep a dead member alive."""
        self.stats["acks_received"] += 1
        probe = self._probe
        if probe is not None and probe.seq == msg.seq and (sender == probe.target or sender in probe.helpers):
            if not probe.indirect_sent:
                self.awareness.apply_delta(-1)
            self._probe = None
            if msg.digest and msg.digest != self.table.digest and now >= self._next_digest_sync:
                # Our views of who is alive differ: one of us missed a rumor. Sync now rather than waiting
                # for the next periodic push-pull (this is what leaves no stragglers after a join).
                target = self.table.get(probe.target)
                if target is not None:
                    self._next_digest_sync = now + self.config.membership.probe_interval
                    self.stats["digest_syncs"] += 1
                    out.append(SyncWith(target.addr, join=False))
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and sender == relay.target:
            del self._relays[msg.seq]
            self._relay_answer(relay, Ack(relay.origin_seq, 0), out)
            return
        self.stats["acks_unmatched"] += 1

    def _on_nack(self, msg: Nack, sender: str) -> None:
        """Lifeguard: a helper heard nothing from the target. Counts once per helper we asked (a forged or
        repeated nack would otherwise talk our health score down when the fault is ours)."""
        self.stats["nacks_received"] += 1
        probe = self._probe
        if probe is None or probe.seq != msg.seq or sender not in probe.helpers:
            return
        if probe.nacked is None:
            probe.nacked = set()
        if sender not in probe.nacked:
            probe.nacked.add(sender)
            probe.nacks += 1

    def _relay_answer(self, relay: _Relay, msg: Ack | Nack, out: list[Effect]) -> None:
        """An indirect probe's answer to the member that asked: with rumors only at its table address."""
        if relay.origin is None:
            self._send_bare(relay.origin_addr, [msg], out)
        else:
            self._send(relay.origin_addr, relay.origin, [msg], out)

    def _tick_relays(self, now: float, out: list[Effect]) -> None:
        if not self._relays:
            return
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                relay.nack_at = _NEVER
                self._relay_answer(relay, Nack(relay.origin_seq), out)
            if now >= relay.expire_at:
                del self._relays[seq]

    # -- suspicion, death, reaping ---------------------------------------------------------------------
    def _tick_suspicions(self, now: float, out: list[Effect]) -> None:
        if not self._suspicions:
            return
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[name]
                member = self.table.get(name)
                if member is not None and member.state == MemberState.SUSPECT:
                    self._apply_rumor(Dead(name, suspicion.incarnation, self.name), now, None, out)

    def _forget_probe_slot(self, name: str) -> None:
        """A reaped member leaves the probe order now: if it rejoins, it gets one new slot, not a second."""
        try:
            i = self._probe_order.index(name)
        except ValueError:
            return
        del self._probe_order[i]
        if i < self._probe_index:
            self._probe_index -= 1

    def _reconnect(self, now: float, out: list[Effect]) -> None:
        """Try one failed member again: after a partition heals, this is how the two sides find each other."""
        cfg = self.config.membership
        self._next_reconnect = now + cfg.reconnect_interval
        for name, (_, died) in list(self._former.items()):
            if died + cfg.reconnect_timeout <= now:
                del self._former[name]
        if self._former and not self.leaving:
            names = list(self._former)
            addr, _ = self._former[names[int(self.rng.random() * len(names))]]
            out.append(SyncWith(addr, join=False))

    def _tick_reap(self, now: float, out: list[Effect]) -> None:
        reap_after = self.config.membership.reap_after
        while self._graveyard and self._graveyard[0][0] + reap_after <= now:
            since, name = self._graveyard.popleft()
            member = self.table.get(name)
            gone = member is not None and member.state in (MemberState.DEAD, MemberState.LEFT)
            if member is None or not gone or member.state_since != since:
                continue
            self.table.remove(name)
            self.root_digests.forget(name)
            self._recent_ids.forget(name)
            self._held_claims.forget(name)
            self._digest_exchange.forget(name)
            self._digest_readers.discard(name)
            self._hellos.discard(name)
            self.topology.forget(name)
            self.tree.remove(name)
            self._forget_probe_slot(name)
            out.append(MemberEvent(EventKind.REAP, member.snapshot()))

    # -- rumors ----------------------------------------------------------------------------------------
    def _apply_rumor(self, rumor: Rumor, now: float, source: str | None, out: list[Effect], *,
                     from_host: bool = True) -> bool:
        """Apply one rumor; True if it changed our view (it is then queued for re-broadcast). `from_host`: the
        packet came from `source`'s table host (see handle_packet)."""
        if isinstance(rumor, StateRumor):
            if self._tree_on:
                return self._tree_receive(rumor, now, source, out, from_host=from_host)
            sid = self._note_held(rumor.payload, now, source)
            if self.delegate is None or not self.delegate.on_state_rumor(rumor.payload, now):
                return False
            self._enqueue(self._relay_class(rumor, source if from_host else None, now), source, sid=sid)
            return True
        if rumor.name == self.name:
            return self._about_self(rumor, now)
        member = self.table.get(rumor.name)
        if isinstance(rumor, Alive):
            return self._on_alive(rumor, member, now, source, out)
        if member is None or rumor.incarnation < member.incarnation:
            return False
        if isinstance(rumor, Suspect):
            return self._on_suspect(rumor, member, now, source, out)
        return self._on_dead(rumor, member, now, source, out)

    def _about_self(self, rumor: Alive | Suspect | Dead, now: float) -> bool:
        """Someone talks about us. Refute anything that is not our current truth (SWIM's incarnation bump)."""
        if self.leaving:
            return False
        if rumor.incarnation < self.incarnation:
            if not isinstance(rumor, Alive):
                # A stale accusation: whoever still spreads it missed our refutation. Say it again.
                self.stats["stale_accusations"] += 1
                self._announce_self(now)
                self._refuted = True
                return True
            return False
        if isinstance(rumor, Alive) and rumor.incarnation == self.incarnation and rumor.addr == self.addr \
                and dict(rumor.meta) == self.meta:
            return False
        # Saturates at the codec's MAX_INCARNATION (decoders refuse more): an accusation forged at the maximum
        # cannot be refuted, but it can no longer overflow the encoder; the member is reaped after
        # `reap_after` and then re-added by its next Alive at the maximum.
        self.incarnation = min(rumor.incarnation + 1, codec.MAX_INCARNATION)
        if not isinstance(rumor, Alive):
            # Lifeguard: being accused suggests we are slow; probe more gently for a while.
            self.awareness.apply_delta(1)
        self.stats["refutations"] += 1
        self._refuted = True
        self._announce_self(now)
        return True

    def _announce_self(self, now: float) -> None:
        me = self.table.get(self.name)
        assert me is not None
        if me.meta.get(ZONE_META_KEY) != self.meta.get(ZONE_META_KEY):
            self._zone_version += 1
        me.incarnation, me.meta = self.incarnation, dict(self.meta)
        self._enqueue(Alive(self.name, self.incarnation, self.addr, dict(self.meta)), None)

    def _on_alive(self, rumor: Alive, member: Member | None, now: float, source: str | None,
                  out: list[Effect]) -> bool:
        if member is not None and rumor.incarnation <= member.incarnation:
            return False
        if meta_size(rumor.meta) > self.config.gossip.max_meta_bytes:
            self.stats["meta_too_large"] += 1
            return False
        if member is None:
            if len(self.table) >= self.config.membership.max_members:
                # Counted refusal: a forged Alive flood cannot grow the table (memory, probe rounds, push-pull).
                self.stats["member_cap"] += 1
                return False
            self._former.pop(rumor.name, None)
            member = Member(rumor.name, rumor.addr, rumor.incarnation, MemberState.ALIVE, dict(rumor.meta), now)
            self.table.add(member)
            # A newcomer goes to a random place in the remaining probe order (memberlist does the same).
            pos = self._probe_index + int(self.rng.random() * (len(self._probe_order) - self._probe_index + 1))
            self._probe_order.insert(pos, member.name)
            out.append(MemberEvent(EventKind.JOIN, member.snapshot()))
            self._take_early_link(member)
            self._greet(member.name)
            self._enqueue(rumor, source, low=True)  # announcements of newcomers never crowd out real news
            return True
        previous = member.state
        self._former.pop(member.name, None)
        moved = member.addr != rumor.addr
        changed = moved or member.meta != rumor.meta
        if member.meta.get(ZONE_META_KEY) != rumor.meta.get(ZONE_META_KEY):
            self._zone_version += 1
        member.incarnation, member.addr, member.meta = rumor.incarnation, rumor.addr, dict(rumor.meta)
        self.table.set_state(member, MemberState.ALIVE, now)
        self._suspicions.pop(member.name, None)
        if previous == MemberState.ALIVE:
            if changed:
                out.append(MemberEvent(EventKind.UPDATE, member.snapshot()))
        else:
            out.append(MemberEvent(EventKind.ALIVE, member.snapshot()))
        if previous != MemberState.ALIVE or moved:
            # Back from suspicion or death, or moved: perhaps a restart on another release. It gets digests
            # again only once it sends one (until then, in packets of their own).
            self._digest_readers.discard(member.name)
            self._digest_exchange.forget(member.name, reaped=False)
            self.topology.offer_again(member.name)
            self.tree.remove(member.name)  # a restart lost its tree links: it picks new ones
            self._take_early_link(member)  # (and may have asked for one before this Alive reached us)
            self._greet(member.name)
        self._enqueue(rumor, source)
        return True

    def _send_apart(self, addr: Address, msg: Message, out: list[Effect]) -> None:
        """`msg` in a packet of its own (an offer, a hello, an answer: an older agent that cannot read it drops
        that packet alone), charged to the send budget."""
        self._charge(codec.message_size(msg))
        out.append(Send(addr, Packet(self.name, (msg,))))

    def _greet(self, name: str) -> None:
        """A member entered our table live, or came back after a reset of its reader level: queue it for one
        hello (core/hello_queue.py; a full queue is counted, and leaves it to our probes' offers). Its host key
        is the queue's (a cap per host: gossip may name many fake members at one victim's address; core/hosts.py
        folds the spellings of one host and an IPv6 /64 into one key)."""
        member = self.table.get(name)
        assert member is not None  # (just entered, or came back to, our table)
        hellos = self._hellos
        held = hellos.held_back
        if not hellos.add(name, host_key(member.addr[0])):
            self.stats["hellos_refused"] += 1
        elif hellos.held_back != held:  # parked at once behind its host's names (core/hello_queue.py ONE HOST)
            self.stats["hellos_held"] += 1

    def _take_early_link(self, member: Member) -> None:
        """Make the link a member asked for before its Alive reached us, if the request came from the host
        that Alive names (_on_tree_message: a newcomer, or a restart at a new address or back from death)."""
        early_host = self._early_links.pop(member.name, None) if self._early_links else None
        if early_host is not None and same_host(early_host, member.addr[0]):
            self.tree.on_graft((), member.name)
            self.stats["tree_early_links"] += 1

    def _on_suspect(self, rumor: Suspect, member: Member, now: float, source: str | None,
                    out: list[Effect]) -> bool:
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        if member.state == MemberState.SUSPECT:
            suspicion = self._suspicions.get(member.name)
            if suspicion is not None and suspicion.confirm(rumor.sender):
                # Re-broadcast confirmations, so every member's timer shrinks too.
                self._enqueue(rumor, source)
                return True
            return False
        member.incarnation = rumor.incarnation
        self.table.set_state(member, MemberState.SUSPECT, now)
        cfg = self.config.membership
        n = self.table.n_live
        expected = cfg.suspicion_mult - 2 if n - 2 >= cfg.suspicion_mult - 2 else 0
        min_timeout = suspicion_min_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        self._suspicions[member.name] = Suspicion(
            incarnation=rumor.incarnation, accuser=rumor.sender, started=now, min_timeout=min_timeout,
            max_timeout=cfg.suspicion_max_timeout_mult * min_timeout, expected=max(0, expected))
        self.stats["suspicions"] += 1
        out.append(MemberEvent(EventKind.SUSPECT, member.snapshot()))
        self._enqueue(rumor, source)
        return True

    def _on_dead(self, rumor: Dead, member: Member, now: float, source: str | None, out: list[Effect]) -> bool:
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        left = rumor.sender == rumor.name
        member.incarnation = rumor.incarnation
        self.table.set_state(member, MemberState.LEFT if left else MemberState.DEAD, now)
        self._suspicions.pop(member.name, None)
        self._graveyard.append((now, member.name))
        self.topology.drop_coordinate(member.name)  # no RTT estimates to a member we hold dead or left
        self.tree.remove(member.name)
        self._coalesce.drop(member.name)
        if not left:
            self._former[member.name] = (member.addr, now)
            if len(self._former) > _MAX_FORMER:
                del self._former[next(iter(self._former))]
        self.stats["left" if left else "deaths"] += 1
        out.append(MemberEvent(EventKind.LEFT if left else EventKind.DEAD, member.snapshot()))
        self._enqueue(rumor, source)
        return True

    # -- dissemination ---------------------------------------------------------------------------------
    def _enqueue(self, rumor: Rumor, source: str | None, *, key: str | None = None, low: bool = False,
                 sid: int | None = None) -> None:
        if key is None and not isinstance(rumor, StateRumor):
            key = "m:" + rumor.name
        # Critical: membership changes about known members, and state writes flagged critical.
        critical = not low and (rumor.critical if isinstance(rumor, StateRumor) else True)
        self._critical_fresh |= critical
        self.queue.enqueue(rumor, codec.message_size(rumor), key=key, source=source, low=low, critical=critical,
                           sid=sid)
        budget_stats(self.stats, self.queue)

    def _digests_for(self, to_name: str | None, *, ping: bool = False) -> list[Digest | DigestSummary]:
        """Convergence digests for a packet to `to_name`, within DIGEST_ALLOWANCE (core/digests.py: rows we
        owe it, fresh rows, a summary on a probe or when asked); none to a member not known to read them (an
        older agent would drop the whole packet). Except on a probe or ack, to a far member under
        topology-aware choice only with probability crossZoneFraction, as piggybacked rumors
        (core/topology_state.py): under writes digests were the largest share of what still crossed zones."""
        if to_name is None or to_name not in self._digest_readers or not len(self.root_digests):
            return []
        if not ping and not self._piggybacks_to(to_name):
            return []
        return self._count_digests("piggybacked", self._digest_exchange.outgoing(
            to_name, DIGEST_ALLOWANCE, codec.message_size, ping=ping))

    def _count_digests(self, where: str, digests: list[Digest | DigestSummary]) -> list[Digest | DigestSummary]:
        """Count digest rows and summaries sent by path (metrics: what convergence monitoring costs, where)."""
        rows = sum(isinstance(d, Digest) for d in digests)
        if rows:
            self.stats[f"digest_rows_{where}"] += rows
        if len(digests) > rows:
            self.stats[f"digest_summaries_{where}"] += len(digests) - rows
        return digests

    def _on_digests(self, packet: Packet, now: float, shows: bool = True) -> None:
        """A packet's digest rows and summaries. From and about members we know only: a forged name cannot take
        a row (the table is bounded too, and so is the set of readers: members of our table only, forgotten
        when reaped). At most MAX_DIGEST_MESSAGES a packet, and one summary (each costs a pass over the table)."""
        taken, summaries = 0, 0
        summary: DigestSummary | None = None
        heard: set[str] = set()  # rows this packet carried that left us holding the sender's version
        for msg in packet.messages:
            if not isinstance(msg, Digest | DigestSummary):
                continue
            summaries += isinstance(msg, DigestSummary)
            if taken >= MAX_DIGEST_MESSAGES or summaries > 1:  # an honest packet has one summary at most
                self.stats["digests_over_limit"] += 1
                continue
            taken += 1
            if self.table.get(packet.sender) is None or packet.sender == self.name:
                self.stats["digests_unknown_member"] += 1
                continue
            if shows:
                self._digest_readers.add(packet.sender)
            if isinstance(msg, DigestSummary):
                if not shows:
                    # A summary costs a pass over the table (~1.3 ms at 5,000 rows) and can leave us owing the
                    # member every row (memory: members x rows over forged summaries naming each member in
                    # turn): taken only from the member's host.
                    self.stats["digest_summaries_unverified"] += 1
                    continue
                summary = msg
            else:
                if self._on_root_digest(msg, packet.sender, now, shows) in (Merge.NEW, Merge.SAME):
                    heard.add(msg.name)
        if summary is not None:  # after the rows: what they showed the sender holds is not owed again
            self._digest_exchange.heard_summary(packet.sender, summary, heard)

    def _on_root_digest(self, digest: Digest, sender: str, now: float, shows: bool = True) -> Merge | None:
        if self.table.get(digest.name) is None:
            self.stats["digests_unknown_member"] += 1
            return None
        # Who holds a version is believed only from the member's host (a forged sender would steer pushes).
        merged = self.root_digests.merge(digest, now=now, sender=sender if shows else None)
        if merged is Merge.NEW:
            if self.delegate is not None:
                self.delegate.on_root_digest(digest, now)
        elif merged is Merge.OLDER:
            self.root_digests.owe(sender, (digest.name,))  # the sender is behind: ours goes back to it
        elif merged is Merge.REFUSED:
            self.stats["digests_refused"] += 1
        return merged

    def _repair_digests(self, to_name: str, now: float, out: list[Effect]) -> None:
        """Rows (or a summary) we owe `to_name` that no reply carried: a packet of digests alone."""
        member = self.table.get(to_name)
        if (member is None or to_name not in self._digest_readers or not self._digest_exchange.pending(to_name)
                or not self._piggybacks_to(to_name) or not self._digest_exchange.repair_allowed(to_name, now)):
            return
        digests = self._count_digests("repair", self._digest_exchange.outgoing(
            to_name, REPAIR_ALLOWANCE, codec.message_size))
        if digests:
            self._charge(_digest_bytes(digests))
            out.append(Send(member.addr, Packet(self.name, tuple(digests))))
            self.stats["digest_repairs"] += 1

    def _send_digest_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
        """A joiner's first view of the digests: the whole table, in packets of digests alone (an older agent
        drops just those). The joiner then knows every root at once, not after rounds of reconciliation.
        Only to the host the join's stream came from: a join forged for another address would otherwise make
        us a reflector (a small request, up to maxMembers rows sent to a victim); that joiner reconciles."""
        member = self.table.get(to_name)
        if member is None or to_name == self.name:
            return
        if source_host is not None and not same_host(member.addr[0], source_host):
            self.stats["digest_tables_unverified"] += 1
            return
        if not self._digest_exchange.table_allowed(to_name, now):
            return
        for part in self.root_digests.all_rows(REPAIR_ALLOWANCE, codec.message_size):
            self._charge(_digest_bytes(self._count_digests("table", list(part))))
            out.append(Send(member.addr, Packet(self.name, tuple(part))))
            self.stats["digest_tables_sent"] += 1

    def _send_coordinate_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
        """A joiner's first coordinates: every one we hold (core/topology_state.py), in packets of their own
        (an older agent drops just those), only to the host its join came from (as the digest table)."""
        member = self.table.get(to_name)
        if member is None or to_name == self.name or (
                source_host is not None and not same_host(member.addr[0], source_host)):
            return
        for msg in self.topology.table_for(to_name, now, self.name, codec.MAX_PEER_COORDINATE_ROWS):
            self._send_apart(member.addr, msg, out)
            self.stats["coordinate_tables_sent"] += 1

    def _budget(self, used: int = 0) -> int:
        return self.config.gossip.mtu - self._header - used

    def _from_table_host(self, name: str, src: Address) -> bool:
        """Whether a packet naming `name` as its sender came from that member's host in our table (the port is
        not compared: an agent may be reached through a mapped port). Only such a packet raises the member's
        reader level (core/readers.py); others are counted, and only delay the level (offers go on)."""
        if self._at_table_host(name, src):
            return True
        if name in self.table and name != self.name:
            self.stats["packets_not_from_member_host"] += 1
        return False

    def _at_table_host(self, name: str, src: Address) -> bool:
        """`_from_table_host` without counting."""
        member = self.table.get(name)
        if member is None or name == self.name:
            return False
        host = member.addr[0]
        return host == src[0] or same_host(host, str(src[0]))  # (the string compare: the hot path, no parsing)

    def _at_table_address(self, name: str | None, addr: Address) -> bool:
        """Whether `addr` is member `name`'s address in our table. What is owed to a member (its queued
        announcements, its next coordinate rows) goes only there: a forged ping names where its ack goes."""
        member = self.table.get(name) if name is not None else None
        return member is not None and member.addr == addr

    def _send_bare(self, to: Address, msgs: list[Message], out: list[Effect]) -> None:
        """`msgs` alone, to an address no member of our table holds: nothing piggybacked (no reflection)."""
        self._charge(sum(codec.message_size(m) for m in msgs))
        out.append(Send(to, Packet(self.name, tuple(msgs))))

    def _send(self, to: Address, to_name: str | None, msgs: list[Message], out: list[Effect]) -> None:
        """Send `msgs` with as many queued rumors piggybacked as the MTU allows (none in pull mode)."""
        used = sum(codec.message_size(m) for m in msgs)
        digests = self._digests_for(to_name, ping=any(isinstance(m, Ping | Ack) for m in msgs))
        # Announcements ride only to the member's own address (a forged ping names where its ack goes).
        riders = self._tree_riders(to_name, self._budget(used + _allowance(digests))) \
            if self._at_table_address(to_name, to) else []
        msgs = [*msgs, *riders]
        used += sum(codec.message_size(m) for m in riders)
        # The send budget charges these bytes but never refuses them: only the piggyback is trimmed.
        self._charge(used + _digest_bytes(digests))
        rumors = self._take(self._budget(used + _allowance(digests)), to_name) \
            if len(self.queue) and self._pushes and (not msgs or self._piggybacks_to(to_name)) else []
        out.append(Send(to, Packet(self.name, (*msgs, *rumors, *digests))))

    def _take(self, room: int, to_name: str | None, *, limit: int | None = None,
              held: frozenset[int] = frozenset()) -> list[Rumor]:
        """Queued rumors for a packet to `to_name`: at most `room` bytes, and only what the send budget allows
        now (critical first, by the queue's order); their bytes are charged. Critical state rumors go as
        plain ones to a member not known to read new message types (an older agent drops the whole packet)."""
        allowed = self.send_budget.allow(room)
        sent = self.queue.sent_bytes
        before = sent["critical"] + sent["normal"]
        rumors = self.queue.take(allowed, self._rumor_population, to=to_name,
                                 to_live=to_name is None or self.table.is_live(to_name), limit=limit, held=held)
        self.send_budget.charge(sent["critical"] + sent["normal"] - before)
        if allowed < room:
            budget_deferred(self.stats, self.queue)
        if rumors and to_name not in self._digest_readers:
            rumors = [StateRumor(r.payload) if isinstance(r, StateRumor) and r.critical else r for r in rumors]
        budget_stats(self.stats, self.queue)
        return rumors

    def _charge(self, size: int) -> None:
        """Bytes of a packet going out, besides its rumors (charged by `_take`): the header and `size`."""
        self.send_budget.charge(self._header + size)

    def _gossip(self, now: float, out: list[Effect]) -> None:
        mode = self.config.gossip.mode
        asks = mode == "pull" or (mode == "push-pull" and now >= self._next_pull_at)
        pulled = False
        # The newest ids, as many as fit beside the digest allowance: gossip.mtu bounds every packet (128 ids
        # are 512 B: a 576-byte mtu was overshot by up to 40 %).
        room = max(0, (self._budget(DIGEST_ALLOWANCE) - _SHORT_PULL_FRAME) // SHORT_ID_BYTES)
        # Fresh convergence digests go out with the round's packets to peers that read them (so a root
        # published after the writes stopped still spreads at gossip speed), and once the table has settled
        # one packet a round asks a peer for reconciliation (core/digests.py) for a few rounds.
        ask = self.root_digests.summary_due()
        for peer in self._pull_target() if mode == "pull" else self._gossip_targets(self.config.gossip.fanout):
            # What we hold that `peer` may not know (core/pull_ids.py; on the tree, nothing: state travels the
            # tree, not the queues that answers come from).
            held = self._recent_ids.ids_for(peer.name, now, self._held_window()) \
                if asks and not self._tree_on else ()
            told = len(held) <= room  # all of it: the next request to `peer` names only what comes after
            held = held[:room]
            pull = (self._pull_request(peer.name, held),) if asks else ()
            pull_size = codec.message_size(pull[0]) if pull else 0
            rumors, large = self._take_beside_digests(pull_size, peer.name) if mode != "pull" else ([], False)
            reader = peer.name in self._digest_readers
            fresh, asking = reader and self.root_digests.has_fresh(), reader and ask
            if rumors or mode == "pull" or fresh or asking:
                digests = [] if large else self._digests_for(peer.name, ping=asking)
                ask = ask and not (asking and not large)
                if rumors or pull or digests:
                    riders = self._tree_riders(peer.name, self._budget(
                        pull_size + _allowance(digests) + sum(codec.message_size(r) for r in rumors)))
                    self._charge(pull_size + _digest_bytes(digests) + sum(codec.message_size(m) for m in riders))
                    out.append(Send(peer.addr, Packet(self.name, (*rumors, *pull, *riders, *digests))))
                    self.stats["gossip_packets"] += 1
                    if pull:
                        pulled = True
                        if told:
                            self._recent_ids.asked(peer.name, now)
        if pulled and mode == "push-pull":
            # The pull slot is spent only by a round that sent a request (a round with nothing to send kept it
            # for the next packet that goes).
            self._next_pull_at = now + self._next_pull_interval()
        if ask:
            self.root_digests.summary_sent()  # no peer to ask this round: spent anyway (a few rounds, then quiet)

    def _probe_pull(self, to: str, now: float) -> list[Message]:
        """Pull mode: a probe's ping, and its ack, ask too (a short request to a member that reads them), for the
        few bytes of a request instead of a packet of its own: idle, the gossip rounds' own requests then back
        off to one a probe interval (_next_pull_interval), so a member asks about three times a probe interval
        as before, in one packet of its own instead of three (bench_load, 8 agents idle: see bench/README.md)."""
        if self._pushes or self.leaving or not self.readers.reads(to, SHORT_IDS):
            return []
        ids = self._recent_ids.ids_for(to, now, self._held_window())
        if len(ids) <= MAX_PROBE_PULL_IDS:
            self._recent_ids.asked(to, now)  # (else the next request to `to` names them all again)
        return [ShortIds(ShortKind.PULL, ids[:MAX_PROBE_PULL_IDS])]

    def _pull_hint(self, asker: str, ids: tuple[int, ...], now: float) -> None:
        """Pull mode: a request from `asker` named payloads we do not hold, so it has news for us: ask it next,
        within a request interval, at the full pace (core/pull_targets.py); each asker at most once per cycle's
        worth of rounds (`_pull_target`: the ids are its word). Only asking, never a push: the ids
        are in every request anyway (they keep answers to it free of what it holds). After a quiet spell the
        first write spread only as fast as backed-off members happened to ask its writer."""
        if self._pushes or self.leaving or not any(sid not in self._recent_ids for sid in ids):
            return
        self._pull_next = asker
        self._pull_activity = True
        self._busy_pulls = BUSY_ROUNDS * self.config.gossip.fanout
        g = self.config.gossip
        self._next_gossip = min(self._next_gossip, now + g.interval / g.fanout)

    def _pull_target(self) -> list[Member]:
        """Pull mode's next peer to ask: every member in turn (core/pull_targets.py), the dead included as in
        gossip (a member wrongly declared dead hears of it); under topology-aware choice, as that chooses."""
        hinted, self._pull_next = self._pull_next, None
        self._pull_rounds += 1
        if self._pull_rounds >= len(self._probe_order):  # a cycle's worth of rounds: hints count once again
            self._pull_rounds = 0
            self._pull_hints_followed.clear()
        if hinted is not None and hinted not in self._pull_hints_followed and self.table.is_live(hinted):
            member = self.table.get(hinted)
            if member is not None:
                self._pull_hints_followed.add(hinted)
                return [member]
        if self.topology.active():
            return self._random_peers(1, exclude=None, live_only=False)
        name = self._pull_order.next(self._probe_order, self.rng,
                                     lambda n: self._eligible(n, self.name, tuple(MemberState)) is not None)
        member = self.table.get(name) if name is not None else None
        return [member] if member is not None else []

    def _gossip_targets(self, k: int) -> list[Member]:
        """A gossip round's `k` peers: on the tree, lazy neighbours with announcements due first (in random
        order; their ids ride on the round's packet instead of a packet of their own at the flush: at 8
        agents and 10 writes/s, ~40 % of the announcement packets), then random members (the dead included,
        so a member wrongly declared dead hears of it). Under topology-aware choice, as that chooses."""
        if not self._tree_on or self.topology.active():
            return self._random_peers(k, exclude=None, live_only=False)
        due = self.tree.announcing()
        self.rng.shuffle(due)
        chosen: dict[str, Member] = {}
        for name in due:
            member = self.table.get(name)
            if len(chosen) < k and member is not None and self.table.is_live(name):
                chosen[name] = member
        if len(chosen) < k:
            for m in self._random_peers(k + len(chosen), exclude=None, live_only=False):
                if len(chosen) < k and m.name not in chosen:
                    chosen[m.name] = m
        return list(chosen.values())

    def _take_beside_digests(self, used: int, to: str) -> tuple[list[Rumor], bool]:
        """Rumors for a packet to `to` that keeps the digest allowance free; when none fits there but a
        rumor waits (a state payload near the inline limit, e.g. a 1 KiB value, is larger than what the
        allowance leaves), the packet goes without digests instead (True): else such writes never left."""
        rumors = self._take(self._budget(used + DIGEST_ALLOWANCE), to)
        if rumors or not len(self.queue):
            return rumors, False
        return self._take(self._budget(used), to), True

    def _fresh_rumor(self, now: float, source: str | None, out: list[Effect]) -> None:
        """A rumor new to us was queued (heard from `source`, or ours): push modes forward it at once if
        configured; pull mode only pulls at the gossip interval again, since the cluster is busy (push-pull's
        pull requests too)."""
        self._pull_activity = True
        self._busy_pulls = BUSY_ROUNDS * self.config.gossip.fanout
        if self._pushes:
            if self._next_gossip < now:
                # Idle until now, the gossip deadline was not watched (next_deadline) and went stale: move it
                # to the ticker's next beat, keeping its phase. Left in the past, it made the first rumor after
                # a quiet spell leave at once at every member, an immediate forward whatever the setting.
                self._next_gossip = self._next_beat(now)
            if self._immediate_forward:
                self._forward(now, source, out)
            if self._pull_interval > self.config.gossip.interval:
                self._pull_interval = self.config.gossip.interval
                self._next_pull_at = min(self._next_pull_at, now)
            return
        self._pull_interval = self.config.gossip.interval
        self._next_gossip = min(self._next_gossip, now + self._pull_interval / self.config.gossip.fanout)

    def _next_beat(self, now: float) -> float:
        """The gossip ticker's first beat after `now`. Rounds out of turn (the early round after an immediate
        forward, below) do not move the beat: counted from the early round, the next regular round came a
        whole interval later at every member at once, so a member both rounds missed waited 1.25 intervals
        (1,000-member simulations, flood, 200 ms interval: the last member a median 258 ms after the write over
        7 seeds; on the beat 97 ms over 11)."""
        interval = self.config.gossip.interval
        if interval <= 0:
            return now
        beat = self._gossip_beat + (math.floor((now - self._gossip_beat) / interval) + 1) * interval
        return beat if beat - now > interval * 1e-6 else beat + interval  # (rounding: never `now` itself)

    def _pull_reply_address(self, sender: str) -> Address | None:
        """Where a pull request is answered: the asker's address in our table, never the address written
        inside the request. Answering that one let anyone point an MTU-sized answer at a third party with one
        small forged packet (a reflector). A name we do not know gets no answer (counted): a joiner's push-pull
        brings it everything, and a member we think dead is still answered (it may need to learn that, and
        refute)."""
        member = self.table.get(sender)
        if member is None:
            self.stats["pull_unknown_sender"] += 1
            return None
        return member.addr

    def _note_held(self, payload: bytes, now: float, source: str | None = None) -> int | None:
        """A state payload we hold (received from `source`, new or not, or written here) off the tree: its short
        id, noted for our pull requests (core/pull_ids.py). None in push mode, which never asks."""
        if self.config.gossip.mode == "push":
            return None
        sid = short_id(message_id(payload))
        self._recent_ids.add(sid, now, source)
        return sid

    def _held_window(self) -> float:
        """How long a payload we hold is named to peers we ask, and an asker's claims are remembered: as long
        as a rumor may wait in a holder's queue (core/pull_ids.py): its retransmit limit in rounds, a round
        being `fanout` requests, or a probe interval once idle pulls have backed off."""
        g = self.config.gossip
        rounds = max(g.interval * g.fanout, self.config.membership.probe_interval)
        return retransmit_limit(g.retransmit_mult, self._rumor_population) * rounds

    def _pull_request(self, to_name: str, held: tuple[int, ...]) -> PullRequest | ShortIds:
        """A pull request to `to_name`: to a member known to read short ids, one that names what we hold
        (`held`; on the tree, nothing: state travels the tree, not the queues that answers come from), ~20
        bytes smaller than the old kind, which every other member gets."""
        if self.readers.reads(to_name, SHORT_IDS):
            return ShortIds(ShortKind.PULL, held)
        return PullRequest(self.name, self.addr)

    def _on_short_ids(self, msg: ShortIds, sender: str, out: list[Effect], now: float,
                      grafted: set[int] | None = None, *, shows: bool = True) -> bool:
        """A type-19 message from `sender`: it reads short ids from now on (its offer -- a hello or a probe's --
        gets ours back, at most once per answer window, in a packet of its own, so both ends know). Short
        announcements and grafts go to the tree as the long ones do. True if it is a pull request to answer.
        Only from the member's host (`shows`, see handle_packet) does it raise the level or draw our offer, and
        do its tree messages count."""
        member = self.table.get(sender)
        if member is None or sender == self.name:
            self.stats["short_ids_unknown_member"] += 1
            return False
        if shows:
            self.readers.show(sender, SHORT_IDS)
            # Answered at most once per answer window (core/readers.py `answer_due`): our answer is an offer
            # too, and a member whose hello we dropped (it was not in our table yet), or that reset us, knows
            # nothing of us even if we know it.
            if msg.kind == ShortKind.OFFER and self._offers_short_ids() and self.readers.answer_due(sender, now):
                offer = ShortIds(ShortKind.OFFER)
                self._send_apart(member.addr, offer, out)
                self.readers.offered(sender, now)
                self.stats["short_id_answers"] += 1
        if msg.kind in (ShortKind.IHAVE, ShortKind.GRAFT):
            self._on_tree_message(msg, sender, now, out, grafted, shows=shows)
        return msg.kind == ShortKind.PULL

    def _offers_short_ids(self) -> bool:
        """Whether short ids are of use to us: pull requests (pull, push-pull) or the tree's announcements."""
        return self.config.gossip.mode != "push" or self._tree_on

    def _answer_limit(self) -> int | None:
        """How many pull answers carry a rumor before it is retired (None: the queue's retransmit limit).

        In pull mode answers are a rumor's only way out, and every member asks `fanout` peers per round, so
        each member is asked about `fanout` times a round, often by peers that already hold the rumor: with
        the push limit a rumor would be retired after a round or so, and the last members would miss it. It
        stays for the retransmit limit in rounds instead (still never sent twice to one peer, and retired
        once every live member has it). push-pull keeps the push limit: its pushes spread the rumor already."""
        if self._pushes:
            return None
        n = self._rumor_population
        return retransmit_limit(self.config.gossip.retransmit_mult, n) * self.config.gossip.fanout

    def _next_pull_interval(self) -> float:
        """After a pull round (pull mode: one request; `fanout` of them a round, spread over it): the wait
        until the next one. A round after which nothing fresh arrived (no answer carried news; in push-pull,
        our queue is empty too) doubles it, up to the probe interval, so an idle cluster pulls rarely; any news
        puts it back to the gossip interval. In pull mode what we still hold for others is no reason to ask
        (rumors wait in queues until every member asked for them: asking at full rate while they did cost
        most of the requests after a burst of writes); news within the last BUSY_ROUNDS rounds is."""
        g = self.config.gossip
        busy = len(self.queue) if self._pushes else self._busy_pulls > 0
        # Idle, pull mode's own requests back off to one a probe interval (the tick divides by fanout): every
        # probe asks too, and news found by any request or named by an asker puts the pace back.
        probe = self.config.membership.probe_interval * (1 if self._pushes else g.fanout)
        self._busy_pulls = max(0, self._busy_pulls - 1)
        if self._pull_activity or busy:
            self._pull_interval = g.interval
        else:
            ceiling = max(g.interval, probe)
            self._pull_interval = min(self._pull_interval * 2, ceiling)
        self._pull_activity = False
        return self._pull_interval

    def _forward(self, now: float, exclude: str | None, out: list[Effect]) -> None:
        """Immediate forwarding: fresh rumors go to `fanout` peers now, not at the next gossip tick.

        A one-shot flood with fanout f misses each member with probability about e^-f (5% for f = 3), so a
        second, early gossip round follows a quarter interval later: together they miss about e^-2f, and a
        member that both missed waits for the regular tick. Under a steady stream of fresh rumors, rounds come
        at most every quarter interval (each still bounded by the queue's retransmit limits)."""
        self._next_gossip = min(self._next_gossip, now + self.config.gossip.interval * _EARLY_GOSSIP_FRACTION)
        # A critical rumor among the fresh ones goes to twice the fanout (core/broadcast.py: CRITICAL).
        fanout = self.config.gossip.fanout * (2 if self._critical_fresh else 1)
        self._critical_fresh = False
        for peer in self._random_peers(fanout, exclude=exclude, live_only=False):
            rumors, large = self._take_beside_digests(0, peer.name)
            if rumors:
                digests = [] if large else self._digests_for(peer.name)
                self._charge(_digest_bytes(digests))
                out.append(Send(peer.addr, Packet(self.name, (*rumors, *digests))))
                self.stats["forwarded_packets"] += 1

    def _random_peers(self, k: int, *, exclude: str | None, live_only: bool,
                      alive_only: bool = False) -> list[Member]:
        """Up to k distinct random members other than us (rejection sampling: O(k), not O(N)).

        Without `live_only`, recently dead members are included too (memberlist's gossip to the dead), so a
        member wrongly declared dead hears about it and refutes.
        """
        order = self._probe_order
        if not order or k <= 0:
            return []
        states: tuple[MemberState, ...] = tuple(MemberState)
        if alive_only:
            states = (MemberState.ALIVE,)
        elif live_only:
            states = (MemberState.ALIVE, MemberState.SUSPECT)
        if self.topology.active():  # near/far choice (core/topology_state.py); else uniform, as below
            return self.topology.choose(order, k, self.rng, lambda name: self._eligible(name, exclude, states),
                                        lambda m: m.meta)
        chosen: dict[str, Member] = {}

        def consider(name: str) -> None:
            if name != exclude and name not in chosen:
                m = self.table.get(name)
                if m is not None and m.state in states:
                    chosen[name] = m

        for _ in range(k * 4 + 4):
            if len(chosen) >= k:
                break
            consider(order[int(self.rng.random() * len(order))])
        if len(chosen) < k and (len(order) <= 4 * k or k >= self._eligible_count(alive_only, live_only, order)):
            # Small clusters, or every eligible member wanted (a critical write goes to all, and a table can
            # still hold many dead members awaiting reaping): sampling misses some; a full scan is cheap here.
            for name in order:
                if len(chosen) >= k:
                    break
                consider(name)
        return list(chosen.values())

    def _eligible_count(self, alive_only: bool, live_only: bool, order: Sequence[str]) -> int:
        """How many members besides us `_random_peers` may choose from (an upper bound: `exclude` aside)."""
        if alive_only:
            return self.table.n_alive - 1
        if live_only:
            return self.table.n_live - 1
        return len(order)

    def _eligible(self, name: str, exclude: str | None, states: tuple[MemberState, ...]) -> Member | None:
        m = self.table.get(name) if name != exclude else None
        return m if m is not None and m.state in states else None

    def _push_pull_interval(self) -> float:
        """memberlist's pushPullScale: sync less often past 32 members, so the total rate stays flat."""
        base = self.config.gossip.push_pull_interval
        if not base:
            return _NEVER
        n = self.table.n_live
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    # -- broadcast tree (state rumors; core/plumtree.py) -----------------------------------------------------
    def _tree_receive(self, rumor: StateRumor, now: float, source: str | None, out: list[Effect], *,
                      from_host: bool = True) -> bool:
        """A state payload from `source`: a duplicate prunes a link; a new one goes to the state layer and, if
        taken, on along the tree. Never queued here (False): see `_flood_to_others`. A packet not from the
        source's table host changes no link: a duplicate from it is dropped and counted (a forged duplicate
        "from" an eager neighbour pruned that link: PRUNE_AFTER forgeries cut a tree link), a new payload is
        delivered but does not make its claimed sender a neighbour."""
        ident = message_id(rumor.payload)
        if not from_host and self.tree.seen(ident):
            self.stats["tree_duplicates_unverified"] += 1
            return False
        # (A new payload from elsewhere is taken as ours would be: no link of the claimed sender's is touched,
        # neither made lazy nor counted as proven.)
        sender = source if from_host else None
        # (How it came matters only for a new payload: a duplicate, under load half as many as the new ones,
        # skips the lookups.)
        path = "" if self.tree.seen(ident) else _delivery_path(self.tree, ident, sender, rumor.critical)
        if not self.tree.receive(ident, sender, now, can_prune=from_host and source in self._digest_readers,
                                 critical=rumor.critical):
            self.stats["tree_duplicates"] += 1
            return False
        self.stats[path] += 1
        if self.delegate is not None and self.delegate.on_state_rumor(rumor.payload, now):
            rumor = self._relay_class(rumor, sender, now)
            # A critical write goes to `fanout` more members at every hop in clusters its writer could not reach
            # whole (core/critical.py).
            k = relay_extras(self.table.n_alive - 1, self.config.gossip.fanout) if rumor.critical else 0
            extra = [m.name for m in self._random_peers(k, exclude=source, live_only=True, alive_only=True)
                     if m.name not in self.tree.eager] if k else []
            self._tree_spread(ident, rumor, source, now, out, extra=extra)
        return False

    def _relay_class(self, rumor: StateRumor, source: str | None, now: float) -> StateRumor:
        """A new state rumor from a peer, as we relay it: a critical one over its sender's share of the critical
        rate (core/critical_relay.py; `source` None: not from its named sender's host) as a normal one."""
        if not rumor.critical or self._critical_relay.admit(
                source, self.config.state.critical_writes_per_second, now):
            return rumor
        self.stats["critical_downgraded_relay"] += 1
        return StateRumor(rumor.payload)

    def _tree_spread(self, ident: int, rumor: StateRumor, source: str | None, now: float, out: list[Effect], *,
                     extra: Sequence[str] = ()) -> bool:
        """Push a new payload to the eager neighbours (and `extra` members), announce it to the lazy ones."""
        size = self._header + codec.message_size(rumor)
        # A push too large to share a packet with another as large gains nothing by waiting (core/coalesce.py):
        # held, it only waited for the next push to flush it (at 100 writes/s of 1 KiB, each batch held one
        # push: ~10 ms per hop, a timer wake-up per push, and no header saved).
        alone = 2 * (size - self._header) > self._coalesce.max_bytes
        for name in (*self.tree.deliver(ident, rumor.payload, source, now, critical=rumor.critical), *extra):
            if not rumor.critical and self.send_budget.allow_normal(size) < size:
                # Over the send budget: this neighbour learns the id from its other links' announcements and
                # grafts it later (a critical payload may still spend the reserve: _tree_within_budget).
                self._tree_deferred("normal")
                continue
            self.stats["tree_pushes"] += 1
            if rumor.critical or alone:  # at once, with whatever waits for this neighbour
                self._coalesce.sent(name, now)
                waiting = self._coalesce.take(name)
                if waiting or rumor.critical:
                    self._tree_send_packed(name, [rumor, *waiting], out)
                else:  # (one normal push, its size and budget known: what _tree_send_packed would work out)
                    self._tree_send(name, (rumor,), out, used=size - self._header, pushes=1)
                continue
            ready = self._coalesce.add(name, rumor, size - self._header, now)
            if ready and ready[0] is not rumor:  # a full batch: it goes now, this push starts the next one
                self._tree_send_batch(name, ready, out)
            elif ready:
                self._tree_send_packed(name, ready, out)
        return True

    def _flood_held(self, now: float, out: list[Effect]) -> None:
        """Our writes whose hold is over go to the flood fallback (core/held_floods.py), forwarded at once if
        any was queued."""
        fresh = False
        for rumor, key in self._held_floods.due(now):
            fresh = self._flood_to_others(rumor, key) or fresh
        if fresh and not self.leaving:
            self._fresh_rumor(now, None, out)

    def _flood_to_others(self, rumor: StateRumor, key: str | None) -> bool:
        """Our own write, also queued (the flood's way) for live members that neither read tree messages nor
        are eager neighbours: an older agent learns it from us, from older agents' own floods, or by
        anti-entropy; a newer one not yet known to read tree messages gets it twice at worst. Only the writer
        does this, so a member's readers still being discovered (after a start) costs at most the queue's
        retransmit limit per write, not that much at every member. True if it was queued. Only first-hand
        evidence leaves a member out (its own digest or tree message from its own host: the readers of
        core/readers.py): a digest row ABOUT a member, relayed by anyone, is no proof, since one forged row
        would leave an older agent to anti-entropy for every write of ours. Called one gossip interval after
        the write (core/held_floods.py)."""
        readers, eager = self._digest_readers, self.tree.eager
        covered = {m.name for m in self.table if m.name != self.name and self.table.is_live(m.name)
                   and (m.name in readers or m.name in eager)}
        if len(covered) >= self.table.n_live - 1:
            return False
        self.stats["tree_flood_fallback"] += 1
        self.queue.enqueue(rumor, codec.message_size(rumor), key=key, covered=covered, critical=rumor.critical,
                           sid=short_id(message_id(rumor.payload)))
        return True

    def _tree_send(self, name: str, msgs: Sequence[Message], out: list[Effect], *, used: int | None = None,
                   pushes: int | None = None) -> None:
        """Tree traffic to a live member: with piggybacked rumors to a member known to read tree messages;
        control messages to any other in a packet of their own (an older agent drops that packet alone).
        `used` and `pushes` (bytes of `msgs`, how many are payloads), when the caller knows them: every pushed
        payload passes here, so they are not worked out again per packet."""
        member = self.table.get(name)
        if member is None or not self.table.is_live(name):
            self.tree.remove(name)
            return
        if pushes is None:
            pushes = sum(isinstance(m, StateRumor) for m in msgs)
        if used is None:
            used = sum(codec.message_size(m) for m in msgs)
        reader = name in self._digest_readers
        if not reader:
            # A critical rumor is type 13, which an older agent cannot read: a plain one to it (same size: the
            # flag is the type number).
            msgs = [StateRumor(m.payload) if isinstance(m, StateRumor) and m.critical else m for m in msgs]
            if pushes < len(msgs):
                self._charge(used)
                out.append(Send(member.addr, Packet(self.name, tuple(msgs))))
                return
        # Queued rumors ride along. Fresh digests ride on control packets only (announcements go to every lazy
        # neighbour each lazy interval, plenty of carriers; the digests' round-robin rides on probes and acks):
        # on every payload push they cost as much as the ids of the whole tree.
        digests = self._digests_for(name) if reader and not pushes else []
        self._charge(used + _digest_bytes(digests))
        rumors = self._take(self._budget(used + _allowance(digests)), name) if len(self.queue) else []
        out.append(Send(member.addr, Packet(self.name, (*msgs, *rumors, *digests))))

    def _on_tree_message(self, msg: IHave | Graft | Prune | ShortIds, sender: str, now: float, out: list[Effect],
                         grafted: set[int] | None = None, *, shows: bool = True, src_host: str | None = None) -> None:
        """IHAVE / GRAFT / PRUNE from a live member (others are dropped and counted). Whoever sends them reads
        them: from now on our new message types ride on our packets to it (if `shows`: see handle_packet)."""
        if (self._tree_on and src_host is not None and isinstance(msg, Graft) and not msg.ids
                and sender != self.name and (not shows or not self.table.is_live(sender))):
            # A link request from a newcomer whose Alive has not reached us yet (or a member restarted at
            # a new address, or back from death): dropped, it left a link that only its end knew (it
            # pushed to us, nobody pushed or announced to it: in an 8-member cluster it missed every write
            # until anti-entropy). Remembered, bounded, with the host it came from; the link is made when
            # the member's next Alive names that host (_on_alive).
            early = self._early_links
            early.pop(sender, None)
            early[sender] = src_host
            if len(early) > _MAX_EARLY_LINKS:
                del early[next(iter(early))]
        if not self.table.is_live(sender) or sender == self.name:
            self.stats["tree_unknown_member"] += 1
            return
        if not shows:
            # Not from the member's host: a spoofed GRAFT would make us push cached payloads (MAX_GRAFT_ANSWER a
            # packet, ~100x its size) at that member, a spoofed IHAVE fill the tree's missing ids with junk, a
            # spoofed PRUNE cut a link. Dropped and counted; the tree repairs itself by its own traffic.
            self.stats["tree_unverified"] += 1
            return
        self._digest_readers.add(sender)
        if not self._tree_on:
            return  # flood path (or pull): everything reaches us by the queue; the sender's tree repairs
        short = isinstance(msg, ShortIds)
        if isinstance(msg, IHave) or (isinstance(msg, ShortIds) and msg.kind == ShortKind.IHAVE):
            evicted = self.tree.on_ihave(msg.ids, sender, now, short=short)
            if evicted:
                self.stats["tree_missing_evicted"] += evicted
        elif isinstance(msg, Graft | ShortIds):
            # Each payload answers one member's graft once (core/plumtree.py `on_graft`: repeats counted).
            answer = self.tree.on_graft(msg.ids, sender, grafted, short=short)
            self.stats["tree_graft_repeats"] += answer.repeats
            rumors = [StateRumor(p, critical) for p, critical in answer.payloads]
            self.stats["tree_graft_answers"] += len(rumors)
            self._tree_send_packed(sender, rumors, out)
        else:
            self.tree.on_prune(sender)

    def _tree_riders(self, to_name: str | None, room: int) -> list[Message]:
        """Announcements queued for `to_name` that ride on a packet going to it anyway (a probe, an ack, a
        gossip packet): each saves a packet of its own at the next lazy flush (the header, ~40 B at the IP
        level, costs more than the ids). Only to a member known to read tree messages, in at most half the
        room left (the piggybacked rumors keep the rest)."""
        if not self._tree_on or to_name is None or to_name not in self._digest_readers:
            return []
        short = self.readers.reads(to_name, SHORT_IDS)
        ids = self.tree.take_for(to_name, min(MAX_IDS_PER_MESSAGE, (room // 2 - _IHAVE_FRAME)
                                              // (SHORT_ID_BYTES if short else ID_BYTES)))
        if not ids:
            return []
        self.stats["tree_ihave_ids"] += len(ids)
        self.stats["tree_ihave_riders"] += 1
        return [self._ihave(to_name, ids)]

    def _ihave(self, to_name: str, ids: Sequence[int]) -> IHave | ShortIds:
        """An announcement of `ids` to `to_name`: with short ids (type 19, half the bytes) to a member known to
        read them, else the long kind (type 10)."""
        if self.readers.reads(to_name, SHORT_IDS):
            # (short_id inlined: a call per id was most of an announcement's cost, ~40 ids a lazy interval per peer)
            return ShortIds(ShortKind.IHAVE, tuple([i >> SHORT_ID_SHIFT for i in ids]))
        return IHave(tuple(ids))

    def _tick_tree(self, now: float, out: list[Effect], *, flush: bool = False) -> None:
        """Fill the tree's neighbour sets from live members, then send what its timers made due: link
        requests and grafts, the batched announcements, prunes."""
        wanted = self.tree.wanted()
        if wanted and not self.leaving and now >= self._tree_fill_at:
            self._tree_fill_at = now + self.config.gossip.interval
            eager = self.tree.eager
            cands = self._random_peers(wanted + len(eager), exclude=None, live_only=True, alive_only=True)
            # Near picks first: a far one becomes a lazy link unless we have no eager link yet (core/plumtree.py).
            for cand in sorted(cands, key=lambda m: self.tree.far(m.name)):
                if wanted and self.tree.add_neighbour(cand.name):
                    wanted -= 1
        for peer, batch in self._coalesce.due(now).items():
            self._tree_send_batch(peer, batch, out)
        if now < self.tree.next_deadline() and not flush:
            return
        due = self.tree.tick(now, flush=flush)
        if due.prunes_spared:
            self.stats["tree_prunes_spared"] += due.prunes_spared
        for peer in due.peers():
            msgs: list[Message] = []
            ihaves = due.ihaves.get(peer, [])
            msgs.extend(self._ihave(peer, ihaves[i:i + MAX_IDS_PER_MESSAGE])
                        for i in range(0, len(ihaves), MAX_IDS_PER_MESSAGE))
            grafts = due.grafts.get(peer)
            if grafts is not None:
                msgs.extend(Graft(tuple(grafts[i:i + MAX_IDS_PER_MESSAGE]))
                            for i in range(0, max(1, len(grafts)), MAX_IDS_PER_MESSAGE))
                self.stats["tree_grafts"] += len(grafts)
            short_grafts = due.short_grafts.get(peer)
            if short_grafts:
                msgs.extend(ShortIds(ShortKind.GRAFT, tuple(short_grafts[i:i + MAX_IDS_PER_MESSAGE]))
                            for i in range(0, len(short_grafts), MAX_IDS_PER_MESSAGE))
                self.stats["tree_grafts"] += len(short_grafts)
            if peer in due.prunes:
                msgs.append(Prune())
                self.stats["tree_grafts_undone" if peer in due.undone else "tree_prunes"] += 1
            self.stats["tree_ihave_ids"] += len(ihaves)
            self._tree_send_packed(peer, msgs, out)

    def _tree_send_batch(self, name: str, batch: Sequence[StateRumor], out: list[Effect]) -> None:
        """Pushes the coalescer held for `name` (core/coalesce.py), sent and counted together."""
        self.stats["tree_coalesced_packets"] += 1
        self.stats["tree_coalesced_pushes"] += len(batch)
        self._tree_send_packed(name, batch, out)

    def _tree_within_budget(self, msgs: Sequence[Message]) -> Sequence[Message]:
        """The tree's payloads that gossip.maxBytesPerSecond lets out now. Control messages always go
        (like probes); critical payloads while the bucket holds their bytes, normal ones only above the
        reserve they leave to critical ones (send_budget.CRITICAL_RESERVE). Every payload the tree sends
        passes here (pushes, coalesced batches, answers to grafts), so a graft cannot carry past the budget
        what a deferred push held back; a payload left out is counted deferred, and the neighbour grafts it
        from its next announcer, or anti-entropy repairs it."""
        budget = self.send_budget
        spent = 0
        kept: list[Message] = []
        for msg in msgs:
            if isinstance(msg, StateRumor):
                size = self._header + codec.message_size(msg)
                room = budget.allow(2**31) if msg.critical else budget.allow_normal(2**31)
                if spent + size > room:
                    self._tree_deferred("critical" if msg.critical else "normal")
                    continue
                spent += size
            kept.append(msg)
        return kept

    def _tree_deferred(self, cls: str) -> None:
        """A tree payload of class `cls` held back by the send budget (counted with the queue's deferrals)."""
        self.stats["tree_pushes_deferred"] += 1
        self.stats[DEFERRED_KEY + cls] += 1

    def _tree_send_packed(self, name: str, msgs: Sequence[Message], out: list[Effect]) -> None:
        """`msgs` to `name` in as few packets as the MTU allows (room left for digests, which ride only on
        packets without pushes). Each message is sized and classified once here, for `_tree_send` too."""
        if not self.send_budget.unlimited:
            msgs = self._tree_within_budget(msgs)
        pushes = sum(isinstance(m, StateRumor) for m in msgs)
        budget = self._budget(0 if pushes == len(msgs) else DIGEST_ALLOWANCE)
        batch: list[Message] = []
        used = batch_pushes = 0
        for msg in msgs:
            size = codec.message_size(msg)
            if batch and used + size > budget:
                self._tree_send(name, batch, out, used=used, pushes=batch_pushes)
                batch, used, batch_pushes = [], 0, 0
            batch.append(msg)
            used += size
            if isinstance(msg, StateRumor):
                batch_pushes += 1
        if batch:
            self._tree_send(name, batch, out, used=used, pushes=batch_pushes)
