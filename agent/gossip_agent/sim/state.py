"""The replicated state in the simulator: the product's state core (`StateNode`) beside each simulated `Node`.

`StateSimulation` wraps a `Simulation` (sim/cluster.py) and gives every node a `StateNode` with its own
`KvStore`: state rumors reach it through the Node (it is the Node's state delegate), member events through
the simulation's event hook, and its timers run on the simulation's virtual clock at `next_deadline()`. Its
effects are performed the way io/state_service.py performs them, over virtual links:

- `Broadcast` and `PublishDigest` become calls into the node's own `Node` (`broadcast_state`,
  `publish_root_digest`), and the digests the Node hears go to the core (`on_root_digest`);
- `AntiEntropyWith` becomes a session over a virtual stream, one at a time per node: each request reaches
  the peer after one link delay, the peer's `serve_anti_entropy` answers, the answer comes back one link
  delay later; a cut path or a down host fails the session after the stream timeout;
- `FetchValue` is the same round trip to the origin's `fetch_answer`;
- `Persist`, `Fsync`, `Snapshot` and `Note` have nothing to do here (no files; a restarted node keeps its
  store, as an agent with a data dir does).

Wall clocks are `EPOCH + now` for every node (no skew). Requests and answers pass as objects: no encoding
and no transfer time, like the simulation's push-pull streams.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from gossip_agent.core.anti_entropy import AeRequest, AeResponse, AntiEntropyError, Session
from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import MemberEvent
from gossip_agent.core.kvstore import InvalidEntry, KvStore
from gossip_agent.core.messages import Digest
from gossip_agent.core.node import StateDelegate
from gossip_agent.core.replica import inline_budget, replica_id
from gossip_agent.core.state_node import (
    AntiEntropyWith,
    Broadcast,
    FetchValue,
    PublishDigest,
    StateEffect,
    StateNode,
)
from gossip_agent.sim.cluster import Simulation, Status
from gossip_agent.sim.network import LinkProfile

EPOCH = 1_795_000_000.0
"""Wall clock (seconds since the Unix epoch) at virtual time 0."""
_INF = float("inf")


class _Delegate:
    """Node i's state delegate: rumors go to its state core, the effects are performed."""

    __slots__ = ("i", "sim")

    def __init__(self, sim: StateSimulation, i: int) -> None:
        self.sim, self.i = sim, i

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return self.sim._on_rumor(self.i, payload, now)

    def on_root_digest(self, digest: Digest, now: float) -> None:
        self.sim._on_root_digest(self.i, digest, now)


