"""What pull requests say the asker holds: each payload named once to each peer, and remembered by the peer.

WHY. A pull answer carries what the responder's rumor queue holds that it has not yet sent to the asker. The
responder cannot know what the asker got from others meanwhile: in pull mode every member asks `fanout` peers
each round, so a write reached each member from nearly every other member that held it (bench_load, 8 agents,
80 writes of 200 B: 3,866 state messages for 551 new ones, 10.4x the byte floor). A pull request to a member
that reads short ids (core/readers.py SHORT_IDS) therefore names the short ids (core/plumtree.py `short_id`)
of state payloads the asker holds; the responder counts those as sent to the asker (core/broadcast.py
`take(held=...)`): they are neither sent nor kept for it.

Named once, remembered (`HeldClaims`). Naming every payload received within a short window in every request
left two leaks, both measured in the simulator (8 members, 80 writes at 10/s): (1) a holder keeps a payload
queued longer than the window, and a request after the window no longer named it: ~1 duplicate copy per
delivery, nearly all the duplicates; (2) a request that named a payload the responder did not hold yet was
forgotten, so once it got the payload it answered it to the asker anyway. Now an asker names, to each peer, the
payloads it received since its last request to that peer (`RecentIds.ids_for`; never one received from that
peer, which knows), and the responder remembers, per asker, what its requests named (`HeldClaims`) for as long
as a rumor may wait in a queue, and leaves all of it out of its answers. Requests shrink to the news since the
last one to that peer (4 bytes an id), and a member gets a payload about once.

Everything is bounded (ids, peers, claims per asker, askers) and only ever costs bytes when a bound bites: a
forgotten claim or request means a duplicate copy, never a lost one. Pure: times come in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE

MAX_RECENT = 1024
"""Payloads an asker remembers having received (a request names at most MAX_IDS_PER_MESSAGE, the newest)."""
MAX_CLAIMS_PER_ASKER = 512
"""Ids a responder remembers one asker holds (the newest named)."""
MAX_ASKERS = 256
"""Askers whose claims a responder remembers (the most recent askers; in larger clusters the others' answers
may carry a duplicate copy)."""


class RecentIds:
    """The asker's side: short ids of payloads it holds, oldest first, each with when it was first received and
    from whom, and when each peer was last asked (so each id is named to each peer once)."""

    __slots__ = ("_asked", "_at", "max_ids", "max_peers")

    def __init__(self, max_ids: int = MAX_RECENT, max_peers: int = 4 * MAX_ASKERS) -> None:
        self.max_ids = max_ids
        self.max_peers = max_peers
        self._at: OrderedDict[int, tuple[float, str | None]] = OrderedDict()
        self._asked: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, sid: int) -> bool:
        return sid in self._at

    def add(self, sid: int, now: float, source: str | None = None) -> None:
        """We hold payload `sid` (received from `source`, or written here). A payload received again keeps its
        first time: it was already named to the peers asked since then."""
        at = self._at
        if sid in at:
            return
        at[sid] = (now, source)
        if len(at) > self.max_ids:
            at.popitem(last=False)

    def ids_for(self, peer: str, now: float, window: float) -> tuple[int, ...]:
        """What a request to `peer` names: ids received within `window` and since our last request to `peer`
        (earlier ones were named then), none received from `peer`; newest first, at most MAX_IDS_PER_MESSAGE."""
        self._expire(now, window)
        since = self._asked.get(peer, -float("inf"))
        out: list[int] = []
        for sid in reversed(self._at):
            at, source = self._at[sid]
            if at < since or len(out) >= MAX_IDS_PER_MESSAGE:
                break
            if source != peer:
                out.append(sid)
        return tuple(out)

    def asked(self, peer: str, now: float) -> None:
        """A request naming `ids_for(peer, ...)` went to `peer` at `now`."""
        asked = self._asked
        asked[peer] = now
        asked.move_to_end(peer)
        if len(asked) > self.max_peers:
            asked.popitem(last=False)  # (a peer forgotten is named everything in the window again: bytes only)

    def forget(self, peer: str) -> None:
        self._asked.pop(peer, None)

    def _expire(self, now: float, window: float) -> None:
        at = self._at
        horizon = now - window
        while at and next(iter(at.values()))[0] < horizon:
            at.popitem(last=False)


class HeldClaims:
    """The responder's side: per asker, the short ids its pull requests named, with when, for `window` seconds.
    Only claims from an asker's own table host may be noted (a forged claim would keep rumors from it)."""

    __slots__ = ("_by_asker", "max_askers", "max_per_asker")

    def __init__(self, max_per_asker: int = MAX_CLAIMS_PER_ASKER, max_askers: int = MAX_ASKERS) -> None:
        self.max_per_asker = max_per_asker
        self.max_askers = max_askers
        self._by_asker: OrderedDict[str, OrderedDict[int, float]] = OrderedDict()

    def note(self, asker: str, sids: Iterable[int], now: float) -> None:
        claims = self._by_asker.get(asker)
        if claims is None:
            claims = self._by_asker[asker] = OrderedDict()
            if len(self._by_asker) > self.max_askers:
                self._by_asker.popitem(last=False)
        else:
            self._by_asker.move_to_end(asker)
        for sid in sids:
            claims[sid] = now
            claims.move_to_end(sid)
        while len(claims) > self.max_per_asker:
            claims.popitem(last=False)

    def held(self, asker: str, now: float, window: float) -> frozenset[int]:
        """What `asker` said it holds within `window` seconds before `now` (older claims are forgotten)."""
        claims = self._by_asker.get(asker)
        if not claims:
            return frozenset()
        horizon = now - window
        while claims and next(iter(claims.values())) < horizon:
            claims.popitem(last=False)
        return frozenset(claims)

    def forget(self, asker: str) -> None:
        self._by_asker.pop(asker, None)

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_asker.values())
