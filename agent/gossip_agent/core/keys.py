"""Which keys the replicated state holds, and which kind of value each may hold: one definition for the HTTP edge
(a client's key), every decoder of a peer's entry (rumors, announcements, anti-entropy pushes and answers, log
records) and the snapshot restore.

Why one module: a client's key was checked at the HTTP edge only (io/state_http), and a peer's entry only for
UTF-8 and emptiness, so a peer could plant a key no client could write (a NUL, an escape sequence, a `..`
segment) that then broke every watcher, log line and `gossipctl` listing of every replica it reached.

Why the kind follows the prefix: the CRDT routes (`/v1/crdt/counters/{name}` ...) store under fixed prefixes
(`CRDT_PREFIXES`). A plain value there (one plain PUT), or a CRDT of another type (a peer's), made that route
fail for the key for good; a CRDT outside them is reachable by no route. So under a CRDT prefix a key holds
that CRDT type only, and outside every prefix no CRDT at all (`kind_problem`).

Pure: no I/O; the callers decide what a problem costs (a 4xx, a skipped and counted entry, an item left out).
"""

from __future__ import annotations

from gossip_agent.core.text import first_control_char

COUNTERS = "crdt/counters/"
SETS = "crdt/sets/"
LWW_REGISTERS = "crdt/registers/lww/"
MV_REGISTERS = "crdt/registers/mv/"

CRDT_PREFIXES: dict[str, str] = {COUNTERS: "pncounter", SETS: "orset", LWW_REGISTERS: "lwwregister",
                                 MV_REGISTERS: "mvregister"}
"""Key prefix -> the one CRDT type (`Crdt.TYPE`) keys under it hold. No prefix is another's prefix."""

ROUTES: dict[str, str] = {COUNTERS: "/v1/crdt/counters/", SETS: "/v1/crdt/sets/",
                          LWW_REGISTERS: "/v1/crdt/registers/lww/", MV_REGISTERS: "/v1/crdt/registers/mv/"}
"""Key prefix -> the HTTP route that serves its keys (the name after it is the key with the prefix stripped)."""

PLAIN = None
"""`kind_problem`'s kind for a plain (value or tombstone) entry."""


def key_problem(key: str) -> str | None:
    """Why `key` is not acceptable (None if it is): empty, a control character (core/text.py), or a '.'/'..'
    path segment. Lengths are the store's check (they depend on its configuration)."""
    if not key:
        return "key is empty"
    problem = control_char_problem(key, "key", "keys")
    if problem is not None:
        return problem
    if any(segment in (".", "..") for segment in key.split("/")):
        return f"key {key[:64]!r} has a '.' or '..' path segment; keys may not contain relative path segments"
    return None


def control_char_problem(text: str, what: str, kinds: str) -> str | None:
    """Why `text` (`what`, one of `kinds`) is refused for a control character (None if it has none): the one
    rule for keys and set elements, which are printed and logged one a line (core/text.py)."""
    at = first_control_char(text)
    if at is None:
        return None
    return f"{what} contains the control character U+{ord(text[at]):04X} at position {at}; {kinds} are printable text"


def crdt_prefix(key: str) -> str | None:
    """The CRDT prefix `key` lies under (None: a plain key)."""
    if not key.startswith("crdt/"):  # (the common case: one test)
        return None
    for prefix in CRDT_PREFIXES:
        if key.startswith(prefix):
            return prefix
    return None


def kind_problem(key: str, kind: str | None) -> str | None:
    """Why an entry of `kind` (a `Crdt.TYPE`, or PLAIN) may not be held under `key` (None if it may)."""
    prefix = crdt_prefix(key)
    wanted = CRDT_PREFIXES[prefix] if prefix is not None else PLAIN
    if kind == wanted:
        return None
    held = "a plain value" if kind is PLAIN else with_article(str(kind))
    if prefix is None:
        return f"{key[:80]!r} holds {held}; CRDTs live only under {', '.join(CRDT_PREFIXES)}"
    return f"{key[:80]!r} holds {held}; keys under {prefix!r} hold {with_article(str(wanted))} only"


def with_article(kind: str) -> str:
    """`kind` (a CRDT type name) with its article: "an orset", "a pncounter"."""
    return f"{'an' if kind[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {kind}"


def crdt_route(key: str) -> str | None:
    """The route serving `key` if it lies under a CRDT prefix (e.g. `/v1/crdt/counters/x` for
    `crdt/counters/x`), else None."""
    prefix = crdt_prefix(key)
    return None if prefix is None else ROUTES[prefix] + key[len(prefix):]
