"""A deterministic cluster simulation: the real `Node` cores, a virtual clock, virtual links.

Nothing is sent and no clock is read. Each node gets its own seeded `random.Random`, the network another, and
every effect a node returns is performed here the way the agent runtime would perform it:

- `Send` becomes a datagram on a `Network` link (lost, cut by a partition, or delivered after a latency);
- `SyncWith` becomes a push-pull stream: the initiator's state reaches the responder after one link delay,
  the responder serves it (`Node.serve_push_pull`: the answer and the merge, in the core's order), and the
  initiator merges the answer one link delay later; a cut path or a down host makes it fail after the stream
  timeout;
- `TcpProbe` succeeds after a round trip iff the target host is up, reachable, and still the named member;
- `JoinSeeds` is a join attempt through the seeds at once (`Node.join` with the seeds' addresses);
- `LeaveDone` stops a leaving node (its leave has spread);
- `MemberEvent` is counted, indexed for the queries below, and (optionally) logged with its virtual time.

The run loop is one heap of (time, seq, kind, node, arg): node wakeups come from `Node.next_deadline()` and
are rescheduled after every call into a node (stale wakeups are skipped by a per-node generation number).

Join retries, rejoins after losing every peer, the leave linger and reconnecting to failed members after a
partition are the core's own decisions (core/joining.py, `Node.leave`, `membership.reconnect_interval`): the
simulation only performs the effects, as the agent runtime does.

Topology (optional): `set_zones` puts every node in a zone (its `topology.zone`, so it gossips it in its
metadata) and gives links the latency of their zone pair (sim/network.py); with bytes counted, the bytes
sent are also split into `bytes_same_zone` / `bytes_cross_zone` (datagrams and push-pull streams).
`measure_rtt=True` times each node's probes (core/probe_timer.py, as the runtime does with its clock) and
feeds the round trips to `Node.observe_rtt`, so network coordinates converge as in an agent.

Caveats: streams are not lost and take one link delay each way (no handshake, no transfer time); CPU time is
zero (a node handles a packet at the instant it arrives); a crashed host's datagrams already in flight still
arrive.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum
from typing import Any

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Effect, EventKind, JoinSeeds, LeaveDone, MemberEvent, Send, SyncWith, TcpProbe
from gossip_agent.core.messages import Address, Digest, MemberSnapshot, MemberState, Packet, PushPullState
from gossip_agent.core.node import Node, StateDelegate
from gossip_agent.core.probe_timer import ProbeTimer
from gossip_agent.sim.network import (
    CALL,
    DELIVER,
    SYNC_FAILED,
    SYNC_REPLY,
    SYNC_REQUEST,
    TCP_PROBE_OK,
    WAKE,
    EventQueue,
    LinkProfile,
    Network,
)

PORT = 7946
# If a node's next deadline is already due right after it ticked, the core left a timer unserviced; wake it
# again this much later (and count it in `stats["stuck_deadlines"]`) instead of spinning forever.
STUCK_STEP = 0.001
_INF = math.inf
_BYTES_MODES = ("off", "estimate", "exact")
_RTT_ERRORS_KEPT = 200_000


class Status(IntEnum):
    IDLE = 0     # created, not started
    UP = 1
    LEAVING = 2  # left gracefully, still running while its leave spreads
    LEFT = 3
    CRASHED = 4


class PayloadLog:
    """A state delegate that only remembers when it first saw each payload (new the first time only)."""

    __slots__ = ("first_seen",)

    def __init__(self) -> None:
        self.first_seen: dict[bytes, float] = {}

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        if payload in self.first_seen:
            return False
        self.first_seen[payload] = now
        return True

    def on_root_digest(self, digest: Digest, now: float) -> None:
        """Digests are the state layer's; this delegate has none."""


def node_address(i: int) -> Address:
    """Node i's virtual address: 10.0.0.1, 10.0.0.2, ... (10.a.b.c past 65k nodes)."""
    j = i + 1
    return (f"10.{j >> 16}.{(j >> 8) & 0xFF}.{j & 0xFF}", PORT)


