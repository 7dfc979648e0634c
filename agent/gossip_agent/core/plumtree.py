"""Epidemic broadcast trees (Plumtree: Leitão, Pereira, Rodrigues, SRDS 2007) for state rumors, as a pure core.

Why: flooding sends every state rumor retransmitMult·ceil(log10(N+1)) times from every member, 6-24x the floor
of N-1 copies. Plumtree keeps the flood's robustness but sends the full payload once per member along a
spanning tree that gossip itself builds and repairs:

- every member keeps two neighbour sets: `eager` peers get each new payload at once, `lazy` peers only its id
  (IHAVE, batched over `lazy_interval`, flushed at the Node's gossip tick or a lazy interval after the first
  id was queued; ids may also ride on a packet the Node sends that peer anyway, `take_for`). A lazy link has
  a first end (the member whose name sorts first) that announces at the next flush, and a second end that
  holds its ids HOLD lazy intervals: in a healthy tree both ends hold every payload, the first end's IHAVE
  reaches the second before its hold ends and those ids are left out, so each id crosses a lazy link about
  once instead of about twice (random flush points alone left one end's announcement unheard whenever writes
  kept both queues busy: at 10 writes/s most lazy links carried an IHAVE each way every interval). The cost:
  a member whose only holders are second ends hears of a missed payload up to HOLD lazy intervals later;
- payloads that arrive twice mean the eager links hold a cycle: after PRUNE_AFTER duplicates in a row over a
  link (PRUNE_AFTER_PRESSURE under graft pressure: agents behind reorder the copies of working paths, and a
  prune draws the pushes in flight as more duplicates) the receiver PRUNEs it (both ends move it to lazy; the
  PRUNE leaves at once), so the eager links thin
  out into a tree; a link that never delivered a payload first is pruned at its first duplicate (the tree
  forms from ~eager_target links per member); a member's last eager link is never pruned (its duplicates
  came over links since gone);
- an IHAVE for an id we lack starts a timer; if the payload is still missing `graft_timeout` later we GRAFT the
  announcer (ask it for the payload, and both ends make the link eager): a lost eager link is repaired within
  one lazy interval plus one graft timeout when a first end holds the payload (HOLD + 1 lazy intervals when
  only second ends do), and the tree heals around dead members the same way. Under load the wait grows to how
  late eager copies are seen to come (bounded: core/graft_timing.py), and the copies a graft draws prune
  nothing: a graft answered after the payload came eagerly is undone, and the eager copy that comes after a
  graft's answer was late, not redundant (`_settle`). Later still than that (past the cap), a first graft
  waits while an eager link that delivers may bring the payload next (unless samples show fetches beat that
  link: HOLD_SAMPLE_EVERY), and a graft while eager links deliver only fetches (a PRUNE goes with it):
  EAGER_STALL_LAZY;
- links are symmetric: a neighbour we pick is told so with an empty GRAFT (a link request), an IHAVE from a
  member we did not know makes it a lazy neighbour, a payload from a member we did not count as eager
  ("off-tree": a pull answer, a peer whose link request was lost) makes it lazy, and a later duplicate prunes
  that off-tree link rather than a tree link. Critical writes are the exception: their writer sends them to
  every member (core/critical.py), so their duplicates say nothing about the tree (`receive(critical=True)`).

The core never sends: the Node asks it what to do (`receive`, `deliver`, `on_ihave`, `on_graft`, `on_prune`,
`tick`) and turns the answers into packets. It knows names only, no addresses, no clock (times come in), no
randomness (the Node picks new neighbours). Everything it remembers is bounded: seen ids, cached payloads (for
grafts, by count, bytes and age), missing ids, announcements per lazy peer, and both neighbour sets.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gossip_agent.core.graft_timing import GraftTiming
from gossip_agent.core.rng import Rng

ID_BYTES = 8
"""A payload's id on the wire: the first 8 bytes of its BLAKE2b hash (collisions within the bounded memory of
seen ids are negligible, and a colliding payload would still reach everyone by anti-entropy)."""
SHORT_ID_BYTES = 4
"""A payload's short id (wire type 19, `short_id`): the first 4 bytes of its id. Only where a collision costs
nothing but a repair by anti-entropy (a payload left out of a pull answer or an announcement)."""
MAX_IDS_PER_MESSAGE = 128
"""Most ids one IHAVE or GRAFT carries (1 KiB of ids): decoders refuse more."""

# Memories. Seen ids: enough for ~160 s of 100 writes/s (a duplicate older than that is not recognised, only
# forwarded once more). Cached payloads answer grafts, which come within a graft timeout or two.
MAX_SEEN = 16384
MAX_CACHED = 2048
MAX_CACHED_BYTES = 2 << 20
CACHE_SECONDS = 5.0
# Ids announced to us that we are waiting for, and the announcers remembered per id (tried in order). Ids
# first announced by one member take at most MAX_MISSING_PER_PEER places: past either bound the oldest such id
# is forgotten (counted; anti-entropy is the safety net). Without the per-member bound one member (a faulty or
# hostile one; ids cost it nothing) could fill the table with ids nobody holds, and every real announcement
# after that was ignored until the junk timed out: a missed payload then waited for anti-entropy. At 100
# writes/s an honest announcer names ~40 ids a lazy interval; a quarter of the table is 10x that.
MAX_MISSING = 2048
MAX_MISSING_PER_PEER = MAX_MISSING // 4
MAX_ANNOUNCERS = 4
# Announcements queued for one lazy peer; past this the oldest are dropped (anti-entropy is the safety net).
MAX_ANNOUNCE_PER_PEER = 1024
# Payloads sent in answer to one graft at most: a graft of 1 KiB of ids must not draw 100 KiB of answers.
MAX_GRAFT_ANSWER = 16
# (member, id) pairs answered to grafts lately, oldest forgotten first: a few times the payloads cached.
MAX_GRAFT_ANSWERED = 4 * MAX_CACHED
# Payloads we grafted lately, remembered until the copies our grafts drew have come (see `_Grafted`): by count
# and age (the age a graft's answer is cached at its sender).
MAX_GRAFTED = 1024
# The most the graft wait grows to under graft pressure, in lazy intervals (core/graft_timing.py): 2 s with LAN
# timings, while overloaded agents' eager copies came seconds after the announcements.
GRAFT_CAP_LAZY = 5.0
# An eager link whose copies came only after our grafts had repaired them this many payloads in a row is slow,
# not merely late under a burst: its next late copy is an ordinary duplicate (and prunes it as one). Without
# this a neighbour holding every payload back a few seconds kept its eager link for good, every payload
# reaching us by a graft.
LATE_STREAK_PRUNE = 8
# A member told PRUNE and lazy at our end since is not told again for this long (lazy intervals): its pushes
# still in flight, or queued at a busy member, arrive as duplicates meanwhile.
PRUNE_RESEND_LAZY = 2.5
# An eager link is pruned after this many duplicates in a row (none of its payloads first in between). One
# duplicate is often a transient: while the tree is rewired (a graft, a prune on its way), payloads in flight
# meet themselves, and pruning on each such duplicate cut links of the same cycle at several members at
# once, which split the tree; at 100 writes/s it never healed (measured in the simulator: t100 ~90 ms with
# 1.7 grafts per write; with 3, ~4 ms and 0.1 grafts per write, ~10% more payload copies). Under overload, 4:
# agents' queues reorder the copies of two eager paths, so a proven link's duplicates come in short runs
# between its firsts, and 3 in a row pruned links that were in use: each prune drew the pushes still in flight
# as duplicates (a second of a busy member's pushes), the rewired tree grafted, and the grafts made cycles.
# Measured in the simulator with every packet costing its receiver 4 ms of CPU in turn (N=50, 100 writes/s of
# 1 KiB: the duplicates, grafts and prunes of the real 50-agent bench), over 8 seeds: duplicates per delivery
# 0.16 -> 0.07 and write->all median ~400 -> ~90 ms; quiet (no loss, no load) the same; with 5 % loss (a
# redundant link lives a duplicate longer) 0.23 -> 0.28 duplicates per delivery, write->all median 284 -> 183 ms.
PRUNE_AFTER = 4
# Under graft pressure (core/graft_timing.py: agents behind, eager copies late), PRUNE_AFTER_PRESSURE. There
# a proven link's duplicates are mostly two working paths reordered by busy agents' queues, and a prune costs
# more than the duplicates it saves: the pushes already in flight over the link still arrive (in the
# simulator's overload model below, 1,510 of 4,158 tree duplicates came over links we had pruned, a median
# 0.1 s after our PRUNE), and the rewired tree grafts (of 910 grafts that repaired a payload, 733 never saw
# the eager copy come: the prunes of one cycle at several members had cut the tree). Measured in the
# simulator, N=50, 100 writes/s of 1 KiB, every datagram costing its receiver 3.7 ms of CPU in turn (the knee),
# 6 seeds: tree duplicates 2,622 -> 2,242, grafts 742 -> 501, write->all median 168 -> 78 ms, p99 828 -> 714
# ms; quiet with 5 % loss (no pressure) unchanged (3 seeds).
PRUNE_AFTER_PRESSURE = 12
# Under graft pressure a missing payload's first graft waits while an eager copy of it is plausibly on its way:
# while some eager link still delivers (a first copy over it within EAGER_STALL_LAZY lazy intervals) and has not
# yet delivered anything announced to us after this payload (so it may be behind and bring it next: a link
# delivers in its sender's order), up to GRAFT_PATIENCE_LAZY lazy intervals after the first announcement, and
# never past the time the announcers still hold the payload (`_patience`: with the WAN preset ten lazy intervals
# are 10 s, twice CACHE_SECONDS, and at high byte rates MAX_CACHED_BYTES holds less than CACHE_SECONDS). WHY:
# the learnt wait is capped (GRAFT_CAP_LAZY) and an overload that made eager copies later than the cap grafted
# nearly every payload: at N=50, 100 writes/s, with write->all at ~8 s, 18,894 grafts for 1,377 payloads they
# repaired; each needless graft drew the payload once more and made the announcer push every payload to us until
# our PRUNE reached it, seconds later (48,153 duplicates came over links pruned lately), which is work for agents
# already behind: the overload fed itself.
# A lost eager copy is still grafted as soon as every working eager link has delivered something newer.
EAGER_STALL_LAZY = 1.0
GRAFT_PATIENCE_LAZY = 10.0
# The hold cannot tell "the whole cluster is behind" from "my parent is behind" (a slow or hostile member that
# delays every payload by more than the cap: its own late copies keep the pressure on, and held, its subtree got
# every payload seconds late for good, where LATE_STREAK_PRUNE had pruned it). So it is measured: one in
# HOLD_SAMPLE_EVERY payloads a link is held for is fetched at once instead (a sample), and a link whose samples'
# answers came before its own eager copy in HOLD_SLOW_WINS of the last HOLD_SAMPLES is slow: nothing is held for
# it (grafts, fetch-then-link and late-streak pruning work around it as before), and every graft while it is
# behind is a sample again, so it is held for once its copies beat the answers again. In an overload of the
# whole cluster the answers are as late as the link (the announcer is behind too) and the hold stays; the
# samples cost 1/HOLD_SAMPLE_EVERY of the held payloads a copy more.
HOLD_SAMPLE_EVERY = 16
HOLD_SAMPLES = 6
HOLD_SLOW_WINS = 4
MAX_HOLD_PROBES = 256  # samples waiting for their payload, oldest forgotten first
# And a graft under graft pressure, while an eager link of ours still delivers, only fetches the payload: the
# GRAFT goes with a PRUNE in the same packet (the announcer answers, makes the link eager, then lazy again: what
# older agents do with those two messages too), and the link stays lazy at our end. WHY: a graft makes the
# announcer push every later payload to us until our PRUNE reaches it; in an overload that is seconds of pushes
# per graft, all duplicates (at N=50, 100 writes/s: 48,153 duplicates over links pruned lately, and 15,358
# payloads first over such links, for 18,894 grafts). Our tree works (an eager link delivers), so the graft
# repairs one late or lost payload, not a link. With no eager link delivering, a graft makes the link eager
# as Plumtree says: that repairs a broken tree. So does the next graft once our fetches repaired FETCH_REPAIRS
# payloads (answered before any other copy) within FETCH_WINDOW_LAZY lazy intervals: the tree has a gap (some
# writers' payloads do not reach us eagerly), and fetching each payload anew costs more than a link. Counted over
# all announcers: a gap's payloads are announced by whichever lazy peer flushes first (counted per announcer, a
# gap at N=50 kept being fetched: simulator at 3 ms a datagram, write->all median 38 -> 282 ms). A writer slower
# than FETCH_REPAIRS per FETCH_WINDOW_LAZY never reaches that count, so a fetch also counts as a gap once no
# eager copy followed its answer while we remembered it (CACHE_SECONDS: `_Grafted`, no tree link brings that
# payload), and FETCH_GAPS such within FETCH_GAP_SECONDS make the next graft link too.
FETCH_REPAIRS = 3
FETCH_WINDOW_LAZY = 5.0
FETCH_GAPS = 2
FETCH_GAP_SECONDS = 4 * CACHE_SECONDS
# How long the second end of a lazy link holds an announcement, in lazy intervals: past the first end's latest
# flush (one interval after its delivery) with a quarter interval for its IHAVE to arrive.
HOLD = 1.25
# A link cut lately (our PRUNE, or the other end's) announces quickly: from the first payload delivered after
# the cut and for CUT_WATCH_LAZY lazy intervals, each payload is announced over it within CUT_FLUSH_LAZY lazy
# intervals, by both ends (no HOLD).
# WHY. Each end prunes from the duplicates it sees, and payloads in flight at once (writes from two sources while
# the young tree forms; a burst of writes from many members; a graft's rewiring under load) each keep their own
# first-arrival tree, not each other's: their prunes can cut every link between two parts of the tree. Those
# parts then hear of each other's payloads only by announcements, a lazy interval and a HOLD later, and graft a
# graft timeout after that, one part after another. Measured in the simulator: a fresh cluster (N=50, 100
# writes/s, 1 ms of CPU per datagram) whose first write pruned 180 of its 290 young links and whose second split
# the tree 46 + 4: writes 2-29 reached the 4 members together ~0.45 s after write 2 (p99 458 ms; the bench's
# misses of its 250 ms target on loopback looked alike); a burst of one write from each of 50 members: 16-19
# parts, which stayed so through idle time and made the next writes' median 0.3-0.6 s. Every link between the
# parts was cut since the last payload crossed them, so announcing quickly over those cuts repairs a split
# within a graft timeout or so per part. The cost: a watch sends up to 1/CUT_FLUSH_LAZY small IHAVE packets,
# so it ends early once the other end announces a payload we took after the watch began (it got that payload
# without the link: no split there); a link made eager again (a graft) is no cut any more; critical payloads
# (sent to every member by their writer) neither start a watch nor are announced quickly. A settled tree cuts
# few links; a young one and an overloaded one many: in the simulator (N=50, a fresh cluster, 300 writes at
# 100/s) IHAVE packets +30-45 % (~1,200 -> ~1,600, beside ~15,000 payload deliveries), +100 % before the
# early end. A member can make us watch its link for good only by a GRAFT and a PRUNE per packet, and a GRAFT
# alone already buys it every payload pushed: no new amplification.
CUT_WATCH_LAZY = 1.0
CUT_FLUSH_LAZY = 0.125


_NOBODY: set[str] = set()  # (never added to: the "no holders known" value of Plumtree._holders)
_NO_HOLDERS: tuple[int, set[str]] = (-1, _NOBODY)  # (-1: not an id `receive` stores: full ids are >= 0)


def message_id(payload: bytes) -> int:
    """The tree id of a payload."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=ID_BYTES).digest(), "big")


