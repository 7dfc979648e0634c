"""Session 16: when the agent stops, a key watcher that keeps up gets every line it was owed.

Failed before the fix: `WatchHub.close_all` (the state layer's stop) dropped every watcher's pending lines at
once, so changes published just before the stop never reached a client that was reading: it lost its last lines.
Now every stream gets `http_limits.WATCH_STOP_FLUSH` (1 s) to write them, and only one that has not by then is cut
off (test_review_s14_watch_shutdown.py keeps a non-reading client from holding the shutdown).

A real in-process agent and an aiohttp client that reads its stream as it comes; the changes are published in
the event-loop step that starts the stop, so before the fix the handler never had a chance to write them.
Every wait is for an event, bounded generously.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from gossip_agent.io.state_service import StateService
from tests.hostile.agent_support import running, url

BOUND = 60.0  # only stops a broken build hanging
CHANGES = 200


async def test_a_watcher_that_keeps_up_gets_its_last_lines_when_the_agent_stops() -> None:
    keys: list[str] = []
    async with running("watchstop") as agent, aiohttp.ClientSession() as session:
        svc = next(e for e in agent.extensions if isinstance(e, StateService))
        async with session.get(url(agent, "/v1/watch?prefix=stop/"),
                               timeout=aiohttp.ClientTimeout(total=BOUND)) as response:
            assert response.status == 200
            first = json.loads(await response.content.readline())
            assert first["event"] == "watching"

            async def read() -> None:
                async for raw in response.content:
                    line = json.loads(raw)
                    if "key" in line:
                        keys.append(line["key"])

            reader = asyncio.create_task(read())
            svc.put("stop/first", b"x", None)
            async with asyncio.timeout(BOUND):  # the stream is flowing: the client keeps up
                while keys != ["stop/first"]:
                    await asyncio.sleep(0.01)
            # The stop's first step (the state layer's close_all) runs at the next yield: after these changes
            # are published and before the watch handler, woken by them, writes a line.
            stopping = asyncio.create_task(agent.stop())
            for i in range(CHANGES):
                svc.put(f"stop/{i:03d}", b"v" * 100, None)
            async with asyncio.timeout(BOUND):
                await reader  # the stream ends when the agent has stopped
                await stopping
    assert keys == ["stop/first"] + [f"stop/{i:03d}" for i in range(CHANGES)]  # before the fix: only the first


async def test_a_membership_watcher_that_keeps_up_gets_its_last_events_when_the_agent_stops() -> None:
    """The membership stream (io/events_http.py) already did: its close_all queues the end after the pending
    events, and the handler writes them first (each write timed; the server's shutdown bounds the rest)."""
    events: list[int] = []
    async with (running("memberstop", state=False) as agent, aiohttp.ClientSession() as session,
                session.get(url(agent, "/v1/members/watch"), timeout=aiohttp.ClientTimeout(total=BOUND)) as response):
        assert response.status == 200
        assert json.loads(await response.content.readline())["event"] == "snapshot"

        async def read() -> None:
            async for raw in response.content:
                line = json.loads(raw)
                if line["event"] == "test":
                    events.append(line["n"])

        reader = asyncio.create_task(read())
        stopping = asyncio.create_task(agent.stop())  # its first step closes the hub, after these
        for i in range(CHANGES):
            agent.member_watch.publish({"event": "test", "n": i})
        async with asyncio.timeout(BOUND):
            await reader
            await stopping
    assert events == list(range(CHANGES))
