"""Local write limits versus what a replica accepts from peers (hostile review, session 13, F2/F2b/F5).

A local operation may grow a CRDT state only up to `StateConfig.crdt_write_limit`, and a client context adds no
writer to a key's context (session 14); peers' states and merges are held to larger bounds, so concurrent
writes that each passed the local limit merge into a state every replica accepts and the replicas converge.
The repair planner backs off when sessions change nothing, and pushes the peer kept its own state over are not
counted as repairs.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from gossip_agent.core import crdt as crdt_mod
from gossip_agent.core import packing
from gossip_agent.core.anti_entropy import AeRequest, Session, respond
from gossip_agent.core.codec_limits import CodecLimits
from gossip_agent.core.config import CRDT_MERGE_HEADROOM, CRDT_STATE_CEILING, MAX_CRDT_BYTES, AgentConfig, StateConfig
from gossip_agent.core.crdt import MVRegister, ORSet
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    CausalContext,
    CrdtEntry,
    InvalidEntry,
    KvStore,
    ValueTooLarge,
)
from gossip_agent.core.replica import RepairPlanner
from gossip_agent.core.state_codec import decode_rumor, encode_rumor
from gossip_agent.core.state_node import REPAIR_MIN_GAP, StateNode
from gossip_agent.core.vector_clock import VersionVector

T = 1_700_000_000_000
SMALL = StateConfig(max_value_bytes=4096)  # CRDT write limit 4 KiB
CEILING = CRDT_MERGE_HEADROOM * SMALL.crdt_write_limit  # a store's CRDT ceiling in tests (agents: CRDT_STATE_CEILING)


def _capped(node: str, config: StateConfig = SMALL) -> KvStore:
    """A store whose CRDT ceiling is CEILING (16 KiB), so that merges past it are cheap to build."""
    return KvStore(node, config, crdt_ceiling=CEILING)


def _state_bytes(store: KvStore, key: str) -> int:
    value = store.get_crdt(key)
    assert value is not None
    return len(packing.pack(crdt_mod.to_plain(value)))


def _elements(store: KvStore, key: str) -> frozenset[str]:
    value = store.get_crdt(key)
    assert isinstance(value, ORSet)
    return value.value()


def _fill(store: KvStore, key: str, prefix: str, count: int) -> None:
    store.update_crdt(key, ORSet, lambda s, n, _: s.update(n, add=[f"{prefix}-{i:04d}" for i in range(count)]), T)


def _converge(a: KvStore, b: KvStore, key: str) -> None:
    """Gossip both ways as the agents do: each sends its whole state after every change."""
    entry_a, entry_b = a.entry(key), b.entry(key)
    assert entry_a is not None and entry_b is not None
    b.apply_remote(entry_a, T)
    a.apply_remote(entry_b, T)
    b.apply_remote(a.entry(key), T)  # type: ignore[arg-type]  # (a now holds the merge)


def test_concurrent_set_adds_each_within_the_limit_merge_and_converge() -> None:
    a, b = KvStore("a", SMALL), KvStore("b", SMALL)
    _fill(a, "crdt/sets/race", "a", 300)
    _fill(b, "crdt/sets/race", "b", 300)
    assert _state_bytes(a, "crdt/sets/race") <= SMALL.crdt_write_limit >= _state_bytes(b, "crdt/sets/race")
    _converge(a, b, "crdt/sets/race")
    assert a.entry("crdt/sets/race") == b.entry("crdt/sets/race")
    assert a.root_hex() == b.root_hex()
    assert _state_bytes(a, "crdt/sets/race") > SMALL.crdt_write_limit  # what the write limit refused to hold before
    assert len(_elements(a, "crdt/sets/race")) == 600
    assert a.refused_remote == b.refused_remote == 0


def test_a_state_over_the_write_limit_refuses_growth_but_not_shrinking() -> None:
    a, b = KvStore("a", SMALL), KvStore("b", SMALL)
    _fill(a, "crdt/sets/race", "a", 300)
    _fill(b, "crdt/sets/race", "b", 300)
    _converge(a, b, "crdt/sets/race")
    with pytest.raises(ValueTooLarge):
        a.update_crdt("crdt/sets/race", ORSet, lambda s, n, _: s.add(n, "one-more"), T + 1)
    a.update_crdt("crdt/sets/race", ORSet, lambda s, n, _: s.update(n, remove=["a-0000", "a-0001"]), T + 1)
    b.apply_remote(a.entry("crdt/sets/race"), T + 1)  # type: ignore[arg-type]
    assert a.entry("crdt/sets/race") == b.entry("crdt/sets/race")
    assert "a-0000" not in b.get_crdt("crdt/sets/race")  # type: ignore[operator]


def test_concurrent_mv_assignments_merge_past_the_write_limit() -> None:
    a, b = KvStore("a", SMALL), KvStore("b", SMALL)
    a.update_crdt("crdt/registers/mv/reg", MVRegister, lambda r, n, _: r.assign(n, b"x" * 3000), T)
    b.update_crdt("crdt/registers/mv/reg", MVRegister, lambda r, n, _: r.assign(n, b"y" * 3000), T)
    _converge(a, b, "crdt/registers/mv/reg")
    assert a.entry("crdt/registers/mv/reg") == b.entry("crdt/registers/mv/reg")
    assert len(a.get_crdt("crdt/registers/mv/reg").value()) == 2  # type: ignore[union-attr,arg-type]


def test_a_merge_past_the_merge_limit_is_refused_counted_and_leaves_ours() -> None:
    stores = [_capped(f"n{i}") for i in range(CRDT_MERGE_HEADROOM + 1)]
    for i, store in enumerate(stores):
        _fill(store, "crdt/sets/race", "abcdefgh"[i], 290)
    first = stores[0]
    for other in stores[1:-1]:
        first.apply_remote(other.entry("crdt/sets/race"), T)  # type: ignore[arg-type]
    before = first.entry("crdt/sets/race")
    assert _state_bytes(first, "crdt/sets/race") <= CEILING
    with pytest.raises(InvalidEntry):
        first.apply_remote(stores[-1].entry("crdt/sets/race"), T)  # type: ignore[arg-type]
    assert first.entry("crdt/sets/race") == before
    assert first.refused["state_too_large"] == 1
    assert first.refused_remote == 1 and "state_too_large" in first.last_refused_remote


def test_an_agent_with_lowered_limits_merges_the_states_the_cluster_holds() -> None:
    """The CRDT ceiling is fixed, not derived from each agent's config (re-review): an agent whose maxValueBytes
    was lowered to 1 KiB (a merge limit of 4 KiB before) refused the 27 KiB state two default agents merged,
    in its decoder and its store, and the key never converged there. Its own writes stay held to its limit."""
    a, b = KvStore("a"), KvStore("b")
    _fill(a, "crdt/sets/race", "a", 1000)
    _fill(b, "crdt/sets/race", "b", 1000)
    b.apply_remote(a.entry("crdt/sets/race"), T)  # type: ignore[arg-type]
    merged = b.entry("crdt/sets/race")
    assert merged is not None and _state_bytes(b, "crdt/sets/race") > 4 * 4096
    lowered = StateConfig(max_value_bytes=1024)
    c = KvStore("c", lowered)
    assert decode_rumor(encode_rumor(merged), CodecLimits()) == merged
    assert c.apply_remote(merged, T)
    assert c.entry("crdt/sets/race") == merged and c.root_hex() == b.root_hex() and c.refused == {}
    with pytest.raises(ValueTooLarge):
        c.update_crdt("crdt/sets/race", ORSet, lambda s, n, _: s.add(n, "mine"), T + 1)


def _register_of(size: int) -> CrdtEntry:
    return CrdtEntry("crdt/registers/mv/reg", MVRegister().assign("w", b"x" * size), Hlc(T, 0, "w"))


def test_crdt_states_past_the_fixed_ceiling_are_refused_whatever_the_config() -> None:
    over = _register_of(CRDT_STATE_CEILING)  # (its encoding is a few bytes longer)
    store = KvStore("r", StateConfig(max_value_bytes=16 << 20, max_crdt_bytes=MAX_CRDT_BYTES))
    with pytest.raises(InvalidEntry):
        store.apply_remote(over, T)
    assert store.refused == {"state_too_large": 1}
    with pytest.raises(EntryOverLimit, match="ceiling"):
        decode_rumor(encode_rumor(over), CodecLimits())
    at = _register_of(CRDT_STATE_CEILING - 64)
    assert store.apply_remote(at, T)


def test_crdt_states_have_a_cap_of_their_own_however_large_values_may_be() -> None:
    config = StateConfig(max_value_bytes=16 << 20, max_crdt_bytes=2048)
    assert config.crdt_write_limit == 2048
    store = KvStore("a", config)
    with pytest.raises(ValueTooLarge):
        _fill(store, "crdt/sets/big", "e", 200)
    store.local_put("plain", b"v" * 100_000, T)  # plain values keep maxValueBytes
    assert StateConfig(max_value_bytes=1024).crdt_write_limit == 1024  # the smaller of the two


def _made_up_context(prefix: str, count: int) -> CausalContext:
    return CausalContext(VersionVector({f"{prefix}{i}": 1 for i in range(count)}))


def test_concurrent_writes_with_huge_made_up_contexts_store_none_of_it_and_converge() -> None:
    a, b = KvStore("a"), KvStore("b")
    b.apply_remote(a.local_put("k", b"old", T), T)
    ea = a.local_put("k", b"from-a", T + 1, _made_up_context("x", 9000))
    eb = b.local_put("k", b"from-b", T + 2, _made_up_context("y", 9000))
    a.apply_remote(eb, T + 2)
    b.apply_remote(ea, T + 2)
    assert a.entry("k") == b.entry("k") and a.refused == b.refused == {}
    assert a.entry("k").context == VersionVector({"a": 2, "b": 1})  # type: ignore[union-attr]
    read = a.get("k")
    assert read is not None and read.values == (b"from-b",)  # (lww: the later write)
    b.apply_remote(a.local_put("k", b"honest", T + 3, read.context), T + 3)
    assert b.get("k").values == (b"honest",)  # type: ignore[union-attr]


def test_the_planner_backs_off_while_sessions_change_nothing() -> None:
    planner = RepairPlanner(hold=0.3, min_gap=0.5, max_gap=4.0)
    planner.observe(0.0, "mine", {"p": "theirs"})
    gaps = []
    now = 1.0
    for _ in range(6):
        assert planner.pick(now, ["p"], 0.0) == "p"
        planner.started(now)
        planner.finished(changed=False)
        gaps.append(planner.gap)
        assert planner.pick(now + planner.gap - 0.01, ["p"], 0.0) is None
        assert planner.earliest() == now + planner.gap
        now = planner.earliest()
    assert gaps == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    planner.finished(changed=True)
    assert planner.gap == 0.5
    planner.finished(changed=False)
    planner.peer(now, "p", "theirs-now")  # news: back to the shortest gap
    assert planner.gap == 0.5
    planner.finished(changed=False)
    planner.mine(now, "mine-now")
    assert planner.gap == 0.5


def test_the_planner_without_max_gap_does_not_back_off() -> None:
    planner = RepairPlanner(hold=0.3, min_gap=0.5)
    planner.finished(changed=False)
    assert planner.gap == 0.5


def test_a_push_the_peer_refused_is_not_counted_as_repaired() -> None:
    big, small = KvStore("a", StateConfig(max_value_bytes=32768)), _capped("b")
    _fill(small, "crdt/sets/race", "b", 10)
    big.apply_remote(small.entry("crdt/sets/race"), T)  # type: ignore[arg-type]
    _fill(big, "crdt/sets/race", "a", 1600)  # within big's limits, past small's ceiling
    session = Session(big)
    request: AeRequest | None = session.start()
    while request is not None:
        request = session.handle(respond(small, request, T), T)
    assert session.stats.pushed == 1
    assert session.stats.push_refused == 1 and session.stats.repaired == 0
    assert small.refused["state_too_large"] == 1

    ok = KvStore("c", SMALL)
    _fill(ok, "crdt/sets/race", "c", 10)
    session = Session(ok)
    request = session.start()
    while request is not None:
        request = session.handle(respond(small, request, T), T)
    assert session.stats.push_refused == 0  # taken (and the merge sent back repaired ours)
    assert session.stats.repaired == 1


def test_a_refused_push_of_a_key_the_peer_lacks_is_counted_refused() -> None:
    """Nothing of such a key comes back, so the initiator counted the push taken; the answer says how many of
    its pushes the peer did not take and sends nothing of back (AeResponse.push_refused), at most one per
    entry pushed."""
    big, small = KvStore("a", StateConfig(max_value_bytes=32768)), _capped("b")
    _fill(big, "crdt/sets/race", "a", 1600)  # past small's ceiling
    big.local_put("plain", b"v", T)
    session = Session(big)
    request: AeRequest | None = session.start()
    while request is not None:
        answer = respond(small, request, T)
        assert answer.push_refused == (1 if request.push else 0)
        request = session.handle(answer, T)
    assert session.stats.pushed == 2 and session.stats.push_refused == 1
    assert small.entry("crdt/sets/race") is None and small.refused == {"state_too_large": 1}
    forged = Session(big)
    forged.start()
    forged.handle(dataclasses.replace(respond(small, AeRequest((small.merkle.bits, small.merkle.depth),
                                                               root=small.merkle.root()), T), push_refused=99), T)
    assert forged.stats.push_refused == 0  # (it pushed nothing in that round)


def _state_node(name: str, state: StateConfig, crdt_ceiling: int = CRDT_STATE_CEILING) -> StateNode:
    base = AgentConfig.preset_config("lan", name=name)
    cfg = dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False), state=state)
    return StateNode(cfg, KvStore(f"{name}@e1", state, crdt_ceiling=crdt_ceiling), random.Random(1), 0.0,
                     addr=("10.0.0.1", 7000 + len(name)), inline_limit=1200)


def test_the_state_node_backs_repairs_off_while_the_peer_refuses_our_pushes() -> None:
    big, small = _state_node("a", StateConfig(max_value_bytes=32768)), _state_node("p", SMALL, CEILING)
    _fill(small.store, "crdt/sets/race", "b", 10)
    big.store.apply_remote(small.store.entry("crdt/sets/race"), T)  # type: ignore[arg-type]
    _fill(big.store, "crdt/sets/race", "a", 1600)
    gaps: list[float] = []
    for i in range(3):
        session = big.start_anti_entropy(float(i))
        request: AeRequest | None = session.start()
        while request is not None:
            response, _ = small.serve_anti_entropy(request, float(i), 1_795_000_000.0)
            request, _ = big.on_anti_entropy_reply(session, response, float(i), 1_795_000_000.0)
        gaps.append(big.planner.gap)
    assert gaps == [2 * REPAIR_MIN_GAP, 4 * REPAIR_MIN_GAP, 8 * REPAIR_MIN_GAP]
    assert big.stats.ae_repaired["push_refused"] == 3 and big.stats.ae_repaired["pushed"] == 0
    assert small.store.refused["state_too_large"] == 3


def test_failed_sessions_back_repairs_off_too() -> None:
    """A peer whose every answer fails (hostile re-review: an entry it cannot decode fails the whole exchange)
    must not draw a repair every hold + 0.5 s forever."""
    node = _state_node("a", SMALL)
    gaps = []
    for i in range(3):
        node.anti_entropy_failed("answer undecodable", float(i))
        gaps.append(node.planner.gap)
    assert gaps == [2 * REPAIR_MIN_GAP, 4 * REPAIR_MIN_GAP, 8 * REPAIR_MIN_GAP]
    assert node.stats.ae["failures"] == 3
