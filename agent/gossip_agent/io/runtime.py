"""The agent: one Node driven by asyncio — sockets and time in, effects out.

Rules of this module:
- The Node is only touched from the event loop thread, and only through `_feed` (packets, stream results)
  or `_on_timer` (time). Both perform the returned effects at once and re-arm a single timer at
  `node.next_deadline()`: an idle agent wakes only when the protocol has something to do (no polling).
  Datagrams re-arm it once per wake-up, after the batch the transport read (io/transport.py), not per packet.
- The runtime decides nothing about the protocol: join retries and rejoins (`JoinSeeds`, core/joining.py),
  the leave linger (`LeaveDone`), the order of a push-pull answer (`Node.serve_push_pull`) are the Node's;
  this module resolves seed names, runs streams, and stops when told.
- Everything is bounded: concurrent stream operations (`MAX_STREAMS`; past it a sync counts as failed and a
  TCP probe is skipped), one seed resolution at a time, request and answer sizes (codec, peer client, HTTP
  API).
- A failure in one packet or effect is logged and counted, never fatal: garbage from the network must not
  stop the agent.

Lifecycle: `start()` opens UDP and binds HTTP on the same port number, creates the Node (with the
extensions' state delegate), attaches the extensions, only then serves HTTP (a request never meets an
unattached extension), starts extensions and the first join attempt; `run()` also installs SIGTERM/SIGINT
handlers and returns the exit code after `stop()`.
A leave (signal or POST /v1/leave) broadcasts `left` and keeps running until the Node says it has spread
(`LeaveDone`: the rumor is sent out, or its linger time passed), then stops. A second signal stops at once.

Observers hook in here, not in the Node: member events (and refutations, seen as the Node's `refutations`
count moving) go to `member_watch` (`GET /v1/members/watch`, io/events_http.py), and probe round trips are
timed as packets leave and arrive (io/probe_rtt.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import os
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import (
    Effect,
    EventKind,
    JoinSeeds,
    LeaveDone,
    MemberEvent,
    Send,
    SyncWith,
    TcpProbe,
)
from gossip_agent.core.messages import Ack, Address, MemberSnapshot, MemberState, Packet, Ping, PushPullState
from gossip_agent.core.node import Node, split_push_pull
from gossip_agent.core.probe_seq import KEY_BYTES as PROBE_KEY_BYTES
from gossip_agent.core.topology_state import ZONE_META_KEY
from gossip_agent.io import tls
from gossip_agent.io.auth import ApiAuth
from gossip_agent.io.events_http import MemberWatchHub, member_watch_routes
from gossip_agent.io.host import Extension
from gossip_agent.io.http_api import make_app
from gossip_agent.io.http_limits import HTTP_STATS, GuardedRunner, HttpCollector
from gossip_agent.io.metrics import AgentMetrics, AgentStats, TopologyCollector
from gossip_agent.io.peer_client import MAX_PUSH_PULL_BYTES, PeerClient, PeerError
from gossip_agent.io.probe_rtt import ProbeRtt
from gossip_agent.io.security import KeyringError, KeyringFile, Purpose, Security
from gossip_agent.io.seeds import address_info, default_advertise_address, resolve_advertise_address, resolve_seeds
from gossip_agent.io.topology_http import topology_routes
from gossip_agent.io.transport import SendResult, UdpTransport, open_udp
from gossip_agent.io.zone_file import RELOAD_EVERY as ZONE_RELOAD_EVERY
from gossip_agent.io.zone_file import read_zone_file

log = logging.getLogger("gossip_agent")

MAX_STREAMS = 8
KEYRING_RELOAD_EVERY = 10.0
# Seconds between rebuilds of the address -> peer class map behind the bytes-by-peer-class counter.
PEER_CLASS_REFRESH = 1.0
# Timer slack: fire a hair after the deadline so `tick(now)` never runs just before it and spins.
_SLACK = 0.001
_PORT_ATTEMPTS = 20
# The watchdog: measures event-loop lag (how late a timer fires) and reopens a closed UDP endpoint, at least this
# often: the protocol timer's own firings are its samples, so it wakes only when no such timer fired for this long.
WATCHDOG_EVERY = 0.25
# Readiness fails while the loop lagged more than this within the last LAG_WINDOW seconds (stalled agent).
LOOP_STALL = 1.0
LAG_WINDOW = 10.0
# A push-pull state is merged this many rows at a time, yielding to the loop in between: a peer's (forged)
# view of thousands of members must not stall probes and acks (1,000 fake members used to stall 10.9 s).
PUSH_PULL_CHUNK = 128
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Enum members the per-packet path uses (an enum member read from its class is a descriptor call).
_SENT, _CLOSED = SendResult.SENT, SendResult.CLOSED
_PACKET = Purpose.PACKET


def settle_memory() -> None:
    """After startup, once per process: move every object allocated so far (modules, config) out of the
    garbage collector's sight (`gc.freeze`: later collections don't rescan them, which matters for an idle
    agent's CPU).

    No glibc `malloc_trim` here any more: it handed back ~1 MiB of garbage left by compiling sources at start, but
    the agent loads bytecode (pip compiles the packages, Dockerfile.agent the standard library), which leaves
    next to nothing to trim, and importing ctypes to call it kept ~0.3 MiB resident (3 idle agents on loopback,
    all bytecode: 41.44 MiB each with the trim, 41.14 without)."""
    gc.collect()
    gc.freeze()


async def _listen_tcp(host: str, port: int) -> list[socket.socket]:
    """Bound, listening (not yet served) TCP sockets for every address of `host` (as asyncio's
    `create_server` would open); OSError (e.g. the port is taken) after closing what was opened."""
    infos = await address_info(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class _NodeView:
    """What metrics read from the Node."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    @property
    def stats(self) -> Mapping[str, int]:
        return self._agent.node.stats

    @property
    def health_score(self) -> int:
        return self._agent.node.health_score

    @property
    def incarnation(self) -> int:
        return self._agent.node.incarnation

    def counts(self) -> Mapping[MemberState, int]:
        return self._agent.node.counts()

    def queue_depth(self) -> int:
        return self._agent.node.queue_depth()


