"""Aligned probing: who probes whom in each round, so that every member is probed once per interval.

With SWIM's per-member shuffled round-robin, each of N-1 probers picks a given member with chance 1/(N-1)
per interval, so the wait for the first probe of a crashed member is roughly exponential: one interval on
average, but more than two in one crash out of seven. That tail lands directly in the time to declare it dead.

Here every member places all live members on one ring, ordered by a hash of their names, and derives a round
number from the (roughly synchronized) wall clock. In round r every member probes the member `shift(r)`
places after itself: one shift for all, so the map prober -> target is a permutation without fixed points
and each member is probed by exactly one other per round. Over a cycle of N-1 rounds the shifts run through
1..N-1 in an order drawn afresh each cycle, so each member still probes every other once per cycle in a
random order (SWIM's bounded detection time), and the pairs change from cycle to cycle.

Views that disagree (during joins) or clocks that drift only make some members probed twice and some not
at all in a round, like the shuffled order would: correctness never depends on the alignment.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

_MASK64 = (1 << 64) - 1
_EARLY = 1e-6  # of an interval


def ring_key(name: str) -> int:
    """A member's place on the ring: a stable 64-bit hash of its name, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread, process-independent integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def round_of(wall: float, phase: float, interval: float) -> int:
    """The round a member with this phase (its offset inside an interval) is in at wall-clock time `wall`.

    A tick scheduled for a round's start may land a rounding error early: it still counts for that round.
    """
    return math.floor((wall - phase) / interval + _EARLY)


def round_start(round_: int, phase: float, interval: float) -> float:
    """Wall-clock time at which a member with this phase starts `round_`."""
    return round_ * interval + phase


def shift(round_: int, others: int) -> int:
    """How far along the ring each member probes in `round_`, with `others` = live members - 1.

    Within a cycle of `others` rounds the shifts are a permutation of 1..others (an affine map with a
    multiplier coprime to `others`, both drawn from the cycle number), so nobody probes itself and everyone
    probes everyone once per cycle.
    """
    if others <= 1:
        return 1
    cycle, k = divmod(round_, others)
    h = _mix(cycle * 0x100000001B3 + others)
    a = 1 + h % others
    while math.gcd(a, others) != 1:
        a += 1
    b = _mix(h) % others
    return 1 + (a * k + b) % others


def far_round(round_: int, fraction: float) -> bool:
    """Whether `round_` probes along the whole cluster's ring rather than each zone's own ring, with topology
    awareness on (a share `fraction` of rounds, drawn from the round number so every member agrees).

    In the other rounds every member probes along the ring of its zone's members: each member is still
    probed exactly once per round (by a member of its zone), so detection time is as before, and probes and
    acks, two thirds of them cross-zone with three zones, stay inside the zone. The far rounds keep every
    pair of members probing each other now and then (a whole zone cut off is still noticed from outside).
    """
    return _mix(round_ * 0x9E3779B97F4A7C15 + 0x5A17) / 2.0**64 < fraction


def zone_groups(ring: list[tuple[int, str]], zone_of: Callable[[str], str | None]) -> dict[str, list[tuple[int, str]]]:
    """The ring split into one sub-ring per zone (ring order kept), the same on every member that sees the
    same members and zones. Members whose zone is unknown, and zones of a single member, share one group;
    if that group would be a single member, it joins the first zone's group (nobody is left without a
    prober). Returns member name -> its group."""
    by_zone: dict[str | None, list[tuple[int, str]]] = {}
    for entry in ring:
        by_zone.setdefault(zone_of(entry[1]), []).append(entry)
    rest = [e for z, members in by_zone.items() if z is None or len(members) < 2 for e in members]
    groups = [members for z, members in sorted(by_zone.items(), key=lambda kv: kv[0] or "")
              if z is not None and len(members) >= 2]
    if len(rest) == 1 and groups:
        groups[0] = sorted([*groups[0], *rest])
    elif rest:
        groups.append(sorted(rest))
    return {name: group for group in groups for _, name in group}