SHORT_ID_SHIFT = 8 * (ID_BYTES - SHORT_ID_BYTES)
"""A tree id's short id is `ident >> SHORT_ID_SHIFT` (hot loops spell it so, without a call per id)."""


def short_id(ident: int) -> int:
    """The short id of a tree id (its first SHORT_ID_BYTES bytes)."""
    return ident >> SHORT_ID_SHIFT


@dataclass(slots=True)
class _First:
    """How a payload first reached us: from whom (None: our own), whether over an off-tree link (the sender
    was not an eager neighbour), and whether that sender reads tree messages (can be pruned)."""

    sender: str | None
    off_tree: bool
    prunable: bool


@dataclass(slots=True)
class _Missing:
    announcers: list[str]
    deadline: float
    grafted: list[str] = field(default_factory=list)
    owner: str = ""  # the member that announced it first (its place counts against that member's bound)
    since: float = 0.0  # when it was first announced to us
    promoted: list[str] = field(default_factory=list)  # grafted announcers our graft made eager (were lazy)
    held: bool = False  # its first graft was put off (EAGER_STALL_LAZY; counted once: TreeOut.grafts_held)


@dataclass(slots=True)
class _Grafted:
    """A payload we grafted, after its first copy arrived: which copies our grafts still draw, so that they are
    taken for what they are and not for redundant links (see `Plumtree.receive`).

    `grafted`: the announcers we asked; their answers are expected copies, never a reason to prune.
    `promoted`: those of them our graft made eager, still to be made lazy again if the graft turns out needless.
    `repaired`: the first copy was a graft's answer; then the first eager copy after it is late, not redundant.
    `late_seen`: that late eager copy came (or the first copy was eager): later copies follow the usual rules."""

    since: float
    grafted: list[str]
    promoted: list[str]
    repaired: bool
    late_seen: bool
    at: float
    fetched: bool = False  # the first copy was a fetch's answer (no eager link): a gap if no eager copy follows


