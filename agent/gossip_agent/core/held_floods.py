"""Our own writes held for a gossip interval before the flood fallback of the broadcast tree queues them.

Why: on the tree path a writer also floods its write to the members not yet known to read tree messages
(core/tree_dissemination.py `_flood_to_others`: an older agent learns it that way). In a young cluster that is most
members, although they all read the tree, and the flood copies raced the tree's pushes: a member that got
the flood copy first pushed it on along all its eager links, its upstream one too, and those reverse pushes
are duplicates that prune tree links. The tree then kept breaking, and payloads came late, by a graft after
an announcement (the simulator at N=50, 10 writes/s of 1 KiB, 10 s after the start: p99 of write->all 304
and 384 ms over two seeds, 60 grafts and ~580 prunes per 300 writes; without the fallback 12 ms, no graft).

Held one gossip interval, the fallback goes after the tree has delivered (a LAN tree reaches 50 members in
tens of milliseconds), so a member that reads the tree gets the flood copy as a duplicate from a member that
is not its eager neighbour, which costs a prune message and no tree link; and by then the writer may know
more readers and flood to fewer members. An older agent gets the write one interval later.

Bounded (MAX_HELD, oldest dropped first and counted: anti-entropy is the safety net); pure: times come in.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_HELD = 4096
"""Writes held at once at most (about 20 s of 100 writes/s with a 200 ms hold is 20x fewer)."""


class HeldFloods(Generic[T]):
    """Items in the order they were held, each with the time it is due. Hold times only grow (now plus one
    constant interval), so the earliest due is always first."""

    def __init__(self, max_items: int = MAX_HELD) -> None:
        self.max_items = max_items
        self._items: deque[tuple[float, T]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, item: T, due: float) -> int:
        """Hold `item` until `due`; past `max_items` the oldest is dropped. Returns how many were dropped (the
        caller counts them where operators see them; `dropped` keeps the total)."""
        self._items.append((due, item))
        dropped = 0
        while len(self._items) > self.max_items:
            self._items.popleft()
            dropped += 1
        self.dropped += dropped
        return dropped

    def due(self, now: float) -> list[T]:
        """The items whose time has come, removed, in the order they were held."""
        out: list[T] = []
        items = self._items
        while items and items[0][0] <= now:
            out.append(items.popleft()[1])
        return out

    def next_deadline(self) -> float:
        """When the next item is due (inf: none is held)."""
        return self._items[0][0] if self._items else math.inf
