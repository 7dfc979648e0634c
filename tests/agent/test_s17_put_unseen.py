"""A PUT whose context names writes this agent has not seen says so (session 17), still answering 2xx.

A token read at agent A and sent with a PUT to agent B before A's newest value reached B cannot replace that
value: B's new state's context is what B has seen, never the client's claim, so when the value arrives it stays
as a sibling (documented; nothing is lost). The PUT answered `{"key", "context", "siblings": 1}` all the same,
and a client took its read-modify-write for a resolution. Now the answer adds `"siblingsMayRemain": true`,
`"remaining": [dots]`, `"remainingCount"` and `"advice"` (`KvStore.put_leaves`), as the DELETE's 409 does
(`remaining`); the status stays 2xx, since the write was made and replicates.
"""

from __future__ import annotations

import json

import pytest

from gossip_agent.core.kvstore import CausalContext, KvStore
from gossip_agent.core.vector_clock import VersionVector
from gossip_agent.io.state_http import MAX_LISTED_UNSEEN
from tests.agent.test_registers import Node, eventually
from tests.hostile.test_s16_honest_delete import NOW, SIBLINGS, _token, _write_unsent, quiet_pair

__all__ = ["quiet_pair"]  # (the fixture, imported for pytest)


# -- the decision (core) ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["carts/k", "plain/k"])  # siblings, lww
@pytest.mark.parametrize("held", ["older", "nothing", "newest"])
def test_put_leaves_names_exactly_the_writes_that_stay_as_siblings(key: str, held: str) -> None:
    a, b = KvStore("a@000001", SIBLINGS), KvStore("b@000002", SIBLINGS)
    first = a.local_put(key, b"v0", NOW)
    if held != "nothing":
        b.apply_remote(first, NOW)
    newest = a.local_put(key, b"v1", NOW + 1, _token(a, key))
    if held == "newest":
        b.apply_remote(newest, NOW + 1)
    token = _token(a, key)
    b.local_put(key, b"mine", NOW + 2, token)
    left = b.put_leaves(key, token)
    b.apply_remote(newest, NOW + 100)  # A's newest arrives
    read = b.get(key)
    assert read is not None
    stays = b"v1" in read.values
    assert bool(left) == stays, (left, read.values)
    assert stays == (b.policy_for(key) == "siblings" and held != "newest")
    if stays:
        assert left == ((a.node, 2),) and set(read.values) == {b"v1", b"mine"}
        # The advice works: read here and write back with that context.
        b.local_put(key, b"resolved", NOW + 3, _token(b, key))
        assert b.get(key).values == (b"resolved",)  # type: ignore[union-attr]
        assert b.put_leaves(key, _token(b, key)) == ()


def test_no_token_or_a_made_up_dot_of_this_replica_leaves_nothing() -> None:
    b = KvStore("b@000002", SIBLINGS)
    forged = CausalContext(VersionVector({b.node: 99}))
    b.local_put("carts/k", b"v", NOW, forged)
    assert b.put_leaves("carts/k", None) == ()
    assert b.put_leaves("carts/k", forged) == ()


# -- real agents ----------------------------------------------------------------------------------------------------
async def test_a_cross_agent_put_says_siblings_may_remain_and_stays_2xx(quiet_pair: list[Node]) -> None:
    a, b = quiet_pair
    await a.json("PUT", "/v1/kv/carts/x?w=2", b"v0")  # both hold v0
    newest = await _write_unsent(a, "carts/x", b"v1")
    _, headers, _ = await a.call("GET", "/v1/kv/carts/x?format=json")
    token = {"X-Gossip-Context": headers["X-Gossip-Context"]}
    code, _, body = await b.call("PUT", "/v1/kv/carts/x?w=2", b"mine", token)
    answer = json.loads(body)
    assert code == 200, answer
    assert answer["siblingsMayRemain"] is True and answer["acknowledged"] == 2
    assert answer["remaining"] == [{"node": a.svc.store.node, "counter": 2}] and answer["remainingCount"] == 1
    assert all(part in answer["advice"] for part in ("stay as siblings", "write back", "?w=N")), answer
    assert (await a.svc.replicate(newest, 2, 20.0)).met  # v1 reaches B: it is a sibling there, as said

    async def two_values() -> bool:
        code, _, body = await b.call("GET", "/v1/kv/carts/x?format=json")
        return code == 200 and len(json.loads(body)["values"]) == 2
    await eventually(two_values, what="v1 a sibling at B")
    # The same PUT with a token B fully covers, or none, answers as before (no note).
    _, headers, _ = await b.call("GET", "/v1/kv/carts/x?format=json")
    answer = await b.json("PUT", "/v1/kv/carts/x", b"resolved", {"X-Gossip-Context": headers["X-Gossip-Context"]})
    assert set(answer) == {"key", "context", "siblings", "acknowledged"} and answer["siblings"] == 1, answer
    answer = await b.json("PUT", "/v1/kv/plain/y", b"v")
    assert "siblingsMayRemain" not in answer


async def test_the_listed_writes_are_bounded(quiet_pair: list[Node]) -> None:
    """A PUT's context may come in its JSON body (up to 64 KiB of token): the list is capped, the count is not."""
    import base64

    from gossip_agent.core.state_codec import encode_context

    _, b = quiet_pair
    many = CausalContext(VersionVector({f"w{i:05d}@x": 1 for i in range(1000)}))
    token = base64.b64encode(encode_context(many)).decode()
    answer = await b.json("PUT", "/v1/kv/carts/many", json.dumps({"value": "v", "context": token}).encode(),
                          {"Content-Type": "application/json"})
    assert answer["remainingCount"] == 1000 and len(answer["remaining"]) == MAX_LISTED_UNSEEN
