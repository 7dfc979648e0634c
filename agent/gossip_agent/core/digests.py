"""Convergence digests: which root every member holds, versioned per member and reconciled by sequence.

Why not member metadata: a metadata change bumps the member's incarnation and spreads an Alive rumor that
every agent retransmits retransmitMult*ceil(log10(N+1)) times; under writes that made convergence monitoring
cost more than replication. A digest instead lives in this table, one row per member, and packets carry a few
rows in a fixed byte allowance (Scuttlebutt-style): a row replaces ours only when its sequence number is
higher, so repeats and reorderings are harmless and nothing is ever retransmitted as such.

How rows spread, cheapest first:
- a changed row is pushed FRESH_SENDS times by every member that learns it (epidemic: most members learn it
  within a few gossip rounds), less one for every other peer that pushed the same version to it (the
  epidemic is ahead there: at N = 50 under writes seven row receipts in ten were such duplicates);
- the members it missed are found by reconciliation, not by re-sending rows: for SUMMARY_PINGS packets after
  its table last changed (and once it has nothing fresh left to push) a member's probes, acks and one gossip
  packet a round carry a summary of its table, SUMMARY_ROWS_PER_BUCKET rows to a 16-bit checksum of (name,
  seq, root). The receiver answers only the buckets that differ, with its rows of those buckets and its own
  summary; the asker then sends the rows the other one still lacks (not those the answer just carried). A
  straggler is caught up in one round
  trip, and an idle, agreeing cluster sends neither rows nor summaries;
- a row older than ours from a peer means that peer is behind: we owe it ours (sent in the next packet to it);
- a joiner gets the whole table from the member that answers its join push-pull, in packets of digests
  alone beside the stream (the stream's format is older agents': a fourth element would break their
  decoder), and only to the host the stream came from (else a forged join would make us a reflector).

Wire: a row is [9, name, seq, root prefix, keys, seq - hlc_ms], a summary [9, checksums, reply] (message type 9
with two fields). Older agents drop a whole packet with a type they do not know, so digests share packets only
with peers that sent digests (Node._digest_readers); others get ours in packets apart.

Hostile input: rows are bounded in count (`max_rows`, names the Node knows only), a sequence number may not
run ahead of the receiver's wall clock by more than SEQ_SLACK_MS (a forged row with seq 2^63-1 would freeze a
member's row for good), and a member that hears a row about itself numbered at or above its own republishes
its own above it (the owner's word wins, as with an incarnation refutation). Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from gossip_agent.core.messages import Digest, DigestSummary

ROOT_PREFIX_BYTES = 8
"""Bytes of the Merkle root a digest carries: equal roots are all convergence compares, and a 64-bit prefix
collides by chance with probability 2^-64 per comparison."""
FRESH_SENDS = 3
"""Packets a changed row rides in at each member that learns it: with three pushes per member an epidemic
misses about e^-3 (5 %) of the members, and reconciliation finds those in a probe round trip."""
OWN_SENDS = FRESH_SENDS
"""Packets our own new row rides in."""
DIGEST_ALLOWANCE = 480
"""Bytes of a piggybacking packet at most given to digests (about fourteen rows with names of ~20 bytes)."""
REPAIR_ALLOWANCE = 1200
"""Bytes of digests in a packet of their own (a reconciliation answer that did not fit a reply)."""
SUMMARY_PINGS = 8
"""Probes that carry a summary after the table's last change: enough for every member that missed a change
to be probed by (or to probe) one that has it, while an idle table sends none."""
SUMMARY_ROWS_PER_BUCKET = 4
MAX_SUMMARY_BUCKETS = 64
"""Bound on a summary's buckets (two bytes each): at most 128 B on a probe, whatever the cluster size."""
SEQ_SLACK_MS = 10 * 60 * 1000
"""How far a row's sequence number (its owner's wall clock in ms when it published) may run ahead of ours:
ten minutes of clock skew; a row beyond is refused and counted, so a forged huge number cannot freeze a row."""
KNOWN_MAX = 64
"""Peers remembered per fresh row as holding it (bounded whatever the cluster size)."""
MAX_SEQ = (1 << 63) - 1
MAX_KEYS = (1 << 63) - 1
MAX_HLC_MS = (1 << 63) - 1


class Merge(Enum):
    """What merging one row did."""

    NEW = "new"            # newer than ours: taken
    SAME = "same"          # the version we hold
    OLDER = "older"        # older than ours: the sender is behind (we owe it ours)
    REFUSED = "refused"    # table full, or a sequence number too far ahead
    ABOUT_ME = "about_me"  # a row about us: never taken (ours was republished above it if it was not older)


