"""Client contexts naming made-up writers did lasting damage (session 14 review, F1, F1b, F1c, F5, F6, F7).

A write's client context (the read token, `X-Gossip-Context` or the JSON `context`) was merged into the key's
stored context, so a client could name writers that never wrote the key:
- F1/F1b/F1c: a token naming this replica at 2^53 (the client bound then) was stored, the next write took
  2^53 + 1, and every token read afterwards was refused as over the bound: siblings could not be collapsed, an
  MV register stayed stuck, and it outlived a delete and tombstone collection (through the graveyard);
- F6: three concurrent writes each naming 4,000 made-up writers merged into a 12,000-writer context whose token
  (224 KB) could be sent back neither as a header (8,190-byte line) nor in a JSON body (192 KiB);
- F5: five such writes merged past MAX_CONTEXT_NODES: the agents refused each other's states for good;
- F7: 250 such writes left a million names that every agent stored, replicated and walked in its retirement
  scan (1.5 s of event loop per million names).
Now a client's context only selects which versions held here a write overwrites (and stamps the write after its
HLC); the key's context is what the replica has seen (`KvStore._local_write`), a read's token names only the
writers of the values read within MAX_TOKEN_BYTES (`read_context`), and a token decodes up to MAX_COUNTER, so
every token a read returns is taken back.
"""

from __future__ import annotations

import base64
import json

from gossip_agent.core import crdt
from gossip_agent.core.config import StateConfig
from gossip_agent.core.crdt import MVRegister
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import MAX_TOKEN_BYTES, CausalContext, KvStore, ValueEntry, Version
from gossip_agent.core.replica import Retirement
from gossip_agent.core.state_codec import decode_context, decode_rumor, encode_context, encode_rumor
from gossip_agent.core.vector_clock import MAX_ACCEPTED_COUNTER, MAX_CONTEXT_NODES, VersionVector
from gossip_agent.io.http_limits import MAX_HEADER_LINE
from tests.agent.test_registers import Node, eventually, pair
from tests.hostile.core_support import forged_context

__all__ = ["pair"]

NOW = 1_700_000_000_000
SIBLINGS = StateConfig(conflict_policies={"carts/": "siblings"})


def _round_trip(context: CausalContext) -> CausalContext:
    """What a client sends back: the token, as the HTTP layer hands it over, decoded as a write's context."""
    return decode_context(encode_context(context))


def _made_up(prefix: str, count: int) -> CausalContext:
    return CausalContext(VersionVector({f"{prefix}-{i:05d}": 1 for i in range(count)}), Hlc(0, 0, ""))


# -- F1: counters ---------------------------------------------------------------------------------------------
def test_a_token_naming_this_replica_at_2_53_leaves_the_keys_tokens_taken_back() -> None:
    a, b = KvStore("a@000001", SIBLINGS), KvStore("b@000002", SIBLINGS)
    b.apply_remote(a.local_put("carts/x", b"v1", NOW), NOW)
    forged = _round_trip(CausalContext(VersionVector({a.node: 1 << 53}), Hlc(0, 0, "")))
    b.apply_remote(a.local_put("carts/x", b"v2", NOW + 1, forged), NOW + 1)
    assert a.entry("carts/x").context == VersionVector({a.node: 2})  # type: ignore[union-attr]
    # Concurrent blind writes at both replicas make siblings; the token read collapses them, at either one.
    ea, eb = a.local_put("carts/x", b"blind-a", NOW + 2), b.local_put("carts/x", b"blind-b", NOW + 2)
    a.apply_remote(eb, NOW + 2)
    b.apply_remote(ea, NOW + 2)
    read = a.get("carts/x")
    assert read is not None and sorted(read.values) == [b"blind-a", b"blind-b", b"v2"]
    b.apply_remote(a.local_put("carts/x", b"resolved", NOW + 3, _round_trip(read.context)), NOW + 3)
    assert a.get("carts/x").values == b.get("carts/x").values == (b"resolved",)  # type: ignore[union-attr]
    read = b.get("carts/x")
    assert read is not None and b.local_delete("carts/x", NOW + 4, _round_trip(read.context)) is not None


