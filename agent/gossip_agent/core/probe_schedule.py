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
