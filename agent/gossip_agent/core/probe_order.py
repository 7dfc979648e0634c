"""Aligned probing by zone: most rounds probe along each zone's own ring, a bounded share along the whole ring.

WHY. Aligned probing (core/probe_schedule.py) probes every member exactly once per round, along one ring of
all members: with three equal zones two probes (and acks) in three cross zones, in every mode. Those are
nearly all of an idle cluster's cross-zone bytes, and no near/far choice of gossip peers touches them. Here,
with topology awareness on, a round is either

- a ZONE round: the ring is split into one sub-ring per zone, and every member probes along its zone's
  sub-ring with the round's shift. The map prober -> target is still a permutation without fixed points
  inside every zone, so each member is still probed exactly once in the round -- by a member of its own
  zone, over a near link. Detection time does not change (it is set by how soon a crashed member is
  probed, once per round either way);
- a FAR round (a share `far_share` of rounds, drawn from the round number so every member agrees): the
  whole ring, as before. Every pair of members still probes each other now and then, so a member's
  coordinate gets samples across zones (core/vivaldi.py), and a zone cut off from the rest is noticed
  from outside.

Probes no longer carry far coordinates often, so coordinates also travel second-hand
(core/topology_state.py: rows on acks, a table at join).

Views that disagree (during joins, or a zone change not yet heard everywhere) only make some members probed
twice and some not at all in a round, as with the plain ring: correctness never depends on agreement.
Members whose zone is unknown, and zones of a single member, share one group (a lone member joins the first
zone's group, so nobody is left without a prober). Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

#: Share of rounds along the whole ring (at least: crossZoneFraction if larger). Probes are where network
#: coordinates get their cross-zone samples: a third keeps 3x fewer probes and acks crossing zones than the
#: plain ring, while the simulator's cross-zone estimates still settle (sim/zones.py reports the error).
FAR_PROBE_SHARE = 1 / 3

Ring = list[tuple[int, str]]


def far_round(round_: int, far_share: float) -> bool:
    """Whether `round_` probes along the whole ring: the same answer on every member (a hash of the round
    number), true for a share `far_share` of rounds."""
    digest = hashlib.blake2b(round_.to_bytes(8, "big", signed=True), digest_size=8, person=b"far-round").digest()
    return int.from_bytes(digest, "big") / 2.0**64 < far_share


def zone_groups(ring: Ring, zone_of: Callable[[str], str | None]) -> dict[str, Ring]:
    """The ring split into one sub-ring per zone (ring order kept), the same on every member that sees the
    same members and zones; member name -> its group (see the module docstring for the odd ones)."""
    by_zone: dict[str | None, Ring] = {}
    for entry in ring:
        by_zone.setdefault(zone_of(entry[1]), []).append(entry)
    rest = sorted(e for z, members in by_zone.items() if z is None or len(members) < 2 for e in members)
    groups = [members for z, members in sorted(by_zone.items(), key=lambda kv: kv[0] or "")
              if z is not None and len(members) >= 2]
    if len(rest) == 1 and groups:
        groups[0] = sorted([*groups[0], *rest])
    elif rest:
        groups.append(rest)
    return {name: group for group in groups for _, name in group}