def test_a_deleted_and_collected_key_keeps_no_forged_counter() -> None:
    """F1c: the poison lived on in the graveyard and came back with the next write."""
    a = KvStore("a@000001")
    a.local_put("k", b"v1", NOW)
    a.local_put("k", b"v2", NOW + 1, _round_trip(CausalContext(VersionVector({a.node: 1 << 53}), Hlc(0, 0, ""))))
    a.local_delete("k", NOW + 2)
    a.acknowledge_tombstones(NOW + 3)
    assert a.collect_garbage(NOW + 10_000, ack_grace_ms=3000) == 1
    a.local_put("k", b"fresh", NOW + 10_001)
    read = a.get("k")
    assert read is not None and a.entry("k").context == VersionVector({a.node: 4})  # type: ignore[union-attr]
    a.local_put("k", b"v4", NOW + 10_002, _round_trip(read.context))


def test_a_token_read_from_a_peer_entry_between_2_53_and_2_62_is_taken_back() -> None:
    """A peer's entry may carry counters up to MAX_ACCEPTED_COUNTER (2^62), and this replica's own dots may pass
    it after that: tokens were held to 2^53."""
    me = KvStore("a@000001", SIBLINGS)
    for n in ((1 << 53) + 1, MAX_ACCEPTED_COUNTER):
        key = f"carts/{n}"
        peer = ValueEntry(key, (Version(("p@000009", n), Hlc(NOW, 0, "p@000009"), b"peer"),),
                          VersionVector({"p@000009": n}))
        me.apply_remote(decode_rumor(encode_rumor(peer)), NOW)
        me.local_put(key, b"concurrent", NOW + 1)  # (no context: a sibling)
        read = me.get(key)
        assert read is not None and len(read.values) == 2
        entry = me.local_put(key, b"resolved", NOW + 2, _round_trip(read.context))
        assert [v.value for v in entry.live] == [b"resolved"]
        assert decode_rumor(encode_rumor(entry)) == entry  # (peers still take it)


def test_an_mv_register_keeps_no_forged_counter() -> None:
    """F1b: `MVRegister.assign` merged the client's context into the register's."""
    forged = _round_trip(CausalContext(VersionVector({"a": 1 << 53}), Hlc(0, 0, ""))).vv
    register = MVRegister().assign("a", b"v1").assign("a", b"v2", forged)
    assert register.context == VersionVector({"a": 2}) and register.value() == (b"v2",)
    crdt.from_plain(crdt.to_plain(register))


# -- F5, F6, F7: made-up writers --------------------------------------------------------------------------------
def test_concurrent_writes_naming_made_up_writers_converge_and_their_token_is_small() -> None:
    """F5 (five writes of 4,000 made-up writers each: the union passed MAX_CONTEXT_NODES) and F6 (three: a token
    no client could send back)."""
    stores = [KvStore(f"n{i}@00000{i}", SIBLINGS) for i in range(5)]
    first = stores[0].local_put("carts/k", b"old", NOW)
    for s in stores[1:]:
        s.apply_remote(first, NOW)
    writes = [s.local_put("carts/k", b"v%d" % i, NOW + 1, _made_up(f"ghost{i}", 4000)) for i, s in enumerate(stores)]
    for s in stores:
        for w in writes:
            s.apply_remote(decode_rumor(encode_rumor(w)), NOW + 2)
    assert len({s.entry("carts/k") for s in stores}) == 1 and all(s.refused == {} for s in stores)
    assert len(stores[0].entry("carts/k").context) == 5  # type: ignore[union-attr]
    read = stores[2].get("carts/k")
    assert read is not None and len(read.values) == 6  # (the made-up contexts did not name "old"'s writer)
    assert len(encode_context(read.context)) < 300
    stores[2].local_put("carts/k", b"resolved", NOW + 3, _round_trip(read.context))
    assert stores[2].get("carts/k").values == (b"resolved",)  # type: ignore[union-attr]


