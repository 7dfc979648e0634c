"""The agent's event loop: asyncio's by default, uvloop when asked for (`auto` falls back to asyncio's loop when
uvloop is missing, `uvloop` refuses to start), and the UDP endpoint's read path fitted to each (io/event_loop.py,
io/transport.py)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gossip_agent.__main__ import main
from gossip_agent.core.codec import encode_packet
from gossip_agent.core.config import from_mapping
from gossip_agent.core.messages import Ack, Packet
from gossip_agent.io import event_loop
from gossip_agent.io.event_loop import LoopUnavailable, choice_from, loop_factory
from gossip_agent.io.transport import RECV_BATCH, SendResult, open_udp

uvloop = pytest.importorskip("uvloop")  # a pinned requirement (requirements.txt): present wherever tests run

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop,
}


def run_on(name: str, coro: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[name]) as runner:
        runner.run(coro)


def test_the_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    assert choice_from(None, {}) == "asyncio"  # uvloop costs idle memory (io/event_loop.py): opt in
    assert choice_from(None, {"GOSSIP_EVENT_LOOP": ""}) == "asyncio"
    assert choice_from(None, {"GOSSIP_EVENT_LOOP": "auto"}) == "auto"
    assert choice_from("uvloop", {"GOSSIP_EVENT_LOOP": "asyncio"}) == "uvloop"
    assert choice_from(None, {"GOSSIP_EVENT_LOOP": " UVLOOP "}) == "uvloop"
    with pytest.raises(LoopUnavailable, match="GOSSIP_EVENT_LOOP"):
        choice_from(None, {"GOSSIP_EVENT_LOOP": "trio"})


def test_auto_takes_uvloop_when_installed_and_asyncio_takes_asyncio() -> None:
    factory, name = loop_factory("auto")
    assert name == "uvloop" and factory is uvloop.new_event_loop
    assert loop_factory("uvloop")[1] == "uvloop"
    assert loop_factory("asyncio") == (None, "asyncio")

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert event_loop.run(loop_type(), factory) is uvloop.Loop
    assert issubclass(event_loop.run(loop_type(), None), asyncio.BaseEventLoop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: importing it raises ImportError
    assert loop_factory("auto") == (None, "asyncio")
    with pytest.raises(LoopUnavailable, match="not importable"):
        loop_factory("uvloop")


def test_the_agent_refuses_to_start_on_a_loop_it_cannot_have(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert main(["--name", "x", "--port", "0", "--event-loop", "uvloop"]) == 2
    assert "uvloop asked for but not importable" in capsys.readouterr().err
    monkeypatch.setenv("GOSSIP_EVENT_LOOP", "libev")
    assert main(["--name", "x", "--port", "0"]) == 2
    assert "expected one of auto, uvloop, asyncio" in capsys.readouterr().err


@pytest.mark.parametrize("loop", LOOPS)
def test_a_burst_arrives_in_order_and_is_drained_once_per_wake_up(loop: str) -> None:
    """Datagrams waiting together reach the runtime in order within one wake-up on either loop, and
    `on_drained` runs after them: once for the burst on uvloop (the loop reads it all), once per RECV_BATCH
    on asyncio's loop (the transport reads the rest of each batch itself)."""
    async def scenario() -> None:
        events: list[bytes | None] = []
        receiver = await open_udp("127.0.0.1", 0, lambda data, src: events.append(data), lambda: events.append(None))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            assert receiver._read_batches is (loop == "asyncio")
            count = RECV_BATCH + 3
            for i in range(count):  # all queued before the loop looks: this coroutine does not yield meanwhile
                sender.sendto(b"%d" % i, receiver.local_address)
            async with asyncio.timeout(10):
                while len([e for e in events if e is not None]) < count or events[-1] is not None:
                    await asyncio.sleep(0.01)
            assert [e for e in events if e is not None] == [b"%d" % i for i in range(count)]
            assert events.count(None) == (1 if loop == "uvloop" else 2)
        finally:
            sender.close()
            receiver.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_sends_go_out_in_order_on_either_loop(loop: str) -> None:
    async def scenario() -> None:
        got: asyncio.Queue[bytes] = asyncio.Queue()
        receiver = await open_udp("127.0.0.1", 0, lambda data, src: got.put_nowait(data))
        sender = await open_udp("127.0.0.1", 0, lambda data, src: None)
        try:
            for i in range(50):
                assert sender.sendto(b"%d" % i, receiver.local_address) is SendResult.SENT
            assert sender.sendto(b"x", ("é" * 8, 1)) is SendResult.BAD_ADDRESS
            for i in range(50):
                assert await asyncio.wait_for(got.get(), 10) == b"%d" % i
            assert not sender.closed
        finally:
            receiver.close()
            sender.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_an_agent_answers_and_re_arms_its_timer_once_per_burst_on_either_loop(loop: str) -> None:
    """The runtime on either loop: a burst of packets waiting together costs one timer re-arm (one
    `Node.next_deadline`), not one each, and a ping is answered."""
    from gossip_agent.core.messages import Ping
    from gossip_agent.io.runtime import Agent

    async def scenario() -> None:
        agent = Agent(from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0}))
        await agent.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        sender.settimeout(5)
        try:
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (loop == "uvloop")
            calls = [0]
            next_deadline = agent.node.next_deadline

            def counting() -> float:
                calls[0] += 1
                return next_deadline()

            agent.node.next_deadline = counting  # type: ignore[method-assign]
            before = agent.stats.packets["in"]
            for seq in range(8):  # stray acks: decoded and handled, nothing to answer
                sender.sendto(encode_packet(Packet("stranger", (Ack(seq),))), ("127.0.0.1", agent.port))
            async with asyncio.timeout(10):
                while agent.stats.packets["in"] < before + 8:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # the drain callback (uvloop: called soon after the burst)
            assert calls[0] <= 2  # (one more if a protocol timer fell due in that turn)
            ping = Ping(7, "solo", "stranger", sender.getsockname())
            sender.sendto(encode_packet(Packet("stranger", (ping,))), ("127.0.0.1", agent.port))
            data = await asyncio.get_running_loop().run_in_executor(None, sender.recv, 65536)
            assert data  # the ack (decoding it is the codec's tests' business)
        finally:
            sender.close()
            await agent.stop()

    run_on(loop, scenario())