@dataclass(slots=True)
class GraftAnswer:
    """What `Plumtree.on_graft` answers: the payloads to send (each with its class: critical or not), and how
    many ids were repeats of grafts answered before and passed over (the Node counts them)."""

    payloads: list[tuple[bytes, bool]]
    repeats: int = 0


@dataclass(slots=True)
class TreeOut:
    """Control messages due now, per peer: ids to announce (IHAVE), ids to ask for (GRAFT), and prunes."""

    ihaves: dict[str, list[int]] = field(default_factory=dict)
    grafts: dict[str, list[int]] = field(default_factory=dict)
    prunes: set[str] = field(default_factory=set)
    short_grafts: dict[str, list[int]] = field(default_factory=dict)  # short ids announced to us as such
    # Those of `prunes` that undo our own needless graft (the announcer made the link eager when it got it),
    # not a redundant tree link: the Node counts them apart (`tree_grafts_undone`).
    undone: set[str] = field(default_factory=set)
    prunes_spared: int = 0  # PRUNEs not sent again to members told lately (Plumtree._prune)
    grafts_held: int = 0  # payloads whose first graft was put off: an eager copy was plausibly on its way
    # Peers of `grafts` asked for payloads only: a PRUNE follows the GRAFT in the same packet (EAGER_STALL_LAZY).
    fetches: set[str] = field(default_factory=set)

    def peers(self) -> list[str]:
        # In name order: a set's order follows the string hash, which differs per process (PYTHONHASHSEED), and
        # the order of our sends must not, or the simulator is no longer deterministic given its seed.
        return sorted(set(self.ihaves) | set(self.grafts) | self.prunes | set(self.short_grafts))


_V = TypeVar("_V")


def _pop_id(records: OrderedDict[int, _V], ident: int, sid: int) -> _V | None:
    """Take what `records` holds for a payload, kept under its id or, announced by short id, under -1 - sid."""
    if not records:
        return None
    found = records.pop(ident, None)
    return records.pop(-1 - sid, None) if found is None else found


