"""Hostile review, session 14: the agent stops while a key-watch client has stopped reading.

Failed before its fix: `WatchHub.close_all` ended every watch as ENDED, which keeps the pending lines for the
handler to write; that write has no timer of its own (the hub's periodic check ends stalled writes, and
close_all stops the check), so a client that had stopped reading held its handler, its lines (up to
`WATCH_QUEUE_BYTES` each) and the agent's shutdown until the HTTP server's shutdown timeout cancelled the
handler. Now close_all gives every watcher `http_limits.WATCH_STOP_FLUSH` (1 s) to take its pending lines, then
drops the lines of those that have not and aborts a write that waits on a client (session 16: dropping them at
once, the session-14 fix, lost the last lines of watchers that were keeping up; test_s16_watch_stop.py).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gossip_agent.io import http_limits
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_http import WatchEnd, WatchHub
from tests.hostile.test_review_s13_stuck_watch import Watched, _open_watch, fill_until_stuck, stuck_client

__all__ = ["stuck_client"]  # the fixture, shared with the session-13 tests


async def test_close_all_drops_every_pending_line_and_cuts_off_a_pending_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(After the flush time: a watcher whose handler has not written its lines by then.)"""
    monkeypatch.setattr(http_limits, "WATCH_STOP_FLUSH", 0.05)
    aborts: list[str] = []
    hub = WatchHub()
    _, stuck = hub.subscribe("", abort=lambda: aborts.append("stuck"))
    _, idle = hub.subscribe("", abort=lambda: aborts.append("idle"))
    stuck.write_started()  # its handler waits on a client that does not read
    assert stuck.offer(b"a\n")
    assert idle.offer(b"b\n")
    hub.close_all()
    assert aborts == [] and len(hub) == 0  # the flush time first
    async with asyncio.timeout(5.0):
        while not aborts:
            await asyncio.sleep(0.01)
    assert aborts == ["stuck"]
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
    async with asyncio.timeout(5.0):  # before the fix: until the server's shutdown cancelled the handler
        await watched.released.wait()  # (cut off when the flush time, 1 s, is over)
    assert watcher.lines == [] and watcher.pending_bytes == 0  # before the fix: kept for the handler to write
    assert watcher.end is WatchEnd.STOPPING and watched.slots.held_by("127.0.0.1") == 0
