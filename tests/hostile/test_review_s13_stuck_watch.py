"""Hostile review, session 13, F4: a key-watch client that keeps its connection but stops reading.

Failed before its fix: `GET /v1/watch` wrote with no timeout, so its handler waited on the client for as long as
the connection stayed open; the hub's "too slow" verdict never reached it (it was blocked in the write), the
watcher kept its 1,024 pending lines, and its per-address slot stayed held. Lines are as large as a value's
JSON, and a control character escapes to six bytes: 1,024 lines of a 60,000-byte NUL value were ~370 MB for
one non-reading client (RSS 411 -> 1,471 MiB with four). Now a watcher's pending bytes are bounded
(`WATCH_QUEUE_BYTES`), a slow client's lines are dropped and its pending write cut off (the connection
aborted) at once, and a write that does not drain within the stream write timeout ends the stream.

The agent tests use a real agent and a raw client socket with a 4 KiB receive buffer that never reads; every
wait is for an event (the slot's release), bounded generously.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gossip_agent.core.kvstore import Change, KvStore
from gossip_agent.io.http_limits import WatchSlot
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_http import WATCH_QUEUE, WATCH_QUEUE_BYTES, StateApi, WatchEnd, Watcher, WatchHub
from gossip_agent.io.state_service import StateService
from tests.hostile.agent_support import running

NUL_VALUE = b"\x00" * 60_000  # its watch line is ~360 KB: each NUL is spelled \u0000
BOUND = 60.0  # generous: the waits below end on an event, this only stops a broken build hanging


def _nul_change(store: KvStore, i: int) -> Change:
    entry = store.local_put(f"k/{i % 20}", NUL_VALUE, 1_700_000_000_000 + i)
    return Change(entry.key, entry, "remote")


# -- the hub's bookkeeping ----------------------------------------------------------------------------------

async def test_a_watcher_holds_a_bounded_number_of_bytes_not_only_of_lines() -> None:
    hub = WatchHub()
    try:
        _, watcher = hub.subscribe("")
        store, most = KvStore("peer@1"), 0
        for i in range(WATCH_QUEUE):
            hub.publish([_nul_change(store, i)])
            most = max(most, watcher.pending_bytes)
            if watcher.end is not None:
                break
        assert watcher.end is WatchEnd.SLOW and hub.dropped == 1 and len(hub) == 0
        assert most <= WATCH_QUEUE_BYTES
        assert i < WATCH_QUEUE // 10  # ended by its bytes, long before its line count
        assert watcher.lines == [] and watcher.pending_bytes == 0  # dropped at once, not kept for the client
    finally:
        hub.close_all()


async def test_one_line_over_the_byte_bound_still_reaches_a_watcher_that_keeps_up() -> None:
    hub = WatchHub()
    try:
        _, watcher = hub.subscribe("")
        huge = b"x" * (WATCH_QUEUE_BYTES + 1)
        assert watcher.offer(huge)
        assert not watcher.offer(b"y\n") and watcher.lines == [huge]  # a second line would pass the bound
        assert await watcher.next() == huge and watcher.pending_bytes == 0
    finally:
        hub.close_all()


def _watcher(aborts: list[str]) -> Watcher:
    return Watcher("", lambda: False, lambda: aborts.append("abort"))


def test_a_slow_verdict_cuts_off_a_pending_write_at_once() -> None:
    aborts: list[str] = []
    idle = _watcher(aborts)
    assert idle.offer(b"a\n")
    idle.finish(WatchEnd.SLOW)  # its handler is not writing: it will say why in a last line
    assert aborts == [] and idle.lines == []
    stuck = _watcher(aborts)
    stuck.write_started()
    assert stuck.offer(b"a\n")
    stuck.finish(WatchEnd.SLOW)
    assert aborts == ["abort"] and stuck.lines == [] and stuck.pending_bytes == 0


async def test_the_periodic_check_ends_a_write_that_does_not_drain() -> None:
    aborts: list[str] = []
    hub = WatchHub(check_every=1.0, write_timeout=3.0)
    try:
        _, stuck = hub.subscribe("", abort=lambda: aborts.append("stuck"))
        _, steady = hub.subscribe("", abort=lambda: aborts.append("steady"))
        stuck.write_started()
        for _ in range(4):  # 1 + ceil(3.0 / 1.0): at least write_timeout has passed at the last
            steady.write_started()  # a new write each time: a client that reads, however slowly
            assert aborts == [] and len(hub) == 2
            hub.check()
            steady.write_done()
        assert aborts == ["stuck"] and stuck.end is WatchEnd.STALLED and hub.dropped == 1 and len(hub) == 1
        assert steady.end is None
    finally:
        hub.close_all()


# -- wired into a real agent ----------------------------------------------------------------------------------

class Watched:
    """The agent's key-watch hub and slots, with events for a subscription and a slot's release."""

    def __init__(self, agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
        self.svc = next(e for e in agent.extensions if isinstance(e, StateService))
        api: StateApi = self.svc.api
        self.slots = api.watch_slots
        self.hub: WatchHub = self.svc.watchers
        self.watchers: list[Watcher] = []
        self.subscribed, self.released = asyncio.Event(), asyncio.Event()
        subscribe, release = self.hub.subscribe, self.slots.release

        def subscribing(*args: Any, **kwargs: Any) -> tuple[int, Watcher]:
            ident, watcher = subscribe(*args, **kwargs)
            self.watchers.append(watcher)
            self.subscribed.set()
            return ident, watcher

        def releasing(slot: WatchSlot) -> None:
            release(slot)
            self.released.set()

        monkeypatch.setattr(self.hub, "subscribe", subscribing)
        monkeypatch.setattr(self.slots, "release", releasing)


@pytest.fixture
async def stuck_client() -> AsyncIterator[tuple[Agent, socket.socket]]:
    async with running("stuck") as agent:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        sock.setblocking(False)
        try:
            yield agent, sock
        finally:
            sock.close()


async def _open_watch(agent: Agent, sock: socket.socket, watched: Watched) -> Watcher:
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", agent.port))
    await loop.sock_sendall(sock, b"GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(BOUND):
        await watched.subscribed.wait()
    assert watched.slots.held_by("127.0.0.1") == 1
    return watched.watchers[0]


async def fill_until_stuck(watched: Watched, watcher: Watcher) -> None:
    """Write until the watch's handler waits on its (non-reading) client and more lines are queued behind it
    (too few for the client to fall behind)."""
    for i in range(200):
        watched.svc.put(f"k/{i % 20}", NUL_VALUE, None)
        await asyncio.sleep(0)
        if watcher.writing and watcher.pending_bytes:
            return


async def test_a_watch_that_stops_reading_is_cut_off_its_bytes_bounded_and_its_slot_freed(
        stuck_client: tuple[Agent, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    agent, sock = stuck_client
    watched = Watched(agent, monkeypatch)
    watcher = await _open_watch(agent, sock, watched)
    most = 0
    for i in range(200):  # before the fix: ~72 MB of lines held, and no end
        watched.svc.put(f"k/{i % 20}", NUL_VALUE, None)
        most = max(most, sum(map(len, watcher.lines)))
        await asyncio.sleep(0)  # let the handler write what it can
        if watcher.end is not None:
            break
    assert watcher.end is WatchEnd.SLOW, "the watch did not end although its client reads nothing"
    assert most <= WATCH_QUEUE_BYTES
    async with asyncio.timeout(BOUND):
        await watched.released.wait()  # the handler learned of it: no waiting out a write timeout
    assert watched.slots.held_by("127.0.0.1") == 0 and len(watched.hub) == 0
    assert watcher.lines == []
    assert watched.hub.dropped == 1


async def test_a_write_that_never_drains_ends_the_watch(stuck_client: tuple[Agent, socket.socket],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Too few changes to fall behind, but the client's buffers are full: the stream write timeout ends it."""
    agent, sock = stuck_client
    watched = Watched(agent, monkeypatch)
    watched.hub.check_every, watched.hub.write_timeout = 0.05, 0.3
    watcher = await _open_watch(agent, sock, watched)
    await fill_until_stuck(watched, watcher)
    assert watcher.end is None and watcher.writing
    async with asyncio.timeout(BOUND):
        await watched.released.wait()
    assert watcher.end is WatchEnd.STALLED and watched.hub.dropped == 1
    assert watched.slots.held_by("127.0.0.1") == 0 and len(watched.hub) == 0 and watcher.lines == []
