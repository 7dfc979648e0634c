"""The Node's state: every field, set in one constructor, and the records it holds (memberlist.go's struct).

Why a base class with the concern modules as mixins, not collaborator objects: the concerns (probing,
membership rumors, flooding, pulling, the broadcast tree, digests, reader offers, peer choice, the send path)
all read and write the same few things (the member table, the rumor queue, the tree, the send budget, the
readers, the stats) and call each other both ways (a failed probe applies a Suspect, a rumor moves tree links,
a tree push goes out through the send path, which piggybacks rumors and digests). As separate objects each
would hold the Node and reach through it for most of its work, one more attribute hop per access on the
per-packet paths. As mixins, like Go files of one package adding methods to one struct, each module is one
concern, a call is a plain method lookup, and `Node` (core/node.py) only composes them and keeps the driver
entry points.

Each mixin is typed against this class: the fields below, and the methods it calls that another module
provides, declared (for the type checker only) at the end of the class.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gossip_agent.core import codec, probe_order
from gossip_agent.core.awareness import Awareness
from gossip_agent.core.broadcast import BroadcastQueue
from gossip_agent.core.coalesce import Coalescer
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.critical_relay import CriticalRelay
from gossip_agent.core.digests import DigestExchange, DigestTable
from gossip_agent.core.effects import Effect
from gossip_agent.core.held_floods import HeldFloods
from gossip_agent.core.hello_queue import HelloQueue
from gossip_agent.core.joining import JoinSchedule
from gossip_agent.core.membership import Member, MemberTable
from gossip_agent.core.messages import (
    Address,
    Digest,
    DigestSummary,
    Graft,
    IHave,
    MemberState,
    Message,
    NetCoordinate,
    PeerCoordinates,
    Prune,
    PullRequest,
    Rumor,
    ShortIds,
    StateRumor,
)
from gossip_agent.core.plumtree import Plumtree
from gossip_agent.core.probe_seq import ProbeSeqs
from gossip_agent.core.probe_seq import key_from as probe_key_from
from gossip_agent.core.pull_ids import HeldClaims, RecentIds
from gossip_agent.core.pull_targets import PullOrder
from gossip_agent.core.readers import DIGESTS, Readers
from gossip_agent.core.rng import Rng
from gossip_agent.core.send_budget import SendBudget, effective_burst
from gossip_agent.core.suspicion import Suspicion
from gossip_agent.core.topology_state import ZONE_META_KEY, TopologyState

NEVER = math.inf
# The tree's lazy interval in gossip ticks: announcements leave at every second tick (in between, they ride on
# the tick's gossip packets to their peers). At every tick, bench_load's 8 agents at 10 writes/s sent ~1.7
# announcement packets per agent and tick (one per lazy link of which it is the first end), ~12 % of all
# bytes, for repairs a healthy tree never needs; every second tick halves the packets (more ids in each) and
# a lost eager link is repaired within 2.5 gossip intervals (graft timeout included) instead of 1.5.
LAZY_TICKS = 2
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
class ProbeInFlight:
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
class RelayedPing:
    """A ping we send on behalf of another member's ping-req (core/probing.py)."""

    origin_addr: Address
    origin_seq: int
    nack_at: float
    expire_at: float
    origin: str | None = None  # the asking member, when origin_addr is its table address (else answers go bare)
    target: str = ""  # the member we ping for it: only its ack is relayed


def meta_size(meta: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 2 for k, v in meta.items())


