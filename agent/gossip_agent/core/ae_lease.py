"""Who may push to us now: one anti-entropy session at a time (sans-I/O; the driver passes `now`).

Under a byte budget below the write load every member lags, every member's root differs from every other's,
and several members start sessions with the same lagging peer at once. Each lists the same subtrees, finds
the same keys missing there and pushes them: the peer merges the first copy and discards the others
(`pushed_in_stale`), each paid from a budget that is the bottleneck. So a responder lets one session push at
a time: the first session that pushes holds the lease, renewed by each of its pushes, until `hold` seconds
after its last one; the others are told in their answer's headers (io/state_service.py): they push nothing
more but go on pulling to the session's end (descending the tree, taking what we hold that they lack: a
lease keeps pushes away, never repairs), then take another member as partner for `hold` (core/state_node.py
`anti_entropy_held`: their budget repairs someone else; what we lack that only they hold goes in a later
session). A holder that vanishes frees the lease after `hold`. Sessions are named by a random id their
asker makes up (trusted for nothing else); requests without one (older agents) neither hold the lease nor
are held back. Only agents under a byte budget hold sessions back (without one a duplicate push costs
nothing scarce).

No session holds it longer than `MAX_TENURE` at once: then it is free for another session, and its holder
may not take it again for `hold` (a peer that pushes an entry every second, forever, must not turn
everyone else's sessions away for good). The session id is the asker's choice, so an asker that makes up a
new one whenever turned away would take the freed lease back at once; so when a session from another
address than the holder's was turned away during a tenure, no session from the holder's address may push
for `tenure` after it ends: the lease goes to a waiting address, and one address holds a contended lease at
most about half the time. Without such contention the address is not barred: the agents of one host (all
loopback clusters and benches share 127.0.0.1) are told apart by their session ids only, as before. (An
asker with many addresses may still take turns with each; every turn is bounded, and pulls go on.)
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
        self._holder_source: str | None = None
        self._since = float("-inf")
        self._until = float("-inf")
        self._barred: str | None = None  # the last holder whose tenure ran out, until `_barred_until`
        self._barred_until = float("-inf")
        self._contended = False  # an asker from another address than the holder's was turned away this tenure
        self._resting: str | None = None  # the address of that contended holder, until `_resting_until`
        self._resting_until = float("-inf")

    def ask(self, session: str | None, now: float, *, pushing: bool, source: str | None = None) -> bool:
        """May `session` (from address `source`, when known) push? A session `pushing` now renews its lease
        or takes a free one; one that does not push takes nothing (a session that only pulls must not hold
        back those that have something to give). Sessions without an id always may."""
        if session is None:
            return True
        self._end_tenure(now)
        if not ((session == self._barred and now < self._barred_until)
                or (source is not None and source == self._resting and now < self._resting_until)):
            if self._holder == session:
                if pushing:
                    self._until = now + self.hold
                return True
            if now >= self._until:
                if pushing:
                    self._holder, self._holder_source = session, source
                    self._since, self._until, self._contended = now, now + self.hold, False
                return True
        if source is not None and source != self._holder_source and now < self._until:
            self._contended = True  # (turned away while another address holds it: it waits behind that one)
        return False

    def _end_tenure(self, now: float) -> None:
        """A holder whose tenure ran out while it still held the lease gives it up: its session may not take
        it again for `hold`, and when an asker from another address was turned away meanwhile, no session
        from the holder's address may push for `tenure` (see the module docstring)."""
        end = self._since + self.tenure
        if self._holder is None or now < end:
            return
        if self._until > end:  # (a holder gone quiet before its tenure ended is barred from nothing)
            self._barred, self._barred_until = self._holder, now + self.hold
            if self._contended and self._holder_source is not None:
                self._resting, self._resting_until = self._holder_source, end + self.tenure
        self._holder, self._holder_source, self._until, self._contended = None, None, float("-inf"), False
