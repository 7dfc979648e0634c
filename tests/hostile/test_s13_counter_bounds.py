"""Forged counters leave every replica room for further writes (session 13 review, F1 and F7).

F1: one client context naming every replica at 2^63-2 (ctx_forge.py), or a peer's entry or CRDT state naming
one at 2^63-1 (peer_counter_forge.py), was accepted (decoders took any counter below 2^63); each replica then
took one more write and refused every later write and delete of that key, cluster-wide, for good. F7: PN-counter
steps of 2^53 used a replica's room up in 1,024 requests. Now peers' entries and states carry at most
MAX_ACCEPTED_COUNTER (2^62), far below the overflow point (MAX_COUNTER, 2^63-1) where local writes stop, and a
client's context is never stored (session 14: it had been held to 2^53, which left keys whose dots passed that
refusing their own read tokens); a counter step is at most MAX_COUNTER_DELTA (2^32). A replica's own log and
snapshot records decode up to MAX_COUNTER (they must: a write it acknowledged may sit there).
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import msgpack
import pytest

from gossip_agent.core import crdt
from gossip_agent.core.ae_codec import decode_ae_request, encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeRequest, AeResponse, respond
from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import AgentConfig, from_mapping
from gossip_agent.core.crdt import MAX_COUNTER_DELTA, GCounter, MVRegister, ORSet, PNCounter
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import CausalContext, Change, CrdtEntry, InvalidEntry, KvStore, ValueEntry, Version
from gossip_agent.core.state_codec import (
    decode_change,
    decode_context,
    decode_rumor,
    encode_change,
    encode_rumor,
)
from gossip_agent.core.state_node import StateNode
from gossip_agent.core.vector_clock import MAX_ACCEPTED_COUNTER, MAX_COUNTER, VersionVector
from gossip_agent.io.persistence import DurableLog
from gossip_agent.io.state_service import StateService
from tests.agent.test_registers import Node, eventually, pair
from tests.hostile.core_support import forged_context

__all__ = ["pair"]  # (the two in-process agents the HTTP test uses)

NOW = 1_700_000_000_000


# -- client contexts -----------------------------------------------------------------------------------
def test_a_client_context_above_the_overflow_point_is_refused() -> None:
    for writers in (["a@000001"], ["a@000001", "b@000002", "c@000003"]):  # (one writer: the fast path)
        with pytest.raises(StateCodecError, match=f"1..{MAX_COUNTER}"):
            decode_context(forged_context(writers, 2**64 - 1))
        assert decode_context(forged_context(writers, MAX_COUNTER)).vv.get("a@000001") == MAX_COUNTER


def test_a_client_context_at_the_overflow_point_leaves_every_replica_room_and_peers_accept_the_result() -> None:
    """The forged context selects what the write overwrites and nothing more: the key's context stays what the
    replicas wrote, both keep writing, and every rumor they make still decodes at peers."""
    a, b = KvStore("a@000001"), KvStore("b@000002")
    a.local_put("k", b"v0", NOW)
    b.apply_remote(decode_rumor(encode_rumor(a.entry("k"))), NOW)  # type: ignore[arg-type]
    forged = decode_context(forged_context([a.node, b.node], MAX_COUNTER))
    assert forged.vv.get(b.node) == MAX_COUNTER
    assert a.local_put("k", b"poison", NOW + 1, forged).context == VersionVector({a.node: 2})
    for i in range(3):
        for writer, reader in ((a, b), (b, a)):
            entry = writer.entry("k")
            assert entry is not None
            reader.apply_remote(decode_rumor(encode_rumor(entry)), NOW + 2 + i)
            writer.local_put("k", b"w%d" % i, NOW + 2 + i)
    b.apply_remote(decode_rumor(encode_rumor(a.entry("k"))), NOW + 9)  # type: ignore[arg-type]
    b.local_delete("k", NOW + 10)
    a.apply_remote(decode_rumor(encode_rumor(b.entry("k"))), NOW + 10)  # type: ignore[arg-type]
    assert a.entry("k") == b.entry("k") and a.refused == b.refused == {}
    # The same token on an MV register: assign over it, then the other replica writes on.
    mv = MVRegister().assign(a.node, b"x", forged.vv)
    mv = crdt.from_plain(crdt.to_plain(mv)).assign(b.node, b"y")  # type: ignore[union-attr]
    assert crdt.from_plain(crdt.to_plain(mv)) == mv


# -- peers' entries and CRDT states ------------------------------------------------------------------------
def _value_entry(context: int, dot: int) -> ValueEntry:
    return ValueEntry("k", (Version(("v@000001", dot), Hlc(NOW, 0, "v@000001"), b"x"),),
                      VersionVector({"v@000001": context}))


def _crdt_entries(counter: int) -> list[CrdtEntry]:
    vv = VersionVector({"v@000001": counter})
    ts = Hlc(NOW, 0, "e@000009")
    return [CrdtEntry("crdt/counters/c", PNCounter(GCounter(vv)), ts),
            CrdtEntry("crdt/counters/c", PNCounter(GCounter(), GCounter(vv)), ts),
            CrdtEntry("crdt/sets/s", ORSet({"e": frozenset({("v@000001", counter)})}, vv), ts),
            CrdtEntry("crdt/registers/mv/m", MVRegister({("v@000001", counter): b"x"}, vv), ts)]


@pytest.mark.parametrize("counter", [MAX_ACCEPTED_COUNTER + 1, 2**63 - 2, MAX_COUNTER])
def test_a_peer_entry_or_crdt_state_above_the_peer_bound_is_refused_at_decode(counter: int) -> None:
    """Every peer path (rumors, replicate, anti-entropy pushes and answers) decodes through these: the entry is
    skipped and counted (EntryOverLimit, `counter_too_large`), the rest of its message applied. A replica's own
    log records keep decoding (MAX_COUNTER)."""
    for entry in _over_the_bound(counter):
        with pytest.raises(EntryOverLimit, match=f"1..{MAX_ACCEPTED_COUNTER}") as over:
            decode_rumor(encode_rumor(entry))
        assert over.value.reason == "counter_too_large"
        assert decode_change(encode_change(Change(entry.key, entry, "local"))).entry == entry


def _over_the_bound(counter: int = MAX_ACCEPTED_COUNTER + 1) -> list[ValueEntry | CrdtEntry]:
    return [_value_entry(counter, 1), _value_entry(counter, counter), *_crdt_entries(counter)]


def _honest() -> list[ValueEntry]:
    writer = KvStore("w@000002")
    return [writer.local_put(f"ok/{i}", b"v", NOW) for i in range(3)]


def test_an_answer_with_an_entry_above_the_peer_bound_applies_the_rest() -> None:
    """One such entry failed the whole anti-entropy answer (StateCodecError: every session with that peer
    failed for good, the rest never repaired); now it is skipped and counted, the others merged."""
    honest = _honest()
    for bad in _over_the_bound():
        answer = encode_ae(AeResponse((2, 8), entries=(honest[0], bad, honest[1], honest[2])))
        _, entries = open_ae_response(answer)
        assert list(entries.take(10)) == honest
        assert entries.refused == {"counter_too_large": 1}


def test_a_push_with_an_entry_above_the_peer_bound_merges_the_rest() -> None:
    honest = _honest()
    for bad in _over_the_bound():
        responder = KvStore("r@000003")
        push = encode_ae(AeRequest((responder.merkle.bits, responder.merkle.depth), push=(bad, *honest)))
        answer = respond(responder, decode_ae_request(push), NOW)  # (raised AntiEntropyError before)
        assert responder.all_keys() == ["ok/0", "ok/1", "ok/2"] and answer.entries == ()


def test_a_rumor_above_the_peer_bound_is_a_counted_drop() -> None:
    node = _state_node()
    for bad in _over_the_bound():
        new, _ = node.on_rumor(encode_rumor(bad), 0.0, NOW / 1000)
        assert not new
    assert node.stats.rumors["dropped"] == 6 and node.store.refused == {"counter_too_large": 6}
    with pytest.raises(InvalidEntry):
        node.on_replicate(encode_rumor(_over_the_bound()[0]), 0.0, NOW / 1000)
    assert node.store.refused == {"counter_too_large": 7}


def _state_node() -> StateNode:
    config = AgentConfig.preset_config("lan", name="n")
    return StateNode(config, KvStore("n@000004", config.state), random.Random(1), 0.0, addr=("10.0.0.1", 7000),
                     inline_limit=1200)


def test_a_peer_state_at_the_bound_leaves_the_named_replica_room() -> None:
    """peer_counter_forge.py's shape at the largest accepted counter: the victim keeps counting, assigning,
    adding and writing, in both directions."""
    victim = KvStore("v@000001")
    for entry in [_value_entry(MAX_ACCEPTED_COUNTER, MAX_ACCEPTED_COUNTER), *_crdt_entries(MAX_ACCEPTED_COUNTER)]:
        victim.apply_remote(decode_rumor(encode_rumor(entry)), NOW)
    for i in range(3):
        victim.local_put("k", b"w%d" % i, NOW + i)
        for step in (1, -1, MAX_COUNTER_DELTA, -MAX_COUNTER_DELTA):
            victim.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _, step=step: c.increment(n, step), NOW + i)
        victim.update_crdt("crdt/sets/s", ORSet, lambda s, n, _, i=i: s.add(n, f"e{i}"), NOW + i)
        victim.update_crdt("crdt/registers/mv/m", MVRegister, lambda m, n, _, i=i: m.assign(n, b"%d" % i), NOW + i)
    victim.local_delete("k", NOW + 5)
    assert victim.refused == {}


# -- recovery ------------------------------------------------------------------------------------------------
def test_records_above_the_peer_bound_recover_and_past_the_overflow_point_are_set_aside(tmp_path: Path) -> None:
    """An older agent's records may hold counters up to 2^63-1 (it accepted them from a forger): its own
    records, restored as they are. A counter no agent could write (a uint64 above 2^63-1) does not stop
    recovery: the log record is set aside and counted (`record_unreadable`)."""
    old = KvStore("solo@aaaaaa")
    old.local_put("near-top", b"v", NOW, CausalContext(VersionVector({old.node: MAX_COUNTER - 1}), Hlc(NOW, 0, "x")))
    old.update_crdt("crdt/counters/c", PNCounter,
                    lambda c, n, _: c.merge(PNCounter(GCounter(VersionVector({n: MAX_COUNTER})))), NOW)
    snapshot = old.snapshot()
    old.local_put("logged", b"v", NOW + 1, CausalContext(VersionVector({"w@1": MAX_COUNTER}), Hlc(NOW, 0, "x")))
    (logged,) = [c for c in old.drain_changes() if c.key == "logged"]
    beyond = msgpack.packb([2, "beyond", "remote", [0, "beyond", ["w@1", 2**64 - 1],
                                                    [["w@1", 2**64 - 1, NOW, 0, b"x"]]]])
    data = tmp_path / "d"
    durable = DurableLog(data)
    durable.open()
    durable.write_snapshot(msgpack.packb(snapshot, use_bin_type=True))
    durable.append(encode_change(logged))
    durable.append(beyond)
    durable.close()
    svc = StateService(from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                                     "storage": {"dataDir": str(data)}}))
    svc.open()
    try:
        store = svc.store
        assert store.entry("near-top") == old.entry("near-top") and store.entry("logged") == old.entry("logged")
        assert store.get_crdt("crdt/counters/c") == old.get_crdt("crdt/counters/c") and store.entry("beyond") is None
        assert svc.stats.recovery == {"record_unreadable": 1}
    finally:
        if svc._log is not None:
            svc._log.close()


# -- over HTTP ------------------------------------------------------------------------------------------------
async def test_ctx_forge_over_http_is_a_400_and_the_key_stays_writable_everywhere(pair: list[Node]) -> None:
    n0, n1 = pair
    for path in ("/v1/kv/victim/forged-ctx", "/v1/crdt/registers/mv/victim"):
        await n0.json("PUT", path + "?w=2", b"honest")
        doc = await n0.json("GET", path + ("?format=json" if path.startswith("/v1/kv") else ""))
        writers = sorted({n0.svc.store.node, n1.svc.store.node, *doc["versionVector"]})
        poison = base64.b64encode(forged_context(writers, 2**64 - 1)).decode()
        code, _, body = await n0.call("PUT", path, b"poison", {"X-Gossip-Context": poison})
        assert code == 400 and f"1..{MAX_COUNTER}" in json.loads(body)["error"], (path, code, body)
        # The largest token accepted: every agent keeps writing, and the others keep taking its writes.
        token = base64.b64encode(forged_context(writers, MAX_COUNTER)).decode()
        await n0.json("PUT", path + "?w=2", b"at-the-bound", {"X-Gossip-Context": token})
        for i in range(2):
            for writer, reader in ((n0, n1), (n1, n0)):
                value = f"{writer.agent.port}-{i}"
                await writer.json("PUT", path + "?w=2", value.encode())
                await eventually(lambda reader=reader, value=value, path=path: _holds(reader, path, value),
                                 what=f"{value} at {reader.agent.port}")
    code, _, _ = await n1.call("DELETE", "/v1/kv/victim/forged-ctx")
    assert code == 204 or code == 200
    # F7: a step above the bound is a 400 naming it; the largest step is taken, both ways.
    counter = "/v1/crdt/counters/victim"
    code, _, body = await n0.call("POST", counter, json.dumps({"delta": 2**53}).encode())
    assert code == 400 and str(MAX_COUNTER_DELTA) in json.loads(body)["error"]
    for delta in (MAX_COUNTER_DELTA, -MAX_COUNTER_DELTA, 5):
        await n0.json("POST", counter, json.dumps({"delta": delta}).encode())
    assert all(m == 0 for name, m in n0.metrics().items() if name.startswith("gossip_state_refused_total"))


async def _holds(node: Node, path: str, value: str) -> bool:
    code, _, body = await node.call("GET", path + ("?format=json" if path.startswith("/v1/kv") else ""))
    if code != 200:
        return False
    doc = json.loads(body)
    return [v["value"] for v in doc["values"]] == [value] if "values" in doc else doc.get("value") == value
