"""Over HTTP: a state of the most siblings (MAX_LOCAL_SIBLINGS) written by members of the longest names the
config allows (128 bytes) gives a token that fits a header and collapses them all in one PUT (ctx-review F3,
session 17; before: the token named 26 of them and the PUT answered `"siblings": 39`)."""

from __future__ import annotations

from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import MAX_LOCAL_SIBLINGS, MAX_TOKEN_BYTES, ValueEntry, Version
from gossip_agent.core.replica import replica_id
from gossip_agent.core.vector_clock import VersionVector
from gossip_agent.io.http_limits import MAX_HEADER_LINE
from tests.agent.test_registers import Node
from tests.hostile.test_s16_honest_delete import quiet_pair

__all__ = ["quiet_pair"]  # (the fixture, imported for pytest)


async def test_a_read_of_many_long_named_writers_is_written_back_whole(quiet_pair: list[Node]) -> None:
    _, b = quiet_pair
    now = b.svc.now_ms() - 1000
    writers = [replica_id(f"{i:04d}-" + "n" * 123, f"{i:06x}") for i in range(MAX_LOCAL_SIBLINGS)]
    versions = tuple(Version((w, 1), Hlc(now, 0, w), b"v") for w in writers)
    for key in ("carts/put", "carts/del"):
        assert b.svc.store.apply_remote(ValueEntry(key, versions, VersionVector({w: 1 for w in writers})), now)
    code, headers, _ = await b.call("GET", "/v1/kv/carts/put?format=json")
    token = headers["X-Gossip-Context"]
    assert code == 200 and headers["X-Gossip-Siblings"] == str(MAX_LOCAL_SIBLINGS)
    assert len(token) <= MAX_TOKEN_BYTES * 4 // 3 + 4 and len("X-Gossip-Context: ") + len(token) < MAX_HEADER_LINE
    answer = await b.json("PUT", "/v1/kv/carts/put", b"resolved", {"X-Gossip-Context": token})
    assert answer["siblings"] == 1 and "siblingsMayRemain" not in answer, answer
    _, headers, _ = await b.call("GET", "/v1/kv/carts/del?format=json")
    answer = await b.json("DELETE", "/v1/kv/carts/del", None, {"X-Gossip-Context": headers["X-Gossip-Context"]})
    assert answer["deleted"] is True, answer
