"""Session 16, with a real agent: a CRDT key's kind is fixed by its prefix (core/keys.py).

Before, `PUT /v1/kv/crdt/counters/x` stored a plain value there (and a peer's push could store a CRDT of another
kind), after which `POST /v1/crdt/counters/x` failed with a 409 for good; a plain GET of a CRDT key named the
route with a `<name>` placeholder. Now: a 409 naming the route (prefix stripped) before anything is written, a
peer's entry of the wrong kind skipped and counted (`wrong_kind`), and a legacy entry of the wrong kind already
held (an old snapshot) answered with a 409 that says a write replaces it, which it does.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.crdt import ORSet, PNCounter
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import Change, CrdtEntry, entry_from_plain
from gossip_agent.io import state_service
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, FRAME, StateService
from tests.hostile.agent_support import with_state

AGENT = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"enabled": False},
         "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def solo() -> AsyncIterator[tuple[Agent, StateService]]:
    async with with_state({**AGENT, "name": "solo"}) as solo:
        yield solo


async def _call(agent: Agent, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, \
            http.request(method, f"http://127.0.0.1:{agent.port}{path}", data=body, headers=headers) as r:
        raw = await r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw


def _legacy(svc: StateService, entry: Any) -> None:
    """Plant an entry of the wrong kind as an old snapshot would have left it (under the decoders, and under the
    store's own merge, which refuses it since session 17: only a replayed log record gets it in)."""
    svc.store.replay(Change(entry.key, entry, "remote"))


async def test_a_plain_write_under_a_crdt_prefix_is_a_409_naming_the_route(solo: tuple[Agent, StateService]) -> None:
    agent, svc = solo
    for method, path, route in (("PUT", "crdt/counters/hits", "POST /v1/crdt/counters/hits"),
                                ("DELETE", "crdt/counters/hits", "POST /v1/crdt/counters/hits"),
                                ("PUT", "crdt/sets/team/a", "POST /v1/crdt/sets/team/a"),
                                ("PUT", "crdt/registers/lww/cfg", "PUT /v1/crdt/registers/lww/cfg"),
                                ("DELETE", "crdt/registers/mv/cart", "PUT /v1/crdt/registers/mv/cart")):
        status, body = await _call(agent, method, f"/v1/kv/{path}", b"x")
        assert status == 409 and route in body["error"], (method, path, status, body)
    assert len(svc.store) == 0
    status, body = await _call(agent, "POST", "/v1/crdt/counters/hits", b'{"delta": 2}', JSON)
    assert status == 200 and body["value"] == 2, body
    status, body = await _call(agent, "GET", "/v1/kv/crdt/counters/hits")
    assert status == 409 and "read it with GET /v1/crdt/counters/hits" in body["error"], body


async def test_a_legacy_crdt_outside_the_prefixes_is_replaced_by_a_put(solo: tuple[Agent, StateService]) -> None:
    agent, svc = solo
    _legacy(svc, CrdtEntry("old/visits", PNCounter().increment("w", 5), Hlc(svc.now_ms() - 1000, 0, "w")))
    status, body = await _call(agent, "GET", "/v1/kv/old/visits")
    assert status == 409 and "a PUT/DELETE here replaces it" in body["error"], body
    status, body = await _call(agent, "PUT", "/v1/kv/old/visits", b"plain")
    assert status == 200, body
    status, body = await _call(agent, "GET", "/v1/kv/old/visits")
    assert status == 200 and body == b"plain"
    _legacy(svc, CrdtEntry("old/gone", PNCounter().increment("w", 5), Hlc(svc.now_ms() - 1000, 0, "w")))
    status, body = await _call(agent, "DELETE", "/v1/kv/old/gone")
    assert status == 200, body
    status, _ = await _call(agent, "GET", "/v1/kv/old/gone")
    assert status == 404


async def test_a_legacy_entry_of_the_wrong_kind_under_a_prefix_is_replaced_by_its_crdt_write(
        solo: tuple[Agent, StateService]) -> None:
    agent, svc = solo
    now = svc.now_ms() - 1000
    _legacy(svc, entry_from_plain([0, "crdt/counters/old", ["w", 1], [["w", 1, now, 0, b"v"]]]))
    _legacy(svc, CrdtEntry("crdt/counters/set", ORSet().add("w", "e"), Hlc(now, 0, "w")))
    status, body = await _call(agent, "GET", "/v1/kv/crdt/counters/set")
    assert status == 409 and "POST /v1/crdt/counters/set replaces it" in body["error"], body
    for name, held in (("old", "plain value"), ("set", "orset")):
        status, body = await _call(agent, "GET", f"/v1/crdt/counters/{name}")
        assert status == 409 and held in body["error"] and "a POST here replaces it" in body["error"], body
        status, body = await _call(agent, "POST", f"/v1/crdt/counters/{name}", b'{"delta": 4}', JSON)
        assert status == 200 and body["value"] == 4, body
        status, body = await _call(agent, "GET", f"/v1/crdt/counters/{name}")
        assert status == 200 and body["value"] == 4, body


async def test_a_peers_entries_of_the_wrong_kind_are_skipped_and_counted(solo: tuple[Agent, StateService]) -> None:
    agent, svc = solo
    ts = Hlc(svc.now_ms() - 1000, 0, "w")
    push = (entry_from_plain([0, "crdt/counters/x", ["w", 1], [["w", 1, ts.wall_ms, 0, b"v"]]]),
            CrdtEntry("crdt/sets/s", PNCounter().increment("w", 1), ts),
            CrdtEntry("plain/c", PNCounter().increment("w", 1), ts),
            CrdtEntry("crdt/counters/ok", PNCounter().increment("w", 1), ts),
            entry_from_plain([0, "plain/ok", ["w", 1], [["w", 1, ts.wall_ms, 0, b"v"]]]))
    body = encode_ae(AeRequest((svc.store.merkle.bits, svc.store.merkle.depth), push=push))
    async with aiohttp.ClientSession() as http:
        sealed = agent.security.seal(FRAME + body, state_service.Purpose.STREAM)
        async with http.post(f"http://127.0.0.1:{agent.port}{AE_PATH}", data=sealed) as r:
            assert r.status == 200, await r.text()
        async with http.get(f"http://127.0.0.1:{agent.port}/metrics") as r:
            metrics = await r.text()
    assert svc.store.all_keys() == ["crdt/counters/ok", "plain/ok"]
    assert re.search(r'^gossip_state_refused_total\{reason="wrong_kind"\} 3(\.0)?$', metrics, re.M), metrics[-2000:]