def make_config(preset: str = "lan", *, membership: dict[str, Any] | None = None,
                gossip: dict[str, Any] | None = None, **top: Any) -> AgentConfig:
    """A template config for the simulated nodes: a preset with section overrides (snake_case names)."""
    base = AgentConfig.preset_config(preset, **top)
    return dataclasses.replace(base, membership=dataclasses.replace(base.membership, **(membership or {})),
                               gossip=dataclasses.replace(base.gossip, **(gossip or {})))


class Simulation:
    """N nodes on virtual links, driven by a virtual clock. Nodes are addressed by index or name."""

    def __init__(self, n: int = 0, *, seed: int = 1, config: AgentConfig | None = None,
                 link: LinkProfile | None = None, bandwidth: float | None = None, bytes_mode: str = "off",
                 delegate_factory: Callable[[int], StateDelegate] | None = None,
                 keep_events: bool = False, leave_linger: float | None = None, max_events: int | None = None,
                 clock_skew: float = 0.0, measure_rtt: bool = False, cpu_per_packet: float = 0.0,
                 cpu_per_send: float = 0.0) -> None:
        if bytes_mode not in _BYTES_MODES:
            raise ValueError(f"bytes_mode must be one of {_BYTES_MODES}")
        self.seed = seed
        self.config = config or make_config()
        self.now = 0.0
        self.net = Network(0, random.Random(f"net:{seed}"), link, bandwidth=bandwidth)
        # Bandwidth needs sizes; "estimate" sums the codec's per-message sizes (equal to the plaintext size
        # today), "exact" encodes and decodes every packet (slower; also checks that every packet round-trips
        # and fits the MTU). Counts are plaintext: encryption adds codec.ENVELOPE_RESERVE per packet.
        self.bytes_mode = "estimate" if bandwidth is not None and bytes_mode == "off" else bytes_mode
        self.delegate_factory = delegate_factory
        self.keep_events = keep_events
        # None: a leaver stops when its core says its leave has spread (`LeaveDone`), as an agent does. A number
        # keeps every leaver running exactly that long instead (tests of a leaver that lingers).
        self.leave_linger = leave_linger
        self.max_events = max_events
        # Each node's wall clock is off by up to this many seconds (uniform, fixed per node): aligned probing
        # numbers its rounds by the wall clock, so skew is what makes real rounds disagree.
        self.clock_skew = clock_skew
        self.measure_rtt = measure_rtt
        self._timers: list[ProbeTimer | None] = []
        # Zone model (set_zones): each node's zone label, or None when zones are not simulated.
        self.zone_names: list[str] | None = None
        self.names: list[str] = []
        self.addrs: list[Address] = []
        self.nodes: list[Node | None] = []
        self.delegates: list[StateDelegate | None] = []
        self.status: list[Status] = []
        self.seeds: list[int] = []
        self.index: dict[Address, int] = {}
        self.by_name: dict[str, int] = {}
        self._wake_at: list[float] = []
        self._wake_gen: list[int] = []
        self._header: list[int] = []
        self._queue = EventQueue()
        self.stats: Counter[str] = Counter()
        self.events: list[tuple[float, str, EventKind, str, int]] = []
        # (kind, subject) -> observer -> virtual time of the latest such event.
        self.seen: dict[tuple[EventKind, int], dict[int, float]] = {}
        self.false_positives: list[tuple[float, str, str]] = []
        self.crashed_at: dict[int, float] = {}
        self.left_at: dict[int, float] = {}
        self.started_at: dict[int, float] = {}
        self.on_event: list[Callable[[float, int, MemberEvent], None]] = []
        # Observers of every datagram a node sends (virtual time, sender index, the Send), before the network.
        self.on_send: list[Callable[[float, int, Send], None]] = []
        # Hook for drivers beside the Node (sim/state.py): every event, JOIN included, as (observer, event).
        self.on_any_event: list[Callable[[int, MemberEvent], None]] = []
        # Relative errors of the RTT estimates just before each measured probe (measure_rtt), latest last.
        self.rtt_errors: list[float] = []
        self._process: list[int] = []  # how many times each node was started (a restart is a new process)
        # CPU load (optional): every datagram costs its receiver `cpu_per_packet` seconds of CPU, in turn, so a
        # node receiving more than 1 / cpu_per_packet datagrams a second falls behind and its queue grows, as an
        # agent's socket buffer does on a machine at capacity (N=50 agents, 100 writes/s of 1 KiB, on 2 cores:
        # ~4 ms a datagram at the knee). Timers run on time (an agent's run behind its datagrams too: ignored).
        # Overload is where the broadcast tree's repairs can feed themselves (core/plumtree.py).
        # A crash ends the backlog with the process: a restarted node starts with an idle CPU, and the datagrams
        # its old process had not handled yet (queued with that process's number) are dropped, not handed to it.
        self.cpu_per_packet = cpu_per_packet
        self._cpu_free: list[float] = []  # per node: when its CPU is done with the datagrams it has
        # Sending costs CPU too (optional): a node's datagrams leave one after another, each `cpu_per_send`
        # seconds after the one before (an agent encodes, seals and hands each to the kernel in turn), and the
        # datagrams it receives meanwhile wait for them (a send waits only for the sends before it, not for
        # datagrams queued behind the one being handled); a process that crashes sends none of those still
        # booked (counted `sends_of_down`). `on_send` hooks see a datagram when it is sent (the effect), the
        # RTT timer when it leaves. Without it a member sending to 49 others at once (a critical write's
        # writer: core/critical.py) reached the last as soon as the first, which flattered a route of one wide
        # hop against the tree's narrow ones. (Handling already booked for datagrams queued before the sends
        # is not moved back: under a backlog the model is that much optimistic.)
        self.cpu_per_send = cpu_per_send
        self._send_free: list[float] = []  # per node: when its last datagram so far leaves
        for _ in range(n):
            self.add_node()

    # -- building ------------------------------------------------------------------------------------
    def add_node(self, name: str | None = None) -> int:
        i = len(self.names)
        name = name or f"n{i}"
        if name in self.by_name:
            raise ValueError(f"duplicate node name {name!r}")
        addr = node_address(i)
        self.names.append(name)
        self.addrs.append(addr)
        self.nodes.append(None)
        self.delegates.append(None)
        self.status.append(Status.IDLE)
        self.index[addr] = i
        self.by_name[name] = i
        self._wake_at.append(_INF)
        self._wake_gen.append(0)
        self._cpu_free.append(0.0)
        self._send_free.append(0.0)
        # Plaintext bytes around the messages: the codec's bound less its envelope reserve and the room it
        # keeps for a 3-byte message-array header (added back per packet below).
        self._header.append(codec.packet_overhead(name) - codec.ENVELOPE_RESERVE - 3)
        self._process.append(0)
        self._timers.append(None)
        self.net.add_host()
        self.net.crash(i)  # not started yet: unreachable
        return i

    def idx(self, node: int | str) -> int:
        return node if isinstance(node, int) else self.by_name[node]

    def node(self, node: int | str) -> Node:
        n = self.nodes[self.idx(node)]
        if n is None:
            raise LookupError(f"node {node!r} was never started")
        return n

    def start(self, node: int | str, seeds: Iterable[int | str] = (), *, incarnation: int = 0) -> None:
        """Boot a node now (a fresh process: new core, given incarnation) and join through `seeds`."""
        i = self.idx(node)
        booted = self._boot(i, incarnation)
        seed_addrs = [self.addrs[self.idx(s)] for s in seeds]
        self._perform(i, booted.join(seed_addrs, self.now))
        self._reschedule(i)

    def _boot(self, i: int, incarnation: int) -> Node:
        if self.status[i] in (Status.UP, Status.LEAVING):
            raise ValueError(f"{self.names[i]} is already running")
        cfg = dataclasses.replace(self.config, name=self.names[i])
        if self.zone_names is not None:
            cfg = dataclasses.replace(cfg, topology=dataclasses.replace(cfg.topology, zone=self.zone_names[i]))
        self._timers[i] = ProbeTimer() if self.measure_rtt else None
        self._process[i] += 1
        self._cpu_free[i] = self._send_free[i] = 0.0  # a new process: nothing of the old one's backlog
        rng = random.Random(f"node:{self.seed}:{i}:{self._process[i]}")
        delegate = self.delegate_factory(i) if self.delegate_factory else None
        self.delegates[i] = delegate
        offset = (2 * rng.random() - 1) * self.clock_skew if self.clock_skew else 0.0
        node = self.nodes[i] = Node(cfg, self.addrs[i], rng, self.now, delegate, incarnation=incarnation,
                                    clock_offset=offset)
        self.status[i] = Status.UP
        self.net.restore(i)
        self.started_at[i] = self.now
        self._wake_gen[i] += 1
        self._wake_at[i] = _INF
        return node

    def start_joined(self, *, seeds: int = 3) -> None:
        """Start every idle node now, already members of one converged cluster (each core's view installed
        with `Node.bootstrap`). Steady-state runs at thousands of nodes then skip the join, whose N² rumor
        deliveries dominate a start from nothing; `start_all` is the real join."""
        idle = [i for i in range(len(self.names)) if self.status[i] == Status.IDLE]
        self.seeds = idle[:seeds]
        nodes = [self._boot(i, 0) for i in idle]
        rows = [MemberSnapshot(n.name, n.addr, n.incarnation, MemberState.ALIVE, dict(n.meta)) for n in nodes]
        for i, node in zip(idle, nodes, strict=True):
            node.bootstrap(rows, self.now)
            if self.measure_rtt:
                # A converged cluster has probed everyone once: every member knows every other reads
                # coordinates (else each probe of the first pass carries an offer packet; core/topology_state).
                for row in rows:
                    if row.name != node.name:
                        node.topology.assume_reader(row.name)
            self._reschedule(i)

    def start_all(self, *, seeds: int | Sequence[int] = 3, spread: float = 5.0) -> None:
        """Start every idle node: seeds first (each joins the first seed), the rest at random times within
        `spread` seconds, each joining all seeds (a StatefulSet whose pods find each other via seed DNS)."""
        seed_ids = list(range(min(seeds, len(self.names)))) if isinstance(seeds, int) else list(seeds)
        self.seeds = seed_ids
        rng = random.Random(f"start:{self.seed}")
        for k, s in enumerate(seed_ids):
            if self.status[s] == Status.IDLE:
                self.start(s, seed_ids[:1] if k else ())
        for i in range(len(self.names)):
            if self.status[i] == Status.IDLE:
                self.at(self.now + rng.random() * spread, functools.partial(self.start, i, seed_ids))

    # -- faults and actions --------------------------------------------------------------------------
    def at(self, time: float, fn: Callable[[], object]) -> None:
        """Run `fn()` at virtual time `time` (now if in the past)."""
        self._queue.push(max(time, self.now), CALL, -1, fn)

    def crash(self, node: int | str) -> None:
        """The process dies at once: no more ticks, packets to it are dropped."""
        i = self.idx(node)
        self.status[i] = Status.CRASHED
        self.net.crash(i)
        self._wake_gen[i] += 1
        self._wake_at[i] = _INF
        self._cpu_free[i] = self._send_free[i] = 0.0  # (its backlog died with it)
        self.crashed_at[i] = self.now

    def restart(self, node: int | str, seeds: Iterable[int | str] | None = None) -> None:
        """A crashed or departed node comes back as a new process (incarnation 0) and re-joins."""
        i = self.idx(node)
        if self.status[i] in (Status.UP, Status.LEAVING):
            self.crash(i)
        self.start(i, self.seeds if seeds is None else seeds)

    def leave(self, node: int | str) -> None:
        """Graceful leave: broadcast it, keep running until the core says it has spread (or, with
        `leave_linger` set, that long), then stop."""
        i = self.idx(node)
        n = self.node(i)
        self.status[i] = Status.LEAVING
        self.left_at[i] = self.now
        self._perform(i, n.leave(self.now))
        self._reschedule(i)
        if self.leave_linger is not None:
            proc = self._process[i]
            self.at(self.now + self.leave_linger, lambda: self._stop_left(i, proc))

    def _stop_left(self, i: int, proc: int) -> None:
        if self.status[i] == Status.LEAVING and self._process[i] == proc:
            self.status[i] = Status.LEFT
            self.net.crash(i)
            self._wake_gen[i] += 1
            self._wake_at[i] = _INF

    def set_zones(self, zones: Sequence[str], rtt: Callable[[str, str], float], *,
                  jitter: float = 0.1) -> None:
        """Node i runs in zone `zones[i]` (set before the nodes start: it is their `topology.zone`); a link
        between zones a and b has a one-way latency of rtt(a, b) / 2, plus up to `jitter` of it at random."""
        if len(zones) != len(self.names):
            raise ValueError(f"{len(zones)} zones for {len(self.names)} nodes")
        if any(self.nodes):
            raise ValueError("set zones before starting nodes (a zone is part of a node's config)")
        labels = sorted(set(zones))
        number = {z: k for k, z in enumerate(labels)}
        profiles = {(number[a], number[b]): LinkProfile(latency=rtt(a, b) / 2, jitter=rtt(a, b) / 2 * jitter,
                                                        loss=self.net.default.loss)
                    for a in labels for b in labels}
        self.net.set_zones([number[z] for z in zones], profiles)
        self.zone_names = list(zones)

    def partition(self, *groups: Iterable[int | str]) -> None:
        self.net.partition([[self.idx(x) for x in g] for g in groups])

    def heal(self) -> None:
        self.net.heal()

    def block(self, a: int | str, b: int | str) -> None:
        self.net.block(self.idx(a), self.idx(b))

    def unblock(self, a: int | str, b: int | str) -> None:
        self.net.unblock(self.idx(a), self.idx(b))

    def set_loss(self, loss: float) -> None:
        self.net.set_default(dataclasses.replace(self.net.default, loss=loss))

    def reconfigure(self, config: AgentConfig) -> None:
        """Use `config` for nodes started from now on. A running core is not reconfigured: of its settings
        only `gossip.immediate_forward` changes live (`Node.set_immediate_forward`); a config differing in
        anything else raises ValueError (restart the nodes that should run with it)."""
        same = dataclasses.replace(config, gossip=dataclasses.replace(
            config.gossip, immediate_forward=self.config.gossip.immediate_forward))
        if same != self.config and any(node is not None for node in self.nodes):
            raise ValueError("only gossip.immediate_forward changes on running nodes; restart them for the rest")
        self.config = config
        for node in self.nodes:
            if node is not None:
                node.set_immediate_forward(config.gossip.immediate_forward)

    def call(self, node: int | str, fn: Callable[[Node, float], list[Effect]]) -> None:
        """Hook for drivers beside the Node (sim/state.py): call into a node's core now, perform its effects."""
        i = self.idx(node)
        self._perform(i, fn(self.node(i), self.now))
        self._reschedule(i)

    def broadcast(self, node: int | str, payload: bytes, *, key: str | None = None, critical: bool = False) -> None:
        i = self.idx(node)
        self._perform(i, self.node(i).broadcast_state(payload, self.now, key=key, critical=critical))
        self._reschedule(i)

    # -- running -------------------------------------------------------------------------------------
    def run_until(self, t_end: float) -> None:
        """Process every event due up to `t_end`, then set the clock to `t_end`."""
        nodes, status, addrs = self.nodes, self.status, self.addrs
        stats = self.stats
        processed = 0
        for now, _, kind, i, arg in self._queue.pop_due(t_end):
            self.now = now
            processed += 1
            if kind == DELIVER:
                st = status[i]
                if st != Status.UP and st != Status.LEAVING:
                    stats["packets_to_down"] += 1
                    continue
                if self.cpu_per_packet or self.cpu_per_send:
                    if len(arg) == 2:  # just arrived: handled once its turn on the CPU is over, by this process
                        done = max(now, self._cpu_free[i]) + self.cpu_per_packet
                        self._cpu_free[i] = done
                        self._queue.push(done, DELIVER, i, (*arg, self._process[i]))
                        continue
                    if arg[2] != self._process[i]:  # queued for a process that died since (a restart)
                        stats["packets_to_down"] += 1
                        continue
                src, packet = arg[0], arg[1]
                node = nodes[i]
                assert node is not None
                stats["packets_delivered"] += 1
                timer = self._timers[i]
                sample = timer.received(packet, now) if timer is not None else None
                self._perform(i, node.handle_packet(packet, addrs[src], now))
                if sample is not None:
                    self._observe_rtt(node, sample, now)
                self._reschedule(i)
            elif kind == WAKE:
                if arg != self._wake_gen[i]:
                    continue
                node = nodes[i]
                assert node is not None
                self._wake_at[i] = _INF
                self._perform(i, node.tick(now))
                self._reschedule(i, after_tick=True)
            elif kind == CALL:
                arg()
            elif kind == SYNC_REQUEST:
                self._sync_request(i, *arg)
            elif kind == SYNC_REPLY:
                self._sync_reply(i, *arg)
            elif kind in (SYNC_FAILED, TCP_PROBE_OK):
                st = status[i]
                if st != Status.UP and st != Status.LEAVING:
                    continue
                node = nodes[i]
                assert node is not None
                if kind == SYNC_FAILED:
                    self._perform(i, node.sync_failed(arg, now))
                else:
                    stats["tcp_probes_ok"] += 1
                    self._perform(i, node.tcp_probe_ok(arg, now))
                self._reschedule(i)
            if self.max_events is not None and processed >= self.max_events:
                raise RuntimeError(f"more than {self.max_events} events before t={t_end}")
        stats["events"] += processed
        self.now = max(self.now, t_end)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until_condition(self, pred: Callable[[], bool], timeout: float, *,
                            check_every: float = 0.1) -> float | None:
        """Run until `pred()` holds (checked every `check_every` virtual seconds) or `timeout` passes.
        Returns the virtual time at which it first held, or None."""
        deadline = self.now + timeout
        if pred():
            return self.now
        while self.now < deadline:
            self.run_until(min(self.now + check_every, deadline))
            if pred():
                return self.now
        return None

    # -- effects -------------------------------------------------------------------------------------
    def _reschedule(self, i: int, *, after_tick: bool = False) -> None:
        node = self.nodes[i]
        assert node is not None
        d = node.next_deadline()
        if d <= self.now:
            # Due already: a timer that was idle (e.g. gossip with an empty queue) has work again. Right
            # after a tick, though, it means the core left a due timer unserviced.
            if after_tick:
                self.stats["stuck_deadlines"] += 1
                d = self.now + STUCK_STEP
            else:
                d = self.now
        if d < self._wake_at[i]:
            self._wake_at[i] = d
            self._wake_gen[i] += 1
            self._queue.push(d, WAKE, i, self._wake_gen[i])

    def _perform(self, i: int, effects: list[Effect]) -> None:
        for e in effects:
            t = type(e)
            if t is Send:
                self._send(i, e)  # type: ignore[arg-type]
            elif t is MemberEvent:
                self._on_event(i, e)  # type: ignore[arg-type]
            elif t is SyncWith:
                self._sync_start(i, e)  # type: ignore[arg-type]
            elif t is TcpProbe:
                self._tcp_probe(i, e)  # type: ignore[arg-type]
            elif t is JoinSeeds:
                self._join_seeds(i, e)  # type: ignore[arg-type]
            elif t is LeaveDone:
                if self.leave_linger is None:
                    self._stop_left(i, self._process[i])
            else:
                raise TypeError(f"unknown effect {e!r}")

    def _send(self, i: int, e: Send) -> None:
        stats = self.stats
        packet = e.packet
        if self.on_send:
            for hook in self.on_send:
                hook(self.now, i, e)
        stats["packets_sent"] += 1
        stats["messages_sent"] += len(packet.messages)
        size = 0
        mode = self.bytes_mode
        if mode != "off":
            if mode == "exact":
                data = codec.encode_packet(packet)
                size = len(data)
                if size > self.config.gossip.mtu:
                    stats["packets_over_mtu"] += 1
                packet = codec.decode_packet(data)
            else:
                n_msgs = len(packet.messages)
                size = (self._header[i] + (1 if n_msgs < 16 else 3)
                        + sum(map(codec.message_size, packet.messages)))
            stats["bytes_sent"] += size
        j = self.index.get(e.to)
        if j is None:
            stats["packets_unroutable"] += 1
            return
        if self.zone_names is not None and size:
            self._count_zone_bytes(i, j, size)
        if not self.cpu_per_send:
            self._depart(i, j, packet, size)
            return
        depart = max(self.now, self._send_free[i]) + self.cpu_per_send
        self._send_free[i] = depart
        self._cpu_free[i] = max(self._cpu_free[i], depart)
        process = self._process[i]
        self.at(depart, lambda: self._depart(i, j, packet, size, process))

    def _depart(self, i: int, j: int, packet: Packet, size: int, process: int | None = None) -> None:
        """The datagram leaves node i now (its send cost paid: `cpu_per_send`). `process`: the process that
        booked it; one that crashed or was restarted since sends nothing more (counted)."""
        if process is not None and (process != self._process[i]
                                    or self.status[i] not in (Status.UP, Status.LEAVING)):
            self.stats["sends_of_down"] += 1
            return
        timer = self._timers[i]
        if timer is not None:  # (stamped as it leaves, as the runtime stamps a ping after its sendto)
            timer.sent(packet, self.now)
        arrive = self.net.datagram(i, j, self.now, size)
        if arrive is not None:
            self._queue.push(arrive, DELIVER, j, (i, packet))

    def _observe_rtt(self, node: Node, sample: tuple[str, float], now: float) -> None:
        error = node.observe_rtt(sample[0], sample[1], now)
        if error is not None:
            self.stats["rtt_samples"] += 1
            self.rtt_errors.append(error)
            if len(self.rtt_errors) > _RTT_ERRORS_KEPT:
                del self.rtt_errors[: len(self.rtt_errors) // 2]

    def _count_zone_bytes(self, i: int, j: int, size: int) -> None:
        net = self.net
        self.stats["bytes_same_zone" if net.zone[i] == net.zone[j] else "bytes_cross_zone"] += size

    def _sync_start(self, i: int, e: SyncWith) -> None:
        self.stats["syncs"] += 1
        node = self.nodes[i]
        assert node is not None
        j = self.index.get(e.to)
        if j is None or not self.net.reachable(i, j):
            self._queue.push(self.now + self.config.membership.stream_timeout, SYNC_FAILED, i, e.to)
            return
        state = node.push_pull_state(e.join)
        self._count_sync(state, i, j)
        self._queue.push(self.now + self.net.stream_delay(i, j), SYNC_REQUEST, j, (i, state))

    def _sync_request(self, j: int, i: int, state: PushPullState) -> None:
        if not self.net.reachable(i, j):
            self._queue.push(self.now + self.config.membership.stream_timeout, SYNC_FAILED, i, self.addrs[j])
            return
        responder = self.nodes[j]
        assert responder is not None
        reply, merges = responder.serve_push_pull(state)
        self._count_sync(reply, j, i)
        for part in merges:
            self._perform(j, responder.merge_push_pull(part, self.now))
        self._reschedule(j)
        self._queue.push(self.now + self.net.stream_delay(j, i), SYNC_REPLY, i, (j, reply))

    def _sync_reply(self, i: int, j: int, reply: PushPullState) -> None:
        if self.status[i] != Status.UP and self.status[i] != Status.LEAVING:
            return
        node = self.nodes[i]
        assert node is not None
        self.stats["syncs_completed"] += 1
        self._perform(i, node.merge_push_pull(reply, self.now))
        self._reschedule(i)

    def _count_sync(self, state: PushPullState, i: int, j: int) -> None:
        self.stats["sync_rows"] += len(state.members)
        if self.bytes_mode != "off":
            size = len(codec.encode_push_pull(state))
            self.stats["sync_bytes"] += size
            if self.zone_names is not None:
                self._count_zone_bytes(i, j, size)

    def _tcp_probe(self, i: int, e: TcpProbe) -> None:
        self.stats["tcp_probes"] += 1
        j = self.index.get(e.to)
        if j is None or not self.net.reachable(i, j) or self.names[j] != e.target:
            return
        rtt = self.net.stream_delay(i, j) + self.net.stream_delay(j, i)
        self._queue.push(self.now + rtt, TCP_PROBE_OK, i, e.seq)

    def _on_event(self, i: int, e: MemberEvent) -> None:
        for any_hook in self.on_any_event:
            any_hook(i, e)
        kind = e.kind
        if kind is EventKind.JOIN:
            self.stats["event_join"] += 1
            if self.keep_events:
                self.events.append((self.now, self.names[i], kind, e.member.name, e.member.incarnation))
            return
        self.stats["event_" + kind.value] += 1
        subject = self.by_name.get(e.member.name, -1)
        if self.keep_events:
            self.events.append((self.now, self.names[i], kind, e.member.name, e.member.incarnation))
        if subject < 0:
            return
        self.seen.setdefault((kind, subject), {})[i] = self.now
        if kind is EventKind.DEAD and self.status[subject] == Status.UP and self.net.connected(i, subject):
            self.false_positives.append((self.now, self.names[i], e.member.name))
        for hook in self.on_event:
            hook(self.now, i, e)

    def _join_seeds(self, i: int, e: JoinSeeds) -> None:
        """A join attempt the core asked for, through the cluster's seeds (the runtime resolves the seed DNS
        names first). Counted as `rejoins` when the node had been joined before, else `join_retries`."""
        self.stats["rejoins" if e.rejoin else "join_retries"] += 1
        node = self.nodes[i]
        assert node is not None
        self._perform(i, node.join([self.addrs[s] for s in self.seeds if s != i], self.now))

    # -- queries -------------------------------------------------------------------------------------
    def live(self) -> list[int]:
        """Nodes running and not leaving."""
        return [i for i, s in enumerate(self.status) if s == Status.UP]

    def converged(self) -> bool:
        """Every live node sees every other live node as alive (and no dead or departed one as alive).
        False while some node has not been started yet."""
        if Status.IDLE in self.status:
            return False
        live = self.live()
        n_live = len(live)
        for i in live:
            node = self.nodes[i]
            assert node is not None
            if node.counts()[MemberState.ALIVE] != n_live:
                return False
        gone = [self.names[i] for i, s in enumerate(self.status) if s not in (Status.UP, Status.IDLE)]
        for i in live:
            member_state = self.nodes[i].member_state  # type: ignore[union-attr]
            for name in gone:
                if member_state(name) == MemberState.ALIVE:
                    return False
        return True

    def state_of(self, observer: int | str, subject: int | str) -> MemberState | None:
        """How `observer` sees `subject` now (None: not in its table, e.g. reaped)."""
        return self.node(observer).member_state(self.names[self.idx(subject)])

    def views(self, subject: int | str) -> Counter[MemberState | None]:
        """How all live nodes (other than the subject) see `subject`."""
        s = self.idx(subject)
        return Counter(self.state_of(i, s) for i in self.live() if i != s)

    def all_see(self, subject: int | str, *states: MemberState | None) -> bool:
        s = self.idx(subject)
        return all(self.state_of(i, s) in states for i in self.live() if i != s)

    def time_all_saw(self, subject: int | str, kind: EventKind = EventKind.DEAD,
                     since: float = 0.0) -> float | None:
        """Virtual time by which every live node (other than the subject) had a `kind` event about it at or
        after `since` (the latest of their times), or None if some live node has not."""
        s = self.idx(subject)
        seen = self.seen.get((kind, s), {})
        latest = since
        for i in self.live():
            if i == s:
                continue
            t = seen.get(i)
            if t is None or t < since:
                return None
            latest = max(latest, t)
        return latest

    def detection_time(self, subject: int | str) -> float | None:
        """Seconds from the subject's crash until every live node saw it DEAD."""
        s = self.idx(subject)
        crashed = self.crashed_at.get(s)
        if crashed is None:
            return None
        t = self.time_all_saw(s, EventKind.DEAD, since=crashed)
        return None if t is None else t - crashed

    def rate(self, key: str, since: Counter[str] | None = None, seconds: float = 1.0,
             nodes: int | None = None) -> float:
        """stats[key] growth since a `stats.copy()` snapshot, per node per second."""
        delta = self.stats[key] - (since[key] if since else 0)
        return delta / max(seconds, 1e-9) / max(nodes if nodes is not None else len(self.live()), 1)
