"""A client flooding `?priority=critical` writes cannot take the critical class for itself (io/critical_limit.py).

Any writer could flag every write critical: each then jumped every rumor queue, went to twice the fanout and
could spend the send budget's critical reserve, and the membership changes and rare urgent writes the class is
for waited behind the flood. Now at most `state.criticalWritesPerSecond` writes a second are critical at an
agent, one client (token, else address) takes at most half of that, and a write over it is made as a normal
one: stored and replicated all the same, answered with `X-Gossip-Priority: normal`, counted in
`gossip_critical_downgraded_total`. The clock is frozen here: no test depends on how fast requests go.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gossip_agent.core.messages import StateRumor
from gossip_agent.io.critical_limit import MAX_CLIENTS, CriticalLimit
from tests.hostile.agent_support import running, url


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_client_takes_half_the_agents_rate_and_the_rest_refills() -> None:
    clock = _Clock()
    limit = CriticalLimit(10, clock)
    assert [limit.allow("a") for _ in range(8)] == [True] * 5 + [False] * 3  # half of 10 a second, burst 5
    assert [limit.allow("b") for _ in range(8)] == [True] * 5 + [False] * 3  # another client: its own half
    assert not limit.allow("c")  # the agent's 10 are spent, whoever asks
    assert limit.downgraded == 7
    clock.now += 1.0
    assert sum(limit.allow("a") for _ in range(10)) == 5  # a second later: its share again


def test_many_clients_stay_within_the_agents_rate_and_memory() -> None:
    clock = _Clock()
    limit = CriticalLimit(10, clock)
    granted = sum(limit.allow(f"client{i}") for i in range(5 * MAX_CLIENTS))
    assert granted == 10
    assert len(limit._clients) == MAX_CLIENTS


def test_the_rates_are_built_once_and_again_only_when_the_setting_changes() -> None:
    """(Each critical write built two `Rate` objects; now they are kept until `per_second` changes.)"""
    clock = _Clock()
    limit = CriticalLimit(10, clock)
    limit.allow("a")
    agent = limit._agent
    assert agent is not None
    first = agent.rate
    limit.allow("b")
    assert agent.rate is first
    limit.per_second = 2
    assert limit.allow("c")
    assert agent.rate.per_second == 2 and limit._clients._buckets["c"].rate.per_second == 1


def test_zero_is_no_limit() -> None:
    limit = CriticalLimit(0, _Clock())
    assert all(limit.allow("a") for _ in range(1000))


def _critical_queued(agent: Any) -> int:
    return sum(r.critical for r in agent.node.queue.peek_all() if isinstance(r, StateRumor))


async def test_a_flood_of_critical_writes_is_stored_but_mostly_as_normal() -> None:
    async with running("crit-flood", gossip={"broadcast": "flood"}) as agent, aiohttp.ClientSession() as s:
        api = next(e.api for e in agent.extensions if hasattr(e, "api"))
        api.critical_limit = CriticalLimit(10, lambda: 1.0)  # frozen: the bucket never refills
        priorities = []
        for i in range(12):
            async with s.put(url(agent, f"/v1/kv/k{i}?priority=critical"), data=b"v%d" % i) as r:
                assert r.status == 200
                priorities.append(r.headers["X-Gossip-Priority"])
        assert priorities == ["critical"] * 5 + ["normal"] * 7
        async with s.delete(url(agent, "/v1/kv/k11?priority=critical")) as r:
            assert r.status == 200 and r.headers["X-Gossip-Priority"] == "normal"
        async with s.put(url(agent, "/v1/kv/plain"), data=b"p") as r:
            assert "X-Gossip-Priority" not in r.headers  # no priority asked: nothing said
        for i in range(11):
            async with s.get(url(agent, f"/v1/kv/k{i}")) as r:
                assert await r.read() == b"v%d" % i  # nothing lost
        assert _critical_queued(agent) == 5
        async with s.get(url(agent, "/metrics")) as r:
            assert "gossip_critical_downgraded_total 8.0" in await r.text()
