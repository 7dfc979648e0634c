"""Session 16: a peer's key is held to the rules a client's is (core/keys.py `key_problem`).

A client's key was checked at the HTTP edge only; a peer's entry only for UTF-8 and emptiness, so a state rumor,
an announcement, an anti-entropy push or answer could plant a key no client could write (a NUL, an escape
sequence, a `..` segment), which then broke watchers, logs and `gossipctl` output at every replica it reached.
Each decoder now skips such an entry alone (EntryOverLimit `invalid_key`, counted by its caller), and the store
refuses it from any other caller.
"""

from __future__ import annotations

import pytest

from gossip_agent.core import hlc
from gossip_agent.core.ae_codec import AnswerEntries, decode_ae_request, encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeRequest, AeResponse, PushMerge
from gossip_agent.core.config import StateConfig
from gossip_agent.core.crdt import PNCounter
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.keys import key_problem
from gossip_agent.core.kvstore import CrdtEntry, InvalidEntry, KvStore, ValueEntry
from gossip_agent.core.replica import Announcement, decode_payload, encode_announcement
from gossip_agent.core.state_codec import decode_rumor, encode_rumor
from gossip_agent.core.state_node import AE_LIMITS
from gossip_agent.io import state_http

T0 = 1_700_000_000_000
BAD_KEYS = ["a\x00b", "a\x1b[2Jb", "line\nforged", "c1\x85", "del\x7f", "x/../y", "..", "a/./b", "./a", "a/.."]


def _entry(key: str, value: bytes = b"v") -> ValueEntry:
    """A well-formed entry under `key`, as a peer's store would hold it (the store checks only lengths locally)."""
    return KvStore("peer@1", StateConfig()).local_put(key, value, T0)


def test_the_http_edge_and_the_peers_share_one_definition() -> None:
    assert state_http.key_problem is key_problem
    for key in BAD_KEYS:
        assert key_problem(key) is not None, key
    for key in ("a", "a/b", "a..b/c", ".hidden", "x/...", "ünïcode/ключ"):
        assert key_problem(key) is None, key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_state_rumor_of_a_bad_key_is_skipped_as_invalid_key(key: str) -> None:
    with pytest.raises(EntryOverLimit) as err:
        decode_rumor(encode_rumor(_entry(key)))
    assert err.value.reason == "invalid_key"
    assert decode_rumor(encode_rumor(_entry("fine/key"))).key == "fine/key"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_an_announcement_of_a_bad_key_is_skipped_as_invalid_key(key: str) -> None:
    payload = encode_announcement(Announcement(key, b"d" * 32, ("127.0.0.1", 7946)))
    with pytest.raises(EntryOverLimit) as err:
        decode_payload(payload)
    assert err.value.reason == "invalid_key"
    good = decode_payload(encode_announcement(Announcement("ok", b"d" * 32, ("127.0.0.1", 7946))))
    assert isinstance(good, Announcement) and good.key == "ok"


def test_a_push_skips_the_bad_entries_alone_and_counts_them() -> None:
    store = KvStore("me@1", StateConfig())
    push = (_entry("good/1"), _entry("bad\x1b[2J"), _entry("good/2"), _entry("x/../etc"))
    request = decode_ae_request(encode_ae(AeRequest((store.merkle.bits, store.merkle.depth), push=push)))
    merge = PushMerge(store, request, AE_LIMITS)
    while not merge.done:
        merge.step(T0)
    assert merge.over_limit == {"invalid_key": 2}
    assert store.all_keys() == ["good/1", "good/2"]


def test_an_answer_skips_the_bad_entries_alone_and_counts_them() -> None:
    entries = (_entry("good/1"), _entry("nul\x00key"), _entry("good/2"))
    answer = encode_ae(AeResponse((4, 4), entries=entries))
    _, source = open_ae_response(answer)
    assert isinstance(source, AnswerEntries)
    taken = source.take(10)
    assert [e.key for e in taken] == ["good/1", "good/2"]
    assert source.refused == {"invalid_key": 1}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_the_store_refuses_a_bad_key_from_any_other_caller(key: str) -> None:
    store = KvStore("me@1", StateConfig())
    with pytest.raises(InvalidEntry):
        store.apply_remote(_entry(key), T0)
    assert store.refused == {"invalid_key": 1} and store.refused_remote == 1
    assert key not in store
    assert store.apply_remote(_entry("fine"), T0)


def test_a_crdt_entry_of_a_bad_key_is_skipped_too() -> None:
    entry = CrdtEntry("crdt/counters/a\x1bb", PNCounter().increment("w", 1), hlc.Hlc(T0, 0, "w"))
    with pytest.raises(EntryOverLimit) as err:
        decode_rumor(encode_rumor(entry))
    assert err.value.reason == "invalid_key"
