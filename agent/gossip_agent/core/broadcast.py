"""The rumor queue: retransmit-limited broadcasts piggybacked on probe and gossip traffic.

A rumor is sent at most `retransmit_mult · ceil(log10(N + 1))` times by each member — enough for epidemic
spread to reach everyone with high probability, few enough that traffic stays bounded. Rumors sent the
fewest times go first, newest first among equals, so fresh news always wins the space in a packet.
A newer rumor about the same subject (e.g. member X) replaces the older one.

Three priorities. Critical rumors (`critical=True`: membership changes about known members — suspicions,
deaths, refutations — and state writes a client flagged `?priority=critical`) go before everything: under
load or a byte budget (core/send_budget.py) they take the space in a packet first, whatever their transmit
count. Normal rumors (state) come next, and rumors announcing new members (`low=True`) last; past
`max_items` the lowest are evicted first. A flood of forged Alives for made-up members (anyone on the network
can send them to a plaintext cluster) then can neither push a real suspicion or death out of the queue nor
take its place in packets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip_agent.core.messages import Rumor

# No rumor encodes smaller than this; below it a packet is full.
_MIN_RUMOR_BYTES = 8
# Queue items looked at per packet at most.
_MAX_SCAN = 512
# Priority levels (lower goes first, higher is evicted first) and their class names in stats and metrics.
CRITICAL, NORMAL, LOW = 0, 1, 2
CLASSES = ("critical", "normal")
_CLASS_OF = ("critical", "normal", "normal")


def retransmit_limit(retransmit_mult: int, n_members: int) -> int:
    """How many times each member sends a rumor: mult · ceil(log10(N + 1))."""
    return retransmit_mult * max(1, math.ceil(math.log10(n_members + 1)))


@dataclass(slots=True)
class _Item:
    rumor: Rumor
    key: str | None
    size: int
    id: int
    # Member we heard it from: sending it back there is wasted bytes.
    source: str | None = None
    transmits: int = 0
    prio: int = NORMAL  # CRITICAL, NORMAL, or LOW (a new member's announcement)
    sent_to: set[str] = field(default_factory=set)
    # A state rumor's short id (core/plumtree.py short_id): a pull request naming it counts as sent to the asker.
    sid: int | None = None


class BroadcastQueue:
    """Rumors waiting to be piggybacked. Bounded: past `max_items`, the most-sent rumors are dropped."""

    def __init__(self, retransmit_mult: int, max_items: int = 4096) -> None:
        self.retransmit_mult = retransmit_mult
        self.max_items = max_items
        # (priority, transmits) -> {id: item}; dicts keep insertion order, so the newest item of a level is last.
        self._levels: dict[tuple[int, int], dict[int, _Item]] = {}
        self._by_key: dict[str, _Item] = {}
        self._next_id = 0
        self._len = 0
        self._per_prio = [0, 0, 0]
        self.dropped = 0
        # By class ("critical"/"normal"): rumors evicted unsent to everyone, and rumor bytes handed to packets.
        self.dropped_by_class: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.sent_bytes: dict[str, int] = dict.fromkeys(CLASSES, 0)

    def __len__(self) -> int:
        return self._len

    def pending(self, cls: str) -> int:
        """Rumors of class `cls` ("critical" or "normal", the latter counting announcements) queued now."""
        if cls == "critical":
            return self._per_prio[CRITICAL]
        return self._per_prio[NORMAL] + self._per_prio[LOW]

    def enqueue(self, rumor: Rumor, size: int, *, key: str | None = None, source: str | None = None,
                low: bool = False, critical: bool = False, covered: set[str] | None = None,
                sid: int | None = None) -> None:
        """Queue a rumor of `size` encoded bytes; a rumor with the same `key` is replaced. `low`: a new
        member's announcement (sent after, and evicted before, everything else); `critical`: sent before
        everything else and evicted last (`low` wins if both are given). `covered`: live members that get it
        another way (the broadcast tree), counted as sent to: it goes only to the others. `sid`: a state
        rumor's short id, which pull requests may name (`take(held=...)`)."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._remove(old)
        prio = LOW if low else CRITICAL if critical else NORMAL
        item = _Item(rumor=rumor, key=key, size=size, id=self._next_id, source=source, prio=prio, sid=sid)
        if covered:
            item.sent_to = covered
        self._next_id += 1
        self._levels.setdefault((item.prio, 0), {})[item.id] = item
        self._len += 1
        self._per_prio[prio] += 1
        if key is not None:
            self._by_key[key] = item
        if self._len > self.max_items:
            self._evict()

    def _remove(self, item: _Item) -> None:
        level = self._levels.get((item.prio, item.transmits))
        if level is not None and level.pop(item.id, None) is not None:
            self._len -= 1
            self._per_prio[item.prio] -= 1
            if not level:
                del self._levels[(item.prio, item.transmits)]

    def _evict(self) -> None:
        while self._len > self.max_items:
            worst = max(self._levels)
            level = self._levels[worst]
            oldest = next(iter(level.values()))
            self._remove(oldest)
            if oldest.key is not None and self._by_key.get(oldest.key) is oldest:
                del self._by_key[oldest.key]
            self.dropped += 1
            self.dropped_by_class[_CLASS_OF[oldest.prio]] += 1

    def take(self, budget: int, n_members: int, *, to: str | None = None, to_live: bool = True,
             limit: int | None = None, held: frozenset[int] = frozenset(),
             shuffle: Callable[[list[_Item]], None] | None = None) -> list[Rumor]:
        """Rumors filling at most `budget` bytes for a packet to member `to`; counts one transmit each.

        Rumors that reached the retransmit limit leave the queue. Rumors heard from `to`, or already sent to
        it, are skipped: they would be wasted bytes. `to_live`: `to` is one of the `n_members` live members. A
        send to a dead member (gossip to the dead, so a wrongly declared member can refute) is a transmit but
        does not count toward "every live member has it": otherwise a leave announced just after a crash could
        be retired having reached only the crashed member, and the others would see the leaver die instead.
        `limit`: the retransmit limit to apply instead of the queue's own (pull answers: see Node._gossip).
        `held`: short ids of state rumors `to` says it holds (its pull request, core/pull_ids.py): each such
        rumor counts as sent to `to` without being sent (no bytes, no transmit), and leaves the queue once
        every other member has it.
        `shuffle`: fill the packet from the candidates (every one the bounded scan finds, priorities apart) in
        the order it leaves them: a pull answer's (core/pulling.py) random choice, so that the members an asker
        asked one after another do not all answer it with the same rumors before it can name them.
        """
        if not self._len or budget <= 0:
            return []
        if limit is None:
            limit = retransmit_limit(self.retransmit_mult, n_members)
        chosen: list[_Item] = []
        covered: list[_Item] = []  # named in `held`: counted as sent to `to`
        if to is None or not to_live:
            held = frozenset()
        remaining = budget
        # Bounded scan: a packet is filled from the best candidates, not from a walk over a long queue.
        scan = _MAX_SCAN
        pool: list[_Item] = []  # (shuffle) every candidate found, to choose from after the scan
        for transmits in sorted(self._levels):
            for item in reversed(self._levels[transmits].values()):
                scan -= 1
                if scan < 0 or remaining < _MIN_RUMOR_BYTES:
                    break
                if item.size > remaining:
                    continue
                if to is not None and (item.source == to or to in item.sent_to):
                    continue
                if held and item.sid in held:
                    covered.append(item)
                    continue
                if shuffle is not None:
                    pool.append(item)
                    continue
                chosen.append(item)
                remaining -= item.size
            if scan < 0 or remaining < _MIN_RUMOR_BYTES:
                break
        if pool:
            assert shuffle is not None
            for prio in sorted({item.prio for item in pool}):  # critical ones first, as ever
                group = [item for item in pool if item.prio == prio]
                shuffle(group)
                for item in group:
                    if item.size <= remaining:
                        chosen.append(item)
                        remaining -= item.size
        for item in covered:
            item.sent_to.add(to)  # type: ignore[arg-type]  # (`held` is emptied above without `to`)
            if len(item.sent_to) + (item.source is not None and item.source not in item.sent_to) >= n_members - 1:
                self._remove(item)
                if item.key is not None and self._by_key.get(item.key) is item:
                    del self._by_key[item.key]
        for item in chosen:
            self._remove(item)
            self.sent_bytes[_CLASS_OF[item.prio]] += item.size
            item.transmits += 1
            if to is not None and to_live:
                item.sent_to.add(to)
            # Retired at the limit, or once every other member has it: a rumor is never sent back to its
            # source nor twice to one peer, so in a small cluster the limit alone would never be reached.
            reached = len(item.sent_to) + (item.source is not None and item.source not in item.sent_to)
            if item.transmits >= limit or (to is not None and reached >= n_members - 1):
                if item.key is not None and self._by_key.get(item.key) is item:
                    del self._by_key[item.key]
                continue
            self._levels.setdefault((item.prio, item.transmits), {})[item.id] = item
            self._len += 1
            self._per_prio[item.prio] += 1
        return [item.rumor for item in chosen]

    def peek_all(self) -> list[Rumor]:
        """Every queued rumor, fewest transmits and newest first (for pull answers and tests)."""
        out: list[Rumor] = []
        for transmits in sorted(self._levels):
            out.extend(item.rumor for item in reversed(list(self._levels[transmits].values())))
        return out
