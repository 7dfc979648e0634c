"""Two real agents whose concurrent CRDT writes each fit the local limit but merge into more (hostile review,
session 13, F2): they must converge. Deterministic: each agent writes before they meet (the second writes before
it starts and joins), so the writes are concurrent by construction, whatever the timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gossip_agent.core.config import from_mapping
from gossip_agent.core.crdt import ORSet
from gossip_agent.core.kvstore import ValueTooLarge
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService

FAST: dict[str, Any] = {
    "preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
    "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"},
    "state": {"maxValueBytes": 4096}}


def _add(svc: StateService, prefix: str, count: int) -> None:
    """A local add of `count` elements (to the store directly: the service of an agent not started yet has no
    clock; its state is then as if recovered from its data directory, never gossiped)."""
    svc.store.update_crdt("crdt/sets/race", ORSet,
                          lambda s, n, _: s.update(n, add=[f"{prefix}-{i:04d}" for i in range(count)]), svc.now_ms())


async def test_concurrent_set_writes_over_the_limit_together_converge_without_refusals() -> None:
    s0 = StateService(from_mapping({**FAST, "name": "s0"}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    _add(s0, "a", 180)  # ~3.7 KB each, under maxValueBytes; ~7.4 KB together
    s1 = StateService(from_mapping({**FAST, "name": "s1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    s1.open()
    _add(s1, "b", 180)
    a1 = Agent(s1.config, extensions=[s1])
    await a1.start()
    agents = [a0, a1]
    try:
        await _until_equal(s0, s1)
        # A third member holds nothing yet: it can only take the merge (over the write limit) as it is.
        s2 = StateService(from_mapping({**FAST, "name": "s2", "seeds": [f"127.0.0.1:{a0.port}"]}))
        a2 = Agent(s2.config, extensions=[s2])
        await a2.start()
        agents.append(a2)
        await _until_equal(s0, s2)
        held = s2.store.get_crdt("crdt/sets/race")
        assert isinstance(held, ORSet) and len(held.value()) == 360
        assert s0.store.refused_remote == s1.store.refused_remote == s2.store.refused_remote == 0
        with pytest.raises(ValueTooLarge):  # past the local write limit: growth is refused (413) ...
            _add(s2, "c", 1)
        s2.update_crdt("crdt/sets/race", ORSet, lambda s, n, _: s.update(n, remove=["a-0000"]),
                       "remove")  # ... shrinking not
    finally:
        for agent in reversed(agents):
            await agent.stop()


async def _until_equal(x: StateService, y: StateService) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0  # generous: the join event's anti-entropy delivers it in well under 1 s
    while loop.time() < deadline:
        ex, ey = x.store.entry("crdt/sets/race"), y.store.entry("crdt/sets/race")
        if ex is not None and ex == ey:
            return
        await asyncio.sleep(0.05)
    assert x.store.entry("crdt/sets/race") == y.store.entry("crdt/sets/race")
