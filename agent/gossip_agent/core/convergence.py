"""Convergence math: do the replicas agree, how many disagree, and how long agreement took.

Each agent publishes its Merkle root, key count and HLC high-water mark as a convergence digest
(core/digests.py, piggybacked on gossip); agents of the previous release put them in their membership
metadata instead (`state_meta`, still parsed here for them). Equal roots mean equal contents, so comparing
ours with the roots the other members publish tells whether the cluster has converged. The tracker is fed
observations (time, our root, their roots) and keeps the two timings the status reports:
- seconds since the last full agreement (0 while converged): the convergence lag;
- the last measured convergence time: from the HLC of the newest write we hold to the first
  observation at which every root agrees (HLC wall time is close to physical time, so this is
  meaningful across nodes; skew between clocks adds to it).
Pure: times come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

META_ROOT = "state.root"
META_KEYS = "state.keys"
META_HLC = "state.hlc"


@dataclass(frozen=True, slots=True)
class PublishedState:
    """What a member says about its replica in its metadata."""

    root: str
    keys: int
    hlc_ms: int


def state_meta(root_hex: str, keys: int, hlc_ms: int) -> dict[str, str]:
    """Metadata entries to publish (strings, ~100 bytes in all: well under gossip.maxMetaBytes)."""
    return {META_ROOT: root_hex, META_KEYS: str(keys), META_HLC: str(hlc_ms)}


# Published counts are decimal ASCII of at most this many digits (2^64 has 20). Peers send these strings:
# `str.isdigit()` alone also accepts "²" or Arabic-Indic digits, and a 5,000-digit string, on which `int()` raises; one
# forged Alive with such a value made every housekeeping tick and the anti-entropy task fail (found by review).
_MAX_DECIMAL_DIGITS = 20


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= _MAX_DECIMAL_DIGITS and text.isascii() and text.isdigit()


def parse_state_meta(meta: Mapping[str, str]) -> PublishedState | None:
    """The published state of a member, or None if it publishes none (or garbage)."""
    root, keys, hlc_ms = meta.get(META_ROOT), meta.get(META_KEYS), meta.get(META_HLC)
    if root is None or keys is None or hlc_ms is None:
        return None
    if len(root) != 64 or not _is_decimal(keys) or not _is_decimal(hlc_ms):
        return None
    try:
        bytes.fromhex(root)
    except ValueError:
        return None
    return PublishedState(root, int(keys), int(hlc_ms))


@dataclass(frozen=True, slots=True)
class ConvergenceStatus:
    converged: bool                         # every member (us included) publishes the same root
    fraction: float                         # share of members (us included) whose root equals ours
    distinct_roots: int                     # distinct published roots, ours included
    seconds_since_agreement: float | None   # 0 while converged; None if never seen converged
    last_convergence_seconds: float | None  # newest write's HLC -> full agreement; None if never measured

    def to_json(self) -> dict[str, object]:
        """The `convergence` object of `GET /v1/status`."""
        return {"converged": self.converged, "fraction": self.fraction, "distinctRoots": self.distinct_roots,
                "secondsSinceAgreement": self.seconds_since_agreement,
                "lastConvergenceSeconds": self.last_convergence_seconds}


class ConvergenceTracker:
    """Feed it `observe(now, my_root, {member: root})` whenever our root or a member's metadata changes
    (or on a timer); read `status(now)` for the status endpoint and metrics.

    Pass every member the agent still counts as part of the cluster (alive, suspect, and dead-but-not-
    reaped): a member we cannot hear from cannot be assumed to agree. `None` means "publishes no root".
    """

    def __init__(self) -> None:
        self._converged = False
        self._fraction = 1.0
        self._distinct = 1
        self._agreed_at: float | None = None       # last observation with full agreement
        self._last_convergence: float | None = None
        self._measured_write_ms: int | None = None  # newest write already measured
        self.agreements = 0                         # transitions into full agreement

    def observe(self, now: float, my_root: str, roots: Mapping[str, str | None], *,
                newest_write_ms: int | None = None) -> ConvergenceStatus:
        """Record one observation. `newest_write_ms`: wall ms of our HLC high-water mark (the newest
        write we hold); agreement after a newer write than the last measured one records its time."""
        agree = sum(1 for root in roots.values() if root == my_root)
        distinct = len({my_root, *(r for r in roots.values() if r is not None)})
        return self.observe_counts(now, len(roots), agree, distinct, newest_write_ms=newest_write_ms)

    def observe_counts(self, now: float, others: int, agree: int, distinct: int, *,
                       newest_write_ms: int | None = None) -> ConvergenceStatus:
        """`observe` from counts a caller keeps incrementally (the state core, fed by member events, so an
        observation costs O(1) instead of a walk of the member table): `others` counted members besides us,
        `agree` of them publishing our root, `distinct` roots published (ours included)."""
        members = 1 + others
        agree += 1
        converged = agree == members
        if converged and not self._converged:
            self.agreements += 1
        self._converged = converged
        self._fraction = agree / members
        self._distinct = distinct
        if converged:
            self._agreed_at = now
            if newest_write_ms is not None and (self._measured_write_ms is None
                                                or newest_write_ms > self._measured_write_ms):
                self._last_convergence = max(0.0, now - newest_write_ms / 1000.0)
                self._measured_write_ms = newest_write_ms
        return self.status(now)

    def held(self, now: float) -> None:
        """Nothing changed between the last observation and `now`: an agreement seen then still held now.
        An observer that looks on change rather than on a timer (the state core) calls this with the time of
        the first change before observing it, so the lag counts from the end of the agreement, not from its
        last observation (which may be hours old in an idle cluster)."""
        if self._converged:
            self._agreed_at = now

    @property
    def converged(self) -> bool:
        return self._converged

    def status(self, now: float) -> ConvergenceStatus:
        if self._converged:
            since: float | None = 0.0
        elif self._agreed_at is not None:
            since = max(0.0, now - self._agreed_at)
        else:
            since = None
        return ConvergenceStatus(self._converged, self._fraction, self._distinct, since, self._last_convergence)
