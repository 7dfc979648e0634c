"""Coalescing of normal-priority tree pushes: several writes to the same neighbour in one packet.

Why: along the broadcast tree every write is pushed to each eager neighbour at once, one packet per write and
neighbour. A packet's IP/UDP header and framing (~40 B) cost as much as a fifth of a 200 B write, so under a
stream of writes the headers are a large share of the bytes. Holding a normal push for a short delay
(`gossip.coalesceDelay`) lets the next writes to the same neighbour join it: one header for several writes,
paid for with up to that delay per hop of the tree. Critical writes never wait here (nor on any other lazy
path): they leave at once and take whatever waits for their neighbour along, which is also what makes them
reach everyone sooner than normal writes without a byte budget.

A write alone costs no latency (Nagle's rule, per neighbour): a push to a neighbour that had no packet from
us in the last `delay` goes at once; only pushes that follow it within `delay` wait, until `delay` after
that packet, and then leave together. So at 10 writes/s nothing waits, and under a stream of writes each
neighbour gets at most one normal packet per `delay` (unless a batch fills `max_bytes`, what fits one
packet: then it goes at once and the next write starts a new batch).

Pure: no clock (times come in), no I/O. Memory is bounded by the neighbours it is given (the tree's eager
set) times `max_bytes`; a neighbour's send time is forgotten once `delay` has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Batch(Generic[T]):
    due: float
    size: int = 0
    items: list[T] = field(default_factory=list)


class Coalescer(Generic[T]):
    """Per-neighbour batches of items with sizes (bytes in a packet): the first item after a quiet `delay`
    goes at once, later ones wait until `delay` after the last packet, or until the next would not fit
    `max_bytes`."""

    def __init__(self, delay: float, max_bytes: int) -> None:
        if delay < 0 or not math.isfinite(delay):
            raise ValueError("delay must be a finite number >= 0")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.delay = delay
        self.max_bytes = max_bytes
        self._batches: dict[str, _Batch[T]] = {}
        self._last: dict[str, float] = {}  # neighbour -> when it last got a packet from us (within `delay`)

    def __len__(self) -> int:
        """Items waiting, over all neighbours."""
        return sum(len(b.items) for b in self._batches.values())

    def add(self, peer: str, item: T, size: int, now: float) -> list[T]:
        """Queue `item` for `peer`. Returns what must go to `peer` now: the item itself when `peer` had no packet
        from us for `delay` (or there is no delay); the waiting batch when the item would overflow it (the item
        starts the next one); else nothing."""
        if self.delay <= 0:
            return [item]
        batch = self._batches.get(peer)
        if batch is None:
            last = self._last.get(peer)
            if last is None or now >= last + self.delay:
                self._last[peer] = now
                return [item]
            batch = self._batches[peer] = _Batch(last + self.delay)
        out: list[T] = []
        if batch.size + size > self.max_bytes and batch.items:
            out = batch.items
            self._last[peer] = now
            batch = self._batches[peer] = _Batch(now + self.delay)
        batch.items.append(item)
        batch.size += size
        return out

    def sent(self, peer: str, now: float) -> None:
        """A packet went to `peer` outside the batches (a critical push): the next normal push waits for it."""
        self._last[peer] = now

    def take(self, peer: str) -> list[T]:
        """Everything waiting for `peer`, to ride on a packet going to it now (a critical push)."""
        batch = self._batches.pop(peer, None)
        return batch.items if batch is not None else []

    def drop(self, peer: str) -> int:
        """`peer` is gone: forget its batch and its last send. How many items were dropped."""
        self._last.pop(peer, None)
        return len(self.take(peer))

    def due(self, now: float) -> dict[str, list[T]]:
        """The batches whose time has come, removed (their neighbours count as just sent to); send times older
        than `delay` are forgotten."""
        ready = {peer: b.items for peer, b in self._batches.items() if b.due <= now}
        for peer in ready:
            del self._batches[peer]
            self._last[peer] = now
        stale = [peer for peer, t in self._last.items() if t + self.delay <= now and peer not in self._batches]
        for peer in stale:
            del self._last[peer]
        return ready

    def next_deadline(self) -> float:
        """When the next batch is due (inf: none waits)."""
        # (A plain loop: the driver asks after every packet, and there are few batches.)
        at = math.inf
        for batch in self._batches.values():
            if batch.due < at:
                at = batch.due
        return at