@dataclass(slots=True)
class _Row:
    digest: Digest
    fresh: int   # pushes left
    order: int   # when it last changed here (higher: fresher)
    check: int   # 16-bit checksum of (name, seq, root)
    bucket: int  # a 32-bit hash of the name: bucket = bucket % buckets
    # Peers known to hold this version while it is fresh (the one that sent it to us, those that sent it again,
    # those we pushed it to): a push skips their packets and goes to another peer's. At most KNOWN_MAX.
    known: set[str] = field(default_factory=set)


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _row_check(d: Digest) -> int:
    return _hash(b"%s\x00%d\x00%s" % (d.name.encode(), d.seq, d.root)) & 0xFFFF


def _name_hash(name: str) -> int:
    return _hash(name.encode()) & 0xFFFFFFFF


def summary_buckets(rows: int) -> int:
    """Buckets of a summary of a table of `rows` rows."""
    return max(1, min(MAX_SUMMARY_BUCKETS, math.ceil(rows / SUMMARY_ROWS_PER_BUCKET)))


def root_prefix(root_hex: str) -> bytes:
    """The digest form of a 64-hex-digit Merkle root."""
    return bytes.fromhex(root_hex)[:ROOT_PREFIX_BYTES]


class DigestTable:
    """Every known member's latest digest (ours included), plus the rows we owe particular peers. Bounded by
    `max_rows`: a row for an unknown member beyond it is refused (counted by the caller), so forged names
    cannot grow it; what we owe is kept only for peers the caller names, as names of rows we hold."""

    def __init__(self, me: str, max_rows: int) -> None:
        self.me = me
        self.max_rows = max_rows
        self._rows: dict[str, _Row] = {}
        self._clock = 0      # change counter: orders rows by freshness
        self._fresh = 0      # rows with fresh sends left
        self._summaries_left = 0
        self._owed: dict[str, set[str]] = {}
        self.pushes_spared = 0  # pushes spent without a byte (the peer held the version): for metrics
        self.duplicates_heard = 0  # pushes given up because a peer pushed us the same version: for metrics
        # Wall-clock reference (node time, ms) from our last publication: bounds the sequence numbers we take.
        self._wall_ref: tuple[float, int] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def get(self, name: str) -> Digest | None:
        row = self._rows.get(name)
        return None if row is None else row.digest

    def rows(self) -> Iterator[Digest]:
        return (row.digest for row in self._rows.values())

    # -- our own row --------------------------------------------------------------------------------------
    def publish(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int = 0,
                now: float | None = None) -> Digest | None:
        """Our replica's state: a new own row (None if it equals the current one). The sequence number is
        above both our previous one and `seq_floor` (the driver passes the wall time in ms, so a restarted
        member, whose table starts empty, still numbers above what it published before). With `now` (the
        caller's monotonic time), `seq_floor` is also taken as the wall clock that bounds peers' numbers."""
        if now is not None and seq_floor > 0:
            self._wall_ref = (now, seq_floor)
            self._drop_beyond(self.seq_bound(now))
        root = root_prefix(root_hex)
        old = self.get(self.me)
        if old is not None and (old.root, old.keys, old.hlc_ms) == (root, keys, hlc_ms):
            return None
        return self._publish_own(root, keys, hlc_ms, seq_floor)

    def _publish_own(self, root: bytes, keys: int, hlc_ms: int, seq_floor: int) -> Digest:
        old = self.get(self.me)
        seq = min(MAX_SEQ, max(seq_floor, 0 if old is None else old.seq + 1))
        digest = Digest(self.me, seq, root, min(keys, MAX_KEYS), min(hlc_ms, MAX_HLC_MS))
        self._put(digest, OWN_SENDS)
        return digest

    def observe_wall(self, now: float, wall_ms: int) -> None:
        """The wall clock read `wall_ms` at `now` (the driver tells the Node before each tick): peers' numbers
        are bounded from then on, also on an agent that never publishes a digest of its own (without this a
        single forged row numbered 2^63 - 1 froze a member's row there until it was reaped)."""
        first = self._wall_ref is None
        self._wall_ref = (now, wall_ms)
        if first:
            self._drop_beyond(self.seq_bound(now))

    def _drop_beyond(self, bound: int) -> None:
        """Rows numbered past `bound` (taken before we knew the wall clock) go: the next honest row is new."""
        for name in [n for n, r in self._rows.items() if r.digest.seq > bound and n != self.me]:
            self.forget(name)

    def seq_bound(self, now: float) -> int:
        """The highest sequence number we take at `now`: our wall clock plus SEQ_SLACK_MS (MAX_SEQ before we
        published with a wall-clock reference)."""
        if self._wall_ref is None:
            return MAX_SEQ
        then, wall_ms = self._wall_ref
        return min(MAX_SEQ, wall_ms + max(0, int((now - then) * 1000)) + SEQ_SLACK_MS)

    # -- peers' rows --------------------------------------------------------------------------------------
    def merge(self, digest: Digest, *, now: float | None = None, sender: str | None = None) -> Merge:
        """A row heard from a peer. Rows about us are never taken: one numbered above ours, or as ours but not
        ours (forged, or from before a restart), makes us republish ours above it. Rows past `max_rows` or
        numbered beyond `seq_bound(now)` are refused."""
        if now is not None and digest.seq > self.seq_bound(now):
            return Merge.REFUSED
        old = self._rows.get(digest.name)
        if digest.name == self.me:
            if old is not None and (digest.seq > old.digest.seq or (digest.seq == old.digest.seq
                                                                     and digest != old.digest)):
                d = old.digest
                self._publish_own(d.root, d.keys, d.hlc_ms, digest.seq + 1)
            return Merge.ABOUT_ME
        if old is not None:
            if digest.seq < old.digest.seq:
                return Merge.OLDER
            if digest.seq == old.digest.seq:
                if sender is not None and old.fresh > 0 and sender not in old.known:
                    # A peer pushed us the version we are pushing: the epidemic is ahead of us. That counts
                    # as one of our pushes (loss of interest on duplicates, as in Demers et al.'s rumor
                    # mongering): the rows an epidemic spends go down without it missing more members.
                    if len(old.known) < KNOWN_MAX:
                        old.known.add(sender)
                    old.fresh -= 1
                    self.duplicates_heard += 1
                    if not old.fresh:
                        self._fresh -= 1
                        old.known.clear()
                return Merge.SAME
        elif len(self._rows) >= self.max_rows:
            return Merge.REFUSED
        self._put(digest, FRESH_SENDS)
        if sender is not None:
            self._rows[digest.name].known.add(sender)
        return Merge.NEW

    def forget(self, name: str) -> bool:
        """A member was reaped: its row goes (it would otherwise circulate forever), and so does what we owed
        it or owed others of its row."""
        self._owed.pop(name, None)
        for peer in [p for p, names in self._owed.items() if name in names]:
            self._owed[peer].discard(name)
            if not self._owed[peer]:
                del self._owed[peer]
        row = self._rows.pop(name, None)
        if row is not None and row.fresh > 0:
            self._fresh -= 1
        return row is not None

    def _put(self, digest: Digest, sends: int) -> None:
        self._clock += 1
        row = self._rows.pop(digest.name, None)  # re-insert: dict order is the order of change
        check = _row_check(digest)
        if row is None:
            row = _Row(digest, sends, self._clock, check, _name_hash(digest.name))
        else:
            if row.fresh > 0:
                self._fresh -= 1
            row.digest, row.fresh, row.order, row.check = digest, sends, self._clock, check
            row.known.clear()
        if sends > 0:
            self._fresh += 1
        self._summaries_left = SUMMARY_PINGS
        self._rows[digest.name] = row

    def has_fresh(self) -> bool:
        """Some row changed lately and still wants pushing."""
        return self._fresh > 0

    # -- reconciliation -----------------------------------------------------------------------------------
    def summary(self, reply: bool, buckets: int | None = None) -> DigestSummary:
        """Our table in a few bytes: per bucket of names, the XOR of its rows' 16-bit checksums."""
        n = summary_buckets(len(self._rows)) if buckets is None else buckets
        sums = [0] * n
        for row in self._rows.values():
            sums[row.bucket % n] ^= row.check
        return DigestSummary(b"".join(s.to_bytes(2, "big") for s in sums), reply)

    def summary_due(self) -> bool:
        """A probe should carry our summary: the table changed within the last SUMMARY_PINGS probes and has
        nothing fresh left to push (while it does, differences are expected and pushes are on their way)."""
        return self._summaries_left > 0 and not self._fresh and bool(self._rows)

    def summary_sent(self) -> None:
        self._summaries_left = max(0, self._summaries_left - 1)

    def reconcile(self, peer: str, summary: DigestSummary, heard: Collection[str] = ()) -> bool:
        """A peer's summary: we owe it our rows of every bucket whose checksum differs from ours, except the
        rows of `heard` (names whose row came in the summary's own packet and left us holding the peer's
        version: an answer to our summary carries the peer's rows of the differing buckets, and sending those
        back was most of what reconciliation cost under writes). True if any bucket differs (then the peer
        lacks something, or we do)."""
        n = len(summary.buckets) // 2
        if n == 0:
            return False
        mine = self.summary(False, n).buckets
        differing = {i for i in range(n) if mine[2 * i:2 * i + 2] != summary.buckets[2 * i:2 * i + 2]}
        if not differing:
            return False
        self.owe(peer, (name for name, row in self._rows.items() if row.bucket % n in differing
                        and name not in heard))
        return True

    def owe(self, peer: str, names: Iterable[str]) -> None:
        """Send `peer` our rows of `names` at the next chance."""
        owed = self._owed.setdefault(peer, set())
        owed.update(name for name in names if name in self._rows)
        if not owed:
            del self._owed[peer]

    def owes(self, peer: str) -> bool:
        return peer in self._owed

    def forget_peer(self, peer: str) -> None:
        """Nothing more owed to `peer` (it stopped being one we send digests to)."""
        self._owed.pop(peer, None)

    # -- choosing rows ------------------------------------------------------------------------------------
    def select(self, budget: int, size: Callable[[Digest], int], *, to: str | None = None) -> list[Digest]:
        """Rows for one packet to `to`, within `budget` bytes (`size` gives a row's exact wire size): the rows
        we owe `to` first, then fresh rows (newest change first, each push counted). Each row at most once."""
        if budget <= 0 or not self._rows:
            return []
        out: list[Digest] = []
        owed = self._owed.get(to) if to is not None else None
        if owed:
            for name in sorted(owed, key=lambda k: -self._rows[k].order):
                d = self._rows[name].digest
                n = size(d)
                if n > budget:
                    break
                budget -= n
                out.append(d)
                owed.discard(name)
            if not owed:
                del self._owed[to]  # type: ignore[arg-type]
        if not self._fresh:
            return out
        chosen = {d.name for d in out}
        fresh = sorted((r for r in self._rows.values() if r.fresh > 0), key=lambda r: -r.order)
        for row in fresh:
            # To a peer that holds this version (it sent it to us, or we pushed it there, or it is the row's
            # owner) the push is spent without a byte: the epidemic keeps its pace, minus the waste.
            held = to is not None and (to in row.known or to == row.digest.name)
            n = 0 if held else size(row.digest)
            if n > budget:
                continue
            budget -= n
            row.fresh -= 1
            if not row.fresh:
                self._fresh -= 1
                row.known.clear()
            elif to is not None and len(row.known) < KNOWN_MAX:
                row.known.add(to)
            if held:
                self.pushes_spared += 1
            elif row.digest.name not in chosen:
                out.append(row.digest)
        return out

    def all_rows(self, budget: int, size: Callable[[Digest], int]) -> list[list[Digest]]:
        """The whole table in parts of at most `budget` bytes (a joiner's first view)."""
        parts: list[list[Digest]] = [[]]
        left = budget
        for row in sorted(self._rows.values(), key=lambda r: -r.order):
            n = size(row.digest)
            if n > left and parts[-1]:
                parts.append([])
                left = budget
            parts[-1].append(row.digest)
            left -= n
        return [p for p in parts if p]


