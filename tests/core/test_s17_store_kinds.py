"""The store itself holds every entry to core/keys.kind_problem (session 17): `KvStore.apply_remote` and
`KvStore.update_crdt` refuse a CRDT outside the CRDT prefixes (or under another type's prefix), and a plain value
under one, counted as `wrong_kind`. The rule was enforced only at the edges (the HTTP routes and the entry
decoders), so a caller that reached the store another way planted a CRDT no route serves, which then
replicated to every agent."""

from __future__ import annotations

import pytest

from gossip_agent.core.config import StateConfig
from gossip_agent.core.crdt import MVRegister, ORSet, PNCounter
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import CrdtEntry, InvalidEntry, KindMismatch, KvStore, entry_from_plain

T0 = 1_700_000_000_000
TS = Hlc(T0, 0, "w")


@pytest.mark.parametrize("entry", [
    CrdtEntry("plain/counter", PNCounter().increment("w", 1), TS),            # a CRDT outside the prefixes
    CrdtEntry("crdt/sets/s", PNCounter().increment("w", 1), TS),              # another type's prefix
    CrdtEntry("crdt/registers/lww/r", MVRegister().assign("w", b"v"), TS),
    entry_from_plain([0, "crdt/counters/c", ["w", 1], [["w", 1, T0, 0, b"v"]]]),  # a plain value under one
], ids=["crdt-outside", "crdt-other-prefix", "mv-under-lww", "plain-under-prefix"])
def test_apply_remote_refuses_an_entry_of_the_wrong_kind_and_counts_it(entry: object) -> None:
    store = KvStore("me@1", StateConfig())
    with pytest.raises(InvalidEntry, match="hold"):
        store.apply_remote(entry, T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidEntry):
        store.validate(entry)  # type: ignore[arg-type]
    assert len(store) == 0 and store.drain_changes() == []
    assert store.refused == {"wrong_kind": 2} and store.refused_remote == 2
    assert store.last_refused_remote.startswith("wrong_kind: ")


def test_apply_remote_still_takes_entries_of_the_right_kind() -> None:
    store = KvStore("me@1", StateConfig())
    assert store.apply_remote(CrdtEntry("crdt/counters/c", PNCounter().increment("w", 1), TS), T0)
    assert store.apply_remote(entry_from_plain([0, "plain/k", ["w", 1], [["w", 1, T0, 0, b"v"]]]), T0)
    assert store.apply_remote(entry_from_plain([0, "crdt/other/k", ["w", 1], [["w", 1, T0, 0, b"v"]]]), T0)
    assert store.refused == {}


@pytest.mark.parametrize(("key", "kind"), [("counters/hits", PNCounter), ("crdt/sets/s", PNCounter),
                                           ("crdt/counters/c", ORSet), ("s", ORSet)])
def test_update_crdt_refuses_a_kind_that_does_not_belong_under_the_key(key: str, kind: type) -> None:
    store = KvStore("me@1", StateConfig())
    with pytest.raises(KindMismatch, match="hold"):
        store.update_crdt(key, kind, lambda c, n, _: c, T0)
    assert len(store) == 0 and store.drain_changes() == []
    assert store.refused == {"wrong_kind": 1} and store.refused_remote == 0  # (a local refusal: no peer's)


def test_update_crdt_under_its_own_prefix_still_works() -> None:
    store = KvStore("me@1", StateConfig())
    value = store.update_crdt("crdt/counters/hits", PNCounter, lambda c, n, _: c.increment(n, 3), T0)
    assert value.value() == 3 and store.refused == {}
