"""The membership event stream (`GET /v1/members/watch`) and `gossipctl monitor`.

In-process agents on loopback check the stream's contract exactly (snapshot first, deltas, refutations,
the slow-client rule, the watcher cap); real agent processes and the real `gossipctl monitor` check what a
user sees: a join, a kill -9 becoming suspect then dead, a graceful leave, and Ctrl-C exiting quietly.
Waits are bounded generously by the configured timings: correctness, not speed.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import aiohttp
import pytest

from gossip_agent.cli.client import parse_metrics
from gossip_agent.cli.cluster import LocalCluster, free_port_block
from gossip_agent.cli.monitor import format_event
from gossip_agent.core import codec
from gossip_agent.core.config import from_mapping
from gossip_agent.core.messages import MemberState, Packet, Suspect
from gossip_agent.io.events_http import ConvergenceDigest
from gossip_agent.io.runtime import Agent

FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0,
        "membership": {"probeInterval": "300ms", "probeTimeout": "100ms", "suspicionMult": 2,
                       "suspicionMaxTimeoutMult": 2, "reapAfter": "30s", "streamTimeout": "1s"},
        "gossip": {"interval": "50ms", "pushPullInterval": "5s"}}


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return result


@pytest.fixture
async def pair() -> AsyncIterator[list[Agent]]:
    a0 = Agent(from_mapping({**FAST, "name": "a0"}))
    await a0.start()
    a1 = Agent(from_mapping({**FAST, "name": "a1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    agents = [a0, a1]
    try:
        await a1.start()
        await eventually(lambda: all(a.node.counts()[MemberState.ALIVE] == 2 for a in agents),
                         what="2 agents to see each other")
        yield agents
    finally:
        for a in agents:
            await a.stop()


class Lines:
    """An open stream read line by line, as JSON."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 20.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.response.content.readline(), timeout)
        assert raw, "the stream ended"
        return dict(json.loads(raw))

    async def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            event = await self.next(max(0.1, deadline - asyncio.get_running_loop().time()))
            if check(event):
                return event


async def test_snapshot_then_join_refute_and_leave(pair: list[Agent]) -> None:
    a0 = pair[0]
    url = f"http://127.0.0.1:{a0.port}/v1/members/watch"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        lines = Lines(resp)
        snapshot = await lines.next()
        assert snapshot["event"] == "snapshot" and snapshot["self"] == "a0"
        assert [(m["name"], m["state"]) for m in snapshot["members"]] == [("a0", "alive"), ("a1", "alive")]
        assert a0.stats.member_watchers == 1

        a2 = Agent(from_mapping({**FAST, "name": "a2", "seeds": [f"127.0.0.1:{a0.port}"]}))
        await a2.start()
        try:
            join = await lines.until(lambda e: e["event"] == "join")
            assert join["member"]["name"] == "a2" and join["member"]["state"] == "alive" and join["time"] > 0
            # Accuse a0 of being suspect at its current incarnation: it refutes (incarnation bump).
            before = a0.node.incarnation
            accusation = Packet("a2", (Suspect("a0", before, "a2"),))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(codec.encode_packet(accusation), ("127.0.0.1", a0.port))
            refute = await lines.until(lambda e: e["event"] == "refute")
            assert refute["member"]["name"] == "a0" and refute["incarnation"] > before
            a2.request_leave()
            # Done within the leave's linger (1 s) on a quiet machine; three agents share this process's loop,
            # which a busy machine (load 40 on 2 cores) can hold back for seconds: the bound is a hang's.
            await asyncio.wait_for(a2.wait_done(), 60.0)
            left = await lines.until(lambda e: e["event"] in ("left", "dead") and e["member"]["name"] == "a2")
            assert left["event"] == "left"
        finally:
            await a2.stop()
    await eventually(lambda: a0.stats.member_watchers == 0, what="the watcher to be released")


