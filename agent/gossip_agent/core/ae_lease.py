"""Who may push to us now: one anti-entropy session at a time (sans-I/O; the driver passes `now`).

Under a byte budget below the write load every member lags, every member's root differs from every other's,
and several members start sessions with the same lagging peer at once. Each lists the same subtrees, finds
the same keys missing there and pushes them: the peer merges the first copy and discards the others
(`pushed_in_stale`), each paid from a budget that is the bottleneck. So a responder lets one session push at
a time: the first session that pushes holds the lease, renewed by each of its pushes, until `hold` seconds
after its last one; the others are told in their answer's headers (io/state_service.py): they push nothing
more, end their session there and take another member as partner for `hold` (core/state_node.py
`anti_entropy_held`: their budget repairs someone else; what we lack that only they hold goes in a later
session). A holder that vanishes frees the lease after `hold`. Sessions are named by a random id their
asker makes up (trusted for nothing else: a member that keeps the lease only sends the others' sessions
elsewhere, which loses nothing; a request is served only once its body is authenticated); requests without
one (older agents) neither hold the lease nor are held back. Only agents under a byte budget hold sessions
back (without one a duplicate push costs nothing scarce). No session holds it longer than `MAX_TENURE`
at once: then it is free for another session, and its holder may not take it again for `hold` (a peer
that pushes an entry every second, forever, must not turn everyone else's sessions away for good).
"""

from __future__ import annotations

import re

LEASE_HOLD = 3.0
"""Seconds a lease outlives its holder's last request: above one round's budget wait at a few tens of kB/s
(a holder between two rounds keeps it), short enough that a vanished holder frees it soon."""

MAX_TENURE = 10.0
"""Seconds one session may hold the lease at once (an honest one's work left over goes in its next session)."""

_SESSION_ID = re.compile(r"[0-9a-f]{8,32}")


def valid_session_id(value: str | None) -> str | None:
    """A session id from a header, or None when absent or not one (8-32 lowercase hex characters)."""
    return value if value is not None and _SESSION_ID.fullmatch(value) else None


class PushLease:
    """The one session that may push to us now."""

    def __init__(self, hold: float = LEASE_HOLD, tenure: float = MAX_TENURE) -> None:
        self.hold = hold
        self.tenure = tenure
        self._holder: str | None = None
        self._since = float("-inf")
        self._until = float("-inf")
        self._barred: str | None = None  # the last holder whose tenure ran out, until `_barred_until`
        self._barred_until = float("-inf")

    def ask(self, session: str | None, now: float, *, pushing: bool) -> bool:
        """May `session` push? A session `pushing` now renews its lease or takes a free one; one that does
        not push takes nothing (a session that only pulls must not hold back those that have something to
        give). Sessions without an id always may."""
        if session is None:
            return True
        if self._holder is not None and now >= self._since + self.tenure:
            self._barred, self._barred_until = self._holder, now + self.hold
            self._holder, self._until = None, float("-inf")
        if session == self._barred and now < self._barred_until:
            return False
        if self._holder == session:
            if pushing:
                self._until = now + self.hold
            return True
        if now >= self._until:
            if pushing:
                self._holder, self._since, self._until = session, now, now + self.hold
            return True
        return False
