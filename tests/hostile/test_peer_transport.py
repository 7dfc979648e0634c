"""The transport survives any peer, and readiness tells the truth (issue 10, item 2 and /readyz).

In-process agents (one event loop) so the test can reach into the UDP endpoint and the loop: a send to an
unencodable host is a per-message failure, a closed endpoint is reopened (and /readyz fails until then), a
stalled loop shows in the lag metric and in readiness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession

from gossip_agent.core.config import from_mapping
from gossip_agent.core.messages import Alive, Packet
from gossip_agent.io import runtime
from gossip_agent.io.runtime import Agent
from gossip_agent.io.transport import SendResult
from tests.agent.test_runtime import alive, eventually

BOUND = 15.0  # seconds an `eventually` here waits
FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0,
        "membership": {"probeInterval": "300ms", "probeTimeout": "100ms", "suspicionMult": 2,
                       "suspicionMaxTimeoutMult": 2, "reapAfter": "30s", "streamTimeout": "1s"},
        "gossip": {"interval": "50ms", "pushPullInterval": "5s"}}


def config(name: str, seeds: list[str] | None = None) -> Any:
    return from_mapping({**FAST, "name": name, "seeds": seeds or []})


@pytest.fixture
async def pair() -> AsyncIterator[list[Agent]]:
    a0 = Agent(config("t0"))
    await a0.start()
    a1 = Agent(config("t1", [f"127.0.0.1:{a0.port}"]))
    await a1.start()
    agents = [a0, a1]
    try:
        await eventually(lambda: all(len(alive(a)) == 2 for a in agents), BOUND, what="2 agents to join")
        yield agents
    finally:
        for a in agents:
            await a.stop()


async def readyz(agent: Agent) -> tuple[int, str]:
    async with ClientSession() as s, s.get(f"http://127.0.0.1:{agent.port}/readyz") as r:
        return r.status, await r.text()


async def test_a_send_to_an_unencodable_host_is_one_failed_message(pair: list[Agent]) -> None:
    a0, a1 = pair
    udp = a0._udp
    assert udp is not None
    assert udp.sendto(b"x", ("é" * 64, 7946)) is SendResult.BAD_ADDRESS
    assert not udp.closed
    # Bypass the decoder's host check as a bug would: the member's address is unencodable, the agent keeps going.
    a0.node.handle_packet(Packet("evil", (Alive("evil", 1, ("é" * 64, 7946), {}),)), ("127.0.0.1", 1), a0.now())
    a0._feed(a0.node.tick(a0.now()))
    await asyncio.sleep(1.0)
    assert not udp.closed and a0._udp is udp
    assert a0.stats.dropped["send_buffer_full"] == 0
    out = a0.stats.packets["out"]
    await eventually(lambda: a0.stats.packets["out"] > out + 3, BOUND, what="more packets out")
    assert alive(a1) >= {"t0", "t1"}


async def test_a_closed_udp_endpoint_fails_readiness_and_is_reopened(pair: list[Agent],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a0, a1 = pair
    assert await readyz(a0) == (200, "ready")
    # Hold the watchdog's reopen until the closed state has been observed: on a busy machine the readiness
    # request can take longer than a watchdog period, and the test must not depend on winning that race.
    gate = asyncio.Event()
    reopen = a0._reopen_udp

    async def reopen_when_allowed() -> None:
        await gate.wait()
        await reopen()

    monkeypatch.setattr(a0, "_reopen_udp", reopen_when_allowed)
    udp = a0._udp
    assert udp is not None
    udp.close()  # as asyncio does after a fatal send error
    await asyncio.sleep(0)
    status, text = await readyz(a0)
    assert status == 503 and "udp" in text
    closed_drops = a0.stats.dropped["udp_closed"]  # the node's own ticks may have tried to send already
    a0._send(a1.address, Packet("t0", ()))
    assert a0.stats.dropped["udp_closed"] == closed_drops + 1 and a0.stats.dropped["send_buffer_full"] == 0
    gate.set()
    await eventually(lambda: a0._udp is not udp and not a0._udp.closed, BOUND, what="the endpoint to be reopened")
    assert a0.udp_reopens == 1
    out = a0.stats.packets["out"]
    await eventually(lambda: a0.stats.packets["out"] > out + 3 and a0.ready(), BOUND, what="gossip to resume")
    assert (await readyz(a0))[0] == 200
    assert alive(a1) == {"t0", "t1"}


async def test_a_stalled_loop_shows_in_the_lag_metric_and_readiness(pair: list[Agent]) -> None:
    a0 = pair[0]
    await asyncio.sleep(runtime.WATCHDOG_EVERY * 2)
    assert a0.recent_lag() < runtime.LOOP_STALL
    time.sleep(runtime.LOOP_STALL + 0.5)  # block the loop, as an expensive request would
    await asyncio.sleep(runtime.WATCHDOG_EVERY * 2)
    assert a0.recent_lag() > runtime.LOOP_STALL
    ok, why = a0.readiness()
    assert not ok and "stalled" in why
    text = a0.render_metrics().decode()
    assert "gossip_event_loop_lag_seconds_bucket" in text and "gossip_event_loop_lag_max_seconds" in text