class Agent:
    """One gossip agent process (or one of many in a test). See the module docstring for the rules."""

    def __init__(self, config: AgentConfig, *, extensions: Sequence[Extension] = (),
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 incarnation: int = 0) -> None:
        self.config = config
        self.extensions = list(extensions)
        self.clock = clock
        self.rng = rng or random.Random()
        self._initial_incarnation = incarnation
        self.stats = AgentStats()
        self.metrics = AgentMetrics(_NodeView(self), self.stats)
        self.member_watch = MemberWatchHub(self, self.stats)
        self._probe_rtt = ProbeRtt(self.metrics.latency.probe_rtt.observe, clock)
        self._refutations = 0
        self._keyring_file = KeyringFile(config.security.keyring_file) if config.security.keyring_file else None
        self.security = Security(self._keyring_file.keyring if self._keyring_file else None,
                                 replay_window=config.security.replay_window)
        self.peer_client = PeerClient(self.security, timeout=config.membership.stream_timeout,
                                      ssl_context=tls.client_context(config.security))
        self._server_ssl = tls.server_context(config.security)
        self.api_auth = ApiAuth.from_config(config.security, lambda: self.security.encrypted)
        self._node: Node | None = None
        self._udp: UdpTransport | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams = 0
        self._leave_requested = False
        self._resolving: asyncio.Task[None] | None = None  # the seed resolution for a join attempt, if any
        self._done = asyncio.Event()
        self._stopped = False
        self.port = 0
        self.loop_lag = Histogram("gossip_event_loop_lag_seconds", "How late a timer fired: time the event loop "
                                  "was busy with something else (a sample each time the protocol timer fires, "
                                  f"and at least every {WATCHDOG_EVERY}s).",
                                  buckets=LAG_BUCKETS, registry=self.metrics.registry)
        self._lags: deque[tuple[float, float]] = deque()  # (at, lag) over the last LAG_WINDOW seconds
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_due = 0.0  # loop time the watchdog timer is due at (its lateness is the loop's lag)
        self._reopening: asyncio.Task[None] | None = None  # the UDP endpoint's reopening, while one runs
        self.udp_reopens = 0
        self._udp_down_since: float | None = None
        self.metrics.registry.register(_RuntimeCollector(self))
        self.metrics.registry.register(TopologyCollector(lambda: self._node.topology if self._node else None,
                                                         self.stats))
        # Destination address -> peer class (same_zone, cross_zone, unknown) for the bytes-by-class counter,
        # rebuilt from the member table at most every PEER_CLASS_REFRESH seconds after a member or zone change.
        self._peer_classes: dict[Address, str] = {}
        self._peer_classes_at = -math.inf
        self._peer_classes_stale = True
        self._zone_error: str | None = None
        self.zone_reload_every = ZONE_RELOAD_EVERY  # seconds between zone-file reads (tests shorten it)

    # -- views (HTTP API, extensions, tests) ----------------------------------------------------------
    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("agent not started")
        return self._node

    @property
    def address(self) -> Address:
        return self.node.addr

    def now(self) -> float:
        return self.clock()

    def members(self) -> list[MemberSnapshot]:
        return self.node.members()

    def live_members(self) -> list[MemberSnapshot]:
        """Alive members other than us (peers an extension may sync with)."""
        return [m for m in self.node.members() if m.state == MemberState.ALIVE and m.name != self.node.name]

    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """Ready, or not and why (GET /readyz answers the reason): joined and not leaving, the UDP endpoint
        open, the event loop not stalled lately, and every extension ready (the state layer: it can log and
        replicate writes)."""
        node = self._node
        if node is None:
            return False, "not started"
        if node.leaving:
            return False, "leaving"
        if not node.joined:
            return False, "not joined"
        if self._udp is None or self._udp.closed:
            return False, "udp endpoint closed (reopening)"
        lag = self.recent_lag()
        if lag > LOOP_STALL:
            return False, f"event loop stalled {lag:.1f}s within the last {LAG_WINDOW:.0f}s"
        for ext in self.extensions:
            check = getattr(ext, "readiness", None)
            ok, why = check() if check is not None else (ext.ready(), f"{ext.name} not ready")
            if not ok:
                return False, why
        return True, "ready"

    def recent_lag(self) -> float:
        """Largest event-loop lag measured within the last LAG_WINDOW seconds."""
        cutoff = self.clock() - LAG_WINDOW
        return max((lag for at, lag in self._lags if at >= cutoff), default=0.0)

    def status(self) -> Mapping[str, Any]:
        node = self.node
        counts = node.counts()
        out: dict[str, Any] = {
            "name": node.name, "address": node.addr[0], "port": node.addr[1],
            "incarnation": node.incarnation, "health": node.health_score,
            "members": {s.label: counts.get(s, 0) for s in MemberState},
            "joined": node.joined, "leaving": node.leaving, "encrypted": self.security.encrypted,
        }
        for ext in self.extensions:
            out.update(ext.status())
        return out

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._bind()
        await self.peer_client.start()
        for ext in self.extensions:
            await ext.start()
        self._reschedule()
        self._arm_watchdog()
        if self.config.seeds:
            self._join_through_seeds(JoinSeeds(rejoin=False))
        else:
            self.stats.joined = True
        if self._keyring_file is not None:
            self.spawn(self._keyring_loop(), "keyring")
        if self.config.topology.zone_file and self.config.topology.zone is None:
            self.spawn(self._zone_loop(self.config.topology.zone_file), "zone-file")
        cfg, addr = self.config, self.node.addr
        log.info("agent %s listening on %s:%d (udp+%s), advertising %s:%d%s", cfg.name, cfg.bind_address,
                 self.port, "https" if self._server_ssl else "http", addr[0], addr[1],
                 ", encrypted" if self.security.encrypted else "")

    async def _bind(self) -> None:
        """UDP first (it picks the port when port is 0), then TCP listening sockets on the same port number
        (with port 0, retry on a clash), then the Node (it needs the port) with the extensions' delegate,
        then `attach`, and only then HTTP serves: connections made meanwhile wait in the listen backlog."""
        cfg = self.config
        attempts = _PORT_ATTEMPTS if cfg.port == 0 else 1
        delegate = next((d for d in (e.state_delegate() for e in self.extensions) if d is not None), None)
        routes = [*member_watch_routes(self.member_watch), *topology_routes(lambda: self.node),
                  *(r for e in self.extensions for r in e.routes())]
        for attempt in range(attempts):
            udp = await open_udp(cfg.bind_address, cfg.port, self._on_datagram, self._reschedule)
            port = udp.local_address[1]
            try:
                socks = await _listen_tcp(cfg.bind_address, port)
            except OSError:
                udp.close()
                if attempt + 1 >= attempts:
                    raise
                continue
            break
        try:  # (an IP: members gossip IP literals only, core/hosts.py)
            advertise_host = await resolve_advertise_address(
                cfg.advertise_address or default_advertise_address(cfg.bind_address, cfg.seeds),
                timeout=cfg.membership.stream_timeout)
        except ValueError:
            udp.close()
            for sock in socks:
                sock.close()
            raise
        advertise = (advertise_host, cfg.advertise_port or port)
        self._node = Node(self._with_zone_file(cfg), advertise, self.rng, self.clock(), delegate,
                          incarnation=self._initial_incarnation,
                          clock_offset=time.time() - self.clock(),
                          probe_key=os.urandom(PROBE_KEY_BYTES))  # not from self.rng: core/probe_seq.py
        self._udp, self.port = udp, port
        for warning in self.api_auth.warnings():
            log.warning("%s", warning)
        app = make_app(self, routes, auth=self.api_auth)
        runner = GuardedRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        self.metrics.registry.register(HttpCollector(app[HTTP_STATS], runner.guard))
        try:
            for ext in self.extensions:
                ext.attach(self)
            await runner.setup()
            self._runner = runner
            for sock in socks:
                await web.SockSite(runner, sock, ssl_context=self._server_ssl).start()
        except BaseException:
            for sock in socks:
                sock.close()
            raise

    async def run(self) -> int:
        """Start, serve until a leave completes (signal or POST /v1/leave), stop; returns the exit code."""
        await self.start()
        settle_memory()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._done.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    def _on_signal(self) -> None:
        if not self._leave_requested:
            log.info("signal: leaving the cluster")
            self.request_leave()
        else:
            log.info("second signal: stopping now")
            self._done.set()

    def request_leave(self) -> None:
        """Graceful leave, then stop when the Node says it has spread (idempotent)."""
        if not self._leave_requested and self._node is not None and not self._stopped:
            self._leave_requested = True
            self._feed(self._node.leave(self.clock()))

    async def wait_done(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        """Close everything (no leave: call `request_leave` first for a graceful exit)."""
        if self._stopped:
            return
        self._stopped = True
        self._done.set()
        self.member_watch.close_all()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("extension %s failed to stop", ext.name)
        if self._timer is not None:
            self._timer.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.peer_client.close()
        if self._udp is not None:
            self._udp.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A tracked task: its failure is logged, and it is cancelled on stop."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # -- the protocol loop -----------------------------------------------------------------------------
    def _feed(self, effects: Iterable[Effect], *, rearm: bool = True) -> None:
        """Perform effects and re-arm the timer. Every Node call goes through here. `rearm=False`: a datagram
        of a batch; the transport's `on_drained` re-arms once after the batch (nothing else runs meanwhile)."""
        try:
            for effect in effects:
                try:
                    if type(effect) is Send:  # most effects: straight to the socket
                        self._send(effect.to, effect.packet)
                    else:
                        self._perform(effect)
                except Exception:
                    log.exception("cannot perform %s", type(effect).__name__)
                    self.stats.dropped["effect_error"] += 1
        finally:
            if rearm:
                self._reschedule()
            self._after_feed(self._node)

    def _after_feed(self, node: Node | None) -> None:
        """What a Node call may have changed that observers follow: a refutation (watch streams), our join."""
        if node is None:
            return
        refutations = node.stats.get("refutations", 0)  # (.get: a missing key of a Counter is a Python call)
        if refutations != self._refutations:
            self._refutations = refutations
            self.member_watch.refuted(node.member(node.name))
        if not self.stats.joined and node.join_attempts and node.joined and not node.leaving:
            self.stats.joined = True
            log.info("joined the cluster after %d attempt(s)", node.join_attempts)

    def _reschedule(self) -> None:
        if self._stopped or self._node is None or self._loop is None:
            return
        deadline = self._node.next_deadline()
        if deadline == self._timer_at and self._timer is not None:
            return
        # Re-arm when the deadline moved later too (an ack arrived before the probe timeout): otherwise the
        # old timer fires for nothing. At idle that was one wake-up a second, a quarter of all of them.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        if math.isnan(deadline) or deadline == math.inf:
            return  # nothing due ever (NaN would be a core's bug: never a timer that fires at once forever)
        delay = max(0.0, deadline - self.clock()) + _SLACK  # -inf or the past: at once
        self._timer_at = deadline
        self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        timer = self._timer
        self._timer = None
        self._timer_at = math.inf
        if self._stopped:
            return
        if timer is not None and self._loop is not None:  # its lateness: the watchdog's sample, taken here
            self._note_lag(self._loop.time() - timer.when())
            self._arm_watchdog()
        try:
            now = self.clock()
            self.node.observe_wall_clock(time.time(), now)  # follow wall-clock steps (aligned probing)
            effects = self.node.tick(now)
        except Exception:
            log.exception("node.tick failed")
            effects = []
            self.stats.dropped["tick_error"] += 1
        self._feed(effects)

    def _on_datagram(self, data: bytes, src: Address) -> None:
        """One datagram: size check, then authentication (`open`), then decoding, then the Node. Runs for every
        packet, so it reads each attribute once and counts with one dict update per counter."""
        stats = self.stats
        stats.packets["in"] += 1
        node = self._node
        if node is None or self._stopped:
            return
        size = len(data)
        if size > codec.MAX_PACKET_BYTES:
            stats.dropped["oversized"] += 1
            return
        try:
            packet = codec.decode_packet(self.security.open(data, _PACKET))
        except (codec.DecodeError, ValueError) as exc:
            stats.dropped[getattr(exc, "reason", "malformed")] += 1
            log.debug("dropped packet from %s:%d: %s", src[0], src[1], exc)
            return
        messages = packet.messages
        stats.bytes[("in", codec.message_label(messages[0]) if messages else "empty")] += size
        stats.peer_class_bytes[("in", self._peer_class(src))] += size
        rtt = self._probe_rtt.received(packet)
        counts, label = stats.messages, codec.message_label
        for m in messages:
            counts[("in", label(m))] += 1
        try:
            now = self.clock()
            effects = node.handle_packet(packet, src, now)
            if rtt is not None:  # after the packet: the coordinate that came with the ack is known now
                error = node.observe_rtt(rtt[0], rtt[1], now)
                if error is not None:
                    self.metrics.latency.rtt_estimate_error.observe(error)
        except Exception:
            log.exception("node.handle_packet failed on a packet from %s:%d", src[0], src[1])
            stats.dropped["handler_error"] += 1
            return
        self._feed(effects, rearm=False)  # re-armed once after the wake-up's datagrams (`_reschedule`)

    def _perform(self, effect: Effect) -> None:
        if type(effect) is Send:  # (most effects: Send is final, so no isinstance walk)
            self._send(effect.to, effect.packet)
        elif isinstance(effect, MemberEvent):
            self._on_member_event(effect)
        elif isinstance(effect, SyncWith):
            if not self._start_stream(self._sync(effect.to, effect.join), "pushpull"):
                self._feed_later(lambda: self.node.sync_failed(effect.to, self.clock()))
        elif isinstance(effect, TcpProbe):
            self._start_stream(self._tcp_probe(effect), "tcp_ping")
        elif isinstance(effect, JoinSeeds):
            self._join_through_seeds(effect)
        elif isinstance(effect, LeaveDone):
            log.info("left the cluster")
            self._done.set()

    def _feed_later(self, call: Callable[[], list[Effect]]) -> None:
        """Run a Node call on the next loop iteration (never re-enter the Node while performing effects)."""
        assert self._loop is not None
        self._loop.call_soon(lambda: None if self._stopped else self._feed(call()))

    def _send(self, to: Address, packet: Packet) -> None:
        """Encode, seal, send one packet and count it (the commonest effect: each attribute read once)."""
        stats = self.stats
        try:
            data = self.security.seal(codec.encode_packet(packet), _PACKET)
        except Exception:
            log.exception("cannot encode a packet to %s:%d", to[0], to[1])
            stats.dropped["encode_error"] += 1
            return
        size = len(data)
        if size > codec.MAX_PACKET_BYTES:
            stats.dropped["oversized_out"] += 1
            return
        udp = self._udp
        result = _CLOSED if udp is None else udp.sendto(data, to)
        if result is not _SENT:
            stats.dropped[result.value] += 1
            return
        stats.packets["out"] += 1
        messages = packet.messages
        self._probe_rtt.sent(packet)
        stats.bytes[("out", codec.message_label(messages[0]) if messages else "empty")] += size
        stats.peer_class_bytes[("out", self._peer_class(to))] += size
        counts, label = stats.messages, codec.message_label
        for m in messages:
            counts[("out", label(m))] += 1

    def _peer_class(self, addr: Address) -> str:
        """same_zone, cross_zone or unknown for a packet to or from `addr` (metrics only)."""
        node = self._node
        if node is None:
            return "unknown"
        if self._peer_classes_stale:  # (the clock is read only then: this runs twice per packet)
            now = self.clock()
            if now >= self._peer_classes_at + PEER_CLASS_REFRESH:
                topology = node.topology
                self._peer_classes = {m.addr: topology.peer_class(m.meta) for m in node.members()
                                      if m.name != node.name}
                self._peer_classes_at, self._peer_classes_stale = now, False
        return self._peer_classes.get(addr, "unknown")

    def _on_member_event(self, event: MemberEvent) -> None:
        self._peer_classes_stale = True
        m = event.member
        self.stats.events[event.kind.value] += 1
        self.member_watch.member_event(event)
        level = logging.WARNING if event.kind in (EventKind.DEAD, EventKind.SUSPECT) else logging.INFO
        log.log(level, "member %s %s (%s:%d, incarnation %d)", m.name, event.kind.value, m.addr[0], m.addr[1],
                m.incarnation)
        for ext in self.extensions:
            try:
                ext.on_member_event(event)
            except Exception:
                log.exception("extension %s failed on a member event", ext.name)

    # -- streams ---------------------------------------------------------------------------------------
    def _start_stream(self, coro: Coroutine[Any, Any, None], op: str) -> bool:
        if self._streams >= MAX_STREAMS or self._stopped:
            coro.close()
            self.stats.streams[(op, "busy")] += 1
            return False
        self._streams += 1

        async def run() -> None:
            try:
                await coro
            finally:
                self._streams -= 1

        self.spawn(run(), op)
        return True

    async def _sync(self, to: Address, join: bool) -> None:
        state = self.node.push_pull_state(join)
        try:
            remote = await self.peer_client.push_pull(to, state, max_members=self.config.membership.max_members,
                                                      max_meta_bytes=self.config.gossip.max_meta_bytes)
        except PeerError as exc:
            self.stats.streams[("pushpull", exc.reason)] += 1
            if exc.reason == "too_many_members":
                self.stats.dropped["too_many_members"] += 1
            log.debug("push-pull with %s:%d failed: %s", to[0], to[1], exc)
            self._feed(self.node.sync_failed(to, self.clock()))
            return
        self.stats.streams[("pushpull", "ok")] += 1
        self.node.stats["meta_too_large"] += remote.meta_dropped
        await self._merge_parts(split_push_pull(remote, PUSH_PULL_CHUNK))

    async def _tcp_probe(self, probe: TcpProbe) -> None:
        node = self.node
        ping = Ping(probe.seq, probe.target, node.name, node.addr)
        # The answer only helps before the probe's interval ends.
        timeout = min(self.config.membership.stream_timeout, self.config.membership.probe_interval)
        try:
            ok = await self.peer_client.ping(probe.to, ping, node.name, timeout=timeout)
        except PeerError as exc:
            self.stats.streams[("tcp_ping", exc.reason)] += 1
            if exc.reason == "refused":
                self._feed(node.tcp_probe_refused(probe.seq, self.clock()))
            return
        self.stats.streams[("tcp_ping", "ok" if ok else "wrong_target")] += 1
        if ok:
            self._feed(node.tcp_probe_ok(probe.seq, self.clock()))

    async def serve_push_pull(self, body: bytes, source_host: str | None = None) -> bytes:
        """A peer's push-pull: answer with our view (as it was before merging theirs), then merge.
        `source_host`: the connection's peer address (a joiner's digest table goes only there)."""
        try:
            remote = codec.decode_push_pull(self.security.open(body, Purpose.STREAM), MAX_PUSH_PULL_BYTES,
                                            self.config.membership.max_members,
                                            max_meta_bytes=self.config.gossip.max_meta_bytes)
        except (codec.DecodeError, ValueError) as exc:
            self.stats.dropped[getattr(exc, "reason", "malformed")] += 1
            raise
        self.stats.bytes[("in", "pushpull")] += len(body)
        self.node.stats["meta_too_large"] += remote.meta_dropped
        mine, parts = self.node.serve_push_pull(remote, chunk_rows=PUSH_PULL_CHUNK)
        await self._merge_parts(parts, source_host)
        answer = self.security.seal(codec.encode_push_pull(mine), Purpose.STREAM)
        self.stats.bytes[("out", "pushpull")] += len(answer)
        return answer

    async def _merge_parts(self, parts: Sequence[PushPullState], source_host: str | None = None) -> None:
        """Merge a peer's view part by part (PUSH_PULL_CHUNK rows each), yielding to the loop in between."""
        for k, part in enumerate(parts):
            if k:
                await asyncio.sleep(0)
            if self._stopped:
                return
            self._feed(self.node.merge_push_pull(part, self.clock(), source_host=source_host))

    async def serve_ping(self, body: bytes) -> bytes | None:
        """The TCP fallback probe: ack if the ping names us."""
        try:
            packet = codec.decode_packet(self.security.open(body, Purpose.STREAM))
        except (codec.DecodeError, ValueError) as exc:
            self.stats.dropped[getattr(exc, "reason", "malformed")] += 1
            raise
        node = self.node
        pings = [m for m in packet.messages if isinstance(m, Ping) and m.target == node.name]
        if not pings:
            return None
        return self.security.seal(codec.encode_packet(Packet(node.name, (Ack(pings[0].seq),))), Purpose.STREAM)

    # -- watchdog: loop lag and the UDP endpoint ---------------------------------------------------------
    def _arm_watchdog(self) -> None:
        """(Re-)arm the watchdog WATCHDOG_EVERY from now. The protocol timer calls this each time it fires (its
        own lateness is the sample the watchdog would take), so in a busy or gossiping agent the watchdog
        itself rarely wakes: each wake-up of a process costs far more than the work it does."""
        loop = self._loop
        assert loop is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_due = loop.time() + WATCHDOG_EVERY
        self._watchdog = loop.call_at(self._watchdog_due, self._on_watchdog)

    def _on_watchdog(self) -> None:
        """No timer fired for WATCHDOG_EVERY: sample the loop's lag (how late this timer fired), then re-arm.
        A plain timer, not a task sleeping in a loop: a sleeping task's wake-up took two loop turns (the timer
        resolves a future, whose callback steps the task); this takes one."""
        self._watchdog = None
        if self._stopped or self._loop is None:
            return
        try:
            self._note_lag(self._loop.time() - self._watchdog_due)
        finally:
            self._arm_watchdog()

    def _note_lag(self, lag: float) -> None:
        """One event-loop lag sample (a timer's lateness), and the UDP endpoint's health check that goes with it:
        a closed endpoint is reopened in a task of its own, one at a time."""
        lag = max(0.0, lag)
        self.loop_lag.observe(lag)
        now = self.clock()
        lags = self._lags
        lags.append((now, lag))
        cutoff = now - LAG_WINDOW
        while lags[0][0] < cutoff:  # (samples come in time order: the oldest go first)
            lags.popleft()
        if self._udp is not None and self._udp.closed and self._reopening is None:
            self._reopening = self.spawn(self._reopen_in_background(), "udp-reopen")

    async def _reopen_in_background(self) -> None:
        try:
            await self._reopen_udp()
        finally:
            self._reopening = None

    async def _reopen_udp(self) -> None:
        cfg = self.config
        if self._udp_down_since is None:
            self._udp_down_since = self.clock()
            log.error("udp endpoint on port %d is closed; reopening", self.port)
        old = self._udp
        try:
            udp = await open_udp(cfg.bind_address, self.port, self._on_datagram, self._reschedule)
        except OSError as exc:
            log.error("cannot reopen udp port %d yet: %s", self.port, exc)
            return
        if old is not None:
            old.close()
        self._udp = udp
        self.udp_reopens += 1
        log.warning("udp endpoint reopened on port %d after %.1fs", self.port, self.clock() - self._udp_down_since)
        self._udp_down_since = None

    # -- join and housekeeping -------------------------------------------------------------------------
    def _join_through_seeds(self, ask: JoinSeeds) -> None:
        """A join attempt (at start, or when the Node asks): resolve the seed names, then `Node.join`. One
        resolution at a time; a request meanwhile is answered by the one in flight."""
        if self._resolving is not None or self._stopped:
            return
        node = self.node
        if ask.rejoin:
            log.warning("no other member left: joining through the seeds again")
        elif node.join_attempts:
            log.info("not joined yet after %d attempt(s); trying the seeds again", node.join_attempts)

        async def attempt() -> None:
            seeds: list[Address] = []
            try:
                seeds = await resolve_seeds(self.config.seeds, timeout=self.config.membership.stream_timeout)
            except Exception:
                log.exception("cannot resolve the seeds")  # an empty attempt: the Node retries later
            finally:
                self._resolving = None
            if not self._stopped:
                self._feed(node.join(seeds, self.clock()))

        self._resolving = self.spawn(attempt(), "join")

    def _with_zone_file(self, cfg: AgentConfig) -> AgentConfig:
        """The config the Node starts with: the zone file's zone when no zone is configured, so our first
        Alive already carries it."""
        path = cfg.topology.zone_file
        if not path or cfg.topology.zone is not None:
            return cfg
        reading = read_zone_file(path)
        self._note_zone_error(reading.error)
        return dataclasses.replace(cfg, topology=dataclasses.replace(cfg.topology, zone=reading.zone))

    def _note_zone_error(self, error: str | None) -> None:
        if error is not None:
            self.stats.zone_file_errors += 1
            if error != self._zone_error:
                log.error("%s; zone unknown until it is fixed", error)
        elif self._zone_error is not None:
            log.info("zone file readable again")
        self._zone_error = error

    async def _zone_loop(self, path: str) -> None:
        """Re-read the zone file (a downward-API volume the kubelet rewrites): a change is re-announced."""
        while True:
            await asyncio.sleep(self.zone_reload_every)
            reading = await asyncio.to_thread(read_zone_file, path)
            self._note_zone_error(reading.error)
            if self._stopped or self._node is None:
                return
            if reading.zone != self._node.topology.local_zone:
                log.info("zone is now %s", reading.zone or "unknown")
                self._peer_classes_stale = True
                self._feed(self._node.set_zone(reading.zone, self.clock()))
                if reading.zone is not None and self._node.meta.get(ZONE_META_KEY) != reading.zone:
                    log.error("zone %s is not announced to peers: with it, this agent's metadata would exceed "
                              "gossip.maxMetaBytes (%d B)", reading.zone, self.config.gossip.max_meta_bytes)

    async def _keyring_loop(self) -> None:
        assert self._keyring_file is not None
        while True:
            await asyncio.sleep(KEYRING_RELOAD_EVERY)
            try:
                if self._keyring_file.reload_if_changed():
                    self.security.rotate(self._keyring_file.keyring)
                    log.info("keyring reloaded (%d keys)", self._keyring_file.keyring.size)
            except KeyringError as exc:
                log.error("keyring file changed but is invalid, keeping the old keys: %s", exc)

    # -- services for extensions -----------------------------------------------------------------------
    def broadcast_state(self, payload: bytes, *, key: str | None = None, critical: bool = False) -> None:
        self._feed(self.node.broadcast_state(payload, self.clock(), key=key, critical=critical))

    def update_meta(self, meta: Mapping[str, str]) -> None:
        self._feed(self.node.update_meta(meta, self.clock()))

    def publish_root_digest(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int) -> None:
        """Our convergence digest: piggybacked on the packets we send anyway (no effects, no rumor)."""
        self.node.publish_root_digest(root_hex, keys, hlc_ms, seq_floor=seq_floor, now=self.clock())

    def perform(self, effects: Iterable[Effect]) -> None:
        """Perform effects an extension got from a Node call of its own."""
        self._feed(effects)


class _RuntimeCollector(Collector):
    """Runtime health families: recent loop lag, UDP reopens."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        yield GaugeMetricFamily("gossip_event_loop_lag_max_seconds", "Largest event-loop lag within the last "
                                f"{LAG_WINDOW:.0f} seconds (readiness fails above {LOOP_STALL}s).",
                                value=agent.recent_lag())
        reopens = CounterMetricFamily("gossip_udp_reopens", "Times the UDP endpoint was found closed and reopened.")
        reopens.add_metric([], agent.udp_reopens)
        yield reopens
        up = agent._udp is not None and not agent._udp.closed
        yield GaugeMetricFamily("gossip_udp_up", "1 while the UDP endpoint is open.", value=int(up))