class Plumtree:
    """One member's broadcast tree. Names are member names; ids come from `message_id`."""

    def __init__(self, me: str, *, eager_target: int, lazy_interval: float, graft_timeout: float,
                 rng: Rng | None = None, max_neighbours: int | None = None) -> None:
        """`graft_timeout`: the least wait after an announcement before a missing payload is grafted; the
        wait grows, under graft pressure, to how late eager copies are seen to come, up to GRAFT_CAP_LAZY lazy
        intervals: core/graft_timing.py."""
        self.me = me
        # Graft timers are drawn in [graft_timeout/2, graft_timeout]: when a whole subtree missed a payload
        # (its root's link broke), the first member to graft pushes it down its eager links before the others'
        # timers fire. Equal timers made every member of the subtree graft at once: a new eager link each, a
        # cycle each, duplicates and prunes that broke the tree elsewhere, at 100 writes/s without end.
        self._rng = rng
        self.eager_target = max(1, eager_target)
        self.lazy_interval = lazy_interval
        self.graft_timeout = graft_timeout
        self.timing = GraftTiming(graft_timeout, GRAFT_CAP_LAZY * lazy_interval)
        self._grafted: OrderedDict[int, _Grafted] = OrderedDict()  # payloads grafted lately (see _Grafted)
        self._undone: set[str] = set()  # prunes that undo a needless graft of ours (TreeOut.undone)
        self._pruned_at: dict[str, float] = {}  # member -> when we last told it PRUNE (oldest first)
        self._spared = 0  # PRUNEs not sent again since the last tick (see _prune; TreeOut.prunes_spared)
        self.max_neighbours = max_neighbours if max_neighbours is not None else max(16, 4 * self.eager_target)
        self.eager: set[str] = set()
        self.lazy: set[str] = set()
        self._seen: OrderedDict[int, _First] = OrderedDict()
        # Short ids (wire type 19): seen ones by count (two seen ids may share one), and the cached payloads'
        # ids by short id (a graft naming a short id is answered from the cache). An id announced short that
        # we lack waits in `_missing` under the key `-1 - short id` (full ids are never negative).
        self._seen_short: dict[int, int] = {}
        self._cache_short: dict[int, int] = {}
        # id -> (cached at, payload, critical): a payload's class travels with it, so an answer to a graft
        # keeps a critical write critical.
        self._cache: OrderedDict[int, tuple[float, bytes, bool]] = OrderedDict()
        self._cache_bytes = 0
        self._missing: dict[int, _Missing] = {}  # in the order first announced (the oldest first)
        self._missing_by: dict[str, dict[int, None]] = {}  # first announcer -> its ids in `_missing`, oldest first
        self._timers: list[tuple[float, int]] = []
        # Lazy peer -> id -> the earliest flush it may go in (the second end of a link holds its ids: see above).
        self._announce: dict[str, dict[int, float]] = {}
        self._flush_at = math.inf
        # Links cut lately: member -> when its quick announcements began (inf: not yet, no payload delivered since
        # the cut), oldest cut first (CUT_WATCH_LAZY); and when the quick announcements go next.
        self._cut_at: dict[str, float] = {}
        self._quick_at = math.inf
        self._prunes: set[str] = set()
        self._links: set[str] = set()  # new eager neighbours still to be told (empty GRAFT)
        # Neighbours we picked ourselves (eager or lazy by now). Links others asked for do not count: with
        # them counted every member ends with ~eager_target links in all, a sparse graph that falls apart
        # into pieces; eager_target picks per member (a random k-out graph) is connected.
        self._picked: set[str] = set()
        self._dups: dict[str, int] = {}  # eager link -> duplicates in a row over it
        # The members known to hold the payload `receive` last took as new (they announced it to us, or we
        # grafted it from them), for the `deliver` that follows: a push to one of them was a duplicate at its
        # end (measured in the simulator under load, ~10 % of all duplicates), an announcement wasted ids.
        self._holders: tuple[int, set[str]] = _NO_HOLDERS
        # Eager links that delivered a payload first since they became eager (tree links in use). One that
        # never did is pruned at its first duplicate: while the tree forms (every member starts with
        # eager_target eager links, ~3x a tree's), waiting for PRUNE_AFTER duplicates on each redundant
        # link cost ~0.2 extra payload copies per member per write over the first ~20 writes.
        self._proven: set[str] = set()
        self._late_streak: dict[str, int] = {}  # eager link -> its copies in a row late after a repair
        # Eager link -> (when its latest first copy came, how far it has got: the first announcement of the
        # newest payload it brought first, or the arrival time of one nobody had announced): see
        # EAGER_STALL_LAZY. Entries of links no longer eager are ignored, and dropped at `remove`.
        self._eager_progress: dict[str, tuple[float, float]] = {}
        self._cache_full_at = -math.inf  # when the cache last dropped a payload for room, not age
        self._held = 0  # payloads whose first graft was put off since the last tick (TreeOut.grafts_held)
        self._fetch_repairs = (-math.inf, 0)  # (when the first counted fetch repair was, how many since)
        self._fetch_gaps: deque[float] = deque(maxlen=FETCH_GAPS)  # when fetches turned out gaps (FETCH_GAPS)
        # Eager link -> (payloads held for it, its latest samples: True where the fetch's answer came first), see
        # HOLD_SAMPLE_EVERY; at most 4 per eager link (like _late_streak), dropped at `remove`.
        self._hold_links: dict[str, tuple[int, deque[bool]]] = {}
        # Sampled ids (or -1 - short id) -> (the link it was held for, whether grafted as a sample): `_probe`.
        self._probes: OrderedDict[int, tuple[str, bool]] = OrderedDict()
        # Ids given up (no announcer left to graft) -> when first announced, oldest forgotten first (MAX_MISSING):
        # its eager copy, if it still comes, shows how far its link has got like any announced one. Forgotten at
        # its first copy, whichever way that comes (`receive`).
        self._given_up: OrderedDict[int, float] = OrderedDict()
        self.kept_links = 0  # prunes of our last eager link answered with a link request
        # Each payload answers one member's graft once (see on_graft): (member, id) answered lately.
        self._graft_answered: dict[tuple[str, int], None] = {}
        # Whether a member is far from us (another zone, or a high estimated RTT), set by the Node under
        # topology-aware choice; None: every member alike (random choice, or nothing known yet). See `far`.
        self.is_far: Callable[[str], bool] | None = None

    # -- neighbours ---------------------------------------------------------------------------------------
    def neighbours(self) -> set[str]:
        return self.eager | self.lazy

    @property
    def picked(self) -> int:
        """Neighbours of our own picking (see `wanted`)."""
        return len(self._picked)

    def wanted(self) -> int:
        """New neighbours wanted now: `eager_target` of our own picking (a newcomer has none, a member that
        died leaves a gap), added by the Node from random live members with `add_neighbour`. With no eager
        link left at all, one (a lazy link may be promoted): waiting for a graft would delay the next payload
        by a graft timeout."""
        missing = self.eager_target - len(self._picked)
        return max(missing, 0 if self.eager else 1)

    def add_neighbour(self, name: str) -> bool:
        """Make `name` an eager neighbour of ours and tell it so (an empty GRAFT at the next `tick`). A far
        pick (`is_far`) becomes a lazy neighbour instead, while we have an eager link: see `far`."""
        if name == self.me or name in self.eager or (name not in self.lazy and not self._room()):
            return False
        self._picked.add(name)
        if self.eager and self.far(name):
            self.lazy.add(name)  # told by our first announcement (an IHAVE makes us its lazy neighbour)
            return True
        self._make_eager(name)
        self._links.add(name)
        self._withdraw_prune(name)  # (a lazy peer pruned since the last tick: see _withdraw_prune)
        return True

    def far(self, name: str) -> bool:
        """Whether `name` is far (`is_far`; False while no topology is known).

        WHY far links start lazy. With every pick eager, each member's far picks pushed every payload across
        zones until a duplicate pruned them, and many never were: the far copies into a zone arrive about
        together (one far latency after the writer's zone had it), so each one is often first at its
        receiver, which resets its count. At N = 1,000 in 3 zones ~130 payload copies per write crossed zones
        where 2 would do. Far picks as lazy links keep the far share of the neighbour graph (their
        announcements reach other zones, so no update is trapped in one: Demers et al.), and a zone that
        lacks a payload grafts it over one of them, which makes that link eager: the eager links across
        zones are the few that grafts made, a bridge or so per zone pair, and the duplicates they cause
        prune the rest (grafts ask a near announcer first: `on_ihave`)."""
        return self.is_far is not None and self.is_far(name)

    def remove(self, name: str) -> None:
        """`name` died, left or was reaped: forget the links to it and whatever we queued for it."""
        self.eager.discard(name)
        self.lazy.discard(name)
        self._announce.pop(name, None)
        self._prunes.discard(name)
        self._undone.discard(name)
        self._pruned_at.pop(name, None)
        self._cut_at.pop(name, None)
        self._links.discard(name)
        self._picked.discard(name)
        self._dups.pop(name, None)
        self._proven.discard(name)
        self._late_streak.pop(name, None)
        self._eager_progress.pop(name, None)
        self._hold_links.pop(name, None)
        for missing in self._missing.values():
            if name in missing.announcers:
                missing.announcers.remove(name)

    def _room(self) -> bool:
        return len(self.eager) + len(self.lazy) < self.max_neighbours

    def _make_eager(self, name: str) -> None:
        if name in self.eager:
            return
        if name in self.lazy or self._room():
            self.lazy.discard(name)
            self.eager.add(name)
            self._proven.discard(name)
            self._cut_at.pop(name, None)  # a tree link again: a later cut is a new one (a fetch's PRUNE is none)

    def _make_lazy(self, name: str) -> None:
        if name in self.lazy:
            return
        if name in self.eager or self._room():
            self.eager.discard(name)
            self._proven.discard(name)
            self.lazy.add(name)

    # -- payloads -----------------------------------------------------------------------------------------
    def seen(self, ident: int) -> bool:
        return ident in self._seen

    def receive(self, ident: int, sender: str | None, now: float, *, can_prune: bool = True,
                critical: bool = False) -> bool:
        """A payload with this id arrived from `sender` (None: our own write). True if it is new here: then
        hand it to the state layer and, if that accepts it, call `deliver`.

        A duplicate means a redundant link, which is pruned (at the next flush): the off-tree link the first
        copy came over if there was one (a tree link delivers too, so the off-tree one is the extra), else the
        link this copy came over. `can_prune`: the sender reads tree messages (a PRUNE to an older agent would
        make it drop the whole packet; and a copy it floods us must not cost us a tree link). `critical`: a
        critical write, which its writer sends to every member directly (core/critical.py): its copies arrive
        twice on purpose, so they say nothing about the tree. They neither prune nor count toward a prune nor,
        coming first, end a link's run of duplicates toward one; and the writer's direct copy does not make it a
        neighbour (else every member that ever wrote a critical value would become everyone's lazy neighbour,
        and get every announcement). Measured at N=10 under 100 writes/s with every 10th write critical: 3,015
        prunes in 10 s, and normal writes grafted after the tree links those duplicates cut."""
        first = self._seen.get(ident)
        if critical:
            if first is not None:
                queue = self._announce.get(sender) if sender is not None else None
                if queue is not None:
                    queue.pop(ident, None)  # it holds the payload: no announcement to it
                return False
            can_prune = False  # a first copy that no later duplicate blames, from a sender kept as it is
        if first is None:
            sid = short_id(ident)
            missing = self._missing.get(ident) or self._missing.get(-1 - sid)
            answer = missing is not None and sender is not None and sender in missing.grafted
            # Given up earlier: forgotten now, whichever way this first copy came. Only a normal eager copy reads
            # it (below), and no later copy is a first copy again: left in place, the ids of critical writes
            # and off-tree copies given up took the room of those whose eager copies were still to come, and
            # those copies then counted as fresh (no sample of how late, the link taken as further ahead).
            given_up = _pop_id(self._given_up, ident, sid)
            if sender is not None:
                if not critical:
                    # The link delivered first: its run of duplicates (PRUNE_AFTER) ends. Not for a critical copy
                    # (see below): a redundant link whose normal copies all came as duplicates was never pruned
                    # while critical writes kept coming first over it in between.
                    self._dups.pop(sender, None)
                probe = self._probe_result(ident, sid, sender, answer) if self._probes else None
                if answer and sender not in self.eager and not (probe is not None and probe[1]):
                    self._count_fetch_repair(now)  # a fetch repaired it (FETCH_REPAIRS; a sample is no repair)
                # A critical copy goes from its writer to all at once, past what its link still queues: it tells
                # nothing about the link (proves it, ends its late streak, shows how far it has got or how late
                # its copies come).
                if sender in self.eager and not answer and not critical:
                    self._proven.add(sender)  # (a graft's answer proves nothing yet: see _settle)
                    self._late_streak.pop(sender, None)
                    # How far this link has got (EAGER_STALL_LAZY): a payload announced before came late over
                    # it; one nobody announced yet is fresher than every announcement we hold. The newest so
                    # far: an older payload reordered behind a newer one does not set it back.
                    if missing is not None:
                        got = missing.since
                    elif given_up is not None:  # a late eager copy, as of an id still waited for (_settle)
                        got = given_up
                        self.timing.late_eager(now - given_up, now)
                    else:
                        got = now
                    prev = self._eager_progress.get(sender)
                    self._eager_progress[sender] = (now, got if prev is None else max(got, prev[1]))
            if missing is not None:
                self._settle(ident, missing, sender, answer, now, critical=critical)
                # Its announcers hold it: `deliver` pushes and announces it to none of them.
                self._holders = (ident, {*missing.announcers, *missing.grafted})
            # (A graft's answer from a link we kept lazy, a fetch: EAGER_STALL_LAZY, is no off-tree link.)
            off_tree = sender is not None and sender not in self.eager and not answer
            self._seen[ident] = _First(sender, off_tree, can_prune)
            self._seen_short[sid] = self._seen_short.get(sid, 0) + 1
            if len(self._seen) > MAX_SEEN:
                old, _ = self._seen.popitem(last=False)
                old_sid = short_id(old)
                if self._seen_short[old_sid] <= 1:
                    del self._seen_short[old_sid]
                else:
                    self._seen_short[old_sid] -= 1
            self.timing.payload(now)
            self._drop_missing(ident)  # its timer is skipped when it fires
            self._drop_missing(-1 - sid)
            if off_tree and sender is not None and can_prune:
                self._make_lazy(sender)  # links are symmetric: announce to it from now on
            return True
        if sender is None or sender == first.sender:
            return False
        queue = self._announce.get(sender)
        if queue is not None:
            queue.pop(ident, None)  # it holds the payload: no announcement to it
        if self._graft_copy(ident, sender, now):
            return False
        if first.off_tree:
            if first.sender is not None and first.prunable and first.sender not in self.eager:
                self._prune(first.sender, now)
            first.off_tree = False
            if sender in self.eager:
                return False  # the tree delivered as it should: keep this link
        if can_prune:
            if sender not in self.eager:
                self._prune(sender, now)  # not even a tree link of ours: no reason to wait
            elif len(self.eager) > 1:  # our last eager link stays (see on_prune)
                n = self._dups[sender] = self._dups.get(sender, 0) + 1
                if n >= ((PRUNE_AFTER_PRESSURE if self.timing.pressure(now) else PRUNE_AFTER)
                         if sender in self._proven else 1):
                    del self._dups[sender]
                    self._prune(sender, now)
        return False

    def _settle(self, ident: int, missing: _Missing, sender: str | None, answer: bool, now: float, *,
                critical: bool = False) -> None:
        """The first copy of a payload announced to us came (from `sender`; `answer`: as the answer to our
        graft; `critical`: a critical write's, which is no sample of how late eager copies come: see `receive`).
        Learn how late an eager copy came, and remember our grafts' copies still to come.

        WHY. Plumtree (and Partisan's and Riak's versions of it) prunes on every duplicate. A graft draws one
        on purpose, and under load the duplicate is the eager copy that was merely late: pruning that link
        (or keeping the grafted one eager beside it) rewired a working tree at every late payload, and the
        rewiring made more duplicates and grafts (14,464 prunes in a 10-second run at N=50, 100 writes/s).
        So a graft that turned out needless is undone (the announcer, which made the link eager on our graft,
        is told to make it lazy again: `TreeOut.undone`), its answer prunes nothing, and after a repair the
        first eager copy, late, is a sample and not a duplicate. A link that is really lost sends no late
        copy: the repair stands, as before. Our grafts for it count toward the graft pressure only now that
        its payload came: a graft for an id nobody holds (made up in an announcement) is no sign of load, and
        20 of them from one neighbour turned the learnt wait on (review s9b)."""
        for _ in missing.grafted:
            self.timing.grafted(now)
        late_eager = sender is not None and sender in self.eager and not critical
        if not missing.grafted:
            if late_eager:
                self.timing.late_eager(now - missing.since, now)
            return
        repaired = answer
        if repaired:
            # The graft repaired a missing link. Other announcers grafted too (the first answer was late) are
            # not needed: their links go back to lazy.
            needless = [p for p in missing.promoted if p != sender]
        else:
            # It came another way meanwhile: every graft for it was needless.
            needless = list(missing.promoted)
            if late_eager:
                self.timing.late_eager(now - missing.since, now)
        for peer in needless:
            self._undo_graft(peer, now)
        record = _Grafted(missing.since, list(missing.grafted), [p for p in missing.promoted if p not in needless],
                          repaired, not repaired, now, repaired and sender is not None and sender not in self.eager)
        grafted = self._grafted
        grafted.pop(ident, None)
        grafted[ident] = record
        self._expire_grafted(now)

    def _expire_grafted(self, now: float) -> None:
        """Forget the payloads grafted more than CACHE_SECONDS ago (or past MAX_GRAFTED); a fetch among them that
        no eager copy followed was a gap (FETCH_GAPS)."""
        grafted = self._grafted
        while grafted and (len(grafted) > MAX_GRAFTED or next(iter(grafted.values())).at + CACHE_SECONDS < now):
            _, old = grafted.popitem(last=False)
            if old.fetched and not old.late_seen and old.at + CACHE_SECONDS < now:
                self._fetch_gaps.append(now)  # no tree link brought it: a gap (FETCH_GAPS)

    def _graft_copy(self, ident: int, sender: str, now: float) -> bool:
        """A duplicate our own graft drew (True): the answer of an announcer we asked, or (after a repair)
        the first eager copy, which was late, not redundant: see `_settle`. Neither prunes a link."""
        record = self._grafted.get(ident)
        if record is None:
            return False
        if sender in record.grafted:
            return True
        if record.late_seen or sender not in self.eager:
            return False
        streak = self._late_streak.get(sender, 0) + 1
        if streak > LATE_STREAK_PRUNE:  # slow, not late: a duplicate like any other (LATE_STREAK_PRUNE)
            self._late_streak.pop(sender, None)
            record.late_seen = True  # (an eager copy came: no gap, FETCH_GAPS)
            return False
        if len(self._late_streak) < 4 * max(1, len(self.eager)) or sender in self._late_streak:
            self._late_streak[sender] = streak
        record.late_seen = True
        self.timing.late_eager(now - record.since, now)
        # The tree's link works, only slowly: the graft's link goes back to lazy unless it has since delivered
        # a payload first (then it is the faster tree link, and later duplicates prune the redundant one).
        for peer in record.promoted:
            if peer not in self._proven:
                self._undo_graft(peer, now)
        record.promoted = []
        return True

    def _undo_graft(self, peer: str, now: float) -> None:
        """Make lazy again a link our graft made eager, at both ends (a PRUNE, counted apart). Not our last
        eager link (see on_prune)."""
        if peer in self.eager and len(self.eager) > 1:
            self._make_lazy(peer)
            self._dups.pop(peer, None)
            self._prunes.add(peer)
            self._undone.add(peer)
            self._told_prune(peer, now)

    def _withdraw_prune(self, peer: str) -> None:
        """The link to `peer` is eager at both ends from now on (its GRAFT, or ours at the next tick): a PRUNE
        still queued for it is withdrawn, and a later one is told even if one went lately (`_prune`).

        WHY. A prune is queued when a duplicate comes and sent at the next tick; a graft or link request of ours
        is made at a tick, and the Node packs a peer's GRAFTs before its PRUNE (core/tree_dissemination.py). So
        when both were due at one tick (an agent behind runs its packets, then its overdue timers; or the Node
        picks as a new neighbour a lazy peer pruned since the last tick), the peer made the link eager, then
        lazy, while our end kept it eager: a one-sided link, which pushed it every payload while it only
        announced to us, until a duplicate pruned it at one end. The graft came later: it wins, as if the two
        had left at their own times. (A fetch is no such case: its GRAFT goes with a PRUNE on purpose, and the
        link stays lazy at our end too: EAGER_STALL_LAZY.)"""
        self._prunes.discard(peer)
        self._undone.discard(peer)
        self._pruned_at.pop(peer, None)

    def _cut(self, peer: str) -> None:
        """The eager link to `peer` was cut (by us or by it): announce to it quickly, from the next payload on
        (CUT_WATCH_LAZY)."""
        cuts = self._cut_at
        cuts.pop(peer, None)
        cuts[peer] = math.inf
        while len(cuts) > 4 * self.max_neighbours:
            del cuts[next(iter(cuts))]

    def _told_prune(self, peer: str, now: float) -> None:
        told = self._pruned_at
        told.pop(peer, None)
        told[peer] = now
        while told and (len(told) > 4 * self.max_neighbours
                        or next(iter(told.values())) + PRUNE_RESEND_LAZY * self.lazy_interval < now):
            del told[next(iter(told))]

    def grafted(self, ident: int, announcer: str | None = None) -> bool:
        """Whether we grafted this id (asked an announcer for it, by its id or short id); with `announcer`,
        whether we asked that member: a copy from it now answers our graft, a repair, not the tree's push
        (counted by path in Node stats: `tree_delivered_*`)."""
        missing = self._missing.get(ident) or self._missing.get(-1 - short_id(ident))
        if missing is None:
            return False
        return bool(missing.grafted) if announcer is None else announcer in missing.grafted

    def _prune(self, name: str, now: float) -> None:
        """Sent at once (the next `tick`), not with the lazy flush: until the other end hears it, it keeps
        pushing over the link, and the duplicates that causes elsewhere in the same cycle prune that cycle's
        other links too, which cuts the tree in pieces (at 100 writes/s, most of the time)."""
        was_lazy = name in self.lazy
        was_eager = name in self.eager
        self._make_lazy(name)
        if was_eager:
            self._cut(name)
        told = self._pruned_at.get(name)
        if was_lazy and told is not None and now - told < PRUNE_RESEND_LAZY * self.lazy_interval:
            # Told lately, and lazy at our end since: its pushes in flight (under load, for seconds) are no
            # news. A PRUNE per such duplicate was a packet each at two busy members.
            self._spared += 1
            return
        self._prunes.add(name)
        self._undone.discard(name)  # a redundant link now, whatever else it was
        self._told_prune(name, now)

    def deliver(self, ident: int, payload: bytes, sender: str | None, now: float, *,
                critical: bool = False) -> list[str]:
        """The state layer took a new payload: the eager peers to push it to now (not back to `sender`); its id
        is announced to the lazy peers at the next flush, and the payload kept a while (with its class,
        `critical`) to answer grafts."""
        self._cache_put(ident, payload, now, critical)
        held = now + HOLD * self.lazy_interval
        announce = self._announce
        holders = self._holders[1] if self._holders[0] == ident else _NOBODY
        self._holders = _NO_HOLDERS
        me = self.me
        cuts = self._cut_at
        watched = now - CUT_WATCH_LAZY * self.lazy_interval
        quick = False
        for peer in sorted(self.lazy):  # name order, not hash order (see TreeOut.peers)
            if peer != sender and peer not in holders:
                queue = announce.get(peer)
                if queue is None:
                    queue = announce[peer] = {}
                if cuts and not critical and cuts.get(peer, -math.inf) >= watched:
                    queue[ident] = now  # a fresh cut: both ends announce, quickly (CUT_WATCH_LAZY)
                    if cuts[peer] == math.inf:
                        cuts[peer] = now  # its first payload since the cut: the watch begins
                    quick = True
                else:
                    queue[ident] = now if me < peer else held  # (`first_end`, inlined: per payload and lazy peer)
                if len(queue) > MAX_ANNOUNCE_PER_PEER:
                    del queue[next(iter(queue))]
        if announce and self._flush_at == math.inf:
            self._flush_at = now + self.lazy_interval
        if quick and self._quick_at == math.inf:
            self._quick_at = now + CUT_FLUSH_LAZY * self.lazy_interval
        if holders:
            return sorted(peer for peer in self.eager if peer != sender and peer not in holders)
        eager = sorted(self.eager)
        if sender in self.eager:
            eager.remove(sender)
        return eager

    def _cache_put(self, ident: int, payload: bytes, now: float, critical: bool = False) -> None:
        old = self._cache.pop(ident, None)
        if old is not None:
            self._cache_bytes -= len(old[1])
        self._cache[ident] = (now, payload, critical)
        self._cache_short[short_id(ident)] = ident
        self._cache_bytes += len(payload)
        self._expire_cache(now)

    def _expire_cache(self, now: float) -> None:
        cache, by_short = self._cache, self._cache_short
        if len(cache) > MAX_CACHED or self._cache_bytes > MAX_CACHED_BYTES:
            self._cache_full_at = now  # held for less than CACHE_SECONDS (`_patience`)
        while cache and (len(cache) > MAX_CACHED or self._cache_bytes > MAX_CACHED_BYTES
                         or next(iter(cache.values()))[0] + CACHE_SECONDS < now):
            ident, (_, payload, _) = cache.popitem(last=False)
            self._cache_bytes -= len(payload)
            sid = short_id(ident)
            if by_short.get(sid) == ident:
                del by_short[sid]

    def cached(self, ident: int) -> tuple[bytes, bool] | None:
        """A cached payload and whether it is critical (None: not, or no longer, held)."""
        entry = self._cache.get(ident)
        return (entry[1], entry[2]) if entry is not None else None

    # -- control messages ---------------------------------------------------------------------------------
    def on_ihave(self, ids: tuple[int, ...], sender: str, now: float, *, short: bool = False) -> int:
        """`sender` holds these payloads. Ids we have need no announcement back to it; ids we lack start a
        graft timer (or add an announcer to the running one). The sender becomes a lazy neighbour if it was
        none (links are symmetric). `short`: the ids are short ids (wire type 19); one we lack is grafted by
        its short id (`TreeOut.short_grafts`). Returns how many waiting ids were forgotten to make room
        (MAX_MISSING_PER_PEER, MAX_MISSING: the caller counts them)."""
        evicted = 0
        extra: float | None = None  # the learnt wait (graft_timing.py), once per call: `now` is fixed
        if sender not in self.eager:
            self._make_lazy(sender)
        if self._cut_at and ids:
            self._end_watch(ids, sender, short)
        queue = self._announce.get(sender)
        if short:
            if queue:
                named = set(ids)
                for full in [f for f in queue if f >> SHORT_ID_SHIFT in named]:  # (short_id, per queued id)
                    del queue[full]
            seen: dict[int, int] | OrderedDict[int, _First] = self._seen_short
        else:
            seen = self._seen
        for ident in ids:
            if ident in seen:
                if queue is not None and not short:
                    queue.pop(ident, None)
                continue
            if short:
                ident = -1 - ident
            missing = self._missing.get(ident)
            if missing is None:
                evicted += self._make_missing_room(sender)
                spread = 0.5 + 0.5 * self._rng.random() if self._rng is not None else 1.0
                # The learnt wait for late eager copies comes on top (0 in a quiet cluster): graft_timing.py.
                if extra is None:
                    extra = self.timing.extra(now)
                deadline = now + self.graft_timeout * spread + extra
                self._missing[ident] = _Missing([sender], deadline, owner=sender, since=now)
                self._missing_by.setdefault(sender, {})[ident] = None
                heapq.heappush(self._timers, (deadline, ident))
            elif sender not in missing.announcers and sender not in missing.grafted \
                    and len(missing.announcers) < MAX_ANNOUNCERS:
                self._add_announcer(missing.announcers, sender)
        return evicted

    def _end_watch(self, ids: tuple[int, ...], sender: str, short: bool) -> None:
        """A watched cut's other end announced a payload we took after our watch began: payloads cross between
        its part of the tree and ours without the link, so the cut split nothing and the watch ends (its quick
        announcements were ~8 packets a cut at each end, most of them while a young tree forms)."""
        began = self._cut_at.get(sender)
        if began is None or began == math.inf:
            return
        cache, by_short = self._cache, self._cache_short
        for ident in ids:
            full = by_short.get(ident) if short else ident
            entry = cache.get(full) if full is not None else None
            if entry is not None and entry[0] >= began:
                del self._cut_at[sender]
                return

    def _make_missing_room(self, sender: str) -> int:
        """Room for one more id first announced by `sender`: its own oldest goes past MAX_MISSING_PER_PEER,
        the oldest of all past MAX_MISSING. How many were forgotten."""
        evicted = 0
        owned = self._missing_by.get(sender)
        if owned is not None and len(owned) >= MAX_MISSING_PER_PEER:
            self._drop_missing(next(iter(owned)))
            evicted += 1
        if len(self._missing) >= MAX_MISSING:
            self._drop_missing(next(iter(self._missing)))
            evicted += 1
        if evicted and len(self._timers) > 2 * MAX_MISSING:
            # The forgotten ids' timers would be skipped when they fire; under a flood of ids they would pile
            # up meanwhile (one per id): keep only the live ones.
            self._timers = [(d, i) for d, i in self._timers if (m := self._missing.get(i)) is not None
                            and m.deadline == d]
            heapq.heapify(self._timers)
        return evicted

    def _drop_missing(self, key: int) -> None:
        """Forget a waiting id (received, given up, or evicted) and its place in its announcer's bound."""
        missing = self._missing.pop(key, None)
        if missing is None:
            return
        owned = self._missing_by.get(missing.owner)
        if owned is not None:
            owned.pop(key, None)
            if not owned:
                del self._missing_by[missing.owner]

    def _add_announcer(self, announcers: list[str], sender: str) -> None:
        """Near announcers are grafted before far ones (a repair inside the zone costs no bytes across zones
        and arrives sooner); among each class, in the order they announced."""
        if self.is_far is None or self.far(sender):
            announcers.append(sender)
            return
        for k, name in enumerate(announcers):
            if self.far(name):
                announcers.insert(k, sender)
                return
        announcers.append(sender)

    def on_graft(self, ids: tuple[int, ...], sender: str, answered: set[int] | None = None, *,
                 short: bool = False) -> GraftAnswer:
        """`sender` asks for these payloads (none: a link request); the link becomes eager at both ends. The
        payloads we still hold, with their class (critical or not), each once, at most MAX_GRAFT_ANSWER over
        `answered` (the ids already answered for the same packet, updated here): a packet of many grafts, or
        one naming an id again and again, must not draw more than one graft's worth. `short`: the ids are
        short ids (wire type 19), looked up among the cached payloads.

        Each payload answers one member's graft once (MAX_GRAFT_ANSWERED pairs remembered): an honest member
        grafts an id from one announcer once (`tick` tries the next announcer after that), so a repeat is a
        replay or a forgery, and answering it again and again would push the whole cache at that member.
        Repeats are passed over before they take a place in the bound, and counted in the answer."""
        self._make_eager(sender)
        self._withdraw_prune(sender)
        seen = set() if answered is None else answered
        out = GraftAnswer([])
        for ident in ids[:MAX_GRAFT_ANSWER]:
            if len(seen) >= MAX_GRAFT_ANSWER:
                break
            if short:
                full = self._cache_short.get(ident)
                if full is None:
                    continue
                ident = full
            if ident in seen:
                continue
            done = self._graft_answered
            if (sender, ident) in done:
                out.repeats += 1
                continue
            seen.add(ident)
            payload = self.cached(ident)
            if payload is not None:
                out.payloads.append(payload)
                done[(sender, ident)] = None
                if len(done) > MAX_GRAFT_ANSWERED:
                    del done[next(iter(done))]
        return out

    def on_prune(self, sender: str, *, cut: bool = True) -> None:
        """`sender` got our payloads twice: the link becomes lazy. Unless it is our last eager link: then the
        duplicates it saw came over links of ours that are gone since (we forward to eager links only, and
        over this one alone nothing of ours can duplicate), and without it no payload reaches us but by a
        graft: we keep it and ask the sender to keep it too (a link request). `cut`: the link was a tree link
        (not one a fetch's GRAFT made eager a moment ago): it announces quickly for a while (CUT_WATCH_LAZY)."""
        if sender not in self.eager:
            return
        if len(self.eager) == 1:
            self._links.add(sender)
            self.kept_links += 1
            return
        self.eager.discard(sender)
        self._proven.discard(sender)
        self.lazy.add(sender)
        self._dups.pop(sender, None)
        if cut:  # (not a fetch's PRUNE: the GRAFT before it in its packet made the link eager a moment ago)
            self._cut(sender)

    # -- time ---------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When `tick` has something to do: 0.0 (a time already past: at once) while link requests or prunes
        wait. Never -inf: drivers take any infinity for "nothing to do" (the agent's timer stopped for good)."""
        deadline = 0.0 if self._links or self._prunes else min(self._flush_at, self._quick_at)
        while self._timers and self._timers[0][1] not in self._missing:
            heapq.heappop(self._timers)
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        return deadline

    def tick(self, now: float, *, flush: bool = False) -> TreeOut:
        """Everything due: expired graft timers become GRAFTs (the announcer's link turns eager; the next
        announcer is tried a graft timeout later; with none left the id is given up to anti-entropy), and the
        queued announcements, prunes and link requests are flushed. Announcements go one lazy interval after
        the first of them was queued, or earlier with `flush`: the Node flushes at its gossip tick (once per
        lazy interval too), right after the round's gossip packets took what they could carry for their
        peers (`take_for`), so a lazy peer that got a gossip packet needs no announcement packet."""
        out = TreeOut()
        timers = self._timers
        extra: float | None = None  # the learnt wait (graft_timing.py), once per tick: `now` is fixed
        fetch: bool | None = None  # whether grafts to lazy announcers only fetch (EAGER_STALL_LAZY), once per tick
        while timers and timers[0][0] <= now:
            deadline, ident = heapq.heappop(timers)
            missing = self._missing.get(ident)
            if missing is None or missing.deadline != deadline:
                continue
            if not missing.announcers:
                self._drop_missing(ident)
                given_up = self._given_up
                given_up[ident] = missing.since
                if len(given_up) > MAX_MISSING:
                    del given_up[next(iter(given_up))]
                continue
            if not missing.grafted and self._hold(ident, missing, now):
                # An eager copy is plausibly on its way (EAGER_STALL_LAZY): look again a graft timeout later.
                if not missing.held:
                    missing.held = True
                    self._held += 1
                missing.deadline = now + self.graft_timeout
                heapq.heappush(timers, (missing.deadline, ident))
                continue
            peer = missing.announcers.pop(0)
            missing.grafted.append(peer)
            if ident < 0:
                out.short_grafts.setdefault(peer, []).append(-1 - ident)
            else:
                out.grafts.setdefault(peer, []).append(ident)
            if peer not in self.eager:
                if fetch is None:
                    fetch = self.timing.pressure(now) and self._eager_flowing(now)
                if fetch and not self._fetches_repair(now):
                    out.fetches.add(peer)
                else:
                    self._make_eager(peer)
                    if peer in self.eager:
                        missing.promoted.append(peer)
                        self._withdraw_prune(peer)  # (pruned since the last tick: see _withdraw_prune)
            if extra is None:
                extra = self.timing.extra(now)
            missing.deadline = now + self.graft_timeout + extra
            heapq.heappush(timers, (missing.deadline, ident))
        for peer in self._links:
            out.grafts.setdefault(peer, [])
            out.fetches.discard(peer)  # a link request: the link is wanted
        self._links.clear()
        out.prunes = self._prunes
        self._prunes = set()
        out.undone = self._undone & out.prunes
        self._undone = set()
        out.prunes_spared, self._spared = self._spared, 0
        out.grafts_held, self._held = self._held, 0
        if now >= self._quick_at:
            self._quick_at = math.inf
            watched = now - CUT_WATCH_LAZY * self.lazy_interval
            for peer, at in list(self._cut_at.items()):
                if at < watched:
                    del self._cut_at[peer]  # watched long enough
                    continue
                if peer in self._announce:  # (the ids queued before the cut go too: they are due as well)
                    self._flush_peer(peer, now, out)
        if now >= self._flush_at or (flush and self._announce):
            self._flush_at = math.inf
            for peer in list(self._announce):
                self._flush_peer(peer, now, out)
            if self._announce:  # held ids (second ends) go at a later flush, unless the other end's come first
                self._flush_at = now + self.lazy_interval
            self._expire_cache(now)
        return out

    def _flush_peer(self, peer: str, now: float, out: TreeOut) -> None:
        """The ids queued for `peer` that may go by `now` into `out`'s announcements (the rest stay held)."""
        queue = self._announce[peer]
        due = [ident for ident, at in queue.items() if at <= now]
        if due:
            out.ihaves.setdefault(peer, []).extend(due)
            if len(due) == len(queue):
                queue.clear()
            else:
                for ident in due:
                    del queue[ident]
        if not queue:
            del self._announce[peer]

    def _count_fetch_repair(self, now: float) -> None:
        since, count = self._fetch_repairs
        if now - since > FETCH_WINDOW_LAZY * self.lazy_interval:
            since, count = now, 0
        self._fetch_repairs = (since, count + 1)

    def _fetches_repair(self, now: float) -> bool:
        """Whether our fetches repaired FETCH_REPAIRS payloads lately, or FETCH_GAPS of them were never followed
        by an eager copy (a slow writer behind a gap): then this graft links (and the counts start again).
        Fetches that turned gaps since the last graft's payload came count too: for a writer whose payloads come
        only by fetch that payload was its previous one, whose own fetch turns a gap CACHE_SECONDS later, and
        counted only at the next payload's arrival each gap came one of its writes late (a writer every 10-20 s
        never had two gaps within FETCH_GAP_SECONDS of a graft: fetched for good)."""
        self._expire_grafted(now)
        gaps = self._fetch_gaps
        if len(gaps) >= FETCH_GAPS and now - gaps[0] <= FETCH_GAP_SECONDS:
            gaps.clear()
            self._fetch_repairs = (-math.inf, 0)
            return True
        since, count = self._fetch_repairs
        if now - since > FETCH_WINDOW_LAZY * self.lazy_interval or count < FETCH_REPAIRS:
            return False
        self._fetch_repairs = (-math.inf, 0)
        gaps.clear()
        return True

    def _eager_flowing(self, now: float) -> bool:
        """Whether an eager link of ours delivered a payload first within EAGER_STALL_LAZY lazy intervals."""
        stalled = now - EAGER_STALL_LAZY * self.lazy_interval
        progress = self._eager_progress
        return any((seen := progress.get(peer)) is not None and seen[0] >= stalled for peer in self.eager)

    def _hold(self, key: int, missing: _Missing, now: float) -> bool:
        """Whether the first graft of a missing payload (`key`: its id, or -1 - short id) should wait
        (EAGER_STALL_LAZY): under graft pressure, within `_patience` of its first announcement, while an eager
        link that still delivers has brought nothing announced after it and is not measured slow (one such
        payload in HOLD_SAMPLE_EVERY is grafted anyway: a sample of whether the link beats a fetch). In a quiet
        cluster never: a missing payload there is a lost link, repaired at the (base) graft timeout."""
        if now - missing.since >= self._patience(now) or not self.timing.pressure(now):
            return False
        stalled = now - EAGER_STALL_LAZY * self.lazy_interval
        progress = self._eager_progress
        behind = sorted(peer for peer in self.eager if (seen := progress.get(peer)) is not None
                        and seen[0] >= stalled and seen[1] <= missing.since)
        if not behind:
            return False
        links = self._hold_links
        for peer in behind:
            entry = links.get(peer)
            if entry is None or sum(entry[1]) < HOLD_SLOW_WINS:
                break
        else:  # every link it may be on is slow: graft now, and measure the link again (HOLD_SAMPLE_EVERY)
            self._probe(key, behind[0], sampled=False)
            return False
        if missing.held:
            return True  # (a look again: counted and sampled at the first)
        if entry is None:
            if len(links) >= 4 * max(1, len(self.eager)):
                for gone in [name for name in links if name not in self.eager]:
                    del links[gone]
                if len(links) >= 4 * max(1, len(self.eager)):
                    return True
            entry = (0, deque(maxlen=HOLD_SAMPLES))
        count = entry[0] + 1
        links[peer] = (count, entry[1])
        if count % HOLD_SAMPLE_EVERY:
            return True
        self._probe(key, peer, sampled=True)
        return False

    def _patience(self, now: float) -> float:
        """How long after its first announcement a payload's graft may be held: GRAFT_PATIENCE_LAZY, and
        short of when its announcers drop it from their caches (they got it up to HOLD + 1 lazy intervals
        before we got their announcement): CACHE_SECONDS, or less while our own cache is held by its bounds
        (MAX_CACHED_BYTES at a high byte rate), its age span standing for the announcers'."""
        lazy = self.lazy_interval
        held = CACHE_SECONDS
        cache = self._cache
        if cache and now - self._cache_full_at <= CACHE_SECONDS:
            held = min(held, now - next(iter(cache.values()))[0])
        return min(GRAFT_PATIENCE_LAZY * lazy, held - (HOLD + 1.0) * lazy)

    def _probe(self, key: int, link: str, *, sampled: bool) -> None:
        """Remember that the graft of `key` measures whether a fetch beats `link` (HOLD_SAMPLE_EVERY); `sampled`:
        it was held for the link but grafted as a sample (then its answer is no fetch repair: FETCH_REPAIRS)."""
        probes = self._probes
        probes[key] = (link, sampled)
        if len(probes) > MAX_HOLD_PROBES:
            del probes[next(iter(probes))]

    def _probe_result(self, ident: int, sid: int, sender: str, answer: bool) -> tuple[str, bool] | None:
        """The first copy of a sampled payload came (HOLD_SAMPLE_EVERY): a sample for its link, True if the
        fetch's answer came first, False if the link's own copy did (another path first tells nothing)."""
        probe = _pop_id(self._probes, ident, sid)
        if probe is None:
            return None
        link = probe[0]
        entry = self._hold_links.get(link)
        if entry is not None and (answer or sender == link):
            entry[1].append(answer)
        return probe

    def announcing(self) -> list[str]:
        """The lazy peers whose announcements are due at the next flush (of which we are the first end): a
        packet the Node sends one of them anyway carries them (`take_for`) and saves it a packet of its own."""
        return [peer for peer, queue in self._announce.items() if queue and self.first_end(peer)]

    def first_end(self, peer: str) -> bool:
        """Whether we are the first end of the lazy link to `peer` (announce at the next flush; the other end
        holds its announcements one lazy interval longer). Both ends agree without a word: name order."""
        return self.me < peer

    def take_for(self, peer: str, max_ids: int = MAX_IDS_PER_MESSAGE) -> list[int]:
        """Up to `max_ids` announcements queued for `peer`, oldest first, to ride on a packet we send it anyway
        (a probe, an ack, a gossip packet): each one that rides saves a packet of its own at the next flush."""
        queue = self._announce.get(peer)
        if not queue or max_ids <= 0:
            return []
        if len(queue) <= max_ids:
            del self._announce[peer]
            return list(queue)
        ids = []
        for ident in queue:
            ids.append(ident)
            if len(ids) == max_ids:
                break
        for ident in ids:
            del queue[ident]
        return ids

    def stats(self) -> dict[str, int]:
        return {"eager": len(self.eager), "lazy": len(self.lazy), "seen": len(self._seen),
                "cached": len(self._cache), "missing": len(self._missing)}
