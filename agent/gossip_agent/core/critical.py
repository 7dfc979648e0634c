"""How far a critical write goes on the broadcast tree: straight from its writer to every member, in clusters
of up to CRITICAL_DIRECT members.

Why: a critical write (`?priority=critical`) must reach everyone in well under half the time of a normal one
(the target is t100 <= 0.5x under a 100 writes/s background). Its latency is a number of hops times what a hop
costs (an agent's event loop, its decode and merge), and skipping the coalescer's wait only helps at hops the
write takes. Along the tree plus `fanout` random extra peers at every hop, a write at N=10 still took two hops
to reach the last member, as many as a normal write on a shallow tree, and the ratio was 0.4-0.5x on a quiet
machine. Sent by its writer to every member at once, it arrives in one hop. That is also the byte floor for
that write (one copy per member).

The members that get it from the writer announce it to their tree neighbours (eager ones too) and push it to
none (core/plumtree.py `deliver(announce_only=True)`): a member whose direct copy was lost grafts it from an
announcement, and one that got it by graft pushes it along the tree as usual (perhaps many direct copies were
lost). The announcement to an eager neighbour rides on the next push to it (Node._tree_send: under writes,
milliseconds later; idle, the lazy flush), and an id an eager neighbour announces is grafted after a quarter
of the usual wait (plumtree.EAGER_ANNOUNCER_WAIT: that neighbour will not push it). The price is paid under
packet loss only: in the simulator (N=50, 100 writes/s of 1 KiB, every 10th critical, 3 seeds) the critical
t100 median went from 2.0 to 8.5 ms with 1 % loss (normal writes 11 ms) and from 3 to 46 ms with 5 % loss
(normal 200 -> 131 ms), for ~4x fewer duplicates. The tree's pushes used to be that repair, a hop later,
at the price of a second copy at every member arriving with the direct ones: at N=50 under 100 writes/s with
every 10th write critical, ~4,900 duplicates in a 1,000-write run, on agents already at the knee of CPU
saturation; in the simulator's overload model (every datagram costing its receiver 3.7 ms in turn, 3 seeds)
the duplicates, grafts and latency of the NORMAL writes went up with them: without the pushes, duplicates
8,608 -> 1,002, normal write->all median 392 -> 59 ms, critical 69 -> 11 ms.

Past CRITICAL_DIRECT members the writer sends to CRITICAL_DIRECT random ones (a burst of one datagram per
member is bounded), and every member that gets it adds `fanout` random peers to its tree pushes, as before.
A member decides by its own count of alive members which case holds: near CRITICAL_DIRECT, one whose count
differs from the writer's adds a few extras it need not, or announces a write the writer did not send to
everyone, and the members the writer left out graft it (a lazy interval later: the case of a lost direct copy).

Copies of a critical write that arrive twice say nothing about the tree (core/plumtree.py `receive(critical=
True)`): they are sent twice on purpose, so they neither prune a link nor make their sender a neighbour.
Pure: names in, names out; the randomness is the caller's choice of members.
"""

from __future__ import annotations

CRITICAL_DIRECT = 64
"""Most members a critical write's writer pushes it to directly (beside its eager neighbours); in a cluster of
at most this many other alive members, that is all of them."""


def direct_reach(others: int) -> int:
    """How many random alive members (of `others` besides us) the writer of a critical write pushes it to, its
    eager neighbours aside: every one of them in a cluster of up to CRITICAL_DIRECT others."""
    return max(0, min(others, CRITICAL_DIRECT))


def relay_extras(others: int, fanout: int) -> int:
    """How many random alive members a member that got a critical write from someone adds to its tree pushes:
    none when the writer reached everyone directly (duplicates only), `fanout` in larger clusters."""
    return 0 if others <= CRITICAL_DIRECT else max(0, fanout)
