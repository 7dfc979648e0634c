"""Convergence digests: which root every member holds, versioned per member and reconciled by sequence.

Why not member metadata: a metadata change bumps the member's incarnation and spreads an Alive rumor that
every agent retransmits retransmitMult*ceil(log10(N+1)) times; under writes that made convergence monitoring
cost more than replication. A digest instead lives in this table, one row per member, and each outgoing
packet carries a few rows in a fixed byte allowance (Scuttlebutt-style): a row replaces ours only when its
sequence number is higher, so repeats and reorderings are harmless and nothing is ever retransmitted as such.

Which rows go out: those that changed recently first (each is sent FRESH_SENDS times before it is just one row
among the others: pushed on, an update spreads epidemically), then BACKGROUND_ROWS others in round-robin order,
so a member that missed an update learns it within a bounded number of packets. The round-robin runs for
BACKGROUND_CYCLES cycles of the table after the last change and then stops: an idle cluster sends no digests,
and the bytes of its probes stay what they were. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gossip_agent.core.messages import Digest

ROOT_PREFIX_BYTES = 16
"""Bytes of the Merkle root a digest carries: equal roots are all convergence compares, and a 128-bit prefix
collides by chance with negligible probability."""
FRESH_SENDS = 4
"""Packets a changed row rides in before it falls back to the round-robin: a handful of pushes spreads it
epidemically; the round-robin is the safety net for the members they missed."""
DIGEST_ALLOWANCE = 480
"""Bytes of a packet at most given to digests (about nine rows with names of ~20 bytes): fresh rows fill it
only after a change; otherwise a packet carries BACKGROUND_ROWS rows."""
BACKGROUND_ROWS = 2
BACKGROUND_CYCLES = 3
MAX_SEQ = (1 << 63) - 1
MAX_KEYS = (1 << 63) - 1
MAX_HLC_MS = (1 << 63) - 1


@dataclass(slots=True)
class _Row:
    digest: Digest
    fresh: int  # sends left at the front of the line
    order: int  # when it last changed here (higher: fresher)


def root_prefix(root_hex: str) -> bytes:
    """The digest form of a 64-hex-digit Merkle root."""
    return bytes.fromhex(root_hex)[:ROOT_PREFIX_BYTES]


class DigestTable:
    """Every known member's latest digest (ours included). Bounded by `max_rows`: a row for an unknown
    member beyond it is refused (counted by the caller), so forged names cannot grow it."""

    def __init__(self, me: str, max_rows: int) -> None:
        self.me = me
        self.max_rows = max_rows
        self._rows: dict[str, _Row] = {}
        self._clock = 0      # change counter: orders rows by freshness
        self._cursor = 0     # round-robin position over the rows
        self._fresh = 0      # rows with fresh sends left
        self._background_left = 0  # round-robin rows still to send since the last change

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def get(self, name: str) -> Digest | None:
        row = self._rows.get(name)
        return None if row is None else row.digest

    def rows(self) -> Iterator[Digest]:
        return (row.digest for row in self._rows.values())

    def publish(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int = 0) -> Digest | None:
        """Our replica's state: a new own row (None if it equals the current one). The sequence number is
        above both our previous one and `seq_floor` (the driver passes the wall time in ms, so a restarted
        member, whose table starts empty, still numbers above what it published before)."""
        root = root_prefix(root_hex)
        old = self.get(self.me)
        if old is not None and (old.root, old.keys, old.hlc_ms) == (root, keys, hlc_ms):
            return None
        seq = min(MAX_SEQ, max(seq_floor, 0 if old is None else old.seq + 1))
        digest = Digest(self.me, seq, root, min(keys, MAX_KEYS), min(hlc_ms, MAX_HLC_MS))
        self._put(digest)
        return digest

    def merge(self, digest: Digest) -> bool:
        """A row heard from a peer: True if it is newer than ours (then the table changed). Rows about us
        are ignored (we are the only source of our own row), as are rows past `max_rows`. A row older than
        ours tells us the sender is behind: ours goes back to the front of the line for one send (the
        correction reaches it within a packet or two instead of a round-robin cycle)."""
        old = self._rows.get(digest.name)
        if old is not None and digest.seq < old.digest.seq and old.fresh == 0:
            old.fresh = 1
            self._fresh += 1
            return False
        if digest.name == self.me:
            return False
        if old is not None and digest.seq <= old.digest.seq:
            return False
        if old is None and len(self._rows) >= self.max_rows:
            return False
        self._put(digest)
        return True

    def forget(self, name: str) -> bool:
        """A member was reaped: its row goes (it would otherwise circulate forever)."""
        row = self._rows.pop(name, None)
        if row is not None and row.fresh > 0:
            self._fresh -= 1
        return row is not None

    def _put(self, digest: Digest) -> None:
        self._clock += 1
        row = self._rows.pop(digest.name, None)  # re-insert: dict order is the round-robin order
        if row is None:
            row = _Row(digest, FRESH_SENDS, self._clock)
        else:
            if row.fresh > 0:
                self._fresh -= 1
            row.digest, row.fresh, row.order = digest, FRESH_SENDS, self._clock
        self._fresh += 1
        self._background_left = BACKGROUND_CYCLES * len(self._rows)
        self._rows[digest.name] = row

    def has_fresh(self) -> bool:
        """Some row changed lately and still wants pushing."""
        return self._fresh > 0

    def select(self, budget: int, size: Callable[[Digest], int], *, background: int = BACKGROUND_ROWS) -> list[Digest]:
        """Rows to piggyback on one packet, within `budget` bytes (`size` gives a row's exact wire size):
        fresh rows first (newest change first), then up to `background` others round-robin. Each row at
        most once."""
        if budget <= 0 or not self._rows:
            return []
        out: list[Digest] = []
        chosen: set[str] = set()
        fresh = sorted((r for r in self._rows.values() if r.fresh > 0), key=lambda r: -r.order)
        for row in fresh:
            n = size(row.digest)
            if n > budget:
                continue
            budget -= n
            row.fresh -= 1
            if not row.fresh:
                self._fresh -= 1
            out.append(row.digest)
            chosen.add(row.digest.name)
        rows = list(self._rows.values())
        total = len(rows)
        looked = 0
        background = min(background, self._background_left)
        while looked < total and background > 0:
            row = rows[(self._cursor + looked) % total]
            if row.digest.name not in chosen:
                n = size(row.digest)
                if n > budget:
                    break  # this row leads the next packet's round-robin
                background -= 1
                self._background_left -= 1
                budget -= n
                out.append(row.digest)
                chosen.add(row.digest.name)
            looked += 1
        self._cursor = (self._cursor + looked) % total
        return out