PACED_QUIET_FACTOR = 4
"""A replica's digest waits for at most this many times the base quiet (`PublishPacing`)."""
STREAM_GAP = 2.0
"""Seconds: changes that resume this soon after a publication mean it fell into a lull of a stream."""


class PublishPacing:
    """How long a replica must stay quiet before its digest is published (the state core asks; it also
    publishes at the latest `digest_max_wait` after the first unpublished change, whatever this says).

    WHY. A publication costs about 3.5 rows per member (each member that learns it pushes it FRESH_SENDS
    times): ~5 KB at N = 50, five 1 KiB writes' worth of payload. Under a steady stream on a busy host,
    deliveries bunch up and a replica sees a lull longer than the base quiet every few seconds: each lull
    published a root that the next write made stale (in the simulator at N = 50, 10 writes/s with up to 50 ms
    of jitter per packet published 95 roots where the stream's end needs 50). So after a publication that a
    lull triggered and that the writes followed within STREAM_GAP, the next one needs twice the quiet, up to
    PACED_QUIET_FACTOR times the base; a publication STREAM_GAP of quiet after the previous one starts at the
    base again, and one forced by the longest wait (a stream without a lull that long) a step lower.

    STALENESS. A replica's root is published at most base x PACED_QUIET_FACTOR (1.2 s with the state core's
    0.3 s) after its last change, and at most the base after a change that follows STREAM_GAP of quiet or a
    stream without lulls longer than the base."""

    def __init__(self, quiet: float) -> None:
        self.base = quiet
        self._level = 0
        self._lull = False  # the last publication was a lull's
        self._published_at = -math.inf

    def _level_for(self, since: float) -> int:
        """The level of a publication of the changes since `since` (the first unpublished one)."""
        if since >= self._published_at + STREAM_GAP:
            return 0
        return min(self._level + self._lull, PACED_QUIET_FACTOR.bit_length() - 1)

    def quiet(self, since: float) -> float:
        """The quiet a publication of the changes since `since` waits for."""
        return self.base * (1 << self._level_for(since))

    def published(self, now: float, since: float, *, lull: bool) -> None:
        """Our digest of the changes since `since` went out at `now`; `lull`: because the replica was quiet
        (not because the longest wait was over)."""
        level = self._level_for(since)
        # A stream that went a whole longest wait without a lull that long comes one step down.
        self._level = level if lull else max(0, level - 1)
        self._lull = lull
        self._published_at = now


