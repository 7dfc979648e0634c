"""A peer request's header ticket: authentication before the body, for answers given before the body.

With a keyring, a peer request is authenticated by its sealed body (io/security.py): nothing in its headers
says it comes from a member. Answers given before the body is read (io/http_limits `refuse_before_body`
and `expect_refusal`: the anti-entropy endpoint's "retry later" under a byte budget, and its concurrency
cap) would then go to anyone who sends headers: a cheap answer per connection, and the budget's state
(whether it has room, and `X-Gossip-Retry-After-Ms`: when it will) to a client holding no key.

So a member's request also carries `TICKET_HEADER`: the keyring's seal (AES-GCM, its own purpose
`Purpose.STREAM_HEAD`, so neither a sealed body nor a packet passes as one, nor a ticket as either) of the
sealing time, the request's method and path, and the target agent's address as the asker dials it (the
member table's `host:port`). A responder gives its pre-body answer only to a request whose ticket opens,
names that method and path and one of its own addresses (the one it advertises, or the local address the
connection arrived at), and was sealed within `security.replayWindow` of its clock; any other request is
read and its body authenticated first (as without tickets: a stranger's request then fails at its body).
Checking one costs one AES-GCM open per key, no body bytes. The target keeps a ticket captured on its way to
one agent from buying an early answer from another within the window (review).

Mixed versions: a ticket of an agent from before the target was named ("POST path" only) names no address,
and a newer ticket is not what an older responder expects; either way the request counts as one without a
ticket, so its body is read and authenticated, then answered (the 429/503 after the body instead of before:
the session goes on, it only loses the early refusal until both ends are upgraded).

What a ticket does not do: authenticate the body (the body is sealed and checked as before), or stop a replay
within the window by someone who captured one on the wire: that someone sees the answers on the wire too.
Without a keyring there is no ticket: a plaintext cluster has no peer authentication (with a TLS CA, the
client certificate is checked before the body, io/auth.py); anyone may sync with its members, which tells
far more than a "retry later".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from gossip_agent.io.security import STAMP_BYTES, AuthError, Purpose, Security

TICKET_HEADER = "X-Gossip-Ticket"
# A ticket's header value is ~80 characters (12-byte nonce, 16-byte tag, stamp, method and path, base64):
# longer ones are not opened.
MAX_TICKET_CHARS = 512


def _request_line(method: str, path: str, target: tuple[str, int]) -> bytes:
    host, port = target[0], target[1]
    return f"{method} {path} {f'[{host}]' if ':' in host else host}:{port}".encode()


def make_ticket(security: Security, method: str, path: str, target: tuple[str, int]) -> str | None:
    """The ticket for a request to `path` of the agent at `target` (as the asker dials it); None without a
    keyring: there is nothing to prove."""
    keyring = security.keyring
    if keyring is None:
        return None
    stamp = int(security.wall() * 1000).to_bytes(STAMP_BYTES, "big")
    sealed = keyring.seal(stamp + _request_line(method, path, target), Purpose.STREAM_HEAD)
    return base64.urlsafe_b64encode(sealed).decode("ascii")


def ticket_valid(security: Security, value: str | None, method: str, path: str,
                 ours: Iterable[tuple[str, int]]) -> bool:
    """True when `value` is a ticket of our keyring for this method and path and one of `ours` (the addresses
    this agent is reached at), sealed within the replay window of our clock. Without a keyring never (callers
    ask only when there is one)."""
    keyring = security.keyring
    if keyring is None or not value or len(value) > MAX_TICKET_CHARS:
        return False
    try:
        plain = keyring.open(base64.urlsafe_b64decode(value.encode("ascii")), Purpose.STREAM_HEAD)
    except (AuthError, binascii.Error, ValueError, UnicodeEncodeError):
        return False
    if len(plain) < STAMP_BYTES or plain[STAMP_BYTES:] not in {_request_line(method, path, a) for a in ours}:
        return False
    age = security.wall() - int.from_bytes(plain[:STAMP_BYTES], "big") / 1000
    return abs(age) <= security.replay_window
