"""Which peers have shown that they read this release's newer message types: one registry for the Node.

WHY. An older agent drops a WHOLE packet that holds a message type it does not know. So a newer message type
may ride on a packet to a peer only once that peer has shown it reads the type -- by sending us one (or a
message of a later feature). Until then it goes in a packet of its own (an offer), which an older agent drops
alone. The Node used to keep two sets for this (digest readers in core/node.py, coordinate readers in
core/topology_state.py), which could disagree about the same peer; this module is the one place.

LEVELS. Features arrived release by release, and each release reads everything earlier ones did, so what a
peer has shown is one number, the highest feature level:

  DIGESTS           convergence digests and broadcast-tree messages (types 9-13)
  COORDINATES       its network coordinate (type 14)
  PEER_COORDINATES  second-hand coordinates of other members (type 18)
  SHORT_IDS         short payload ids: pull requests naming what the asker holds (type 19)
  COMPACT           the compact forms: coordinates as half floats (types 20 and 21, half the bytes of 14 and
                    18) and pings that name neither their sender nor its address (type 22: the packet's
                    sender is the prober, its table address where the ack goes)

`show(peer, level)` raises a peer's level (never lowers it); `reads(peer, level)` asks. `reset(peer)` forgets
what a peer showed: a member back from suspicion or death, or at a new address, may be a restart on an older
release. `view(level)` is a set-like window for code that only cares about one level (the Node's
`_digest_readers`): `in`, `add` (shows that level) and `discard` (resets the peer).

OFFERS MADE. What we told a peer is kept beside what it showed, and `reset` forgets both (a restart forgot
what we told it). `offered(peer, now)` records when we first sent it our highest offer (a hello, core/
hello_queue.py; a probe's; an answer): a peer still below that level a probe timeout later did not answer,
and is perhaps an older agent, so the probes step down to the lower offers. `answer_due(peer, now)` says
whether an offer of the peer's gets ours back: if we have not answered that peer within ANSWER_WINDOW. The
answer is an offer itself, so answering every offer would bounce between two members for ever; answering
once until a reset left a peer that reset us alone (we did not reset it) without our answer; answering only
members whose level we did not know missed a member whose hello WE had dropped (it was not in our table yet):
it knew nothing of us.

BOUNDED. The caller adds only members of its table (at most membership.maxMembers) and `forget`s reaped
ones. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

DIGESTS = 1
COORDINATES = 2
PEER_COORDINATES = 3
SHORT_IDS = 4
COMPACT = 5

ANSWER_WINDOW = 10.0
"""Seconds within which a peer's offers get ours back once (`answer_due`). Longer than any round trip at which
answers could keep bouncing: a shorter window, such as a probe timeout, would let answers bounce for ever
between two overloaded agents whose round trip exceeds half of it (our own 50-agent bench sees round trips of
seconds). Yet short enough that a peer that reset us (suspicion, refute, death and back: at its end only) gets
our answer to its next probe offer within ~10 s."""


class Readers:
    """Peer name -> the highest feature level it has shown (see the module docstring)."""

    __slots__ = ("_answered", "_level", "_offered")

    def __init__(self) -> None:
        self._level: dict[str, int] = {}
        self._offered: dict[str, float] = {}  # peer -> when we first offered it our highest level
        self._answered: dict[str, float] = {}  # peer -> when we last answered an offer of its

    def __len__(self) -> int:
        return len(self._level)

    def level(self, peer: str) -> int:
        return self._level.get(peer, 0)

    def show(self, peer: str, level: int) -> None:
        """`peer` sent us a message of feature `level`: it reads that level and every earlier one."""
        if self._level.get(peer, 0) < level:
            self._level[peer] = level

    def reads(self, peer: str | None, level: int) -> bool:
        return peer is not None and self._level.get(peer, 0) >= level

    def reset(self, peer: str) -> None:
        """Forget what `peer` showed (a restart may be an older release): offers again until it shows. What we
        told it goes too (a restart forgot it)."""
        self._level.pop(peer, None)
        self._offered.pop(peer, None)
        self._answered.pop(peer, None)

    def cap(self, peer: str, level: int) -> None:
        """`peer` may read no more than `level` now (a newer incarnation may be a restart on an earlier release):
        a higher level it showed is lowered to that; it shows the rest again by sending it."""
        if self._level.get(peer, 0) > level:
            self._level[peer] = level

    def offered(self, peer: str, now: float) -> None:
        """We sent `peer` our highest offer at `now` (only the first time since a reset is kept)."""
        self._offered.setdefault(peer, now)

    def offered_at(self, peer: str) -> float | None:
        """When we first offered `peer` our highest level since its last reset (None: never)."""
        return self._offered.get(peer)

    def answer_due(self, peer: str, now: float) -> bool:
        """Whether an offer from `peer` (from its host) gets ours back at `now`: not if we answered it within
        ANSWER_WINDOW (since its last reset). If so, marks it answered at `now`."""
        last = self._answered.get(peer)
        if last is not None and now - last < ANSWER_WINDOW:
            return False
        self._answered[peer] = now
        return True

    forget = reset

    def view(self, level: int) -> ReaderView:
        return ReaderView(self, level)


class ReaderView:
    """The peers at `level` or above, as a set-like window: `in`, iteration, `add` (shows `level`),
    `discard` (resets the peer: all levels)."""

    __slots__ = ("_min", "_readers")

    def __init__(self, readers: Readers, level: int) -> None:
        self._readers = readers
        self._min = level

    def __contains__(self, peer: object) -> bool:
        # (`reads` inlined: several membership tests a packet, on the hot path.)
        return isinstance(peer, str) and self._readers._level.get(peer, 0) >= self._min

    def __iter__(self) -> Iterator[str]:
        return (p for p, lv in list(self._readers._level.items()) if lv >= self._min)

    def __len__(self) -> int:
        return sum(1 for lv in self._readers._level.values() if lv >= self._min)

    def add(self, peer: str) -> None:
        self._readers.show(peer, self._min)

    def discard(self, peer: str) -> None:
        self._readers.reset(peer)
