"""One real in-process agent on 127.0.0.1 for the HTTP attack tests: start, yield, always stop; raw bytes to its
HTTP port (requests no client library would send) and client sockets that never read; a one-route aiohttp app on
loopback; a data dir written and a state service opened on it; polling with a deadline; an anti-entropy round against
a peer that is always busy; `gossipctl` (its kv commands) run in-process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from aiohttp import web

from gossip_agent.cli import kv
from gossip_agent.core.config import from_mapping
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.send_budget import SendBudget
from gossip_agent.core.state_codec import encode_change
from gossip_agent.io import state_service
from gossip_agent.io.http_limits import GuardedRunner
from gossip_agent.io.peer_client import PeerBusy
from gossip_agent.io.persistence import DurableLog
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService, state_extensions

BASE = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0}


@contextlib.asynccontextmanager
async def running(name: str, *, state: bool = True, gossip: dict[str, Any] | None = None,
                  sections: Mapping[str, Any] | None = None, **security: Any) -> AsyncIterator[Agent]:
    """An agent named `name` (with the state layer unless `state=False`), `security` as its config section,
    `gossip` as its gossip section and `sections` as further config sections (e.g. `{"state": {...}}`)."""
    cfg = from_mapping({**BASE, "name": name, **({"security": security} if security else {}),
                        **({"gossip": gossip} if gossip else {}), **(sections or {})})
    agent = Agent(cfg, extensions=state_extensions(cfg)) if state else Agent(cfg)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def gossipctl_kv(argv: list[str]) -> int:
    """`gossipctl` with `argv` (a kv command), run in this process: its exit code (its output as printed)."""
    parser = argparse.ArgumentParser(prog="gossipctl")
    kv.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


def url(agent: Agent, path: str) -> str:
    return f"http://127.0.0.1:{agent.port}{path}"


async def answer_head(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send `data` (a request, perhaps with only part of its body) to 127.0.0.1:`port` on a new connection and
    wait, at most `timeout` seconds, for the head of the answer (status line and headers); then close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send `data` as is to 127.0.0.1:`port` and read until the server closes (the request should say
    `Connection: close`); bounded by `timeout`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def with_state(config: Mapping[str, Any]) -> AsyncIterator[tuple[Agent, StateService]]:
    """An agent of the whole config mapping `config` with its state service: start, yield both, always stop."""
    svc = StateService(from_mapping(config))
    agent = Agent(svc.config, extensions=[svc])
    await agent.start()
    try:
        yield agent, svc
    finally:
        await agent.stop()


def state_of(agent: Agent) -> StateService:
    """The state service of a running agent."""
    return next(e for e in agent.extensions if isinstance(e, StateService))


def guarded_runner(agent: Agent) -> GuardedRunner:
    """The agent's HTTP runner (a started `GuardedRunner`)."""
    runner = agent._runner
    assert isinstance(runner, GuardedRunner) and runner.server is not None
    return runner


def held_bytes(runner: GuardedRunner) -> int:
    """Bytes the server's transports hold unsent (not counting the kernel's)."""
    assert runner.server is not None
    return sum(h.transport.get_write_buffer_size() for h in runner.server.connections if h.transport is not None)


async def non_reader(port: int, request: bytes, *, rcvbuf: int | None = 4096,
                     source: str | None = None) -> socket.socket:
    """A connection to 127.0.0.1:`port` (from address `source` if given, with a receive buffer of `rcvbuf`
    bytes unless None) that sends `request` and never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request)
    except BaseException:
        sock.close()
        raise
    return sock


async def bytes_left(sock: socket.socket, timeout: float) -> int:
    """Read `sock` (non-blocking) to its end or its reset, within `timeout` seconds: how many bytes it got."""
    loop = asyncio.get_running_loop()
    got = 0
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await loop.sock_recv(sock, 1 << 20):
                got += len(chunk)
    return got


async def non_readers(port: int, requests: Iterable[tuple[str | None, bytes]]) -> list[socket.socket]:
    """One `non_reader` (4 KiB receive buffer) per (source address or None, request); all closed if one fails."""
    socks: list[socket.socket] = []
    try:
        for source, request in requests:
            socks.append(await non_reader(port, request, source=source))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send `request` on a new connection and read its whole answer (head, body) until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """`app` served on 127.0.0.1 (a free port, yielded) until the block ends."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def until(check: Callable[[], bool], seconds: float = 60.0) -> None:
    """Poll `check` until it holds (generous: a busy 2-core machine), then assert it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert check()


def write_data_dir(data: Path, snapshot: Mapping[str, object], records: Iterable[bytes]) -> None:
    """A data dir at `data` holding `snapshot`, then `records` in its log and, after them, an honest write of
    "after" by another node."""
    durable = DurableLog(data)
    durable.open()
    durable.write_snapshot(msgpack.packb(snapshot, use_bin_type=True))
    for record in records:
        durable.append(record)
    other = KvStore("other@bbbbbb")
    other.local_put("after", b"v", 2_000)
    (after,) = other.drain_changes()
    durable.append(encode_change(after))
    durable.close()


@contextlib.contextmanager
def restored(data: Path, caplog: pytest.LogCaptureFixture) -> Iterator[StateService]:
    """A state service opened on the data dir `data` (its ERROR log lines captured in `caplog`); its log
    closed at the end."""
    cfg = from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                        "storage": {"dataDir": str(data)}})
    svc = StateService(cfg)
    with caplog.at_level(logging.ERROR, logger="gossip_agent.state"):
        svc.open()
    try:
        yield svc
    finally:
        if svc._log is not None:
            svc._log.close()


def busy_ae_round(monkeypatch: pytest.MonkeyPatch,
                  busy: Callable[[], PeerBusy]) -> tuple[SimpleNamespace, list[int], list[float]]:
    """Run `StateService._ae_round` on a fake service whose every exchange raises `busy()` (at most 10,000),
    until it gives up with PeerBusy; no real waiting: the sleeps are counted on a fake clock, not slept.
    Returns the fake service, one item per exchange, and the seconds of each sleep."""
    clock = [0.0]
    calls: list[int] = []
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
        await real_sleep(0)

    async def exchange(addr: object, path: str, body: bytes, *, max_bytes: int, **_: object) -> bytes:
        calls.append(1)
        if len(calls) > 10_000:
            raise AssertionError("the round never ends")
        raise busy()

    monkeypatch.setattr(state_service.asyncio, "sleep", sleep)
    fake = SimpleNamespace(
        agent=SimpleNamespace(node=SimpleNamespace(send_budget=SendBudget(0, 0, 0.0), stats={}), now=lambda: clock[0]),
        stats=SimpleNamespace(ae_bytes={"sent": 0}), _exchange=exchange)
    fake._budget_wait = lambda n, waited: StateService._budget_wait(fake, n, waited)  # type: ignore[arg-type]

    async def run() -> None:
        with pytest.raises(PeerBusy):
            await StateService._ae_round(fake, ("10.0.0.2", 7946), b"x" * 100)  # type: ignore[arg-type]

    asyncio.run(run())
    return fake, calls, slept
