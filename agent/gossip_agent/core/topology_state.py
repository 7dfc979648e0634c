"""What one member knows about the network's shape: its own zone and coordinate, its peers' coordinates and
zones, and the near/far peer choice the Node uses for gossip, indirect probes and syncs.

WHY a module of its own. The Node (core/node.py) only calls in here from a few small hooks: a coordinate
arrived (`on_coordinate`), a probe round trip was measured (`observe_rtt`), which peers to send to
(`choose`), a member was reaped (`forget`). Everything about Vivaldi (core/vivaldi.py) and the near/far
policy (core/topology.py) stays here, so the Node's protocol code does not grow with it.

MIXED VERSIONS. An older agent drops a whole packet holding a message type it does not know, and agents of
the previous release read digests (type 9) but not coordinates (type 14). So a coordinate rides on an ack
only to a peer that has sent us one (`reads_coordinates`); to any other peer the prober offers its coordinate
in a small packet of its own beside a probe once its highest offer went unanswered (`Node._probe_offers`),
which an older agent drops alone and a newer one answers by putting its own on its acks -- after the first
exchange no extra packet is sent.
Second-hand coordinates (type 18, below) follow the same rule one level up. What each peer has shown is kept
in the Node's one reader registry (core/readers.py), shared with digests and the broadcast tree.
A member back from the dead or at a new address is offered again (perhaps a restart on an older release).

SECOND-HAND COORDINATES. First-hand, a member learns a peer's coordinate only from that peer's ack, so it
could not estimate a pair before it had probed both (at N = 30, some pairs were still unknown after 40 s), and
with probes mostly inside the zone (core/probe_order.py) far coordinates would arrive rarely. So members pass
on what they hold: `rows_for(peer)` gives the next few (name, coordinate, age) rows among the coordinates that
changed here since that peer was last sent rows, oldest change first (every first-hand update and every kept
row counts as a change, so a peer's walk never ends while coordinates move, and nobody keeps an early, stale
snapshot); two ride on an ack like piggybacked rumors (always to a near member, with probability
crossZoneFraction to a far one), and a joiner gets the whole table at its join (`Node.merge_push_pull`). Each
change is passed on to a few peers only (`row_sends`, like a rumor's retransmit limit), not to every peer:
every member that keeps the row passes it on in turn, so it spreads as an epidemic does. Walked to every peer,
a member's changes were owed N-1 times by each of N holders, while an ack carries two rows and a member acks
about one prober a second: at N = 50 the walks never emptied, and an idle agent sent two rows on every ack for
good (110 of its 200 payload bytes a second, all of them rows the receiver already held). A row
replaces what we hold only if it is fresher (its age says when it was current): a first-hand coordinate is
never overwritten by an older second-hand one, and a Vivaldi sample pairs a measured round trip with the
coordinate that came on that very ack.

BOUNDED. Coordinates are kept for live (alive or suspect) members of the Node's table only, first- or
second-hand, and dropped when the member dies or leaves (`drop_coordinate`): a dead member's coordinate would
otherwise keep it in the RTT table and /v1/coordinates, and go round the rows. Readers and cursors are kept for
members of the table (at most `membership.maxMembers`) and forgotten when the member is reaped; the zone cache
is bounded too.

NEAR. When this member's zone and a peer's zone are known, near means the same zone; otherwise near means an
estimated RTT within `near_rtt_ratio` times a low quantile of the estimates to every peer with a coordinate
(core/topology.py). The threshold is recomputed from the coordinates at most every `THRESHOLD_REFRESH`
seconds (when an RTT sample arrives), so a peer choice costs O(k), not O(N).

EQUAL TO UNIFORM WITHOUT INFORMATION. In `random` mode, and in `aware` mode while nothing is known (no local
zone and no peer coordinate), `active()` is False and the Node runs its old uniform choice unchanged, drawing
the same random numbers.

Pure: no clock (callers pass `now`), no I/O; randomness only from the caller's `Rng`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from gossip_agent.core.codec import half_rounded
from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.messages import NetCoordinate, PeerCoordinates
from gossip_agent.core.readers import COMPACT, COORDINATES, PEER_COORDINATES, Readers
from gossip_agent.core.rng import Rng
from gossip_agent.core.token_bucket import Rate, TokenBucket
from gossip_agent.core.topology import TopologyPolicy, far_pick_count, near_rtt_threshold, parse_zone
from gossip_agent.core.vivaldi import Coordinate, VivaldiClient, VivaldiConfig, estimate_rtt

#: The member metadata key that carries a member's zone (validated by core.topology.parse_zone on receipt).
ZONE_META_KEY = "zone"
#: Seconds between recomputations of the RTT threshold that makes a zone-less peer near.
THRESHOLD_REFRESH = 5.0
#: Distinct zone strings whose parse is cached (a few zones in practice; cleared when exceeded).
_ZONE_CACHE = 256
#: Random draws per wanted pick before the other class fills in (rejection sampling stays O(k)).
_DRAWS_PER_PICK = 12
#: At or below this many members a choice that came up short scans them all (sampling can miss there).
_SCAN_BELOW = 64
#: Second-hand rows on one ack (about 60 bytes each).
ROWS_PER_PACKET = 2
#: Rows of a joiner's table at most (beyond, the rest reach it row by row).
MAX_TABLE_ROWS = 512
#: Peers one change is passed on to, per ceil(log10(members + 1)) (see `row_sends`): memberlist's retransmit
#: rule at the LAN multiplier, the same spread a membership rumor gets.
ROW_SENDS_MULT = 4
#: Rows a second a member sends about coordinates that MOVED (a bucket of ROW_BURST). Even with each change going
#: to `row_sends` peers and a 1 ms floor, on loopback under 50 agents' scheduling noise (round trips of 0.1-5 ms,
#: coordinates' own error 0.3-1.3) every member's coordinate drifted past the floor every minute or two, and each
#: drift was a rumor of N x row_sends rows: the walks stayed full (two rows on 70 % of acks 4 minutes after the
#: start). Moves are a background refresh: every member gets every coordinate first-hand once per probe cycle
#: when it probes its owner, and Vivaldi's samples use only those; so they get a small fixed allowance, ~13 B/s
#: past the burst. A member's FIRST coordinate here is not rationed: with zone-aware probing, far coordinates
#: arrive first-hand rarely, and rows are how a young zoned cluster learns them (rationing them too left 34
#: cross-zone pairs unknown 40 s after the start in bench_topology_real's 30 agents in 3 zones). Their cost at a
#: start is cut instead by `_known_by`: any row about a member tells us its sender knows that member.
ROW_RATE = 0.25
ROW_BURST = 16.0
#: Seconds between two coordinate tables to the same joiner (a forged join flood costs us little).
TABLE_INTERVAL = 10.0
#: A coordinate is passed on again (enters the walk of rows) only once it moved by more than this share of its
#: estimated distance from us since it last did, or more than ROW_MOVE_ERROR of its own error estimate times that
#: distance if more (a noisy coordinate's wobble tells a receiver nothing): see `moved_noticeably`.
ROW_MOVE = 0.05
ROW_MOVE_ERROR = 0.5
#: ...and, for a row (second-hand), by more than this many seconds in any case. On loopback and on a LAN, round
#: trips of a fraction of a millisecond jitter by as much as themselves, and Vivaldi's coordinates wander with
#: them: 5 % of 0.2 ms is 10 us, so every sample was a noticeable move, and the walks of rows stayed full for
#: good (two rows on every ack, about 110 B/s per agent at idle, N = 50). A move under a millisecond changes no
#: choice a row informs: zones lie milliseconds apart, and near/far by coordinates compares an estimate with a
#: multiple of the nearest peers' (core/topology.py). Our own coordinate on an ack keeps the relative rule only:
#: a prober times its RTT sample against it, and inside a zone a millisecond is the whole round trip.
ROW_MOVE_FLOOR = 0.001
#: (No periodic re-walk: drift below the bar adds up against the coordinate as it last passed on, so it passes
#: once it adds up to a noticeable move; and every member gets every coordinate first-hand again when it probes
#: its owner, once per probe cycle. A re-walk every 120 s made each of N holders owe every coordinate anew,
#: and kept the walks full at idle: see `row_sends`.)
#: For this long after we first held a member's coordinate every change passes on: in a young cluster a row about a
#: member the receiver does not know yet is dropped there (`rows_unknown_member`), and the next change was its
#: retry (without this, every member held every coordinate about 20 s later at N = 30 in the simulator).
ROW_YOUNG = 60.0
#: Our own coordinate rides on an ack to a prober that already got one from us only once it moved by more
#: than OWN_MOVE of our estimated distance to the prober, or OWN_MOVE_ERROR times our error estimate of it if
#: more, or OWN_REFRESH after it last did (the prober times its RTT sample against the one it holds, within that
#: bound of ours). Twice the rows' bar: between two acks to the same prober (a probe cycle, N probe intervals)
#: Vivaldi has taken about N samples, and on a jittery link their wobble alone passed the rows' bar on 80-95 %
#: of acks (~45 B/s per agent at idle, N = 50, loopback). In a simulation of SWIM's round-robin probing at
#: N = 50 (three zones 1 ms inside, 20-50 ms apart; and a loopback-like 0.1 ms +- 0.2 ms), this bar carried
#: ours on 25 % and 40 % of acks instead of 63 % and 83 %. The median relative estimate error stayed 5.6-5.7 %
#: across zones and 121-122 % on loopback, and inside a 1 ms zone went from 43.6 to 45.2 % (6 seeds; its
#: jitter dominates there): a coordinate that only wobbles is nearly as good a sample a minute later.
OWN_MOVE = 0.10
OWN_MOVE_ERROR = 1.0
OWN_REFRESH = 300.0
#: ...and by more than 0.1 ms in any case: round trips under a millisecond jitter by as much as themselves (on
#: loopback each agent's event loop adds its own), so a relative bar alone still carried ours on 70 % of real
#: idle acks at N = 50. Simulated, this floor cut the loopback-like share from 40 to 12 % of acks, and left the
#: median estimate error unchanged there, on a 0.3 ms LAN (12.7-12.8 %), and in 1 ms zones (45.5 %).
OWN_MOVE_FLOOR = 0.0001
#: A coordinate a member sent us itself stands against second-hand rows about it for this long: a row's age is
#: its sender's word, so without this one member could overwrite, with rows claiming age 0, every coordinate we
#: just measured first-hand, and pass the rewrite on. Rows still fill in members we have not heard from lately.
FIRST_HAND_HOLD = 15.0

T = TypeVar("T")
#: Largest weight of one far RTT sample (see `FarSampleWeight`): with Vivaldi's default step a far sample then
#: closes at most about half of its gap (vivaldi.repeated_step), and one noisy far round trip moves us at
#: most as far as four in a row would.
MAX_FAR_WEIGHT = 4.0
#: Samples over which the near/far mix of our samples is counted (an exponential memory).
SAMPLE_MIX_MEMORY = 64.0


class FarSampleWeight:
    """How many samples one far RTT sample stands for, so that far samples pull as hard as near ones.

    WHY. Zone-aware probing (core/probe_order.py) takes about one sample in five across zones, uniform probing
    two in three. Vivaldi then sees the many near springs hold each zone's coordinates together as a rigid
    body that the few far springs move apart only slowly; starting from the origin, every cross-zone estimate
    comes out short and stays short for a minute or more (sim/zones.py at N = 30: median cross-zone error 33%
    after 20 s and 6% after 40 s, against 5% and 1.5% with uniform probing). Weighting a far sample by
    near count / far count of our recent samples (an exponential memory of `SAMPLE_MIX_MEMORY` samples, one
    pseudo-sample of each kind to start) gives both kinds the same total pull, as an unbiased choice of probe
    targets would; at least 1 (far samples are never damped) and at most `MAX_FAR_WEIGHT` (a rare far sample
    is also an unfiltered one: core/vivaldi.py's latency filter holds few samples of a far peer). Near samples
    keep weight 1, so the inside of a zone converges as before; with uniform probing far samples are the
    majority and the weight stays 1. Pure arithmetic, O(1) per sample.
    """

    __slots__ = ("far", "near")

    def __init__(self) -> None:
        self.near = 0.0
        self.far = 0.0

    def observe(self, near: bool) -> float:
        """Count one sample of its kind; its weight (1 for a near sample)."""
        keep = 1.0 - 1.0 / SAMPLE_MIX_MEMORY
        self.near *= keep
        self.far *= keep
        if near:
            self.near += 1.0
            return 1.0
        self.far += 1.0
        return min(MAX_FAR_WEIGHT, max(1.0, (self.near + 1.0) / (self.far + 1.0)))


def moved_noticeably(before: Coordinate, after: Coordinate, distance: float, floor: float = 0.0, *,
                     share: float = ROW_MOVE, error_share: float = ROW_MOVE_ERROR) -> bool:
    """Whether a coordinate moved enough since `before` for a holder of `before` to be told: by more than
    `share` of `distance` (its estimated RTT from us, the scale of the estimates a receiver makes with it), or
    more than `error_share` times its own error estimate of it if that is larger, or more than `floor` seconds
    if that is larger still (ROW_MOVE_FLOOR for rows; OWN_MOVE and OWN_MOVE_ERROR for our own on an ack). The
    move bounds how much any
    estimate made with `before` instead of `after` is off (triangle inequality over vector, height and
    adjustment), so a holder's estimates stay within that share of the coordinate's own accuracy."""
    move = (math.dist(before.vec, after.vec) + abs(before.height - after.height)
            + abs(before.adjustment - after.adjustment))
    return move > max(max(share, error_share * after.error) * distance, floor)


def row_sends(members: int) -> int:
    """How many peers one change of a coordinate is passed on to by each member that keeps it, in a cluster of
    `members` (ROW_SENDS_MULT * ceil(log10(members + 1)), at least 1): every keeper passing it on that often
    reaches all but a vanishing share of the members, as a piggybacked rumor does, and a member missed by a
    change still gets the next one, or the coordinate first-hand when it probes that member."""
    return max(1, ROW_SENDS_MULT * math.ceil(math.log10(max(1, members) + 1)))


class TopologyState:
    """One member's coordinate, its peers' coordinates and zones, and the near/far choice. See the module
    docstring for why and how."""

    def __init__(self, config: TopologyConfig, *, max_peers: int, vivaldi: VivaldiConfig | None = None,
                 readers: Readers | None = None, max_sample_rtt: float | None = None) -> None:
        """`max_sample_rtt` (the Node passes membership.probeTimeout): the longest round trip taken as an RTT
        sample. The probe timeout is by its definition above the network's 99th-percentile round trip, so an
        ack later than that measured a stall (an agent's event loop, a starved delayer), not the network; as
        in memberlist, which times only acks that arrive within the timeout. Such a sample, seconds against a
        few ms, would fling the coordinate and fill the adjustment window for a minute. Refused and counted
        (`rtt_too_large`)."""
        self.mode = config.mode
        self.policy = TopologyPolicy(cross_zone_fraction=config.cross_zone_fraction)
        if max_sample_rtt is not None:
            vivaldi = dataclasses.replace(vivaldi or VivaldiConfig(), max_rtt=max_sample_rtt)
        self.client = VivaldiClient(vivaldi)
        self.far_weight = FarSampleWeight()
        self.local_zone: str | None = parse_zone(config.zone) if config.zone is not None else None
        self.max_peers = max_peers
        self.stats: Counter[str] = Counter()
        self._coordinates: dict[str, Coordinate] = {}
        self._readers = readers if readers is not None else Readers()
        # When each held coordinate was current (`now` of a first-hand one, now - age of a second-hand one).
        self._as_of: dict[str, float] = {}
        # When each member last sent us its own coordinate (see FIRST_HAND_HOLD).
        self._first_hand: dict[str, float] = {}
        # Second-hand rows: every coordinate we hold carries the number of its latest update (first-hand or a
        # kept row); `_updates` lists the numbers in order (stale ones, of names updated again or forgotten,
        # are skipped and compacted away), and each peer's cursor is the last number it was sent.
        self._update_seq = 0
        self._seq_of: dict[str, int] = {}
        self._name_at: dict[int, str] = {}
        self._updates: list[int] = []
        # How many more peers each live update number is passed on to (`row_sends`); at 0 it leaves the walk.
        self._sends_left: dict[int, int] = {}
        # Senders whose rows already spent a send of each update (`_spend_by`: once per sender).
        self._spent_by: dict[int, set[str]] = {}
        # Update numbers that bring a member's first coordinate here (not rationed by `_row_allowance`).
        self._first_seqs: set[int] = set()
        self._row_allowance: TokenBucket | None = None  # ROW_RATE, made at the first `rows_for` (it needs a time)
        self._cursor: dict[str, int] = {}
        self._tables: dict[str, float] = {}
        # Each held coordinate as it last entered the walk, and when: a change passes on only when noticeable.
        self._walked: dict[str, tuple[Coordinate, float, float]] = {}  # ..., and when we first held it
        # Our own coordinate as each peer last got it on an ack from us, and when.
        self._own_sent: dict[str, tuple[Coordinate, float]] = {}
        # Peers that got a second-hand coordinates message from us since they (re)appeared: they know we read
        # them (else a peer we probe would keep offering, packet by packet).
        self._told: set[str] = set()
        # Peers that read coordinates, not yet known to read the compact form, that got ours in it once, in a
        # packet of its own (`compact_offer_due`): a member of this release answers in the compact form.
        self._compact_offered: set[str] = set()
        self._zones: dict[str, str | None] = {}
        self._threshold: float | None = None
        self._threshold_at = -math.inf
        self._message: tuple[Coordinate, NetCoordinate, NetCoordinate] | None = None

    # -- coordinates ---------------------------------------------------------------------------------------
    @property
    def coordinate(self) -> Coordinate:
        """This member's own coordinate."""
        return self.client.coordinate

    @property
    def coordinate_error(self) -> float:
        return self.client.coordinate.error

    @property
    def coordinates_known(self) -> int:
        return len(self._coordinates)

    def rejections(self) -> dict[str, int]:
        """Refused coordinates and RTT samples by reason (for metrics)."""
        out = {str(reason): n for reason, n in self.client.stats.rejected.items()}
        if self.stats["coordinates_over_cap"]:
            out["over_cap"] = self.stats["coordinates_over_cap"]
        return out

    def peer_class(self, meta: Mapping[str, str]) -> str:
        """same_zone, cross_zone, or unknown (either zone not known): the label of traffic to that member."""
        same = self.same_zone(meta)
        return "unknown" if same is None else "same_zone" if same else "cross_zone"

    def coordinate_message(self, compact: bool = False) -> NetCoordinate:
        """Our coordinate as it travels, in the compact wire form (`compact`, to a reader of it) or the older
        one: rounded to half floats either way (the compact form's precision, core/codec.py; float32 holds
        them exactly), so every receiver decodes the same values and the message equals what it decodes.
        Built once per coordinate change."""
        c = self.client.coordinate
        cached = self._message
        if cached is None or cached[0] is not c:
            *vec, height, error, adjustment = half_rounded((*c.vec, c.height, c.error, c.adjustment))
            wide = NetCoordinate(tuple(vec), height, error, adjustment)
            cached = self._message = (c, wide, dataclasses.replace(wide, compact=True))
        return cached[2] if compact else cached[1]

    def reads_coordinates(self, peer: str) -> bool:
        """`peer` has sent us a coordinate: it reads them, so ours may share its packets."""
        return self._readers.reads(peer, COORDINATES)

    def reads_rows(self, peer: str) -> bool:
        """`peer` has sent us second-hand coordinates: rows may share its packets."""
        return self._readers.reads(peer, PEER_COORDINATES)

    def reads_compact(self, peer: str) -> bool:
        """`peer` has sent us a coordinate or rows in the compact form (types 20, 21): ours go to it so."""
        return self._readers.reads(peer, COMPACT)

    def compact_offer_due(self, peer: str) -> bool:
        """Whether ours in the compact form goes to `peer` now, in a packet of its own (an older agent drops
        it alone; a member of this release reads the form from then on and answers in it, on its acks): once
        per peer that reads coordinates and has not shown the compact form, until it is reset or forgotten.
        Without the offer two members of this release would each wait for the other to show it first."""
        if not self.reads_coordinates(peer) or self.reads_compact(peer) or peer in self._compact_offered:
            return False
        if len(self._compact_offered) < self.max_peers:
            self._compact_offered.add(peer)
        return True

    def on_coordinate(self, peer: str, msg: NetCoordinate, now: float, *, shows: bool = True) -> bool:
        """A coordinate `peer` (a live member of our table: the caller checks) sent. Checked by
        `VivaldiClient.accept` (a refusal is counted in `client.stats.rejected` and loses nothing else);
        True if it was kept. `shows`: the packet may raise `peer`'s reader level (it came from its host)."""
        if shows:
            self._readers.show(peer, COMPACT if msg.compact else COORDINATES)
        checked = self.client.accept(msg.vec, msg.height, msg.error, msg.adjustment)
        if checked is None:
            self.stats["coordinates_rejected"] += 1
            return False
        kept = self._keep(peer, checked, now)
        if kept:
            self._first_hand[peer] = now
        return kept

    def _keep(self, name: str, checked: Coordinate, as_of: float) -> bool:
        if name not in self._coordinates and len(self._coordinates) >= self.max_peers:
            self.stats["coordinates_over_cap"] += 1
            return False
        self._coordinates[name] = checked
        self._as_of[name] = as_of
        walked = self._walked.get(name)
        if walked is None or as_of < walked[2] + ROW_YOUNG or moved_noticeably(
                walked[0], checked, estimate_rtt(self.client.coordinate, checked), ROW_MOVE_FLOOR):
            self._walked[name] = (checked, as_of, as_of if walked is None else walked[2])
            self._note_update(name, first=walked is None)
        else:
            self.stats["rows_held_back"] += 1
        return True

    def _note_update(self, name: str, *, first: bool = False) -> None:
        """`name`'s coordinate changed here: it goes to the end of every peer's walk. `first`: the first
        coordinate of `name` we hold (a pending first one stays first when a move replaces it)."""
        old = self._seq_of.pop(name, None)
        if old is not None and self._retire(old):
            first = True
        self._update_seq += 1
        if first:
            self._first_seqs.add(self._update_seq)
        self._seq_of[name] = self._update_seq
        self._name_at[self._update_seq] = name
        self._sends_left[self._update_seq] = row_sends(len(self._coordinates) + 1)
        self._updates.append(self._update_seq)
        if len(self._updates) > 2 * len(self._name_at) + 64:  # compaction: stale numbers out
            self._updates = [q for q in self._updates if q in self._name_at]

    def on_rows(self, sender: str, msg: PeerCoordinates, now: float, is_member: Callable[[str], bool],
                self_name: str, *, shows: bool = True) -> int:
        """Second-hand coordinates `sender` (a live member of our table: the caller checks) passed on. A row is
        kept only for a member `is_member` admits (the Node: a live member of its table) other than us, if its
        numbers pass `VivaldiClient.accept` and it is fresher than what we hold (never an older one over a
        first-hand coordinate) and differs from it (an echo is no change: else it would go round the walks again
        and again); returns how many were kept. The codec bounded the rows. `shows` as in `on_coordinate`."""
        if shows:
            self._readers.show(sender, COMPACT if msg.compact else PEER_COORDINATES)
        kept = 0
        for name, coord, age in msg.rows:
            if name == self_name or not is_member(name):
                self.stats["rows_unknown_member"] += 1
                continue
            if shows:
                self._known_by(name, sender)
            if name == sender or now < self._first_hand.get(name, -math.inf) + FIRST_HAND_HOLD:
                # Its own coordinate a member sends first-hand (type 14), never as a row; and a coordinate just
                # measured first-hand stands against any row's claim of freshness (FIRST_HAND_HOLD).
                self.stats["rows_first_hand_held"] += 1
                continue
            as_of = now - age
            if as_of <= self._as_of.get(name, -math.inf):
                self.stats["rows_not_fresher"] += 1
                continue
            checked = self.client.accept(coord.vec, coord.height, coord.error, coord.adjustment)
            if checked is None:
                self.stats["rows_rejected"] += 1
                continue
            if self._coordinates.get(name) == checked:
                # An echo (of what we passed on, looking fresher by its way back): no change to pass on again;
                # and one peer fewer that needs it from us (the sender holds it), so our pending change of it
                # spends a send: once most peers hold a change, its echoes end its spread early (a rumor's
                # loss of interest after unneeded contacts, in Demers et al.'s epidemic algorithms).
                self._as_of[name] = as_of
                self.stats["rows_unchanged"] += 1
                seq = self._seq_of.get(name)
                if shows and seq is not None and seq not in self._first_seqs:  # (a first: spent by _known_by)
                    self._spend_by(seq, name, sender)
                continue
            if self._keep(name, checked, as_of):
                kept += 1
        self.stats["rows_kept"] += kept
        return kept

    def _row(self, name: str, now: float) -> tuple[str, NetCoordinate, float]:
        c = self._coordinates[name]
        return name, NetCoordinate(tuple(c.vec), c.height, c.error, c.adjustment), max(0.0, now - self._as_of[name])

    def rows_for(self, peer: str, now: float, limit: int = ROWS_PER_PACKET) -> PeerCoordinates | None:
        """The next few coordinates that changed here since `peer` was last sent rows (oldest change first; see
        the module docstring); None when it has had every change."""
        cursor = self._cursor.get(peer, 0)
        updates = self._updates
        i = bisect.bisect_right(updates, cursor)
        rows: list[tuple[str, NetCoordinate, float]] = []
        bucket = self._row_allowance
        if bucket is None:
            bucket = self._row_allowance = TokenBucket(Rate(ROW_RATE, ROW_BURST), now)
        while i < len(updates) and len(rows) < limit:
            seq = updates[i]
            name = self._name_at.get(seq)
            i += 1
            if name is None:
                continue
            cursor = seq
            if name == peer:
                continue
            if seq not in self._first_seqs and not bucket.take(1.0, now):
                # A move over the allowance is skipped for this peer (its sends are not spent): it may reach it
                # from another keeper, with its next move, or first-hand; a first coordinate behind it is not
                # held up.
                self.stats["rows_rationed"] += 1
                continue
            rows.append(self._row(name, now))
            self._spend_send(seq, name)
        if len(self._cursor) < self.max_peers or peer in self._cursor:
            self._cursor[peer] = cursor
        return PeerCoordinates(tuple(rows), self.reads_compact(peer)) if rows else None

    def _known_by(self, name: str, sender: str) -> None:
        """`sender` sent us a row about `name`: it holds a coordinate of it, so our pending FIRST coordinate of
        `name` needs one send fewer (a rumor's loss of interest after an unneeded contact). At a start, when
        every member owes every first coordinate to `row_sends` peers, most of them already hold it."""
        seq = self._seq_of.get(name)
        if seq is not None and seq in self._first_seqs:
            self._spend_by(seq, name, sender)

    def _spend_by(self, seq: int, name: str, sender: str) -> None:
        """What a row from `sender` told us spends a send of update `seq`, once per sender: a message repeating
        one row (the codec allows 16 rows, names may repeat) must not end a change's spread on its own. Only
        packets from the sender's own host get here (`shows`), so made-up names do not count either."""
        spent = self._spent_by.setdefault(seq, set())
        if sender in spent:
            return
        spent.add(sender)
        self._spend_send(seq, name)

    def _spend_send(self, seq: int, name: str) -> None:
        """Update `seq` (of `name`) went to one more peer; after its last send it leaves every walk."""
        left = self._sends_left.get(seq, 1) - 1
        if left > 0:
            self._sends_left[seq] = left
            return
        self._retire(seq)
        if self._seq_of.get(name) == seq:
            del self._seq_of[name]

    def _retire(self, seq: int) -> bool:
        """Update `seq` leaves every walk (the caller unlinks its name's `_seq_of`); True if it brought a first
        coordinate."""
        self._name_at.pop(seq, None)
        self._sends_left.pop(seq, None)
        self._spent_by.pop(seq, None)
        if seq in self._first_seqs:
            self._first_seqs.discard(seq)
            return True
        return False

    def own_on_ack(self, peer: str, now: float) -> bool:
        """Whether our coordinate rides on an ack to `peer` (a reader of coordinates): the first time, then
        only once it moved noticeably since `peer` last got it (`moved_noticeably`, at the scale of our
        distance to it) or OWN_REFRESH after. Between, the prober times its probe against the coordinate it
        holds, within that bound of ours: Vivaldi moves a coordinate a little at every sample, and an ack
        paid ~40 bytes for each."""
        sent = self._own_sent.get(peer)
        c = self.client.coordinate
        if sent is not None and now < sent[1] + OWN_REFRESH:
            remote = self._coordinates.get(peer)
            if remote is None or not moved_noticeably(sent[0], c, estimate_rtt(c, remote), OWN_MOVE_FLOOR,
                                                      share=OWN_MOVE, error_share=OWN_MOVE_ERROR):
                self.stats["own_coordinate_held_back"] += 1
                return False
        if len(self._own_sent) < self.max_peers or peer in self._own_sent:
            self._own_sent[peer] = (c, now)
        return True

    def rows_on_ack(self, peer: str, now: float, carry: bool) -> PeerCoordinates | None:
        """Rows for an ack to `peer` (a reader of rows): the next ones if `carry` (the piggyback rule), and
        an empty message once if it never had one from us, so it learns that we read them and stops offering."""
        rows = self.rows_for(peer, now) if carry else None
        if rows is None and peer not in self._told:
            rows = PeerCoordinates((), self.reads_compact(peer))
        if len(self._told) < self.max_peers:
            self._told.add(peer)
        return rows

    def table_for(self, peer: str, now: float, self_name: str, per_message: int) -> list[PeerCoordinates]:
        """A joiner's first table: every coordinate we hold (ours first, at most MAX_TABLE_ROWS), in
        messages of `per_message` rows; nothing if we sent `peer` one less than TABLE_INTERVAL ago."""
        if now < self._tables.get(peer, -math.inf) + TABLE_INTERVAL:
            return []
        if len(self._tables) >= self.max_peers:
            self._tables.clear()
        self._tables[peer] = now
        c = self.client.coordinate
        rows = [(self_name, NetCoordinate(tuple(c.vec), c.height, c.error, c.adjustment), 0.0)]
        rows += [self._row(n, now) for n in self._coordinates if n != peer][:MAX_TABLE_ROWS - 1]
        self._cursor[peer] = self._update_seq  # it has them all now: the walk goes on from here
        compact = self.reads_compact(peer)
        return [PeerCoordinates(tuple(rows[i:i + per_message]), compact) for i in range(0, len(rows), per_message)]

    def observe_rtt(self, peer: str, rtt: float, now: float, rng: Rng, near: bool | None = None) -> float | None:
        """A measured round trip (seconds) to `peer`: moves our coordinate toward agreement with it.

        `near`: whether `peer` is near (`is_near`), None while no topology is known (uniform choice: every
        sample weighs 1); a far sample weighs as `FarSampleWeight` says. Returns the relative error
        |estimate - rtt| / rtt of the estimate made just before the update (what the metrics report as
        estimate vs measured), or None if the sample could not be used (no coordinate of the peer yet, or a
        refused RTT, counted)."""
        remote = self._coordinates.get(peer)
        if remote is None:
            self.stats["rtt_without_coordinate"] += 1
            return None
        before = estimate_rtt(self.client.coordinate, remote)
        weight = 1.0 if near is None else self.far_weight.observe(near)
        if self.client.update(peer, remote, rtt, rng, weight) is not None:
            return None
        if now >= self._threshold_at + THRESHOLD_REFRESH:
            self._refresh_threshold(now)
        return abs(before - rtt) / rtt if rtt > 0 else None

    def coordinate_of(self, name: str, self_name: str) -> Coordinate | None:
        if name == self_name:
            return self.client.coordinate
        return self._coordinates.get(name)

    def coordinates(self) -> Mapping[str, Coordinate]:
        """Peers' last known coordinates (read-only view)."""
        return self._coordinates

    def estimate(self, a: str, b: str, self_name: str) -> float | None:
        """Estimated RTT between members `a` and `b` (seconds); None if either coordinate is unknown."""
        ca, cb = self.coordinate_of(a, self_name), self.coordinate_of(b, self_name)
        if ca is None or cb is None:
            return None
        return 0.0 if a == b else estimate_rtt(ca, cb)

    def drop_coordinate(self, peer: str) -> None:
        """A member now dead or left: its coordinate goes (the caller then takes none for it, first- or
        second-hand, until it is alive again), so no estimate, row or /v1/coordinates entry keeps it alive.
        What it was sent (cursor, reader level) stays until it is reaped (`forget`)."""
        self._coordinates.pop(peer, None)
        self._as_of.pop(peer, None)
        self._first_hand.pop(peer, None)
        self._walked.pop(peer, None)
        seq = self._seq_of.pop(peer, None)
        if seq is not None:
            self._retire(seq)
        self.client.forget(peer)

    def forget(self, peer: str) -> None:
        """A reaped member: drop all we know about it."""
        self.drop_coordinate(peer)
        self._cursor.pop(peer, None)
        self._tables.pop(peer, None)
        self._told.discard(peer)
        self._own_sent.pop(peer, None)
        self._compact_offered.discard(peer)
        self._readers.forget(peer)

    def assume_reader(self, peer: str) -> None:
        """Treat `peer` as reading coordinates, in the compact form too, without an offer: the simulator's
        converged start (`Simulation.start_joined`), standing for a cluster that has run longer than one probe
        pass (whose first acks exchanged the compact form: `compact_offer_due`)."""
        self._readers.show(peer, COMPACT)

    def resend_own(self, peer: str) -> None:
        """Our coordinate rides on the next ack to `peer` whatever it moved (it may have lost the one we sent)."""
        self._own_sent.pop(peer, None)

    def recheck_compact(self, peer: str) -> None:
        """A newer incarnation of `peer`, never suspected (perhaps a restart between our probes, on an earlier
        release: a rollback at the same address): the compact forms go to it again only once it shows them, so
        an older agent does not drop our probes and acks whole until a suspicion resets it. It gets our
        compact offer at the next ack (`compact_offer_due`); a member of this release answers in the form."""
        self._readers.cap(peer, COMPACT - 1)
        self._compact_offered.discard(peer)

    def offer_again(self, peer: str) -> None:
        """A member back from suspicion or death, or at a new address (perhaps an older release now): it gets
        coordinates only in packets of their own again until it sends one."""
        self._readers.reset(peer)
        self._told.discard(peer)
        self._own_sent.pop(peer, None)
        self._compact_offered.discard(peer)

    def _refresh_threshold(self, now: float) -> None:
        local = self.client.coordinate
        estimates: list[float | None] = [estimate_rtt(local, c) for c in self._coordinates.values()]
        self._threshold = near_rtt_threshold(estimates, self.policy) if estimates else None
        self._threshold_at = now

    # -- zones ---------------------------------------------------------------------------------------------
    def set_local_zone(self, zone: str | None) -> bool:
        """Our zone changed (the zone file was rewritten); True if it differs. `zone` is already validated."""
        if zone == self.local_zone:
            return False
        self.local_zone = zone
        return True

    def zone_of(self, meta: Mapping[str, str]) -> str | None:
        """A member's zone from its metadata, validated (an invalid one is counted and treated as unknown)."""
        raw = meta.get(ZONE_META_KEY)
        if raw is None:
            return None
        try:
            return self._zones[raw]
        except KeyError:
            pass
        try:
            zone = parse_zone(raw)
        except ValueError:
            self.stats["zones_invalid"] += 1
            zone = None
        if len(self._zones) >= _ZONE_CACHE:
            self._zones.clear()
        self._zones[raw] = zone
        return zone

    def same_zone(self, meta: Mapping[str, str]) -> bool | None:
        """True/False when both zones are known, else None."""
        if self.local_zone is None:
            return None
        zone = self.zone_of(meta)
        return None if zone is None else zone == self.local_zone

    # -- peer choice ---------------------------------------------------------------------------------------
    def active(self) -> bool:
        """Whether the choice differs from uniform: aware mode, and a zone or some coordinate is known."""
        return self.mode == "aware" and (self.local_zone is not None or self._threshold is not None)

    def is_near(self, name: str, meta: Mapping[str, str]) -> bool:
        same = self.same_zone(meta)
        if same is not None:
            return same
        threshold, remote = self._threshold, self._coordinates.get(name)
        if threshold is None or remote is None:
            return False  # unknown is not evidence of nearness: far picks are the ones that keep mixing
        return estimate_rtt(self.client.coordinate, remote) <= threshold

    def piggybacks_to(self, name: str, meta: Mapping[str, str], rng: Rng) -> bool:
        """Whether rumors ride on a probe or ack to this member: always to a near one, with probability f to
        a far one -- the same share of far transmissions as the choice of gossip peers. Probe targets are
        round-robin (bounded detection time), so two thirds of them are far with three zones; without this
        rule their piggybacked rumors would carry most cross-zone bytes under writes."""
        return self.is_near(name, meta) or rng.random() < self.policy.cross_zone_fraction

    def choose(self, order: Sequence[str], k: int, rng: Rng, eligible: Callable[[str], T | None],
               meta_of: Callable[[T], Mapping[str, str]]) -> list[T]:
        """Up to k distinct eligible members of `order`: about (1 - f) * k near and f * k far ones
        (core/topology.py's rule, far_pick_count), each uniformly within its class.

        Rejection sampling over `order` (O(k) draws, not O(N)); a class that stays short after its draws is
        filled from the other (as choose_peers does), and small clusters are scanned in full."""
        if not order or k <= 0:
            return []
        n_far = far_pick_count(k, self.policy.cross_zone_fraction, rng)
        wanted = {True: k - n_far, False: n_far}
        taken = {True: 0, False: 0}
        chosen: dict[str, T] = {}
        spare: dict[str, T] = {}
        size = len(order)

        def consider(name: str) -> None:
            """Place an eligible member not yet looked at: chosen while its class wants more, else spare."""
            if name in chosen or name in spare or (member := eligible(name)) is None:
                return
            near = self.is_near(name, meta_of(member))
            if taken[near] < wanted[near]:
                chosen[name] = member
                taken[near] += 1
            else:
                spare[name] = member

        for _ in range(_DRAWS_PER_PICK * k + 4):
            if len(chosen) >= k:
                break
            consider(order[int(rng.random() * size)])
        if len(chosen) < k and size <= _SCAN_BELOW:
            for name in order:
                consider(name)
        for name, member in spare.items():  # the short class is filled from the other
            if len(chosen) >= k:
                break
            chosen[name] = member
        return list(chosen.values())

    def choose_one(self, names: Sequence[str], rng: Rng, meta_of: Callable[[str], Mapping[str, str] | None]
                   ) -> str | None:
        """One member of `names` (an anti-entropy partner): far with probability f, else near; uniform when
        `active()` is False (one draw, as a plain random choice)."""
        if not names:
            return None
        if not self.active():
            return names[int(rng.random() * len(names))]
        picked = self.choose(names, 1, rng, lambda name: name, lambda name: meta_of(name) or {})
        return picked[0] if picked else None