class StateSimulation:
    """N nodes with membership and replicated state on virtual links. `sim` is the membership simulation
    (faults, partitions and the clock are its); `cores[i]` is node i's state core."""

    def __init__(self, n: int, *, seed: int = 1, config: AgentConfig | None = None,
                 link: LinkProfile | None = None, publish_meta: bool = True, **sim_kwargs: Any) -> None:
        self.publish_meta = publish_meta
        self.cores: dict[int, StateNode] = {}
        self.stores: dict[int, KvStore] = {}
        self.stats: Counter[str] = Counter()
        self._gen: dict[int, int] = {}
        self._wake_at: dict[int, float] = {}
        self._ae_busy: dict[int, bool] = {}
        self._ae_next: dict[int, AntiEntropyWith] = {}
        self._seed = seed
        self.sim = Simulation(n, seed=seed, config=config, link=link, delegate_factory=self._boot, **sim_kwargs)
        self.sim.on_any_event.append(self._on_member_event)

    # -- building -----------------------------------------------------------------------------------------
    def _boot(self, i: int) -> StateDelegate:
        """A node (re)starts: a state core over its store (kept across restarts, as a data dir keeps it)."""
        sim = self.sim
        cfg = dataclasses.replace(sim.config, name=sim.names[i])
        gen = self._gen[i] = self._gen.get(i, 0) + 1
        store = self.stores.get(i)
        if store is None:
            store = self.stores[i] = KvStore(replica_id(cfg.name, f"e{i}"), cfg.state)
        rng = random.Random(f"state:{self._seed}:{i}:{gen}")
        self.cores[i] = StateNode(cfg, store, rng, sim.now, addr=sim.addrs[i],
                                  inline_limit=inline_budget(cfg.gossip.mtu, cfg.name, sim.addrs[i]))
        self._wake_at[i] = _INF
        self._ae_busy[i] = False
        self._ae_next.pop(i, None)
        sim.at(sim.now, lambda: self._reschedule(i))
        return _Delegate(self, i)

    def start_joined(self, *, seeds: int = 3) -> None:
        """`Simulation.start_joined` (every node already a member), with each state core told the members."""
        self.sim.start_joined(seeds=seeds)
        for i, core in self.cores.items():
            self._perform(i, core.set_members(self.sim.node(i).members(), self.sim.now))

    # -- time ---------------------------------------------------------------------------------------------
    def wall(self) -> float:
        return EPOCH + self.sim.now

    def _up(self, i: int) -> bool:
        return self.sim.status[i] in (Status.UP, Status.LEAVING)

    def _reschedule(self, i: int) -> None:
        if not self._up(i):
            return
        d = self.cores[i].next_deadline()
        if d >= self._wake_at[i]:
            return
        self._wake_at[i] = d
        gen = self._gen[i]
        self.sim.at(d, lambda: self._wake(i, gen, d))

    def _wake(self, i: int, gen: int, d: float) -> None:
        if gen != self._gen[i] or self._wake_at[i] != d or not self._up(i):
            return
        self._wake_at[i] = _INF
        self.stats["ticks"] += 1
        self._perform(i, self.cores[i].tick(self.sim.now, self.wall()))
        if self.cores[i].next_deadline() <= self.sim.now:
            self.stats["stuck_deadlines"] += 1
            self._wake_at[i] = self.sim.now + 0.001
            self.sim.at(self._wake_at[i], lambda: self._wake(i, gen, self._wake_at[i]))

    # -- events into the cores ----------------------------------------------------------------------------
    def _on_rumor(self, i: int, payload: bytes, now: float) -> bool:
        new, effects = self.cores[i].on_rumor(payload, now, self.wall())
        if effects:
            # Inside the Node's packet handling: perform after it returns (a broadcast calls into the Node).
            self.sim.at(now, lambda: self._perform(i, effects))
        return new

    def _on_root_digest(self, i: int, digest: Digest, now: float) -> None:
        core = self.cores.get(i)
        if core is not None and self._up(i):
            core.on_root_digest(digest, now)
            self.sim.at(now, lambda: self._reschedule(i))  # its next observation may be sooner now

    def _on_member_event(self, i: int, event: MemberEvent) -> None:
        core = self.cores.get(i)
        if core is not None and self._up(i):
            self._perform(i, core.on_member_event(event, self.sim.now))

    # -- local writes -------------------------------------------------------------------------------------
    def put(self, i: int, key: str, value: bytes, *, read_first: bool = False, critical: bool = False) -> None:
        """A write at node i; with `read_first`, carrying the causal context read there (a client's
        read-modify-write: it replaces what it read instead of adding a sibling to it). `critical`: a write
        flagged `?priority=critical`."""
        core = self.cores[i]
        current = core.store.get(key) if read_first else None
        _, effects = core.put(key, value, current.context if current else None, self.sim.now, self.wall(),
                              critical=critical)
        self._perform(i, effects)

    def delete(self, i: int, key: str, *, critical: bool = False) -> None:
        _, effects = self.cores[i].delete(key, None, self.sim.now, self.wall(), critical=critical)
        self._perform(i, effects)

    # -- effects ------------------------------------------------------------------------------------------
    def _perform(self, i: int, effects: Iterable[StateEffect]) -> None:
        if not self._up(i):
            return
        for e in effects:
            if isinstance(e, Broadcast):
                self.stats["broadcasts"] += 1
                self.sim.broadcast(i, e.payload, key=e.key, critical=e.critical)
            elif isinstance(e, PublishDigest):
                if self.publish_meta:
                    self.stats["digests_published"] += 1
                    node = self.sim.node(i)
                    if not node.leaving:
                        node.publish_root_digest(e.root, e.keys, e.hlc_ms, seq_floor=e.seq_floor,
                                                 now=self.sim.now)
            elif isinstance(e, AntiEntropyWith):
                self._ae_next[i] = e
                if not self._ae_busy[i]:
                    self._next_session(i)
            elif isinstance(e, FetchValue):
                self._fetch(i, e)
        self._reschedule(i)

    # -- anti-entropy sessions over virtual streams ---------------------------------------------------------
    def _next_session(self, i: int) -> None:
        target = self._ae_next.pop(i, None)
        if target is None or not self._up(i):
            self._ae_busy[i] = False
            return
        self._ae_busy[i] = True
        self.stats["ae_sessions"] += 1
        core = self.cores[i]
        session = core.start_anti_entropy(self.sim.now)
        self._send_request(i, self._gen[i], self.sim.index[target.addr], session, session.start())

    def _send_request(self, i: int, gen: int, j: int, session: Session, request: AeRequest) -> None:
        net = self.sim.net
        if not net.reachable(i, j) or not self._up(j):
            self._fail_session(i, gen, "unreachable", self.sim.now + self.sim.config.membership.stream_timeout)
            return
        self.stats["ae_rounds"] += 1
        self.sim.at(self.sim.now + net.stream_delay(i, j), lambda: self._serve(i, gen, j, session, request))

    def _serve(self, i: int, gen: int, j: int, session: Session, request: AeRequest) -> None:
        if not self.sim.net.reachable(i, j) or not self._up(j):
            self._fail_session(i, gen, "unreachable", self.sim.now + self.sim.config.membership.stream_timeout)
            return
        try:
            response, effects = self.cores[j].serve_anti_entropy(request, self.sim.now, self.wall())
        except AntiEntropyError as exc:
            self._fail_session(i, gen, str(exc), self.sim.now)
            return
        self._perform(j, effects)
        self.sim.at(self.sim.now + self.sim.net.stream_delay(j, i), lambda: self._reply(i, gen, j, session, response))

    def _reply(self, i: int, gen: int, j: int, session: Session, response: AeResponse) -> None:
        if gen != self._gen[i] or not self._up(i):
            return
        core = self.cores[i]
        try:
            request, effects = core.on_anti_entropy_reply(session, response, self.sim.now, self.wall())
        except AntiEntropyError as exc:
            self._fail_session(i, gen, str(exc), self.sim.now)
            return
        self._perform(i, effects)
        if request is None:
            self.stats["ae_completed"] += 1
            self._next_session(i)
        else:
            self._send_request(i, gen, j, session, request)

    def _fail_session(self, i: int, gen: int, why: str, at: float) -> None:
        def fail() -> None:
            if gen != self._gen[i] or not self._up(i):
                return
            self.stats["ae_failed"] += 1
            self._perform(i, self.cores[i].anti_entropy_failed(why, self.sim.now))
            self._next_session(i)
        self.sim.at(at, fail)

    def _fetch(self, i: int, e: FetchValue) -> None:
        j = self.sim.index.get(e.origin)
        gen = self._gen[i]
        net = self.sim.net
        if j is None or not net.reachable(i, j) or not self._up(j):
            self._perform(i, self.cores[i].fetch_failed(e.key, "unreachable"))
            return
        rtt = net.stream_delay(i, j) + net.stream_delay(j, i)
        answer = self.cores[j].fetch_answer(e.key)

        def arrive() -> None:
            if gen != self._gen[i] or not self._up(i):
                return
            core = self.cores[i]
            if answer is None:
                self._perform(i, core.fetch_failed(e.key, "no such key"))
                return
            try:
                effects = core.on_fetched(e.key, answer, self.sim.now, self.wall())
            except (StateCodecError, InvalidEntry) as exc:
                effects = core.fetch_failed(e.key, str(exc))
            self._perform(i, effects)
        self.sim.at(self.sim.now + rtt, arrive)

    # -- queries ------------------------------------------------------------------------------------------
    def roots(self, nodes: Iterable[int]) -> set[str]:
        return {self.cores[i].store.root_hex() for i in nodes}

    def one_root(self, nodes: Iterable[int]) -> Callable[[], bool]:
        group = list(nodes)
        return lambda: len(self.roots(group)) == 1
