"""How far a critical write goes on the broadcast tree: straight from its writer to every member, in clusters
of up to CRITICAL_DIRECT members.

Why: a critical write (`?priority=critical`) must reach everyone in well under half the time of a normal one
(the target is t100 <= 0.5x under a 100 writes/s background). Its latency is a number of hops times what a hop
costs (an agent's event loop, its decode and merge), and skipping the coalescer's wait only helps at hops the
write takes. Along the tree plus `fanout` random extra peers at every hop, a write at N=10 still took two hops
to reach the last member, as many as a normal write on a shallow tree, and the ratio was 0.4-0.5x on a quiet
machine. Sent by its writer to every member at once, it arrives in one hop. That is also the byte floor for
that write (one copy per member); the tree links still push it on from every member that gets it, which is
the repair if a direct copy is lost (a second hop, not a graft after the lazy interval), and costs about two
more copies per member, less than the random extras at every hop did (about five).

Past CRITICAL_DIRECT members the writer sends to CRITICAL_DIRECT random ones (a burst of one datagram per
member is bounded), and every member that gets it adds `fanout` random peers to its tree pushes, as before.
A member decides by its own count of live members (alive or suspect: a suspect is most often alive) which case
holds; a member whose count differs a little from the writer's only adds or skips a few extras.

Copies of a critical write that arrive twice say nothing about the tree (core/plumtree.py `receive(critical=
True)`): they are sent twice on purpose, so they neither prune a link nor make their sender a neighbour.
Pure: names in, names out; the randomness is the caller's choice of members.
"""

from __future__ import annotations

CRITICAL_DIRECT = 64
"""Most members a critical write's writer pushes it to directly (beside its eager neighbours); in a cluster of
at most this many other live members, that is all of them."""


def direct_reach(others: int) -> int:
    """How many random live members (of `others` besides us) the writer of a critical write pushes it to, its
    eager neighbours aside: every one of them in a cluster of up to CRITICAL_DIRECT others."""
    return max(0, min(others, CRITICAL_DIRECT))


def relay_extras(others: int, fanout: int) -> int:
    """How many random live members a member that got a critical write from someone adds to its tree pushes:
    none when the writer reached everyone directly (duplicates only), `fanout` in larger clusters."""
    return 0 if others <= CRITICAL_DIRECT else max(0, fanout)
