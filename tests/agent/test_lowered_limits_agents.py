"""Two agents whose state.maxKeyBytes / maxValueBytes differ (the limit lowered since a key was written:
hostile review F3). The lowered agent, started empty, receives the older key and value by anti-entropy,
serves reads of the key and deletes it over HTTP; only a new key over its limit is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gossip_agent.core.config import from_mapping
from gossip_agent.core.crdt import ORSet
from gossip_agent.core.kvstore import InvalidEntry, ValueEntry
from gossip_agent.core.vector_clock import VersionVector
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import REFUSAL_LOG_EVERY, StateService

LONG_KEY = "lim/" + "k" * 200  # 204 bytes, as in the review's repro
FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}


async def _until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll `check` until it holds; generous: the join event's anti-entropy session is what delivers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert check()


async def test_an_agent_with_lowered_limits_takes_reads_and_deletes_an_older_long_key() -> None:
    state: dict[str, Any] = {"maxKeyBytes": 4096, "maxValueBytes": 65536}
    s0 = StateService(from_mapping({**FAST, "name": "s0", "state": state}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    s0.store.local_put(LONG_KEY, b"v", s0.now_ms())
    s0.store.local_put("ok/big", b"x" * 2000, s0.now_ms())
    for i in range(40):
        s0.store.local_put(f"ok/key-{i}", f"v{i}".encode(), s0.now_ms())
    lowered = {"maxKeyBytes": 128, "maxValueBytes": 1024}
    s1 = StateService(from_mapping({**FAST, "name": "s1", "seeds": [f"127.0.0.1:{a0.port}"], "state": lowered}))
    a1 = Agent(s1.config, extensions=[s1])
    await a1.start()
    try:
        await _until(lambda: s1.store.root_hex() == s0.store.root_hex())
        assert len(s1.store) == 42 and s1.store.refused == {}
        base = f"http://127.0.0.1:{a1.port}/v1/kv/"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + LONG_KEY) as resp:
                assert resp.status == 200 and await resp.read() == b"v"
            async with http.put(base + LONG_KEY + "-new", data=b"v") as resp:
                assert resp.status == 400  # a new key over the lowered limit
            async with http.put(base + "ok/too-big", data=b"x" * 2000) as resp:
                assert resp.status == 413  # a new value over it
            async with http.delete(base + LONG_KEY) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(base + LONG_KEY) as resp:
                assert resp.status == 404
        await _until(lambda: getattr(s0.store.entry(LONG_KEY), "is_tombstone", False))
    finally:
        await a1.stop()
        await a0.stop()


async def test_entries_skipped_at_decoding_are_counted_and_logged_as_store_refusals_are(caplog: Any) -> None:
    """One mechanism for refused peers' entries: those a decoder skipped were logged once per peer (a set of
    peers, then only counted) apart from the store's rate-limited warning; now both are KvStore.refuse_remote,
    in one warning at most every REFUSAL_LOG_EVERY naming the latest."""
    svc = StateService(from_mapping({**FAST, "name": "solo"}))
    agent = Agent(svc.config, extensions=[svc])
    await agent.start()
    try:
        with caplog.at_level("WARNING", logger="gossip_agent.state"):
            svc._count_skipped("10.0.0.1:7946", {"key_too_long": 2})
            svc._perform([])
            svc._count_skipped("10.0.0.2:7946", {"key_too_long": 1, "value_too_large": 1})
            svc._count_skipped("10.0.0.3:7946", {})
            with pytest.raises(InvalidEntry):
                svc.store.apply_remote(ValueEntry("k", (), VersionVector()))  # (a store refusal: no versions)
            svc._perform([])  # (within REFUSAL_LOG_EVERY of the first warning: counted, not logged yet)
        assert svc.store.refused == {"key_too_long": 3, "value_too_large": 1, "invalid_entry": 1}
        assert svc.store.refused_remote == 5
        logged = [r.getMessage() for r in caplog.records if "entries from peers" in r.getMessage()]
        assert len(logged) == 1 and "refused 2 entries" in logged[0] and "10.0.0.1:7946" in logged[0]
        svc._refusal_log_at -= REFUSAL_LOG_EVERY
        with caplog.at_level("WARNING", logger="gossip_agent.state"):
            svc._perform([])
        logged = [r.getMessage() for r in caplog.records if "entries from peers" in r.getMessage()]
        assert len(logged) == 2 and "refused 3 entries" in logged[1] and "no versions" in logged[1]
    finally:
        await agent.stop()


async def test_a_push_of_a_key_the_peer_lacks_and_refuses_is_counted_refused_not_pushed() -> None:
    """The peer refused our push of a key it holds none of (here a CRDT state over its ceiling), so nothing of
    the key came back, and the push was counted as taken (gossip_state_antientropy_repaired_total{side="pushed"},
    and the repair planner saw a session that changed something). The answer now says so in a header."""
    s0 = StateService(from_mapping({**FAST, "name": "s0"}))
    s1 = StateService(from_mapping({**FAST, "name": "s1"}))
    a0, a1 = Agent(s0.config, extensions=[s0]), Agent(s1.config, extensions=[s1])
    await a0.start()
    await a1.start()
    try:
        s1.store.crdt_ceiling = 4096  # (agents: config.CRDT_STATE_CEILING; a small one keeps the state cheap)
        s0.store.update_crdt("crdt/sets/set", ORSet,
                             lambda s, n, _: s.update(n, add=[f"e{i:04d}" for i in range(1000)]), s0.now_ms())
        s0.store.local_put("plain", b"v", s0.now_ms())
        assert await s0.sync_with(("127.0.0.1", a1.port))
        repaired = s0.core.stats.ae_repaired
        assert repaired["pushed"] == 1 and repaired["push_refused"] == 1  # ("plain" taken, "set" refused)
        assert s1.store.entry("crdt/sets/set") is None and s1.store.refused == {"state_too_large": 1}
    finally:
        await a1.stop()
        await a0.stop()
