"""The asyncio runtime in-process: several Agents on loopback in one event loop (fast, no subprocesses)."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web_runner

from gossip_agent.core import codec
from gossip_agent.core.config import from_mapping
from gossip_agent.core.effects import MemberEvent
from gossip_agent.core.messages import MemberState, Packet, Ping, PushPullState
from gossip_agent.io.extension import Extension
from gossip_agent.io.peer_client import PeerClient, PeerError
from gossip_agent.io.runtime import Agent
from gossip_agent.io.security import Keyring, Purpose, Security

FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0,
        "membership": {"probeInterval": "300ms", "probeTimeout": "100ms", "suspicionMult": 2,
                       "suspicionMaxTimeoutMult": 2, "reapAfter": "30s", "streamTimeout": "1s"},
        "gossip": {"interval": "50ms", "pushPullInterval": "5s"}}


def config(name: str, seeds: list[str] = (), **extra: Any) -> Any:  # type: ignore[assignment]
    return from_mapping({**FAST, "name": name, "seeds": list(seeds), **extra})


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until `check()` holds. The default bound is generous on purpose: it costs nothing when the condition
    holds early, and a busy 2-core machine can stall these in-process agents for seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def alive(agent: Agent) -> set[str]:
    return {m.name for m in agent.members() if m.state == MemberState.ALIVE}


@pytest.fixture
async def trio() -> AsyncIterator[list[Agent]]:
    a0 = Agent(config("a0"))
    await a0.start()
    seed = f"127.0.0.1:{a0.port}"
    others = [Agent(config(f"a{i}", [seed])) for i in (1, 2)]
    for a in others:
        await a.start()
    agents = [a0, *others]
    try:
        await eventually(lambda: all(len(alive(a)) == 3 for a in agents), what="3 agents to join")
        yield agents
    finally:
        for a in agents:
            await a.stop()


async def test_join_and_status(trio: list[Agent]) -> None:
    for a in trio:
        assert a.ready()
        status = a.status()
        assert status["members"]["alive"] == 3 and status["health"] == 0


def _udp_send(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


async def test_timer_follows_the_node_deadline_and_never_fires_for_nothing(trio: list[Agent]) -> None:
    """When an ack ends a probe before its timeout, the wake-up moves to the next deadline (it used to fire
    at the stale timeout: a quarter of all idle wake-ups)."""
    for _ in range(40):
        await asyncio.sleep(0.05)
        for agent in trio:
            assert agent._timer is not None and agent._timer_at == agent.node.next_deadline()


async def test_garbage_is_dropped_and_counted(trio: list[Agent]) -> None:
    target = trio[1]
    before = dict(target.stats.dropped)
    _udp_send(target.port, b"")
    _udp_send(target.port, b"\x07garbage")                              # unknown version
    _udp_send(target.port, b"\x01\x92\xa1x\x91\x92\x63\x01")            # unknown message type
    _udp_send(target.port, b"\x01" + os.urandom(200))                   # random bytes
    _udp_send(target.port, b"\xe1" + os.urandom(60))                    # an envelope, and we have no keyring
    _udp_send(target.port, b"\x01\x92\xa1x\x91\x91\x01")                 # malformed ack
    await eventually(lambda: sum(target.stats.dropped.values()) - sum(before.values()) >= 6, what="drops")
    dropped = target.stats.dropped
    assert dropped["bad_version"] >= 1 and dropped["unknown_type"] >= 1 and dropped["auth"] >= 1
    assert dropped["truncated"] + dropped["malformed"] >= 3
    text = target.render_metrics().decode()
    assert 'gossip_packets_dropped_total{reason="auth"}' in text
    # Still a working member: a fresh ping is answered.
    client = PeerClient(Security(None), timeout=10.0)
    await client.start()
    try:
        assert await client.ping(("127.0.0.1", target.port), Ping(9, "a1", "probe", ("127.0.0.1", 1)), "probe")
    finally:
        await client.close()
    # A stalled event loop on a busy machine may get a member suspected for a moment; it refutes.
    await eventually(lambda: len(alive(target)) == 3, what="the target to see all 3 alive")


async def test_tcp_ping_and_push_pull_endpoints(trio: list[Agent]) -> None:
    client = PeerClient(Security(None), timeout=10.0)
    await client.start()
    try:
        addr = ("127.0.0.1", trio[2].port)
        assert await client.ping(addr, Ping(1, "a2", "x", ("127.0.0.1", 1)), "x")
        assert not await client.ping(addr, Ping(1, "someone-else", "x", ("127.0.0.1", 1)), "x")
        state = await client.push_pull(addr, PushPullState("x", (), False))
        assert {m.name for m in state.members} == {"a0", "a1", "a2"}
        with pytest.raises(PeerError) as err:
            await client.exchange(addr, "/v1/internal/pushpull", b"\x01garbage", max_bytes=1000)
        assert err.value.reason == "status"
    finally:
        await client.close()


async def test_graceful_leave_is_left_not_dead(trio: list[Agent]) -> None:
    leaver = trio[2]
    leaver.request_leave()
    await asyncio.wait_for(leaver.wait_done(), 30.0)
    await eventually(lambda: all(a.node.member("a2") is not None and a.node.member("a2").state  # type: ignore[union-attr]
                                 == MemberState.LEFT for a in trio[:2]), what="a2 seen as left")


async def test_encrypted_agents_and_an_intruder(tmp_path: Path) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    good = tmp_path / "good"
    good.write_text(base64.b64encode(k1).decode() + "\n")
    rotating = tmp_path / "rotating"  # K1 primary, K2 added for a coming rotation
    rotating.write_text(base64.b64encode(k1).decode() + "\n" + base64.b64encode(k2).decode() + "\n")
    bad = tmp_path / "bad"
    bad.write_text(base64.b64encode(k2).decode() + "\n")
    a0 = Agent(config("e0", security={"keyringFile": str(good)}))
    await a0.start()
    seed = [f"127.0.0.1:{a0.port}"]
    a1 = Agent(config("e1", seed, security={"keyringFile": str(rotating)}))
    intruder = Agent(config("x", seed, security={"keyringFile": str(bad)}))
    agents = [a0, a1, intruder]
    try:
        await a1.start()
        await intruder.start()
        await eventually(lambda: alive(a0) == {"e0", "e1"} and alive(a1) == {"e0", "e1"}, what="e0+e1")
        await asyncio.sleep(1.0)
        assert "x" not in {m.name for a in (a0, a1) for m in a.members()}
        assert not intruder.ready()
        assert alive(intruder) == {"x"}
        assert a0.stats.dropped["auth"] >= 1  # its join push-pull was refused
        # A plaintext packet into the encrypted cluster is dropped as unauthenticated too.
        _udp_send(a0.port, codec.encode_packet(Packet("y", (Ping(1, "e0", "y", ("127.0.0.1", 1)),))))
        before = a0.stats.dropped["auth"]
        await eventually(lambda: a0.stats.dropped["auth"] > before, what="auth drop")
        # Encrypted datagrams really are encrypted on the wire: names do not appear.
        sealed = a0.security.seal(b"\x01secret-name", Purpose.PACKET)
        assert b"secret-name" not in sealed
        assert Security(Keyring([k1])).open(sealed, Purpose.PACKET) == b"\x01secret-name"
    finally:
        for a in agents:
            await a.stop()


class RecordingExtension(Extension):
    name = "recording"

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.events: list[tuple[str, str]] = []
        self.started = self.stopped = False
        self.agent: Agent | None = None

    def state_delegate(self) -> RecordingExtension:
        return self

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        if payload in self.payloads:
            return False
        self.payloads.append(payload)
        return True

    def attach(self, agent: Agent) -> None:
        self.agent = agent

    def on_member_event(self, event: MemberEvent) -> None:
        self.events.append((event.kind.value, event.member.name))

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return {"state": {"keys": len(self.payloads)}}


async def test_extension_hook_receives_state_rumors_and_adds_status() -> None:
    exts = [RecordingExtension(), RecordingExtension()]
    a0 = Agent(config("s0"), extensions=[exts[0]])
    await a0.start()
    a1 = Agent(config("s1", [f"127.0.0.1:{a0.port}"]), extensions=[exts[1]])
    await a1.start()
    try:
        await eventually(lambda: len(alive(a0)) == 2 and len(alive(a1)) == 2, what="join")
        assert exts[0].started and exts[0].agent is a0
        a0.broadcast_state(b"k=v", key="k")
        await eventually(lambda: exts[1].payloads == [b"k=v"], what="state rumor delivery")
        assert a1.status()["state"] == {"keys": 1}
        assert ("join", "s1") in exts[0].events and ("join", "s0") in exts[1].events
        a1.request_leave()
        await eventually(lambda: ("left", "s1") in exts[0].events, what="the left event")
    finally:
        await a0.stop()
        await a1.stop()
    assert exts[0].stopped and exts[1].stopped


async def test_extensions_are_attached_before_http_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    serve = web_runner.BaseSite.start

    async def recording_start(site: web_runner.BaseSite) -> None:
        order.append("serve")
        await serve(site)

    monkeypatch.setattr(web_runner.BaseSite, "start", recording_start)

    class Probe(RecordingExtension):
        def attach(self, agent: Agent) -> None:
            assert agent.node.delegate is self  # the Node has its delegate before anything is served
            order.append("attach")
            super().attach(agent)

    agent = Agent(config("p0"), extensions=[Probe()])
    await agent.start()
    try:
        assert order == ["attach", "serve"]
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await agent.stop()


async def test_connection_refused_is_told_apart_from_other_failures() -> None:
    """A refused stream connection means nothing listens there: the Node may suspect at once."""
    import socket

    with socket.socket() as s:  # a port that was just free: bound and closed, nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PeerClient(Security(None), timeout=1.0)
    await client.start()
    try:
        with pytest.raises(PeerError) as err:
            await client.exchange(("127.0.0.1", port), "/v1/internal/ping", b"\x01", max_bytes=64)
        assert err.value.reason == "refused"
    finally:
        await client.close()


async def test_a_deadline_of_minus_infinity_means_at_once_not_never(trio: list[Agent],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A core saying "overdue" with -inf must get its tick: read as "never", the agent stopped probing."""
    agent = trio[0]
    monkeypatch.setattr(agent.node, "next_deadline", lambda: -math.inf)
    if agent._timer is not None:
        agent._timer.cancel()
        agent._timer = None
    agent._timer_at = math.inf
    agent._reschedule()
    assert agent._timer is not None


async def test_the_protocol_timers_lateness_is_a_lag_sample_and_postpones_the_watchdog() -> None:
    """The watchdog wakes only when no protocol timer fired for WATCHDOG_EVERY: each firing of the Node's timer
    is a lag sample of its own (how late it fired) and re-arms the watchdog from then."""
    from gossip_agent.io import runtime

    agent = Agent(config("solo"))
    await agent.start()
    try:
        loop = asyncio.get_running_loop()
        watchdog = agent._watchdog
        assert watchdog is not None and agent.recent_lag() < runtime.LOOP_STALL
        if agent._timer is not None:
            agent._timer.cancel()
        agent._timer = loop.call_at(loop.time() - 2.0, lambda: None)  # a protocol timer that fired 2 s late
        agent._on_timer()
        assert agent.recent_lag() >= 2.0
        ok, why = agent.readiness()
        assert not ok and "stalled" in why
        assert watchdog.cancelled() and agent._watchdog is not None
        assert agent._watchdog.when() >= loop.time() + runtime.WATCHDOG_EVERY - 0.1
    finally:
        await agent.stop()
    assert agent._watchdog is not None and agent._watchdog.cancelled()
