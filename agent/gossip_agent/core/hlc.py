"""Hybrid logical clock (Kulkarni et al., 2014): physical milliseconds plus a logical counter.

Why: last-writer-wins needs timestamps that (a) stay close to wall time, so "last" means what an operator
expects, and (b) respect causality, so a write made after seeing another always orders after it even when
the two nodes' clocks disagree. An HLC gives both; the node id breaks the remaining ties, so any two
distinct writes are totally ordered and every replica picks the same winner.

Pure: the caller passes the physical time `now_ms`; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOGICAL_BITS = 16
"""`Hlc.packed()` reserves this many low bits for the logical counter (it saturates there)."""
MAX_WALL_MS = (1 << 63) - 1
"""Largest physical part any decoder accepts (msgpack int64). Ingest also bounds it by the local clock plus a
drift tolerance (`StateConfig.max_clock_drift_ms`), which is what actually keeps it sane."""
MAX_LOGICAL = (1 << 32) - 1
"""Largest logical counter accepted or produced. Past it, `tick`/`update` carry into the physical part (one
millisecond later, logical 0): a forged counter near a limit can never make the next local event overflow."""
DEFAULT_MAX_DRIFT_MS = 60_000
"""Default tolerance for a remote clock running ahead of ours (see `StateConfig.max_clock_drift_ms`)."""


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of our physical clock than the configured tolerance."""


@dataclass(frozen=True, slots=True, order=True)
class Hlc:
    """A timestamp. Ordering is (wall_ms, logical, node): a total order over distinct writes."""

    wall_ms: int = 0
    logical: int = 0
    node: str = ""

    def packed(self) -> int:
        """One integer (wall_ms << 16 | logical) for metrics and metadata; drops the node."""
        return (self.wall_ms << LOGICAL_BITS) | min(self.logical, (1 << LOGICAL_BITS) - 1)

    def with_node(self, node: str) -> Hlc:
        return Hlc(self.wall_ms, self.logical, node)


ZERO = Hlc()


def tick(last: Hlc, now_ms: int) -> Hlc:
    """The timestamp of a local event (a write): strictly after `last`, and ≥ the physical clock."""
    if now_ms > last.wall_ms:
        return Hlc(now_ms, 0, last.node)
    return _carry(last.wall_ms, last.logical + 1, last.node)


def _carry(wall: int, logical: int, node: str) -> Hlc:
    """(wall, logical) with the logical counter kept within MAX_LOGICAL by moving one millisecond on."""
    if logical > MAX_LOGICAL:
        return Hlc(wall + 1, 0, node)
    return Hlc(wall, logical, node)


def ahead_ms(ts: Hlc, now_ms: int) -> int:
    """How far `ts` runs ahead of the physical clock `now_ms` (negative: behind)."""
    return ts.wall_ms - now_ms


def check_drift(ts: Hlc, now_ms: int, max_drift_ms: int) -> None:
    """Raise ClockDriftError if `ts` is more than `max_drift_ms` ahead of `now_ms` (checked at every edge where
    a remote timestamp enters: client contexts, rumors, anti-entropy, replication)."""
    if ts.wall_ms - now_ms > max_drift_ms:
        raise ClockDriftError(f"timestamp {ts.wall_ms} ms is {ts.wall_ms - now_ms} ms ahead of this agent's clock "
                              f"(tolerance state.maxClockDriftMs = {max_drift_ms} ms)")


def update(last: Hlc, remote: Hlc, now_ms: int, *, max_drift_ms: int | None = None) -> Hlc:
    """Our clock after receiving `remote`: strictly after both `last` and `remote`.

    `max_drift_ms` rejects a remote clock that runs too far ahead: following it would drag every later
    local write into the future (and make it win every last-writer-wins race).
    """
    if max_drift_ms is not None:
        check_drift(remote, now_ms, max_drift_ms)
    wall = max(last.wall_ms, remote.wall_ms, now_ms)
    if wall == last.wall_ms and wall == remote.wall_ms:
        logical = max(last.logical, remote.logical) + 1
    elif wall == last.wall_ms:
        logical = last.logical + 1
    elif wall == remote.wall_ms:
        logical = remote.logical + 1
    else:
        logical = 0
    return _carry(wall, logical, last.node)


def observe(last: Hlc, remote: Hlc) -> Hlc:
    """Advance our high-water mark past `remote` without a physical clock reading (replay, snapshots)."""
    if (remote.wall_ms, remote.logical) <= (last.wall_ms, last.logical):
        return last
    return Hlc(remote.wall_ms, remote.logical, last.node)


def to_plain(ts: Hlc) -> list[int | str]:
    return [ts.wall_ms, ts.logical, ts.node]


def from_plain(data: object) -> Hlc:
    """Inverse of `to_plain`; raises ValueError on anything else."""
    if not (isinstance(data, list | tuple) and len(data) == 3):
        raise ValueError(f"hlc: expected [wall_ms, logical, node], got {data!r:.80}")
    return from_parts(*data)


def from_parts(wall: Any, logical: Any, node: Any) -> Hlc:
    """`from_plain` of [wall, logical, node] without building the list (the rumor decoder's hot path). What a
    decoder gives (exact ints and strs in range) is taken at once; anything else gets the checks below."""
    if type(wall) is int and type(logical) is int and type(node) is str and 0 <= wall <= MAX_WALL_MS \
            and 0 <= logical <= MAX_LOGICAL:
        return Hlc(wall, logical, node)
    if not (_is_uint(wall) and _is_uint(logical) and isinstance(node, str)):
        raise ValueError(f"hlc: expected [wall_ms, logical, node], got {[wall, logical, node]!r:.80}")
    if logical > MAX_LOGICAL:
        raise ValueError(f"hlc: logical counter {logical} above {MAX_LOGICAL}")
    return Hlc(wall, logical, node)


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63  # (a bool is no number)
