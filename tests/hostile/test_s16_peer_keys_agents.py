"""Session 16, with real agents: a peer cannot plant a key no client could write (core/keys.py `key_problem`).

Before, a client's key was checked at the HTTP edge only: an agent whose store held `evil\\x1b[2J` (a crafted
anti-entropy push, or an older or hostile peer) spread it to every replica by rumor and anti-entropy, where it
broke watchers, logs and `gossipctl` output. Now each such entry is skipped alone (the rest of its exchange
applies) and counted in gossip_state_refused_total{reason="invalid_key"}.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.config import StateConfig, from_mapping
from gossip_agent.core.kvstore import KvStore, ValueEntry
from gossip_agent.io import state_service
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, FRAME, StateService
from tests.hostile.agent_support import until, with_state

T0 = 1_700_000_000_000
FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}
BAD = ["evil\x1b[2J", "nul\x00key", "up/../../etc", "forged\nline"]


async def _refused_metric(port: int, reason: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    found = re.search(rf'^gossip_state_refused_total\{{reason="{reason}"\}} (\d+)', text, re.M)
    return int(found.group(1)) if found else 0


@pytest.fixture
async def solo() -> AsyncIterator[tuple[Agent, StateService]]:
    async with with_state({**FAST, "antiEntropy": {"enabled": False}, "name": "solo"}) as solo:
        yield solo


async def test_a_crafted_push_plants_no_bad_key_and_the_rest_applies(solo: tuple[Agent, StateService]) -> None:
    agent, svc = solo
    source = KvStore("src@1", StateConfig())
    push: list[ValueEntry] = []
    for i, key in enumerate(BAD):
        push += [source.local_put(f"good/{i}", b"v", T0), source.local_put(key, b"x", T0)]
    body = encode_ae(AeRequest((svc.store.merkle.bits, svc.store.merkle.depth), push=tuple(push)))
    async with aiohttp.ClientSession() as http:
        sealed = agent.security.seal(FRAME + body, state_service.Purpose.STREAM)
        async with http.post(f"http://127.0.0.1:{agent.port}{AE_PATH}", data=sealed) as r:
            assert r.status == 200, await r.text()
    assert svc.store.all_keys() == [f"good/{i}" for i in range(len(BAD))]
    assert svc.store.refused == {"invalid_key": len(BAD)}
    assert await _refused_metric(agent.port, "invalid_key") == len(BAD)


async def test_a_peer_holding_bad_keys_spreads_none_of_them() -> None:
    """s0's store holds bad keys (planted under the HTTP edge, as an older or hostile agent's would): s1 takes
    every good key by anti-entropy on join and by rumor after, and none of the bad ones."""
    s0 = StateService(from_mapping({**FAST, "name": "s0"}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    for i, key in enumerate(BAD):
        s0.store.local_put(f"old/{i}", b"v", s0.now_ms())
        s0.store.local_put(key, b"x", s0.now_ms())
    s1 = StateService(from_mapping({**FAST, "name": "s1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    a1 = Agent(s1.config, extensions=[s1])
    await a1.start()
    try:
        await until(lambda: all(f"old/{i}" in s1.store for i in range(len(BAD))))
        await until(lambda: s1.store.refused.get("invalid_key", 0) >= len(BAD))
        # A rumor after the join: the bad key's write is gossiped like any other, and skipped like any other.
        s0.put("new/ok", b"v", None)
        s0.store.local_put("new/\x1b]0;title\x07", b"x", s0.now_ms())
        s0.put("new/ok2", b"v", None)
        await until(lambda: "new/ok" in s1.store and "new/ok2" in s1.store)
        await until(lambda: s1.store.refused.get("invalid_key", 0) >= len(BAD) + 1)
        assert not [k for k in s1.store.all_keys() if not k.startswith(("old/", "new/ok"))], s1.store.all_keys()
        assert await _refused_metric(a1.port, "invalid_key") >= len(BAD) + 1
    finally:
        await a1.stop()
        await a0.stop()
