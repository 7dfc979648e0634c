"""A read's context token names every writer of a state of many concurrent writers, however long their names
(ctx-review F3, session 17).

Writer ids are `name@epoch`: up to 135 bytes (member names are 1..128 bytes). A token holds at most
MAX_TOKEN_BYTES (4 KiB, so its base64 fits a request header line): it stayed within it, but by naming only the
writers that fit: 26 of 128-byte names. A client's write back of 64 such siblings (MAX_LOCAL_SIBLINGS) left 39 of
them, silently, and each round collapsed only 26 more. Now a token whose names do not fit names each writer by a
64-bit digest (`kvstore.compact_writer`, 17 bytes), matched against the writers of the versions held: 64
siblings of 135-byte ids take a 1,369-byte token and collapse in one write. Tokens whose names fit are unchanged.
"""

from __future__ import annotations

import base64

import pytest

from gossip_agent.core.config import StateConfig
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    MAX_LOCAL_SIBLINGS,
    MAX_TOKEN_BYTES,
    CausalContext,
    KvStore,
    ValueEntry,
    Version,
    compact_writer,
)
from gossip_agent.core.replica import replica_id
from gossip_agent.core.state_codec import decode_context, encode_context
from gossip_agent.core.vector_clock import VersionVector

NOW = 1_700_000_000_000
SIBLINGS = StateConfig(conflict_policies={"carts/": "siblings"})
MAX_HEADER_LINE = 8190  # (io/http_limits.MAX_HEADER_LINE: a core test does not import io/)


def _writers(count: int, name_bytes: int = 128) -> list[str]:
    """Replica ids of `count` members with names of `name_bytes` (128: the longest the config allows)."""
    return [replica_id(f"{i:04d}-" + "n" * (name_bytes - 5), f"{i:06x}") for i in range(count)]


def _siblings(writers: list[str], key: str = "carts/k", node: str = "me@000001") -> KvStore:
    versions = tuple(Version((w, 1), Hlc(NOW, 0, w), f"from {w[:4]}".encode()) for w in writers)
    store = KvStore(node, SIBLINGS)
    assert store.apply_remote(ValueEntry(key, versions, VersionVector({w: 1 for w in writers})), NOW)
    return store


def _round_trip(context: CausalContext) -> CausalContext:
    token = encode_context(context)
    assert len(token) <= MAX_TOKEN_BYTES
    assert len("X-Gossip-Context: ") + len(base64.b64encode(token)) < MAX_HEADER_LINE
    return decode_context(token)


@pytest.mark.parametrize("name_bytes", [64, 128])
def test_a_write_back_of_the_most_siblings_of_the_longest_names_collapses_them_all(name_bytes: int) -> None:
    writers = _writers(MAX_LOCAL_SIBLINGS, name_bytes)
    assert max(len(w.encode()) for w in writers) == name_bytes + 7
    store = _siblings(writers)
    read = store.get("carts/k")
    assert read is not None and len(read.values) == MAX_LOCAL_SIBLINGS
    assert len(read.context.vv) == MAX_LOCAL_SIBLINGS  # (before: 26 of 128-byte names, 50 of 64-byte ones)
    entry = store.local_put("carts/k", b"resolved", NOW + 1, _round_trip(read.context))
    assert [v.value for v in entry.live] == [b"resolved"]  # (before: 39 left, for 128-byte names)


def test_a_token_whose_names_fit_names_them_as_before() -> None:
    writers = _writers(8, 16)
    read = _siblings(writers).get("carts/k")
    assert read is not None and sorted(read.context.vv) == sorted(writers)


def test_a_compact_token_covers_only_the_dots_it_names() -> None:
    writers = _writers(40)
    store = _siblings(writers)
    read = store.get("carts/k")
    assert read is not None and all(node.startswith("#") for node in read.context.vv)
    # A newer write by one of the writers, not read: it stays (the token names that writer's first write only).
    later = Version((writers[0], 2), Hlc(NOW + 5, 0, writers[0]), b"later")
    store.apply_remote(ValueEntry("carts/k", (later,), VersionVector({writers[0]: 2})), NOW + 5)
    entry = store.local_put("carts/k", b"resolved", NOW + 6, _round_trip(read.context))
    assert sorted(v.value for v in entry.live) == [b"later", b"resolved"]  # type: ignore[type-var]


def test_writes_a_compact_token_names_that_are_not_here_are_reported() -> None:
    """`put_leaves`/`delete_leaves` with a compact token read elsewhere: a writer seen here at an older counter is
    reported by name; one never seen here by the digest the token names it by; this replica's own never."""
    writers = _writers(40)
    at_a = _siblings(writers, node="a@000001")
    at_b = _siblings(writers[:-1], node="b@000002")
    newer = Version((writers[0], 2), Hlc(NOW + 1, 0, writers[0]), b"newer")
    at_a.apply_remote(ValueEntry("carts/k", (newer,), VersionVector({writers[0]: 2})), NOW + 1)
    read = at_a.get("carts/k")
    assert read is not None and len(read.context.vv) == 40
    token = _round_trip(read.context)
    at_b.local_put("carts/k", b"mine", NOW + 2, token)
    assert sorted(at_b.put_leaves("carts/k", token)) == sorted([(writers[0], 2), (compact_writer(writers[-1]), 1)])
    forged = CausalContext(VersionVector({**dict(token.vv.items()), compact_writer(at_b.node): 99}), token.timestamp)
    assert sorted(at_b.delete_leaves("carts/k", forged)) == sorted(at_b.put_leaves("carts/k", token))