async def test_slow_watcher_is_dropped_with_a_last_message_and_counted(pair: list[Agent]) -> None:
    a0 = pair[0]
    hub = a0.member_watch
    url = f"http://127.0.0.1:{a0.port}/v1/members/watch"
    async with aiohttp.ClientSession() as http, http.get(url) as slow, http.get(url) as fast:
        slow_lines, fast_lines = Lines(slow), Lines(fast)
        assert (await slow_lines.next())["event"] == "snapshot"
        assert (await fast_lines.next())["event"] == "snapshot"
        # A burst larger than a queue in one event-loop step: neither handler gets to drain in between, so
        # both fall behind; publishing must not block, and both are told and dropped.
        for i in range(hub.queue_size + 5):
            hub.publish({"event": "join", "member": {"name": f"x{i}"}})
        assert len(hub) == 0 and a0.stats.member_watch_dropped == 2
        events = []
        while (event := await slow_lines.next())["event"] != "error":
            events.append(event)
        assert "too slow" in event["error"] and len(events) == hub.queue_size
        # (a real membership event queued before the burst would take a slot: allow a few)
        names = [e["member"]["name"] for e in events if e["member"]["name"].startswith("x")]
        assert names == [f"x{i}" for i in range(len(names))] and len(names) >= hub.queue_size - 5
        assert await slow.content.readline() == b""  # then the server closes the stream
    # Within the queue, nothing is dropped.
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        lines = Lines(resp)
        await lines.next()
        burst = hub.queue_size - 10  # room for a real event or two
        for i in range(burst):
            hub.publish({"event": "join", "member": {"name": f"y{i}"}})
        assert len(hub) == 1
        names: list[str] = []
        while f"y{burst - 1}" not in names:
            names.append((await lines.next())["member"]["name"])
        assert [n for n in names if n.startswith("y")] == [f"y{i}" for i in range(burst)]
        assert len(hub) == 1 and a0.stats.member_watch_dropped == 2
    text = a0.render_metrics().decode()
    assert parse_metrics(text)["gossip_member_watch_dropped_total"] == 2


async def test_watchers_are_capped(pair: list[Agent]) -> None:
    a0 = pair[0]
    a0.member_watch.max_watchers = 2
    url = f"http://127.0.0.1:{a0.port}/v1/members/watch"
    async with aiohttp.ClientSession() as http, http.get(url) as r1, http.get(url) as r2:
        await Lines(r1).next()
        await Lines(r2).next()
        async with http.get(url) as r3:
            assert r3.status == 503 and "too many membership watchers" in (await r3.json())["error"]
        async with http.get(url + "?updates=maybe") as bad:
            assert bad.status == 400 and "updates must be true or false" in (await bad.json())["error"]
        assert parse_metrics(a0.render_metrics().decode())["gossip_member_watchers"] == 2
    # One client may not take every slot.
    await eventually(lambda: len(a0.member_watch) == 0, what="the watchers above to be released")
    a0.member_watch.max_watchers, a0.member_watch.max_per_client = 10, 1
    async with aiohttp.ClientSession() as http, http.get(url) as r1:
        await Lines(r1).next()
        async with http.get(url) as r2:
            assert r2.status == 429 and "per client" in (await r2.json())["error"]


async def test_updates_only_on_request() -> None:
    agent = Agent(from_mapping({**FAST, "name": "solo"}))
    await agent.start()
    try:
        url = f"http://127.0.0.1:{agent.port}/v1/members/watch"
        async with aiohttp.ClientSession() as http, http.get(url + "?updates=true") as with_updates, \
                http.get(url) as without:
            a, b = Lines(with_updates), Lines(without)
            await a.next()
            await b.next()
            from gossip_agent.core.effects import EventKind, MemberEvent
            from gossip_agent.core.messages import MemberSnapshot
            peer = MemberSnapshot("p", ("127.0.0.1", 1), 1, MemberState.ALIVE, {"k": "v"})
            agent.member_watch.member_event(MemberEvent(EventKind.UPDATE, peer))
            agent.member_watch.member_event(MemberEvent(EventKind.DEAD, peer))
            assert (await a.next())["event"] == "update"
            assert (await a.next())["event"] == "dead"
            assert (await b.next())["event"] == "dead"
    finally:
        await agent.stop()


