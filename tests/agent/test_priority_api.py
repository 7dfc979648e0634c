"""`?priority=critical` on PUT/DELETE /v1/kv (io/state_http.py) and `gossipctl put/del --critical` (cli/kv.py):
the flag reaches the Node's rumor queue as a critical rumor; a bad value is a 400 that stores nothing."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import pytest

from gossip_agent.cli import kv
from gossip_agent.core.messages import StateRumor
from tests.hostile.agent_support import running, url

# The flood path: an agent alone keeps its rumors queued there, where the flags can be read (on the broadcast
# tree an agent without neighbours has nobody to push to and queues nothing).
FLOOD = {"broadcast": "flood"}


def _queued(agent: Any) -> list[StateRumor]:
    return [r for r in agent.node.queue.peek_all() if isinstance(r, StateRumor)]


async def test_priority_critical_queues_a_critical_rumor_and_bad_values_are_400() -> None:
    async with running("prio", gossip=FLOOD) as agent, aiohttp.ClientSession() as s:
        async with s.put(url(agent, "/v1/kv/plain"), data=b"v") as r:
            assert r.status == 200
        async with s.put(url(agent, "/v1/kv/urgent?priority=critical"), data=b"v") as r:
            assert r.status == 200, await r.text()
        async with s.put(url(agent, "/v1/kv/normal?priority=normal"), data=b"v") as r:
            assert r.status == 200
        # Alone, the agent keeps its rumors queued: the flags can be read there.
        assert sorted(r.critical for r in _queued(agent)) == [False, False, True]
        assert _queued(agent)[0].critical  # critical first, though written second
        async with s.delete(url(agent, "/v1/kv/plain?priority=critical")) as r:
            assert r.status == 200
        assert sum(r.critical for r in _queued(agent)) == 2
        for bad in ("urgent", "CRITICAL", "", "critical%00", "x" * 5000):
            for method in ("PUT", "DELETE"):
                async with s.request(method, url(agent, f"/v1/kv/normal?priority={bad}"), data=b"w") as r:
                    assert r.status == 400, (method, bad, r.status)
                    error = (await r.json())["error"]
                    assert "priority must be critical or normal" in error and len(error) < 100
        async with s.get(url(agent, "/v1/kv/normal")) as r:
            assert await r.read() == b"v"  # refused writes stored nothing
        assert agent.node.stats["rumor_bytes_critical"] == 0  # nobody to send to yet
        async with s.get(url(agent, "/metrics")) as r:
            text = await r.text()
        for family in ("gossip_rumor_bytes_total", "gossip_budget_deferred_total", "gossip_budget_dropped_total"):
            for cls in ("critical", "normal"):
                assert f'{family}{{class="{cls}"}} 0.0' in text
        assert "rumor_bytes_critical" not in text  # not repeated among gossip_node_events_total


def _gossipctl(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gossipctl")
    kv.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


async def test_gossipctl_put_and_del_critical(capsys: pytest.CaptureFixture[str]) -> None:
    async with running("prio-cli", gossip=FLOOD) as agent:
        addr = ["--addr", f"127.0.0.1:{agent.port}"]
        # gossipctl is a blocking client: it runs in a thread while the agent serves on this loop.
        assert await asyncio.to_thread(_gossipctl, ["put", *addr, "plain", "v"]) == 0
        assert await asyncio.to_thread(_gossipctl, ["put", *addr, "--critical", "-w", "1", "urgent", "v"]) == 0
        assert [r.critical for r in _queued(agent)] == [True, False]
        assert await asyncio.to_thread(_gossipctl, ["del", *addr, "--critical", "plain"]) == 0
        assert [r.critical for r in _queued(agent)] == [True, True]
        assert capsys.readouterr().out.count("ok (1 holder(s))") == 2


async def test_a_repeated_priority_or_rtt_parameter_is_a_400_not_a_silent_pick() -> None:
    # `?priority=normal&priority=critical` used to store a normal write (the first value won, unsaid), and
    # `/v1/rtt?to=a&to=b` to answer for a: an ambiguous request gets a clear 400 and changes nothing.
    async with running("prio") as agent, aiohttp.ClientSession() as s:
        for method in ("PUT", "DELETE"):
            async with s.request(method, url(agent, "/v1/kv/k?priority=normal&priority=critical"),
                                 data=b"v") as r:
                assert r.status == 400, (method, r.status)
                assert "priority" in (await r.json())["error"]
        async with s.get(url(agent, "/v1/kv/k")) as r:
            assert r.status == 404  # nothing stored
        for query in ("to=prio&to=other", "to=prio&from=prio&from=x"):
            async with s.get(url(agent, f"/v1/rtt?{query}")) as r:
                assert r.status == 400, (query, r.status)
                assert "more than once" in await r.text()
        async with s.get(url(agent, "/v1/rtt?to=prio")) as r:
            assert r.status == 200  # a single value is fine


async def test_gossipctl_says_on_stderr_when_a_critical_write_was_taken_as_normal(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Over the agent's critical rate a write is stored as a normal one (`X-Gossip-Priority: normal`): gossipctl
    tells the user on stderr, exits 0 (the write succeeded) and leaves stdout as it was."""
    from gossip_agent.io.critical_limit import CriticalLimit

    async with running("prio-note", gossip=FLOOD) as agent:
        api = next(e.api for e in agent.extensions if hasattr(e, "api"))
        api.critical_limit = CriticalLimit(2, lambda: 1.0)  # one critical write per client, frozen clock
        addr = ["--addr", f"127.0.0.1:{agent.port}"]
        assert await asyncio.to_thread(_gossipctl, ["put", *addr, "--critical", "first", "v"]) == 0
        first = capsys.readouterr()
        assert first.out == "ok (1 holder(s))\n" and first.err == ""  # taken as critical: nothing to say
        assert await asyncio.to_thread(_gossipctl, ["put", *addr, "--critical", "second", "v"]) == 0
        second = capsys.readouterr()
        assert second.out == "ok (1 holder(s))\n"
        assert kv.DOWNGRADED_NOTE in second.err and "criticalWritesPerSecond" in second.err
        assert await asyncio.to_thread(_gossipctl, ["del", *addr, "--critical", "first"]) == 0
        deleted = capsys.readouterr()
        assert deleted.out == "deleted\n" and kv.DOWNGRADED_NOTE in deleted.err
        assert [r.critical for r in _queued(agent)] == [False, False]  # (the delete replaced "first"'s rumor)
        assert await asyncio.to_thread(_gossipctl, ["put", *addr, "plain", "v"]) == 0
        assert capsys.readouterr().err == ""  # no priority asked: nothing said
