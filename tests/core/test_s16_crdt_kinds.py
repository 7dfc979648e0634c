"""Session 16: a CRDT key's kind is fixed by its prefix (core/keys.py `kind_problem`).

Keys under `crdt/counters/`, `crdt/sets/`, `crdt/registers/lww/`, `crdt/registers/mv/` hold that CRDT only, and
keys outside them no CRDT. Before, one plain `PUT /v1/kv/crdt/counters/x` stored a plain value there (and a peer
could send a CRDT of another kind under a prefix), after which the CRDT route failed for that key at every
replica. Now the store refuses the plain write (KindMismatch: a 409), every decoder skips a peer's entry of the
wrong kind (EntryOverLimit `wrong_kind`, counted), and a legacy entry of the wrong kind already held is replaced
by a write of the right kind.
"""

from __future__ import annotations

import pytest

from gossip_agent.core.ae_codec import decode_ae_request, encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeRequest, AeResponse, PushMerge
from gossip_agent.core.config import StateConfig
from gossip_agent.core.crdt import LWWRegister, MVRegister, ORSet, PNCounter
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.keys import crdt_route, kind_problem
from gossip_agent.core.kvstore import Change, CrdtEntry, Entry, KindMismatch, KvStore, ValueEntry, entry_from_plain
from gossip_agent.core.state_codec import decode_rumor, encode_rumor
from gossip_agent.core.state_node import AE_LIMITS

T0 = 1_700_000_000_000
TS = Hlc(T0, 0, "w")
COUNTER = PNCounter().increment("w", 3)
ORSET = ORSet().add("w", "e")


def _legacy(store: KvStore, entry: Entry) -> None:
    """Plant an entry of the wrong kind as an old snapshot or an older peer left it: the store's own merge
    refuses it now (`wrong_kind`), so only a replayed log record (which the decoders check) gets it in."""
    store.replay(Change(entry.key, entry, "remote"))


def _plain(key: str) -> ValueEntry:
    entry = entry_from_plain([0, key, ["w", 1], [["w", 1, T0, 0, b"v"]]])
    assert isinstance(entry, ValueEntry)
    return entry


WRONG: list[Entry] = [
    _plain("crdt/counters/x"),                                   # a plain value under a CRDT prefix
    CrdtEntry("crdt/counters/x", ORSET, TS),                      # another CRDT under a prefix
    CrdtEntry("crdt/sets/s", COUNTER, TS),
    CrdtEntry("crdt/registers/mv/r", LWWRegister().assign(b"v", TS), TS),
    CrdtEntry("plain/key", COUNTER, TS),                          # a CRDT outside the prefixes
    CrdtEntry("crdt/other/x", ORSET, TS),
]
RIGHT: list[Entry] = [
    _plain("plain/key"), _plain("crdt/other/x"), CrdtEntry("crdt/counters/x", COUNTER, TS),
    CrdtEntry("crdt/sets/s", ORSET, TS), CrdtEntry("crdt/registers/lww/r", LWWRegister().assign(b"v", TS), TS),
    CrdtEntry("crdt/registers/mv/r", MVRegister().assign("w", b"v"), TS),
]


def test_the_rule() -> None:
    for entry in WRONG:
        assert kind_problem(entry.key, entry.value.TYPE if isinstance(entry, CrdtEntry) else None), entry.key
    for entry in RIGHT:
        assert kind_problem(entry.key, entry.value.TYPE if isinstance(entry, CrdtEntry) else None) is None, entry.key
    assert crdt_route("crdt/counters/a/b") == "/v1/crdt/counters/a/b"
    assert crdt_route("crdt/registers/mv/r") == "/v1/crdt/registers/mv/r" and crdt_route("crdt/x") is None


@pytest.mark.parametrize("entry", WRONG, ids=lambda e: e.key)
def test_a_rumor_of_the_wrong_kind_is_skipped_as_wrong_kind(entry: Entry) -> None:
    with pytest.raises(EntryOverLimit) as err:
        decode_rumor(encode_rumor(entry))
    assert err.value.reason == "wrong_kind"


@pytest.mark.parametrize("entry", RIGHT, ids=lambda e: e.key)
def test_a_rumor_of_the_right_kind_decodes(entry: Entry) -> None:
    assert decode_rumor(encode_rumor(entry)) == entry


def test_a_push_and_an_answer_skip_the_wrong_kinds_alone() -> None:
    store = KvStore("me@1", StateConfig())
    request = decode_ae_request(encode_ae(AeRequest((store.merkle.bits, store.merkle.depth),
                                                    push=(*WRONG, *RIGHT))))
    merge = PushMerge(store, request, AE_LIMITS)
    while not merge.done:
        merge.step(T0)
    assert merge.over_limit == {"wrong_kind": len(WRONG)}
    assert sorted(store.all_keys()) == sorted(e.key for e in RIGHT)
    _, source = open_ae_response(encode_ae(AeResponse((4, 4), entries=(*WRONG, *RIGHT))))
    assert [e.key for e in source.take(100)] == [e.key for e in RIGHT]
    assert source.refused == {"wrong_kind": len(WRONG)}


def test_a_plain_write_under_a_crdt_prefix_is_refused_naming_the_route() -> None:
    store = KvStore("me@1", StateConfig())
    with pytest.raises(KindMismatch, match="pncounter only; use /v1/crdt/counters/x"):
        store.local_put("crdt/counters/x", b"v", T0)
    with pytest.raises(KindMismatch, match="/v1/crdt/sets/s"):
        store.local_delete("crdt/sets/s", T0)
    assert len(store) == 0


def test_a_legacy_plain_value_under_a_prefix_is_replaced_by_the_crdt_update() -> None:
    store = KvStore("me@1", StateConfig())
    _legacy(store, _plain("crdt/counters/x"))  # (as an old snapshot or an older peer left it)
    value = store.update_crdt("crdt/counters/x", PNCounter, lambda c, n, _: c.increment(n, 2), T0 + 1)
    assert value.value() == 2 and store.get_crdt("crdt/counters/x") == value
    _legacy(store, CrdtEntry("crdt/sets/s", COUNTER, TS))  # another CRDT kind
    assert store.update_crdt("crdt/sets/s", ORSet, lambda s, n, _: s.add(n, "a"), T0 + 2).value() == {"a"}
    # An update of a kind that does not belong under the key's prefix still refuses.
    with pytest.raises(KindMismatch):
        store.update_crdt("crdt/sets/s", PNCounter, lambda c, n, _: c.increment(n, 1), T0 + 3)


def test_a_legacy_crdt_outside_the_prefixes_is_replaced_by_a_put_or_a_delete() -> None:
    store = KvStore("me@1", StateConfig())
    _legacy(store, CrdtEntry("plain/a", COUNTER, TS))
    _legacy(store, CrdtEntry("plain/b", COUNTER, TS))
    put = store.local_put("plain/a", b"new", T0 + 1)
    assert store.get("plain/a") is not None and store.get("plain/a").values == (b"new",)  # type: ignore[union-attr]
    deleted = store.local_delete("plain/b", T0 + 1)
    assert deleted is not None and deleted.is_tombstone
    # The replacement wins the kinds' merge at a peer still holding the legacy CRDT.
    peer = KvStore("peer@1", StateConfig())
    _legacy(peer, CrdtEntry("plain/a", COUNTER, TS))
    peer.apply_remote(put, T0 + 1)
    assert peer.entry("plain/a") == put
    # A CRDT where it belongs is still no plain key.
    store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.increment(n, 1), T0)
    with pytest.raises(KindMismatch):
        store.local_put("crdt/counters/c", b"v", T0)