def test_convergence_digest_reports_changes_at_most_once_per_interval() -> None:
    d = ConvergenceDigest(min_interval=1.0)

    def status(converged: bool, root: str) -> dict[str, Any]:
        return {"convergence": {"converged": converged, "fraction": 1.0 if converged else 0.5,
                                "distinctRoots": 1 if converged else 2}, "state": {"root": root}}

    assert d.observe(0.0, status(True, "r0")) is None           # baseline (the snapshot showed it)
    assert d.observe(0.5, status(True, "r0")) is None           # nothing changed
    assert d.observe(0.6, status(False, "r1")) is None          # changed, but within the interval: counted
    assert d.observe(0.8, status(False, "r2")) is None
    event = d.observe(1.1, status(False, "r3"))
    assert event == {"event": "convergence", "converged": False, "root": "r3", "fraction": 0.5,
                     "distinctRoots": 2, "rootChanges": 3}
    # A write storm: one event per interval however many roots pass by.
    reported = [e for t in range(100) if (e := d.observe(1.2 + t * 0.05, status(t % 2 == 0, f"s{t}")))]
    assert 4 <= len(reported) <= 5 and sum(e["rootChanges"] for e in reported) <= 100
    # Settling: the latest state is reported once the interval has passed, then silence.
    assert (last := d.observe(10.0, status(True, "final"))) is not None and last["converged"]
    assert d.observe(20.0, status(True, "final")) is None
    assert d.observe(21.0, {"no": "state layer"}) is None


def test_format_event_is_one_readable_line() -> None:
    member = {"name": "s2", "address": "127.0.0.1", "port": 7948, "state": "suspect", "incarnation": 3, "meta": {}}
    line = format_event({"event": "suspect", "time": 1_700_000_000.25, "member": member})
    assert "suspect" in line and "s2" in line and "127.0.0.1:7948" in line and "incarnation 3" in line
    assert "\n" not in line
    conv = format_event({"event": "convergence", "time": 1.0, "converged": False, "root": "ab" * 32,
                         "fraction": 0.5, "distinctRoots": 2, "rootChanges": 7})
    assert "diverged" in conv and "2 distinct roots" in conv and "7 root changes" in conv
    assert "abababab" in conv and "ab" * 32 not in conv  # roots shortened


# -- real processes and the real CLI -----------------------------------------------------------------------------

SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 2, "reapAfter": "120s", "streamTimeout": "1s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
    "antiEntropy": {"interval": "2s"},
}


# Bounds of the waits on real processes: upper bounds only hit on failure, wide enough for a busy 2-core machine
# (each gossipctl/agent start is 1-2 s of CPU there, and convergence waits on probe rounds that compete for it).
BOUND = 90.0