def test_a_token_of_many_concurrent_writers_fits_a_header_and_collapses_what_it_names() -> None:
    """A state of more concurrent writers than a token can name (a hostile peer's, within MAX_CONTEXT_NODES):
    the token names those that fit MAX_TOKEN_BYTES; a write back collapses them and the rest stay."""
    writers = [f"{'w' * 200}-{i:04d}" for i in range(200)]
    versions = tuple(Version((w, 1), Hlc(NOW, 0, w), b"x") for w in writers)
    me = KvStore("me@000001", SIBLINGS)
    me.apply_remote(ValueEntry("carts/m", versions, VersionVector({w: 1 for w in writers})), NOW)
    read = me.get("carts/m")
    assert read is not None and len(read.values) == 200
    token = encode_context(read.context)
    assert 0 < len(read.context.vv) < 200 and len(token) <= MAX_TOKEN_BYTES
    assert len("X-Gossip-Context: ") + len(base64.b64encode(token)) < MAX_HEADER_LINE
    entry = me.local_put("carts/m", b"resolved", NOW + 1, _round_trip(read.context))
    assert len(entry.live) == 200 - len(read.context.vv) + 1


def test_made_up_writers_are_never_stored_so_the_retirement_scan_does_not_see_them() -> None:
    """F7: 250 keys of 4,000 made-up writers each were a million names every retirement check walked."""
    store = KvStore("a@000001")
    for k in range(25):
        store.local_put(f"g/{k}", b"x", NOW, _made_up(f"ghost-{k}", 4000))
    writers = store.context_writers(NOW)
    assert list(writers) == [store.node]
    plan = Retirement(ttl=86400.0).plan(0.0, writers=writers, retired=store.retired, present={"a"}, me=store.node)
    assert not plan.retire


def test_a_client_context_of_the_largest_size_decodes() -> None:
    big = _made_up("x", MAX_CONTEXT_NODES)
    assert _round_trip(big) == big


# -- over HTTP --------------------------------------------------------------------------------------------------
def _token(writers: list[str], counter: int) -> str:
    return base64.b64encode(forged_context(writers, counter)).decode()


async def test_forged_tokens_over_http_leave_every_read_token_taken_back(pair: list[Node]) -> None:
    n0, n1 = pair
    json_type = {"Content-Type": "application/json"}
    for path, fmt in (("/v1/kv/carts/alice", "?format=json"), ("/v1/crdt/registers/mv/cfg", "")):
        await n0.json("PUT", path + "?w=2", b"v1")
        writer = n0.svc.store.node
        await n0.json("PUT", path + "?w=2", b"v2", {"X-Gossip-Context": _token([writer], 1 << 53)})
        for node in (n0, n1):
            code, headers, body = await node.call("GET", path + fmt)
            assert code == 200 and max(json.loads(body)["versionVector"].values()) < 10, body
            await node.json("PUT", path, b"back", {"X-Gossip-Context": headers["X-Gossip-Context"]})
    # F6: three concurrent writes naming 4,000 made-up writers each, at both agents.
    bodies = [json.dumps({"value": f"v{i}", "context": _token([f"ghost{i}-{j:05d}" for j in range(4000)], 1)})
              for i in range(3)]
    for i, body in enumerate(bodies):
        await (n0 if i % 2 else n1).json("PUT", "/v1/kv/carts/k", body.encode(), json_type)
    for node in (n0, n1):  # (a token read at n0 replaces at n1 what n1 holds of it: wait until it holds all)
        await eventually(lambda node=node: _siblings(node, 3), what=f"three siblings at {node.agent.port}")
    code, headers, body = await n0.call("GET", "/v1/kv/carts/k?format=json")
    token = headers["X-Gossip-Context"]
    assert len(json.loads(body)["versionVector"]) == 2 and len(token) < 200
    await n1.json("PUT", "/v1/kv/carts/k", b"resolved", {"X-Gossip-Context": token})
    await eventually(lambda: _siblings(n0, 1), what="one value at n0")
    assert all(m == 0 for name, m in n0.metrics().items() if name.startswith("gossip_state_refused_total"))


async def _siblings(node: Node, count: int) -> bool:
    code, headers, _ = await node.call("GET", "/v1/kv/carts/k?format=json")
    return code == 200 and headers.get("X-Gossip-Siblings") == str(count)
