"""The state payloads a member received lately, named in its pull requests so that answers leave them out.

WHY. A pull answer carries what the responder's rumor queue holds that it has not yet sent to the asker. The
responder cannot know what the asker got from others meanwhile: in pull mode every member asks `fanout` peers
each round, so a write reached each member from nearly every other member that held it (bench_load, 8 agents,
80 writes of 200 B: 3,866 state messages for 551 new ones, 10.4x the byte floor). A pull request to a member
that reads short ids (core/readers.py SHORT_IDS) therefore names the short ids (core/plumtree.py `short_id`)
of the state payloads the asker received within `window` seconds; the responder counts those as sent to the
asker (core/broadcast.py `take(held=...)`): they are neither sent nor kept for it.

The window is the time a rumor stays in a holder's queue when nobody names it (the retransmit limit in gossip
rounds): a payload older than that has left the queues, so naming it would be bytes for nothing. Bounded: at
most MAX_IDS_PER_MESSAGE ids (the newest), as one wire message allows. Pure: times come in.
"""

from __future__ import annotations

from collections import OrderedDict

from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE


class RecentIds:
    """Short ids of received payloads, oldest first, each with when it was last received."""

    __slots__ = ("_at", "max_ids")

    def __init__(self, max_ids: int = MAX_IDS_PER_MESSAGE) -> None:
        self.max_ids = max_ids
        self._at: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._at)

    def add(self, sid: int, now: float) -> None:
        at = self._at
        at[sid] = now
        at.move_to_end(sid)
        if len(at) > self.max_ids:
            at.popitem(last=False)

    def ids(self, now: float, window: float) -> tuple[int, ...]:
        """The ids received within `window` seconds before `now`, newest first (older ones are forgotten)."""
        at = self._at
        horizon = now - window
        while at and next(iter(at.values())) < horizon:
            at.popitem(last=False)
        return tuple(reversed(at))