def ctrl_c_as_in_a_terminal() -> None:
    """Popen's preexec_fn: SIGINT at its default, as for a command typed in a terminal. A test run started in the
    background by a non-interactive shell (`cmd &`, as CI launchers do) has SIGINT ignored, its children inherit
    that, and Python then installs no KeyboardInterrupt handler: the Ctrl-C below would never arrive (the CI
    rehearsal's `timed out after 10 seconds`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Monitor:
    """`gossipctl monitor` as a user runs it; its stdout lines collected by a thread."""

    def __init__(self, addr: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gossip_agent.cli", "monitor", "--addr", addr, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=ctrl_c_as_in_a_terminal)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode())

    def wait_line(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if check(line):
                return line
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if check(line):
                return line
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; monitor printed:\n"
                             + "".join(self.seen[-30:]))

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(BOUND)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(BOUND)
        self._thread.join(BOUND)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode()


def _event(line: str) -> dict[str, Any]:
    return dict(json.loads(line))


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_monitor_streams_join_kill_suspect_dead_and_leave(workdir: Path) -> None:
    base = free_port_block(3)
    seed = f"127.0.0.1:{base}"

    def cfg(i: int) -> dict[str, Any]:
        return {**SPEC, "name": f"m{i}", "bindAddress": "127.0.0.1", "advertiseAddress": "127.0.0.1",
                "port": base + i, "seeds": [seed], "storage": {"dataDir": str(workdir / "data" / f"m{i}")}}

    with LocalCluster(workdir / "cluster") as cluster:
        m0 = cluster.start(cfg(0))
        deadline = time.monotonic() + BOUND
        while m0.status() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        raw = Monitor(seed, "-o", "json")
        text = Monitor(seed)
        monitors = [raw, text]
        try:
            snapshot = _event(raw.wait_line(lambda s: '"snapshot"' in s, BOUND, "the snapshot"))
            assert snapshot["self"] == "m0" and [m["name"] for m in snapshot["members"]] == ["m0"]
            assert "convergence" in snapshot
            text.wait_line(lambda s: "m0" in s and "alive" in s, BOUND, "the snapshot in text")

            m1 = cluster.start(cfg(1))
            m2 = cluster.start(cfg(2))
            for name in ("m1", "m2"):
                raw.wait_line(lambda s, n=name: (e := _event(s))["event"] == "join" and e["member"]["name"] == n,
                              BOUND, f"the join of {name}")
                text.wait_line(lambda s, n=name: " join " in s and n in s, BOUND, f"the join of {name} in text")

            # A write changes m0's root: one convergence report follows (rate-limited, but it comes).
            with urlopen(Request(f"http://{m0.addr}/v1/kv/monitored", data=b"x", method="PUT"), timeout=BOUND):
                pass
            moved = raw.wait_line(lambda s: (e := _event(s))["event"] == "convergence" and e["rootChanges"] >= 1,
                                  BOUND, "a convergence report")
            assert _event(moved)["root"] != snapshot["convergence"]["root"]
            text.wait_line(lambda s: "root change" in s, BOUND, "a convergence report in text")

            # Leave first, then the crash: a leave right after a crash can be missed by the survivors (the
            # `left` rumor may go to the dead member only), which is the membership core's business, not
            # the stream's.
            # A leave that outlasts the stop grace is ended by SIGKILL (a busy machine: the default 5 s), and
            # m1 would then be seen dead, never left: the grace is the wait bound.
            assert cluster.stop(m1, grace=BOUND) == 0, "SIGTERM exits 0 after the leave"
            raw.wait_line(lambda s: (e := _event(s))["event"] == "left" and e["member"]["name"] == "m1",
                          BOUND, "m1 left")
            text.wait_line(lambda s: " left " in s and "m1" in s, BOUND, "m1 left in text")

            m2.signal(signal.SIGKILL)
            m2.wait(BOUND)
            suspect = raw.wait_line(lambda s: (e := _event(s))["event"] == "suspect" and e["member"]["name"] == "m2",
                                    BOUND, "m2 suspected")
            dead = raw.wait_line(lambda s: (e := _event(s))["event"] == "dead" and e["member"]["name"] == "m2",
                                 BOUND, "m2 declared dead")
            assert raw.seen.index(suspect) < raw.seen.index(dead)
            text.wait_line(lambda s: " suspect " in s and "m2" in s, BOUND, "m2 suspect in text")
            text.wait_line(lambda s: " dead " in s and "m2" in s, BOUND, "m2 dead in text")
        finally:
            results = [m.interrupt() for m in monitors]
        for code, stderr in results:
            assert code == 130 and stderr == "", (code, stderr)  # Ctrl-C: quiet, the shell's code for SIGINT


async def test_a_client_that_stops_reading_is_disconnected_not_waited_on(pair: list[Agent],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher that never reads: once the socket buffers are full, a write that does not complete within
    STREAM_WRITE_TIMEOUT closes the connection (the queue alone would hold the handler for as long as the client
    likes); the agent keeps serving, and the drop is counted."""
    from gossip_agent.io import http_limits
    monkeypatch.setattr(http_limits, "STREAM_WRITE_TIMEOUT", 0.3)
    a0 = pair[0]
    hub = a0.member_watch
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", a0.port))
        await loop.sock_sendall(sock, b"GET /v1/members/watch HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: len(hub) == 1, what="the subscription")
        pad = "p" * 65536
        for i in range(500):  # at most ~32 MiB offered, 10 s: the buffers fill long before
            hub.publish({"event": "join", "member": {"name": f"z{i}", "pad": pad}})
            await asyncio.sleep(0.02)
            if a0.stats.member_watch_dropped:
                break
        assert a0.stats.member_watch_dropped == 1
        await eventually(lambda: len(hub) == 0, what="the stalled watcher to be released")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{a0.port}/v1/members") as r:
            assert r.status == 200
    finally:
        sock.close()


async def test_idle_stream_heartbeats(pair: list[Agent], monkeypatch: pytest.MonkeyPatch) -> None:
    from gossip_agent.io import events_http
    monkeypatch.setattr(events_http, "LIVENESS_CHECK", 0.05)
    monkeypatch.setattr(events_http, "HEARTBEAT", 0.2)
    url = f"http://127.0.0.1:{pair[0].port}/v1/members/watch"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        lines = Lines(resp)
        await lines.next()
        beat = await lines.until(lambda e: e["event"] == "heartbeat", timeout=20)
        assert beat["time"] > 0
