"""Registers over HTTP, readable versions, `gossipctl get` byte-exactness, and the latency histograms.

Two in-process agents with the state layer on loopback (real UDP gossip, real HTTP): registers written at
one are read at the other; the MV register keeps concurrent writes and collapses them with a context; a KV
read with `?format=json` spells out the version vector, dots and HLC; `gossipctl` runs as a user runs it
(a subprocess: stdout is a pipe, not a terminal). Waits are generous: correctness, not speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from gossip_agent.cli.client import parse_metrics
from gossip_agent.core.config import from_mapping
from gossip_agent.core.crdt import MVRegister
from gossip_agent.core.messages import Ack, MemberState, Nack, Packet, Ping
from gossip_agent.core.vector_clock import VersionVector
from gossip_agent.io.probe_rtt import MAX_PENDING, ProbeRtt
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService

FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0,
        "membership": {"probeInterval": "300ms", "probeTimeout": "150ms", "suspicionMult": 4,
                       "reapAfter": "60s", "streamTimeout": "2s"},
        "gossip": {"interval": "50ms", "pushPullInterval": "5s"},
        "antiEntropy": {"interval": "2s"},
        "state": {"conflictPolicies": {"carts/": "siblings"}}}


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Node:
    def __init__(self, agent: Agent, svc: StateService, http: aiohttp.ClientSession) -> None:
        self.agent, self.svc, self.http = agent, svc, http

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.agent.port}"

    async def call(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        async with self.http.request(method, self.url + path, data=body, headers=headers or {}) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def json(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None, status: int = 200) -> dict[str, Any]:
        code, _, answer = await self.call(method, path, body, headers)
        assert code == status, (method, path, code, answer)
        return dict(json.loads(answer))

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.agent.render_metrics().decode())


@pytest.fixture
async def pair() -> AsyncIterator[list[Node]]:
    s0 = StateService(from_mapping({**FAST, "name": "r0"}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    s1 = StateService(from_mapping({**FAST, "name": "r1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    a1 = Agent(s1.config, extensions=[s1])
    agents = [a0, a1]
    try:
        await a1.start()
        await eventually(lambda: all(a.node.counts()[MemberState.ALIVE] == 2 for a in agents), what="a join")
        async with aiohttp.ClientSession() as http:
            yield [Node(a0, s0, http), Node(a1, s1, http)]
    finally:
        for a in agents:
            await a.stop()


async def _read(node: Node, path: str) -> dict[str, Any] | None:
    code, _, body = await node.call("GET", path)
    return dict(json.loads(body)) if code == 200 else None


async def test_lww_register_round_trips_and_replicates(pair: list[Node]) -> None:
    n0, n1 = pair
    path = "/v1/crdt/registers/lww/config/leader"
    assert (await n0.call("GET", path))[0] == 404
    first = await n0.json("PUT", path, b"r0")
    assert first["value"] == "r0" and first["timestamp"]["node"] == n0.svc.store.node
    seen = await eventually(lambda: _read(n1, path), what="the register at r1")
    assert seen["value"] == "r0" and seen["type"] == "lww" and seen["timestamp"] == first["timestamp"]
    # A later write elsewhere wins everywhere; JSON bodies and bytes work too.
    second = await n1.json("PUT", path + "?w=2", json.dumps({"valueBase64": "/wA="}).encode(),
                           {"Content-Type": "application/json"})
    assert second["acknowledged"] == 2 and second["valueBase64"] == "/wA="
    assert second["timestamp"]["wallMs"] * 65536 + second["timestamp"]["logical"] > \
        first["timestamp"]["wallMs"] * 65536 + first["timestamp"]["logical"]
    for node in pair:
        assert (await eventually(lambda node=node: _read(node, path)))["valueBase64"] == "/wA="
    # The register is a CRDT key: the KV API names the right route, and a context is refused.
    code, _, body = await n0.call("GET", "/v1/kv/crdt/registers/lww/config/leader")
    assert code == 409 and "/v1/crdt/registers/lww/" in json.loads(body)["error"]
    code, _, body = await n0.call("PUT", path, b"x", {"X-Gossip-Context": "abc"})
    assert code == 400
    code, _, body = await n0.call("PUT", path, b"x" * 70000)
    assert code == 413


async def test_mv_register_keeps_concurrent_writes_until_written_back_with_the_context(pair: list[Node]) -> None:
    n0, n1 = pair
    path = "/v1/crdt/registers/mv/cart"
    base = await n0.json("PUT", path + "?w=2", b"v0")
    assert base["acknowledged"] == 2 and [v["value"] for v in base["values"]] == ["v0"]
    read = await eventually(lambda: _read(n1, path), what="v0 at r1")
    assert [v["value"] for v in read["values"]] == ["v0"]
    # Both write over what they read (the same context), at once: concurrent.
    headers = {"X-Gossip-Context": read["context"]}
    await asyncio.gather(n0.json("PUT", path, b"from-r0", headers), n1.json("PUT", path, b"from-r1", headers))

    async def both() -> dict[str, Any] | None:
        docs = [await _read(n, path) for n in pair]
        ok = all(d is not None and sorted(v["value"] for v in d["values"]) == ["from-r0", "from-r1"] for d in docs)
        return docs[0] if ok else None

    siblings = await eventually(both, what="both siblings at both agents")
    assert len({(v["dot"]["node"], v["dot"]["counter"]) for v in siblings["values"]}) == 2
    assert set(siblings["versionVector"]) == {n0.svc.store.node, n1.svc.store.node}
    code, headers_back, _ = await n0.call("GET", path)
    assert headers_back["X-Gossip-Siblings"] == "2" and headers_back["X-Gossip-Context"] == siblings["context"]
    # Written back with that context (JSON body this time), at the other agent: one value everywhere.
    await n1.json("PUT", path, json.dumps({"value": "merged", "context": siblings["context"]}).encode(),
                  {"Content-Type": "application/json"})
    for node in pair:
        await eventually(lambda node=node: _one_value(node, path, "merged"), what=f"merged at {node.agent.port}")
    # A write without context replaces what that agent holds.
    await n0.json("PUT", path, b"blind")
    for node in pair:
        await eventually(lambda node=node: _one_value(node, path, "blind"), what="the blind write everywhere")
    code, _, body = await n0.call("GET", "/v1/crdt/registers/lww/cart")
    assert code == 404
    code, _, body = await n0.call("PUT", path, b"x", {"X-Gossip-Context": "!!"})
    assert code == 400 and "invalid context" in json.loads(body)["error"]


async def _one_value(node: Node, path: str, value: str) -> bool:
    doc = await _read(node, path)
    return doc is not None and [v["value"] for v in doc["values"]] == [value]


def test_mv_assign_with_a_context_replaces_exactly_what_was_read() -> None:
    a = MVRegister().assign("a", b"1")
    read_at_a = a.context
    b = a.merge(MVRegister().assign("b", b"2"))  # b's write is concurrent: the reader did not see it
    after = b.assign("a", b"3", read_at_a)
    assert sorted(after.value()) == [b"2", b"3"]
    # A context from another replica covering a value this one has not seen yet: the context is not stored
    # (an unverifiable claim: session 14), so that value, arriving later, stays as a sibling (nothing lost).
    remote = MVRegister().assign("c", b"c1")
    here = MVRegister().assign("a", b"x").assign("a", b"y", VersionVector({"a": 1, "c": 1}))
    assert here.context == VersionVector({"a": 2})
    assert here.merge(remote).value() == remote.merge(here).value() == (b"y", b"c1")


async def test_format_json_shows_version_vector_dots_and_hlc(pair: list[Node]) -> None:
    n0, n1 = pair
    await n0.json("PUT", "/v1/kv/carts/9?w=2", b"a")
    doc = await n1.json("GET", "/v1/kv/carts/9?format=json")
    (value,) = doc["values"]
    writer = n0.svc.store.node
    assert value["value"] == "a" and value["dot"] == {"node": writer, "counter": 1}
    ts = value["timestamp"]
    assert ts["node"] == writer and ts["wallMs"] > 1_600_000_000_000 and ts["logical"] >= 0
    assert ts["time"].endswith("Z") and ts["time"][:4].isdigit()
    assert doc["versionVector"] == {writer: 1} and doc["policy"] == "siblings" and doc["context"]
    assert value["writer"] == writer and value["hlc"] == ts["wallMs"]  # the older fields stay
    # After a second write at r1 over what it read, the vector names both writers.
    await n1.json("PUT", "/v1/kv/carts/9?w=2", b"b", {"X-Gossip-Context": doc["context"]})
    doc2 = await n0.json("GET", "/v1/kv/carts/9?format=json")
    assert doc2["versionVector"] == {writer: 1, n1.svc.store.node: 1}
    assert [v["dot"]["node"] for v in doc2["values"]] == [n1.svc.store.node]


async def _gossipctl(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossip_agent.cli", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_gossipctl_get_is_byte_exact_and_get_v_prints_versions(pair: list[Node]) -> None:
    n0 = pair[0]
    addr = f"127.0.0.1:{n0.agent.port}"
    for key, value in (("plain", b"no newline"), ("nl", b"ends with one\n"), ("bin", b"\x00\xff\n\n")):
        code, _, _ = await _gossipctl("put", "--addr", addr, key, "--file", "-", stdin=value)
        assert code == 0
        code, out, err = await _gossipctl("get", "--addr", addr, key)
        assert code == 0 and out == value, (key, out, err)
    code, out, err = await _gossipctl("get", "-v", "--addr", addr, "plain")
    assert code == 0 and out == b"no newline"
    text = err.decode()
    writer = n0.svc.store.node
    assert f"version vector: {writer}=1" in text and f"dot {writer}:1" in text and "hlc 20" in text
    assert "context: " in text
    # Registers from the CLI.
    code, out, _ = await _gossipctl("register", "lww", "set", "--addr", addr, "leader", "r0")
    assert code == 0 and out.startswith(b"ok")
    code, out, _ = await _gossipctl("register", "lww", "get", "--addr", addr, "leader")
    assert code == 0 and out == b"r0"
    code, out, _ = await _gossipctl("register", "mv", "set", "--addr", addr, "m", "one")
    assert code == 0
    code, out, err = await _gossipctl("register", "mv", "get", "-v", "--addr", addr, "m")
    assert code == 0 and out == b"one" and b"version vector: " in err and b"context: " in err
    code, out, err = await _gossipctl("register", "lww", "get", "--addr", addr, "never-set")
    assert code == 1 and b"no such register" in err


async def test_latency_histograms_are_exported_and_move(pair: list[Node]) -> None:
    n0, n1 = pair
    names = ("gossip_probe_rtt_seconds", "gossip_state_write_ack_seconds", "gossip_antientropy_session_seconds")
    code, _, body = await n0.call("GET", "/metrics")
    assert code == 200
    text = body.decode()
    for name in names:
        assert f"# TYPE {name} histogram" in text and f'{name}_bucket{{le="+Inf"}}' in text
    before = n0.metrics()
    # Probes run on their own (one every probe interval, acked directly on loopback).
    await eventually(lambda: n0.metrics()["gossip_probe_rtt_seconds_count"] >= before[
        "gossip_probe_rtt_seconds_count"] + 3, what="probe round trips")
    after = n0.metrics()
    assert 0 < after["gossip_probe_rtt_seconds_sum"] < after["gossip_probe_rtt_seconds_count"] * 1.0
    # A write with w=2 observes once; w=1 does not.
    await n0.json("PUT", "/v1/kv/acked?w=2", b"v")
    await n0.json("PUT", "/v1/kv/not-acked", b"v")
    m = n0.metrics()
    assert m["gossip_state_write_ack_seconds_count"] == before["gossip_state_write_ack_seconds_count"] + 1
    assert m['gossip_state_write_ack_seconds_bucket{le="60.0"}'] == m["gossip_state_write_ack_seconds_count"]
    # An anti-entropy session observes once it completes.
    sessions = m["gossip_antientropy_session_seconds_count"]
    assert await n0.svc.sync_with(n1.agent.address)
    assert n0.metrics()["gossip_antientropy_session_seconds_count"] == sessions + 1


def test_probe_rtt_counts_direct_acks_only_and_stays_bounded() -> None:
    now = [10.0]
    samples: list[float] = []
    rtt = ProbeRtt(samples.append, lambda: now[0])
    rtt.sent(Packet("me", (Ping(7, "target", "me", ("127.0.0.1", 1)),)))
    now[0] += 0.004
    rtt.received(Packet("helper", (Ack(7),)))            # relayed by a helper: not a direct round trip
    rtt.received(Packet("target", (Nack(7),)))
    assert samples == []
    rtt.received(Packet("target", (Ack(7, 123),)))
    rtt.received(Packet("target", (Ack(7, 123),)))       # a duplicate ack counts once
    assert samples == [pytest.approx(0.004)]
    for seq in range(1000):                               # unanswered pings are forgotten, oldest first
        rtt.sent(Packet("me", (Ping(seq, "gone", "me", ("127.0.0.1", 1)),)))
    assert len(rtt) == MAX_PENDING
    rtt.received(Packet("gone", (Ack(0),)))
    rtt.received(Packet("gone", (Ack(999),)))
    assert len(samples) == 2


def test_hlc_json_survives_a_forged_far_future_timestamp() -> None:
    from gossip_agent.core.hlc import Hlc
    from gossip_agent.io.state_http import hlc_json
    assert hlc_json(Hlc(1 << 62, 0, "x"))["time"] is None
    assert hlc_json(Hlc(1_732_460_000_123, 2, "n")) == {"wallMs": 1_732_460_000_123, "logical": 2, "node": "n",
                                                      "time": "2024-11-24T14:53:20.123Z"}
