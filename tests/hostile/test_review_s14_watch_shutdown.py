"""Hostile review, session 14: the agent stops while a key-watch client has stopped reading.

Failed before its fix: `WatchHub.close_all` ended every watch as ENDED, which keeps the pending lines for the
handler to write; that write has no timer of its own (the hub's periodic check ends stalled writes, and
close_all stops the check), so a client that had stopped reading held its handler, its lines (up to
`WATCH_QUEUE_BYTES` each) and the agent's shutdown until the HTTP server's shutdown timeout cancelled the
handler. Now close_all drops every watcher's pending lines at once and aborts a write that waits on a client.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_http import WatchEnd, WatchHub
from tests.hostile.test_review_s13_stuck_watch import Watched, _open_watch, fill_until_stuck, stuck_client

__all__ = ["stuck_client"]  # the fixture, shared with the session-13 tests


async def test_close_all_drops_every_pending_line_and_cuts_off_a_pending_write() -> None:
    aborts: list[str] = []
    hub = WatchHub()
    _, stuck = hub.subscribe("", abort=lambda: aborts.append("stuck"))
    _, idle = hub.subscribe("", abort=lambda: aborts.append("idle"))
    stuck.write_started()  # its handler waits on a client that does not read
    assert stuck.offer(b"a\n")
    assert idle.offer(b"b\n")
    hub.close_all()
    assert aborts == ["stuck"] and len(hub) == 0
    assert stuck.lines == idle.lines == [] and stuck.pending_bytes == idle.pending_bytes == 0
    assert await idle.next() is WatchEnd.STOPPING  # nothing more to write: the handler ends at once


async def test_stopping_frees_a_stuck_watch_at_once(stuck_client: tuple[Agent, socket.socket],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    agent, sock = stuck_client
    watched = Watched(agent, monkeypatch)
    watcher = await _open_watch(agent, sock, watched)
    await fill_until_stuck(watched, watcher)
    assert watcher.writing and watcher.pending_bytes
    watched.hub.close_all()  # what the state layer's stop does first
    assert watcher.lines == [] and watcher.pending_bytes == 0  # before the fix: kept for the handler to write
    async with asyncio.timeout(5.0):  # before the fix: until the server's shutdown cancelled the handler
        await watched.released.wait()
    assert watcher.end is WatchEnd.STOPPING and watched.slots.held_by("127.0.0.1") == 0