class NodeBase:
    """One member's view of the cluster: its fields. Not thread-safe; one driver owns it."""

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
        self.tree = Plumtree(self.name, eager_target=g0.fanout, lazy_interval=g0.interval * LAZY_TICKS,
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
        self._gossip_ticks = 0  # gossip ticks so far: every LAZY_TICKS-th flushes the tree's announcements
        self.table.add(Member(self.name, addr, incarnation, MemberState.ALIVE, dict(self.meta), now))
        self.stats: Counter[str] = Counter()
        if zone_unannounced:
            self.stats["zone_not_announced"] += 1
        self.leaving = False
        self._leave_linger = leave_linger
        self._leave_until = NEVER
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
        self._probe: ProbeInFlight | None = None
        self._relays: dict[int, RelayedPing] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._suspicions_due = NEVER  # the soonest of their deadlines (core/membership_rumors.py)
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
        self._next_push_pull = now + g.push_pull_interval * (1 + rng.random()) if g.push_pull_interval else NEVER
        self._next_reconnect = now + m.reconnect_interval if m.reconnect_interval else NEVER
        self._followup_sync_at = NEVER
        self._next_digest_sync = now
        self._header = codec.packet_overhead(self.name)

    @property
    def _rumor_population(self) -> int:
        """Live members counting us, as the rumor queue's "everyone has it" check needs: once we leave we are
        LEFT, no longer among the table's live members, and without the +1 our own leave rumor would be
        retired one recipient short (several members leaving at once then saw each other die)."""
        return self.table.n_live + (1 if self.leaving else 0)

    if TYPE_CHECKING:
        # Provided by the concern modules (core/node.py composes them all), called from another one.

        # core/digest_riders.py
        def _digests_for(self, to_name: str | None, *, ping: bool = False) -> list[Digest | DigestSummary]:
            ...
        def _count_digests(self, where: str, digests: list[Digest | DigestSummary]) -> list[Digest | DigestSummary]:
            ...
        def _send_digest_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
            ...

        # core/flooding.py
        def _enqueue(self, rumor: Rumor, source: str | None, *, key: str | None = None, low: bool = False,
                     sid: int | None = None) -> None:
            ...
        def _fresh_rumor(self, now: float, source: str | None, out: list[Effect]) -> None:
            ...
        def _relay_class(self, rumor: StateRumor, source: str | None, now: float) -> StateRumor:
            ...

        # core/membership_rumors.py
        def _apply_rumor(self, rumor: Rumor, now: float, source: str | None, out: list[Effect], *,
                         from_host: bool = True) -> bool:
            ...

        # core/peer_choice.py
        def _is_far(self, name: str) -> bool:
            ...
        def _piggybacks_to(self, name: str | None) -> bool:
            ...
        def _coordinate_for(self, name: str, now: float, addr: Address,
                            out: list[Effect]) -> tuple[NetCoordinate | PeerCoordinates, ...]:
            ...
        def _send_coordinate_table(self, to_name: str, now: float, out: list[Effect], source_host: str | None) -> None:
            ...
        def _random_peers(self, k: int, *, exclude: str | None, live_only: bool,
                          alive_only: bool = False) -> list[Member]:
            ...
        def _eligible(self, name: str, exclude: str | None, states: tuple[MemberState, ...]) -> Member | None:
            ...

        # core/probing.py
        def _next_round_at(self, now: float) -> float:
            ...

        # core/pulling.py
        def _probe_pull(self, to: str, now: float) -> list[Message]:
            ...
        def _pull_target(self) -> list[Member]:
            ...
        def _note_held(self, payload: bytes, now: float, source: str | None = None) -> int | None:
            ...
        def _held_window(self) -> float:
            ...
        def _pull_request(self, to_name: str, held: tuple[int, ...]) -> PullRequest | ShortIds:
            ...
        def _next_pull_interval(self) -> float:
            ...

        # core/reader_offers.py
        def _probe_offers(self, target: Member, now: float, out: list[Effect]) -> bool:
            ...
        def _greet(self, name: str) -> None:
            ...

        # core/sending.py
        def _send_apart(self, addr: Address, msg: Message, out: list[Effect]) -> None:
            ...
        def _budget(self, used: int = 0) -> int:
            ...
        def _at_table_address(self, name: str | None, addr: Address) -> bool:
            ...
        def _at_table_host(self, name: str, src: Address) -> bool:
            ...
        def _send_bare(self, to: Address, msgs: list[Message], out: list[Effect]) -> None:
            ...
        def _send(self, to: Address, to_name: str | None, msgs: list[Message], out: list[Effect]) -> None:
            ...
        def _take(self, room: int, to_name: str | None, *, limit: int | None = None,
                  held: frozenset[int] = frozenset(), spread: bool = False) -> list[Rumor]:
            ...
        def _charge(self, size: int) -> None:
            ...

        # core/tree_dissemination.py
        def _take_early_link(self, member: Member) -> None:
            ...
        def _tree_receive(self, rumor: StateRumor, now: float, source: str | None, out: list[Effect], *,
                          from_host: bool = True) -> bool:
            ...
        def _on_tree_message(self, msg: IHave | Graft | Prune | ShortIds, sender: str, now: float,
                             out: list[Effect], grafted: set[int] | None = None, *, shows: bool = True,
                             src_host: str | None = None, fetched: bool = False) -> None:
            ...
        def _tree_riders(self, to_name: str | None, room: int) -> list[Message]:
            ...
