"""A DELETE whose context names writes this agent has not seen says so (ctx-review F2).

`DELETE /v1/kv/{key}` with `X-Gossip-Context` deletes the values the token names that this agent holds. A token
read at agent A and used at agent B before A's newest value reached B deleted nothing of that value: when it
arrived at B it stayed live (the tombstone's context is what B has seen, never the client's claim), and the
DELETE still answered 200 `{"deleted": true}` (38 of 40 such cross-agent deletes, measured). Now such a DELETE
answers 409 `{"deleted": false, "remaining": [dots], "error", "advice"}` (`KvStore.delete_leaves`), and
`gossipctl del` prints NOT deleted and exits 4; one whose token B fully covers, or without a token, is unchanged.

The agent tests make "not reached B yet" deterministic, not a race: anti-entropy and push-pull are off, and A's
write is made in A's store directly (no rumor), then handed to B by A's own write-concern path (`replicate`)
once B has answered the DELETE.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gossip_agent.cli import kv
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import CausalContext, KvStore, ValueEntry
from gossip_agent.core.messages import MemberState
from gossip_agent.core.state_codec import decode_context, encode_context
from gossip_agent.core.vector_clock import VersionVector
from tests.agent.test_registers import FAST, Node, eventually
from tests.hostile.agent_support import gossipctl_kv, with_state

NOW = 1_700_000_000_000
SIBLINGS = StateConfig(conflict_policies={"carts/": "siblings"})


def _token(store: KvStore, key: str) -> CausalContext:
    read = store.get(key)
    assert read is not None
    return decode_context(encode_context(read.context))  # (what a client sends back)


def _live_after_arrival(b: KvStore, entry: ValueEntry, key: str) -> bool:
    b.apply_remote(entry, NOW + 100)
    read = b.get(key)
    return read is not None and not read.deleted


# -- the decision (core) ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["carts/k", "plain/k"])  # siblings, lww
@pytest.mark.parametrize("held", ["older", "nothing", "newest"])
def test_delete_leaves_names_exactly_the_writes_that_survive_the_delete(key: str, held: str) -> None:
    """For each policy and what B holds of A's writes: `delete_leaves` is empty exactly when A's newest write,
    arriving after the delete, is deleted at B, and otherwise names that write's dot."""
    a, b = KvStore("a@000001", SIBLINGS), KvStore("b@000002", SIBLINGS)
    first = a.local_put(key, b"v0", NOW)
    if held != "nothing":
        b.apply_remote(first, NOW)
    newest = a.local_put(key, b"v1", NOW + 1, _token(a, key))
    if held == "newest":
        b.apply_remote(newest, NOW + 1)
    token = _token(a, key)
    written = b.local_delete(key, NOW + 2, token)
    assert (written is None) == (held == "nothing")
    left = b.delete_leaves(key, token)
    survives = _live_after_arrival(b, newest, key)
    assert bool(left) == survives, (left, survives)
    expected = {("siblings", "older"): True, ("siblings", "nothing"): True, ("siblings", "newest"): False,
                ("lww", "older"): False, ("lww", "nothing"): True, ("lww", "newest"): False}
    assert survives == expected[b.policy_for(key), held]
    if survives:
        assert left == ((a.node, 2),)
        # The advice works: read the key here and delete again with that context.
        assert b.local_delete(key, NOW + 3, _token(b, key)) is not None
        assert b.delete_leaves(key, _token(a, key)) == () and b.get(key).deleted  # type: ignore[union-attr]


def test_no_token_or_a_made_up_dot_of_this_replica_leaves_nothing() -> None:
    b = KvStore("b@000002", SIBLINGS)
    b.local_put("carts/k", b"v", NOW)
    forged = CausalContext(VersionVector({b.node: 99}))
    assert b.local_delete("carts/k", NOW + 1, forged) is not None
    assert b.delete_leaves("carts/k", None) == ()
    assert b.delete_leaves("carts/k", forged) == ()  # (it holds every write it made: 99 will never arrive)
    assert b.delete_leaves("carts/none", CausalContext(VersionVector({"a@000001": 1}))) == (("a@000001", 1),)


# -- real agents ----------------------------------------------------------------------------------------------------
QUIET = {**FAST, "antiEntropy": {"enabled": False}, "gossip": {"interval": "50ms", "pushPullInterval": "0s"}}


@pytest.fixture
async def quiet_pair() -> AsyncIterator[list[Node]]:
    """Two agents that exchange state only by rumor and write concern (no anti-entropy, no push-pull)."""
    import aiohttp

    async with with_state({**QUIET, "name": "q0"}) as (a0, s0), \
            with_state({**QUIET, "name": "q1", "seeds": [f"127.0.0.1:{a0.port}"]}) as (a1, s1):
        agents = [a0, a1]
        await eventually(lambda: all(a.node.counts()[MemberState.ALIVE] == 2 for a in agents), what="a join")
        async with aiohttp.ClientSession() as http:
            yield [Node(a0, s0, http), Node(a1, s1, http)]


