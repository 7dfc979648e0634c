"""The HTTP app against a fake agent: routes, JSON shapes, readiness, and peer endpoints' error handling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gossip_agent.core.codec import DecodeError
from gossip_agent.core.messages import MemberSnapshot, MemberState
from gossip_agent.io.http_api import make_app
from gossip_agent.io.metrics import AgentMetrics, AgentStats
from gossip_agent.io.security import AuthError


class FakeNode:
    stats: Mapping[str, int] = {"probes": 3, "suspicions": 1, "custom": 2}
    health_score = 1
    incarnation = 4

    def counts(self) -> Mapping[MemberState, int]:
        return {MemberState.ALIVE: 2, MemberState.DEAD: 1}

    def queue_depth(self) -> int:
        return 5


class FakeAgent:
    def __init__(self) -> None:
        self.is_ready = False
        self.left = 0
        self.stats = AgentStats()
        self.stats.dropped["auth"] += 2
        self.stats.messages[("in", "ping")] += 7
        self.metrics = AgentMetrics(FakeNode(), self.stats)

    def members(self) -> list[MemberSnapshot]:
        return [MemberSnapshot("b", ("10.0.0.2", 7946), 1, MemberState.DEAD),
                MemberSnapshot("a", ("10.0.0.1", 7946), 0, MemberState.ALIVE, {"zone": "z1"})]

    def status(self) -> Mapping[str, Any]:
        return {"name": "a", "incarnation": 0, "health": 0, "members": {"alive": 1}}

    def ready(self) -> bool:
        return self.is_ready

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    def request_leave(self) -> None:
        self.left += 1

    async def serve_push_pull(self, body: bytes, source_host: str | None = None) -> bytes:
        if body == b"bad":
            raise DecodeError("malformed")
        if body == b"forged":
            raise AuthError("no key")
        return b"state:" + body

    async def serve_ping(self, body: bytes) -> bytes | None:
        return None if body == b"other" else b"ack"


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], FakeAgent]]:
    agent = FakeAgent()
    async with TestClient(TestServer(make_app(agent))) as c:
        yield c, agent


async def test_health_and_readiness(client: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    c, agent = client
    assert (await c.get("/healthz")).status == 200
    assert (await c.get("/readyz")).status == 503
    agent.is_ready = True
    assert (await c.get("/readyz")).status == 200


async def test_members_sorted_with_contract_fields(client: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    c, _ = client
    data = await (await c.get("/v1/members")).json()
    assert [m["name"] for m in data["members"]] == ["a", "b"]
    assert data["members"][0] == {"name": "a", "address": "10.0.0.1", "port": 7946, "state": "alive",
                                  "incarnation": 0, "meta": {"zone": "z1"}}
    assert data["members"][1]["state"] == "dead"


async def test_status_and_leave(client: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    c, agent = client
    assert (await (await c.get("/v1/status")).json())["name"] == "a"
    resp = await c.post("/v1/leave")
    assert resp.status == 200 and agent.left == 1


async def test_metrics_text(client: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    c, _ = client
    text = await (await c.get("/metrics")).text()
    for line in ('gossip_probes_total 3.0', 'gossip_suspicions_total 1.0',
                 'gossip_node_events_total{event="custom"} 2.0',
                 'gossip_packets_dropped_total{reason="auth"} 2.0',
                 'gossip_messages_total{direction="in",type="ping"} 7.0', 'gossip_members{state="alive"} 2.0',
                 'gossip_members{state="dead"} 1.0', "gossip_broadcast_queue_depth 5.0", "gossip_health_score 1.0"):
        assert line in text, line


async def test_peer_endpoints(client: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    c, _ = client
    resp = await c.post("/v1/internal/pushpull", data=b"abc")
    assert resp.status == 200 and await resp.read() == b"state:abc"
    assert (await c.post("/v1/internal/pushpull", data=b"bad")).status == 400
    assert (await c.post("/v1/internal/pushpull", data=b"forged")).status == 400
    assert (await c.post("/v1/internal/ping", data=b"me")).status == 200
    assert (await c.post("/v1/internal/ping", data=b"other")).status == 404
    assert (await c.get("/v1/internal/pushpull")).status == 405