MAX_DIGEST_MESSAGES = 64
"""Digest messages (rows and summaries) a member takes from one packet: an honest packet holds at most the
allowance's dozen rows and one summary; a 64 KB packet of forged ones must not buy seconds of hashing."""
REPAIR_MIN_GAP = 0.25
"""Seconds between two packets of digests of their own to one peer: a peer (or a forger using its name) that
keeps sending stale rows or odd summaries gets answers no faster than this. An honest reconciliation needs
one such packet."""
TABLE_MIN_GAP = 5.0
"""Seconds between two whole tables sent to one joiner (a join push-pull repeated, or replayed)."""
_SUMMARY_ROOM = 2 * MAX_SUMMARY_BUCKETS + 8


class DigestExchange:
    """What one member says about digests to each peer: the table, plus which peers asked for our summary and
    when we last sent one a packet of digests alone. Per-peer state is only for peers the Node knows (it
    calls `forget` on reap), so it is bounded like the table."""

    def __init__(self, table: DigestTable) -> None:
        self.table = table
        self._reply_to: set[str] = set()
        self._repaired_at: dict[str, float] = {}
        self._table_sent_at: dict[str, float] = {}
        self._told: set[str] = set()  # peers we sent digests to (they know we read them)

    def heard_summary(self, peer: str, summary: DigestSummary, heard: Collection[str] = ()) -> None:
        """A peer's summary: what differs is owed to it (but the rows of `heard`: see `DigestTable.reconcile`;
        the caller takes a packet's rows before its summary), with our summary if it asked. A peer we never sent
        digests to is answered even if nothing differs: it learns that we read them (and stops offering its
        own in packets apart)."""
        if (self.table.reconcile(peer, summary, heard) or peer not in self._told) and summary.reply:
            self._reply_to.add(peer)

    def outgoing(self, to: str, budget: int, size: Callable[[Digest], int], *,
                 ping: bool = False) -> list[Digest | DigestSummary]:
        """Digests for one packet to `to`: owed and fresh rows, then our summary if `to` asked for it (a
        reply) or, on a probe, if one is due (asking for a reply)."""
        extra: DigestSummary | None = None
        if to in self._reply_to:
            self._reply_to.discard(to)
            extra = self.table.summary(False)
        elif ping and self.table.summary_due():
            self.table.summary_sent()
            extra = self.table.summary(True)
        rows: list[Digest | DigestSummary] = list(
            self.table.select(budget - (_SUMMARY_ROOM if extra is not None else 0), size, to=to))
        if extra is not None:
            rows.append(extra)
        if rows:
            self._told.add(to)
        return rows

    def pending(self, to: str) -> bool:
        """We owe `to` rows or a summary."""
        return self.table.owes(to) or to in self._reply_to

    def repair_allowed(self, to: str, now: float) -> bool:
        """A packet of digests alone may go to `to` now (at most one per REPAIR_MIN_GAP)."""
        if now < self._repaired_at.get(to, -math.inf) + REPAIR_MIN_GAP:
            return False
        self._repaired_at[to] = now
        return True

    def table_allowed(self, to: str, now: float) -> bool:
        """The whole table may go to joiner `to` now (at most one per TABLE_MIN_GAP)."""
        if now < self._table_sent_at.get(to, -math.inf) + TABLE_MIN_GAP:
            return False
        self._table_sent_at[to] = now
        return True

    def forget(self, peer: str, *, reaped: bool = True) -> None:
        """`peer` is no longer sent digests: reaped, or (not `reaped`) no longer known to read them, when only
        what we owed it goes (the rate limits stay, or a flapping member would reset them)."""
        self.table.forget_peer(peer)
        self._reply_to.discard(peer)
        self._told.discard(peer)
        if reaped:
            self._repaired_at.pop(peer, None)
            self._table_sent_at.pop(peer, None)