async def _write_unsent(node: Node, key: str, value: bytes) -> ValueEntry:
    """A write at `node` that no peer has yet: made in its store, not gossiped (its token is read over HTTP)."""
    svc = node.svc
    code, headers, _ = await node.call("GET", f"/v1/kv/{key}?format=json")
    context = decode_context(base64.b64decode(headers["X-Gossip-Context"])) if code == 200 else None
    return svc.store.local_put(key, value, svc.now_ms(), context)


async def _live(node: Node, key: str) -> bool:
    code, _, _ = await node.call("GET", f"/v1/kv/{key}?format=json")
    return code == 200


async def test_cross_agent_deletes_answer_what_they_did(quiet_pair: list[Node]) -> None:
    """N deletes at B with tokens read at A, whose newest write has not reached B: none answers deleted:true and
    leaves the value live (before: all N did); each says which write remains, and that write is live at B once
    it arrives; read there and deleted again, the key is gone."""
    a, b = quiet_pair
    n = 10
    answers: list[tuple[int, dict[str, Any]]] = []
    lied = 0
    for i in range(n):
        key = f"carts/{i}"
        await a.json("PUT", f"/v1/kv/{key}?w=2", b"v0")  # both hold v0
        newest = await _write_unsent(a, key, b"v1")
        code, headers, _ = await a.call("GET", f"/v1/kv/{key}?format=json")
        assert code == 200
        w = 1 + i % 2  # (with ?w=2 the tombstone of what B held is replicated before the answer)
        code, _, body = await b.call("DELETE", f"/v1/kv/{key}?w={w}", None,
                                     {"X-Gossip-Context": headers["X-Gossip-Context"]})
        answer = json.loads(body)
        answers.append((code, {**answer, "w": w}))
        concern = await a.svc.replicate(newest, 2, 20.0)  # v1 reaches B now
        assert concern.met
        live = await eventually(lambda key=key: _live(b, key), what=f"{key} live at B")  # type: ignore[misc]
        lied += code == 200 and answer.get("deleted") is True and live
        # The advice works: read at B, delete at B.
        _, headers, _ = await b.call("GET", f"/v1/kv/{key}?format=json")
        assert await b.json("DELETE", f"/v1/kv/{key}?w=2", None,
                            {"X-Gossip-Context": headers["X-Gossip-Context"]}) == \
            {"key": key, "deleted": True, "acknowledged": 2}
        for node in quiet_pair:
            assert not await _live(node, key)
    assert lied == 0, f"{lied} of {n} cross-agent deletes answered deleted:true and left the value live"
    for code, answer in answers:
        assert code == 409 and answer["deleted"] is False, (code, answer)
        assert answer["remaining"] == [{"node": a.svc.store.node, "counter": 2}]
        assert all(part in answer["advice"] for part in ("read the key here", "delete again", "?w=N"))
        assert answer["acknowledged"] == answer["w"]  # (what B held, v0, is deleted: that tombstone is written)


async def test_a_token_naming_a_key_not_here_is_409_not_404_and_covered_deletes_are_unchanged(
        quiet_pair: list[Node]) -> None:
    a, b = quiet_pair
    await _write_unsent(a, "carts/only-a", b"x")
    _, headers, _ = await a.call("GET", "/v1/kv/carts/only-a?format=json")
    token = {"X-Gossip-Context": headers["X-Gossip-Context"]}
    answer = await b.json("DELETE", "/v1/kv/carts/only-a", None, token, status=409)
    assert answer["deleted"] is False and answer["remaining"] == [{"node": a.svc.store.node, "counter": 1}]
    assert "holds nothing live here" in answer["error"]
    assert "carts/only-a" not in b.svc.store  # (nothing was written)
    # Without a token, B deletes what it holds (nothing: 404, as before); A, which holds what it read, deletes.
    await b.json("DELETE", "/v1/kv/carts/only-a", None, status=404)
    assert await a.json("DELETE", "/v1/kv/carts/only-a", None, token) == \
        {"key": "carts/only-a", "deleted": True, "acknowledged": 1}
    await a.json("PUT", "/v1/kv/carts/both?w=2", b"v")
    await a.json("DELETE", "/v1/kv/carts/both?w=2", None, status=200)


async def test_gossipctl_del_says_not_deleted_and_exits_4(quiet_pair: list[Node],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    a, b = quiet_pair
    await a.json("PUT", "/v1/kv/carts/cli?w=2", b"v0")
    await _write_unsent(a, "carts/cli", b"v1")
    _, headers, _ = await a.call("GET", "/v1/kv/carts/cli?format=json")
    code = await asyncio.to_thread(gossipctl_kv, ["del", "--addr", f"127.0.0.1:{b.agent.port}", "--context",
                                                headers["X-Gossip-Context"], "carts/cli"])
    out, err = capsys.readouterr()
    assert code == kv.EXIT_NOT_DELETED == 4 and out == ""
    assert "NOT deleted" in err and f"{a.svc.store.node}:2" in err and "delete again" in err, err
    _, headers, _ = await b.call("GET", "/v1/kv/carts/cli?format=json")  # (B holds nothing live: v0 is gone)
    code = await asyncio.to_thread(gossipctl_kv, ["del", "--addr", f"127.0.0.1:{a.agent.port}", "carts/cli"])
    assert (code, capsys.readouterr().out) == (0, "deleted\n")
