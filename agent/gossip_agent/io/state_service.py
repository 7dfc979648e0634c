"""The replicated key-value state as an agent extension: the driver of the state core (core/state_node.py)
with files, HTTP and the agent's Node.

Every decision is the core's: what a write broadcasts, which rumor is news, when to publish our root, which
peer to repair from, when to collect tombstones, retire writers, fsync and snapshot. This module performs
what it asks (`_perform`), and owns only what needs I/O:
- recovery (on first use, before any traffic): load the snapshot, replay the log after it. A data dir with
  no state gets a fresh replica id (core/replica.py explains why), stored in `replica-id`;
- the log (`Persist`: appended before the HTTP handler answers, so a `kill -9` loses nothing acknowledged;
  `storage.fsync` decides what a machine crash may lose) and snapshots (`Snapshot`: the store is captured
  on the event loop at once, packed and written on a worker thread, io/persistence.py keeping the records
  since the capture apart until the file is in place);
- the peer endpoints (anti-entropy, write-concern replication, value fetch) and the sessions the core asks
  for (`AntiEntropyWith`: one at a time, on a task of its own), value pulls (`FetchValue`: a peer's "retry
  later" is waited out and the fetch sent again, for up to FETCH_BUSY_WAIT), and write
  concern (`?w=N`: the state is POSTed to N-1 live peers, who log it before acknowledging; the handler
  answers once N members hold it, or 504 saying it may still converge);
- the answers to peers' fetches and anti-entropy rounds, within the answer budget (core/answer_budget.py):
  taken before an answer is rendered, and held until the peer has taken it (`_write_answer`, under the HTTP
  layer's stall rule) or the connection dropped, because the unsent bytes are what a peer that does
  not read makes the agent hold (aiohttp would write a returned response after the handler, the budget given
  back already); over it a 503 with `Retry-After: 1`;
- the timer: it wakes at the core's `next_deadline()` (no polling: an idle agent wakes for its periodic
  anti-entropy and the retirement check only);
- the watch streams and the Prometheus collector.

Only the event loop thread touches the store; nothing awaits between reading and writing it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gossip_agent.core.ae_codec import ae_request_push_count, decode_ae_request, encode_ae, open_ae_response
from gossip_agent.core.ae_lease import LEASE_HOLD, PushLease, valid_session_id
from gossip_agent.core.answer_budget import REFUSED_ADDRESS, AnswerBudget, HeldAnswer
from gossip_agent.core.anti_entropy import (
    AeRequest,
    AnswerMerge,
    AntiEntropyError,
    PushMerge,
    Session,
    approx_entry_bytes,
)
from gossip_agent.core.codec_limits import CodecLimits, StateCodecError
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.convergence import ConvergenceStatus, ConvergenceTracker
from gossip_agent.core.crdt import Crdt
from gossip_agent.core.effects import MemberEvent
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    C,
    CausalContext,
    Change,
    Entry,
    InvalidEntry,
    KvStore,
    RefusedItem,
    StoreImage,
)
from gossip_agent.core.messages import Address, Digest
from gossip_agent.core.node import StateDelegate
from gossip_agent.core.replica import (
    EPOCH_SEPARATOR,
    WriteConcern,
    hedge_delay,
    inline_budget,
    member_of,
    replica_id,
    status_block,
)
from gossip_agent.core.send_budget import STREAM_OVERHEAD, stream_deferred
from gossip_agent.core.state_codec import decode_change, encode_change, encode_refused, encode_rumor
from gossip_agent.core.state_node import (
    AE_LIMITS,
    AntiEntropyWith,
    Broadcast,
    FetchValue,
    Fsync,
    Note,
    Persist,
    PublishDigest,
    Snapshot,
    StateEffect,
    StateNode,
    StateStats,
)
from gossip_agent.io import http_limits
from gossip_agent.io.host import AgentHost, Extension
from gossip_agent.io.http_limits import expect_refusal, refuse_before_body
from gossip_agent.io.peer_client import RETRY_AFTER_MS_HEADER, PeerBusy, PeerError
from gossip_agent.io.peer_ticket import TICKET_HEADER, ticket_valid
from gossip_agent.io.persistence import DurableLog
from gossip_agent.io.security import AuthError, Purpose
from gossip_agent.io.state_http import StateApi, WatchHub

log = logging.getLogger("gossip_agent.state")

AE_PATH = "/v1/internal/antientropy"
REPLICATE_PATH = "/v1/internal/replicate"
FETCH_PATH = "/v1/internal/fetch"
AE_MAX_RESPONSE = 16 << 20
# Anti-entropy requests answered at once; more get 503 (the initiator retries in its next session).
AE_MAX_CONCURRENT = 4
# One message of our session waits at most this long for the byte budget (gossip.maxBytesPerSecond), then the
# session is deferred (counted), so a session never hangs on a budget that cannot pay (a long debt, say).
AE_BUDGET_WAIT = 10.0
# The budget wait sleeps in steps of at most (and at least) this; the budget is asked again after each (gossip
# may have spent what the step earned: anti-entropy yields to it).
AE_BUDGET_STEP = 1.0
AE_BUDGET_MIN_STEP = 0.05
# The shortest wait for a peer's "retry later" given in milliseconds (io/peer_client.RETRY_AFTER_MS_HEADER):
# a peer saying 0 ms forever gets at most AE_BUDGET_WAIT / this requests per round. (0.1 s: four times as many
# 429s as whole seconds, and their headers and connections took the budget's bytes back.)
AE_PRECISE_RETRY_MIN = 0.25
# Request bodies from this size on are sent with Expect: 100-continue under a budget (`_ae_round`).
AE_EXPECT_MIN_BODY = 2048
# A session names itself to the peer (its push lease, core/ae_lease.py); an answer to a session that may not
# push to the peer now (another one holds the lease) says so.
AE_SESSION_HEADER = "X-Gossip-Ae-Session"
AE_PUSH_HEADER = "X-Gossip-Ae-Push"
PUSH_HELD = "held"
AE_PUSH_REFUSED_HEADER = "X-Gossip-Ae-Push-Refused"
"""In an answer: how many pushed entries the responder did not take and sends nothing of back (AeResponse.
push_refused). A header, not a field of the body, because older agents refuse an answer with a field more; they
ignore the header (and send none: their refusals are counted as before)."""
# Peer bodies start with this byte: the security layer tells plaintext (< 0x80) from envelopes by the first
# byte, and a msgpack array starts at 0x90.
FRAME = b"\x01"
# The timer sleeps at most this long at once (the core's deadlines are exact; this only bounds the damage of
# a clock that jumps), and at least this long when the core says it is already due right after a tick.
MAX_SLEEP = 60.0
STUCK_STEP = 0.01

# A peer's "retry later" (429/503) to a value fetch is waited out and the fetch sent again, for at most this
# long in all (then the pull fails, counted, and anti-entropy repairs the key): an honest burst of pulls of large
# values, over the answer budget of the agent they pull from, still gets every value.
FETCH_BUSY_WAIT = 10.0
# The wait before a retry: the peer's Retry-After, at least FETCH_RETRY_MIN doubled per retry (at most
# FETCH_RETRY_MAX), stretched by up to half at random so a burst of pulls does not come back all at once.
FETCH_RETRY_MIN = 0.25
FETCH_RETRY_MAX = 4.0
# What an anti-entropy answer is held as before it is rendered (its real size is settled after): a request is
# refused before anything of it is merged when the budget has not even this much room for its asker.
AE_ANSWER_MIN = 4096
# What a sealed fetch answer adds to its entry's size (FRAME, the envelope: nonce and tag; a margin).
FETCH_ANSWER_OVERHEAD = 128

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "error": logging.ERROR}
# Peers' entries the store refused are logged at most once per this many seconds (with how many since the last
# line and the latest reason): a refused merge may keep replicas apart, so it is never silent, and a peer
# resending one every repair does not flood the log.
REFUSAL_LOG_EVERY = 10.0


class StateService(Extension, StateDelegate):
    """The state layer of one agent. Build with `state_extensions(config)`."""

    name = "state"

    def __init__(self, config: AgentConfig, *, wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.wall = wall_clock
        self.rng = rng or random.Random()
        self.limits = CodecLimits(max_message_bytes=AE_MAX_RESPONSE)
        self.stats = StateStats()
        self._core: StateNode | None = None
        self._store: KvStore | None = None
        self._log: DurableLog | None = None
        self._agent: AgentHost | None = None
        self._stopping = False
        self._log_closed = False
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf
        self._ae_kick = asyncio.Event()
        self._ae_next: AntiEntropyWith | None = None
        self._snapshotting: asyncio.Future[None] | None = None
        self._snapshot_again = False
        self._log_error: str | None = None
        self._ae_serving = 0
        self.answers = AnswerBudget()  # peers' answers in flight (core/answer_budget.py)
        self._push_lease = PushLease()
        self._refusals_logged = 0  # the store's refused_remote as of the last warning
        self._refusal_log_at = -math.inf
        self.watchers = WatchHub()
        self.api = StateApi(self)

    # -- extension hooks ------------------------------------------------------------------------------------
    def state_delegate(self) -> StateDelegate:
        self.open()
        return self

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [*self.api.routes(),
                web.post(AE_PATH, refuse_before_body(self._ae_head_refusal, self._serve_ae),
                         expect_handler=expect_refusal(self._ae_head_refusal)),
                web.post(REPLICATE_PATH, self._serve_replicate),
                web.post(FETCH_PATH, self._serve_fetch)]

    def attach(self, agent: AgentHost) -> None:
        self.open()
        self._agent = agent
        node = agent.node
        durable = self._log
        self._core = StateNode(self.config, self.store, self.rng, agent.now(), addr=agent.address,
                               inline_limit=inline_budget(self.config.gossip.mtu, node.name, node.addr),
                               durable=durable is not None,
                               logged=durable.records_since_snapshot if durable is not None else 0,
                               limits=self.limits, stats=self.stats)
        self._core.choose_partner = node.choose_partner  # near/far anti-entropy partners (core/topology_state)
        self._core.is_near = node.is_near  # near repair partners first (core/replica.RepairPlanner)
        agent.metrics.registry.register(StateCollector(self))

    def on_member_event(self, event: MemberEvent) -> None:
        if self._core is not None and self._agent is not None:
            self._perform(self._core.on_member_event(event, self._agent.now()))

    async def start(self) -> None:
        self._started = True
        if self.config.anti_entropy.enabled:
            self.agent.spawn(self._anti_entropy_worker(), "anti-entropy")
        self._reschedule()

    async def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.watchers.close_all()
        if self._log is not None and self._store is not None:
            await self.flush()
            effects = self._core.stop(self._agent.now()) if self._core is not None and self._agent else []
            try:
                self._perform(effects)
                if self._core is None:
                    self._start_snapshot()
                await self.flush()
            except OSError:
                log.exception("cannot write the state snapshot on stop")
            self._log.close()
            self._log_closed = True

    async def flush(self) -> None:
        """Wait until the snapshots asked for so far are on disk (or failed, which is logged)."""
        while self._snapshotting is not None:
            pending = self._snapshotting
            await asyncio.wait([pending])
            if self._snapshotting is pending:  # the done callback has not run yet
                await asyncio.sleep(0)

    def status(self) -> Mapping[str, Any]:
        if self._store is None:
            return {}
        if self._core is not None:
            return self._core.status(self.wall())
        s = self._store.stats()
        return {"state": status_block(s.root, s.keys, s.hlc.wall_ms, s.tombstones, self._store.node),
                "convergence": ConvergenceTracker().status(self.wall()).to_json()}

    def convergence(self) -> ConvergenceStatus:
        tracker = self._core.tracker if self._core is not None else ConvergenceTracker()
        return tracker.status(self.wall())

    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """Not ready while writes cannot be made durable (the last log append failed)."""
        if self._store is None:
            return False, "state not loaded"
        if self._log_error is not None:
            return False, f"state log not writable: {self._log_error}"
        return True, "ready"

    # -- accessors ------------------------------------------------------------------------------------------
    @property
    def agent(self) -> AgentHost:
        if self._agent is None:
            raise RuntimeError("state service not attached to an agent")
        return self._agent

    @property
    def core(self) -> StateNode:
        if self._core is None:
            raise RuntimeError("state service not attached to an agent")
        return self._core

    @property
    def store(self) -> KvStore:
        if self._store is None:
            self.open()
        assert self._store is not None
        return self._store

    def now_ms(self) -> int:
        return int(self.wall() * 1000)

    # -- recovery -------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Load the store (snapshot + log replay) once; without a data dir, start empty in memory."""
        if self._store is not None:
            return
        storage = self.config.storage
        if storage.data_dir is None:
            self._store = KvStore(replica_id(self.config.name, secrets.token_hex(3)), self.config.state)
            return
        durable = DurableLog(storage.data_dir, fsync=storage.fsync)
        snapshot, records = durable.open()
        id_path = Path(storage.data_dir) / "replica-id"
        store: KvStore | None = None
        if snapshot is not None:
            try:
                plain = msgpack.unpackb(snapshot, raw=False, strict_map_key=True)
                refused: list[RefusedItem] = []
                store = KvStore.restore(plain, self.config.state, refused=refused)
                self._set_aside_refused(durable, refused)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # Not fatal, and not silent: keep the bad file for inspection, start from the log, and let
                # anti-entropy bring back from the peers what only the snapshot held (it runs on join).
                aside = durable.set_aside_snapshot()
                self.stats.recovery["snapshot_unreadable"] += 1
                log.error("data dir %s: the state snapshot is unreadable (%s); moved it to %s and recovering from "
                          "the log and the peers", storage.data_dir, exc, aside.name)
        if store is None:
            replica = _read_replica_id(id_path, self.config.name) if records or snapshot is not None else None
            if replica is None and id_path.exists() and (records or snapshot is not None):
                self.stats.recovery["replica_id_unreadable"] += 1
                log.error("data dir %s: %s is not this member's replica id; recovering under a fresh one",
                          storage.data_dir, id_path.name)
            if replica is None:  # no state here: a new replica (its writes must not reuse old dots)
                replica = replica_id(self.config.name, secrets.token_hex(3))
                _write_replica_id(id_path, replica)
            store = KvStore(replica, self.config.state)
        for index, record in enumerate(records):
            try:
                store.replay(decode_change(record, self.limits))
                self.stats.replayed += 1
            except (StateCodecError, InvalidEntry, ValueError) as exc:
                # Never silent: counted, logged with the record's position, and the record kept aside.
                self.stats.recovery["record_unreadable"] += 1
                durable.set_aside_record(record)
                log.error("data dir %s: log record %d of %d does not decode (%s); kept in %s, the peers' copy "
                          "will be repaired in by anti-entropy", storage.data_dir, index + 1, len(records), exc,
                          durable.rejected_path.name)
        store.drain_changes()
        if not id_path.exists():
            _write_replica_id(id_path, store.node)
        self._store, self._log = store, durable
        s = store.stats()
        log.info("state recovered from %s: %d keys, %d tombstones (snapshot %s, %d log records), replica %s",
                 storage.data_dir, s.keys, s.tombstones, "yes" if snapshot else "no", len(records), store.node)

    def _set_aside_refused(self, durable: DurableLog, refused: list[RefusedItem]) -> None:
        """Snapshot items over the context bound `KvStore.restore` left out: counted, kept in wal.rejected and
        logged (as unreadable log records are); the rest of the snapshot is restored."""
        for item in refused:
            self.stats.recovery["snapshot_item_refused"] += 1
            durable.set_aside_record(encode_refused(item))
            log.error("data dir %s: the snapshot's %s %r %s; left out and kept in %s, the peers' copy will be "
                      "repaired in by anti-entropy", durable.dir, item.kind, item.key[:80], item.why,
                      durable.rejected_path.name)

    # -- effects --------------------------------------------------------------------------------------------
    def _perform(self, effects: Iterable[StateEffect]) -> None:
        """Do what the core asked, in order (a Persist that fails raises: nothing after it is performed)."""
        for e in effects:
            if isinstance(e, Persist):
                self._persist(e.changes)
            elif isinstance(e, Broadcast):
                self.agent.broadcast_state(e.payload, key=e.key, critical=e.critical)
            elif isinstance(e, PublishDigest):
                if not self.agent.node.leaving:
                    self.agent.publish_root_digest(e.root, e.keys, e.hlc_ms, seq_floor=e.seq_floor)
            elif isinstance(e, AntiEntropyWith):
                self._ae_next = e  # the newest wins; sessions run one at a time
                self._ae_kick.set()
            elif isinstance(e, FetchValue):
                self.agent.spawn(self._pull(e), "state-pull")
            elif isinstance(e, Fsync):
                if self._log is not None:
                    self._log.sync()
            elif isinstance(e, Snapshot):
                self._start_snapshot()
            elif isinstance(e, Note):
                log.log(_LEVELS[e.level], "%s", e.text)
        self._log_refusals()
        self._reschedule()

    def _log_refusals(self) -> None:
        """A warning for peers' entries refused since the last one (by the store, or skipped by a decoder:
        `KvStore.refuse_remote`), at most every REFUSAL_LOG_EVERY."""
        store = self._store
        if store is None or store.refused_remote == self._refusals_logged:
            return
        now = self.agent.now()
        if now < self._refusal_log_at + REFUSAL_LOG_EVERY:
            return
        log.warning("refused %d entries from peers since the last report (gossip_state_refused_total by reason); "
                    "the latest: %s", store.refused_remote - self._refusals_logged, store.last_refused_remote)
        self._refusals_logged = store.refused_remote
        self._refusal_log_at = now

    def _persist(self, changes: Sequence[Change]) -> None:
        """Log every change (before anything is acknowledged), then tell the watchers."""
        durable = self._log
        if durable is not None:
            if self._log_closed:  # stopping: a change now would be acknowledged but never logged
                raise web.HTTPServiceUnavailable(text="the agent is stopping and logs no more changes; "
                                                 "write to another member or retry after its restart")
            try:
                durable.append_many([encode_change(change) for change in changes])  # one write
            except OSError as exc:
                self._log_error = str(exc)  # readiness reports it; the write is not acknowledged (500)
                raise
            self._log_error = None
        self.watchers.publish([c for c in changes if c.origin != "prune"])  # no value changed

    def _start_snapshot(self) -> None:
        """Capture the store now; pack and write it on a worker thread (one snapshot at a time)."""
        durable = self._log
        if durable is None or self._store is None:
            return
        if self._snapshotting is not None:
            self._snapshot_again = True
            return
        image = self._store.capture()
        durable.begin_snapshot()
        future = asyncio.get_running_loop().run_in_executor(None, _write_snapshot, durable, image)
        self._snapshotting = future
        future.add_done_callback(self._snapshot_done)

    def _snapshot_done(self, future: asyncio.Future[None]) -> None:
        self._snapshotting = None
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            log.error("cannot write the state snapshot (the log keeps every record): %s", exc)
        if self._snapshot_again:
            self._snapshot_again = False
            self._start_snapshot()

    # -- the timer ------------------------------------------------------------------------------------------
    def _reschedule(self, *, after_tick: bool = False) -> None:
        core = self._core
        if core is None or not self._started or self._stopping:
            return
        deadline = core.next_deadline()
        if deadline >= self._wake_at and not after_tick:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at = deadline
        if deadline == math.inf:
            return
        now = self.agent.now()
        delay = deadline - now
        if after_tick and delay <= 0:
            delay = STUCK_STEP  # the core left a due deadline: never spin
        self._timer = asyncio.get_running_loop().call_later(min(max(0.0, delay), MAX_SLEEP), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake_at = -math.inf  # effects performed by the tick do not reschedule: done once, below
        try:
            self.tick()
        except Exception:
            log.exception("state housekeeping failed")
        self._wake_at = math.inf
        self._reschedule(after_tick=True)

    def tick(self) -> None:
        """Run whatever the core has due now (the timer calls it; tests may too)."""
        self._perform(self.core.tick(self.agent.now(), self.wall()))

    def retire_reaped(self) -> int:
        """The retirement check at once (it runs every `state_node.RETIRE_EVERY` by itself); how many
        writers it retired."""
        retired, effects = self.core.retire_reaped(self.agent.now(), self.wall())
        self._perform(effects)
        return retired

    # -- local writes (HTTP handlers call these; StateError subclasses name invalid input) ------------------
    def put(self, key: str, value: bytes, context: CausalContext | None, *, critical: bool = False) -> Entry:
        """A local write; `critical` (`?priority=critical`): its rumor jumps the queue (core/broadcast.py)."""
        entry, effects = self.core.put(key, value, context, self.agent.now(), self.wall(), critical=critical)
        self._perform(effects)
        return entry

    def delete(self, key: str, context: CausalContext | None, *, critical: bool = False) -> Entry | None:
        entry, effects = self.core.delete(key, context, self.agent.now(), self.wall(), critical=critical)
        self._perform(effects)
        return entry

    def update_crdt(self, key: str, kind: type[C], mutate: Callable[[C, str, Hlc], C], op: str) -> Entry:
        entry, effects = self.core.update_crdt(key, kind, mutate, op, self.agent.now(), self.wall())
        self._perform(effects)
        return entry

    def get_crdt(self, key: str) -> Crdt | None:
        return self.store.get_crdt(key)

    # -- write concern --------------------------------------------------------------------------------------
    async def replicate(self, entry: Entry, w: int, timeout: float) -> WriteConcern:
        """Send `entry` to live peers until `w` members (us included) hold it or `timeout` passes."""
        concern = WriteConcern(w)
        if concern.met:
            return concern
        payload = encode_rumor(entry)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hedge = hedge_delay(timeout)
        pending: dict[asyncio.Task[bool], str] = {}
        asked_at: dict[asyncio.Task[bool], float] = {}
        try:
            while not concern.met:
                now = loop.time()
                live = dict(self.core.live_peers())
                names = list(live)
                slow = [name for task, name in pending.items() if now - asked_at[task] >= hedge]
                for name in concern.next_targets(names, pending.values(), [self.rng.random() for _ in names],
                                                 slow):
                    task = loop.create_task(self._replicate_to(live[name], payload, deadline - now))
                    pending[task] = name
                    asked_at[task] = now
                    if slow:
                        self.stats.write_concern["hedged"] += 1
                remaining = deadline - now
                if remaining <= 0:
                    break
                if not pending:
                    await asyncio.sleep(min(0.1, remaining))  # no peer to ask yet: members may (re)join
                    continue
                # Wake at the next hedge point too: a peer that is slow by then is covered by another.
                next_hedge = min((asked_at[t] + hedge for t in pending if now - asked_at[t] < hedge),
                                 default=math.inf)
                done, _ = await asyncio.wait(pending, timeout=min(remaining, max(0.0, next_hedge - now)),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = pending.pop(task)
                    asked_at.pop(task, None)
                    if task.result():
                        concern.ack(name)
                    else:
                        concern.fail(name)
                        await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        finally:
            for task in pending:
                task.cancel()
        self.stats.write_concern["met" if concern.met else "timeout"] += 1
        return concern

    async def _replicate_to(self, addr: Address, payload: bytes, timeout: float) -> bool:
        if timeout <= 0:
            return False
        try:
            answer = await self._exchange(addr, REPLICATE_PATH, payload, max_bytes=64, timeout=timeout)
        except PeerError as exc:
            log.debug("replicate to %s:%d failed: %s", addr[0], addr[1], exc)
            return False
        return answer == b"ok"

    # -- state rumors (the Node calls this on the event loop) -----------------------------------------------
    def on_root_digest(self, digest: Digest, now: float) -> None:
        core = self._core
        if core is None or self._stopping:
            return
        core.on_root_digest(digest, now)
        self._reschedule()  # its next observation may be sooner now

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        core = self._core
        if core is None or self._stopping:
            return False
        new, effects = core.on_rumor(payload, now, self.wall())
        if effects:
            self._perform(effects)
        return new

    async def _pull(self, fetch: FetchValue) -> None:
        core = self.core
        try:
            answer = await self._fetch(fetch)
            effects = core.on_fetched(fetch.key, answer, self.agent.now(), self.wall())
        except (PeerError, StateCodecError, InvalidEntry) as exc:
            effects = core.fetch_failed(fetch.key, f"from {fetch.origin[0]}:{fetch.origin[1]}: {exc}")
        self._perform(effects)

    async def _fetch(self, fetch: FetchValue) -> bytes:
        """The value fetch's answer. A peer's "retry later" (429/503: its answer budget or byte budget is full)
        is waited out with a growing, jittered pause and the fetch sent again, each one counted
        (`rumors{result="pull_busy"}`), for at most FETCH_BUSY_WAIT in all; past it the PeerBusy is raised
        (the pull fails). Before, a 503 failed the pull at once and the value waited for anti-entropy."""
        body = msgpack.packb([fetch.key], use_bin_type=True)
        waited = 0.0
        step = FETCH_RETRY_MIN
        while True:
            try:
                return await self._exchange(fetch.origin, FETCH_PATH, body, max_bytes=self.limits.max_message_bytes)
            except PeerBusy as exc:
                self.stats.rumors["pull_busy"] += 1
                pause = min(FETCH_RETRY_MAX, max(exc.retry_after, step)) * (1.0 + 0.5 * self.rng.random())
                if self._stopping or waited + pause > FETCH_BUSY_WAIT:
                    raise
                await asyncio.sleep(pause)
                waited += pause
                step = min(FETCH_RETRY_MAX, step * 2)

    async def _exchange(self, addr: Address, path: str, body: bytes, *, max_bytes: int,
                        timeout: float | None = None, expect_continue: bool = False, ticket: bool = False,
                        headers: Mapping[str, str] | None = None,
                        answer_headers: dict[str, str] | None = None) -> bytes:
        """A sealed exchange with a peer's state endpoint (bodies framed with FRAME)."""
        answer = await self.agent.peer_client.exchange(addr, path, FRAME + body, max_bytes=max_bytes + 1,
                                                       timeout=timeout, expect_continue=expect_continue,
                                                       ticket=ticket, headers=headers,
                                                       answer_headers=answer_headers)
        if answer[:1] != FRAME:
            raise PeerError("decode", "not a state frame")
        return answer[1:]

    # -- peer endpoints -------------------------------------------------------------------------------------
    async def _open_body(self, request: web.Request, limit: int) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        body = await request.read()
        try:
            opened = self.agent.security.open(body, Purpose.STREAM)
        except AuthError as exc:
            self.agent.stats.dropped["auth"] += 1
            raise web.HTTPBadRequest(text=str(exc)) from None
        if opened[:1] != FRAME:
            raise web.HTTPBadRequest(text="not a state frame")
        return opened[1:]

    def _seal(self, body: bytes) -> bytes:
        """`body` framed and sealed as an answer to a peer."""
        return self.agent.security.seal(FRAME + body, Purpose.STREAM)

    def _sealed(self, body: bytes) -> web.Response:
        return web.Response(body=self._seal(body), content_type="application/octet-stream")

    def _ae_head_refusal(self, request: web.Request) -> web.Response | None:
        """`_ae_refusal` before the body is read (`refuse_before_body`, `expect_refusal`), only for a request
        that proved membership in its headers when membership is proved at all: with a keyring, its ticket
        (io/peer_ticket.py); a request without one is read and its body authenticated first, then refused
        (`_serve_ae`). Without a keyring the HTTP layer checked a TLS client certificate if the cluster has a
        CA, else any client is a peer (and could run a whole session)."""
        security = self.agent.security
        if security.encrypted and not ticket_valid(security, request.headers.get(TICKET_HEADER), request.method,
                                                   request.path, _own_addresses(self.agent.address, request)):
            return None
        return self._ae_refusal(request)

    def _ae_refusal(self, request: web.Request) -> web.Response | None:
        """The cheap "retry later" answers, given before the body is read to members (`_ae_head_refusal`), and
        by the handler once the body is authenticated (the state may change while the body arrives): too many
        requests served at once (503), or no room in the byte budget for an answer (429). Nothing of a refused
        request is merged; the peer defers its session (not a failure)."""
        if self._ae_serving >= AE_MAX_CONCURRENT:
            # Each answer is bounded (anti_entropy.Limits), and so is how many run at once.
            self.stats.ae["busy"] += 1
            return web.Response(status=503, text="anti-entropy: too many concurrent requests, retry later",
                                headers={"Retry-After": "1"})
        agent = self.agent
        budget = agent.node.send_budget
        now = agent.now()
        if budget.answer_room(now) <= 0:
            # Never wait here (the event loop is not held): tell the peer when to come back.
            stream_deferred(agent.node.stats, "antientropy_answer")
            # (Not charged to the budget: this answer may go before the request is authenticated, and a
            # client sending such requests would otherwise spend the reserve kept for critical rumors.)
            wait = budget.retry_after(now)
            return web.Response(status=429, text="anti-entropy: this agent's byte budget "
                                "(gossip.maxBytesPerSecond) has no room now, retry later",
                                headers={"Retry-After": str(max(1, math.ceil(wait))),
                                         RETRY_AFTER_MS_HEADER: str(max(1, math.ceil(wait * 1000)))})
        reason = self.answers.refusal(_remote(request), AE_ANSWER_MIN)
        if reason is not None:
            self.answers.count_refusal(reason)
            return _answers_busy(reason)
        return None

    async def _serve_ae(self, request: web.Request) -> web.StreamResponse:
        body = await self._open_body(request, AE_MAX_RESPONSE)  # authenticated before anything is answered
        refusal = self._ae_refusal(request)
        if refusal is not None:
            return refusal
        held = self.answers.take(_remote(request), AE_ANSWER_MIN)  # before anything is merged or rendered
        if isinstance(held, str):
            return _answers_busy(held)
        try:
            self._ae_serving += 1
            try:
                answer, pushed = await self._answer_ae(body, held, request.remote)
            finally:
                self._ae_serving -= 1
            if isinstance(answer, web.Response):  # refused (4xx, 503)
                return answer
            # The push lease only under a byte budget: without one, duplicate pushes cost nothing scarce, and
            # a session turned away would wait `LEASE_HOLD` to push what only it holds.
            if not self.agent.node.send_budget.unlimited and not self._push_lease.ask(
                    valid_session_id(request.headers.get(AE_SESSION_HEADER)), self.agent.now(),
                    pushing=pushed > 0, source=request.remote):
                self.stats.ae["push_held_out"] += 1
                answer.headers[AE_PUSH_HEADER] = PUSH_HELD
            return await self._write_answer(request, answer)
        finally:
            self.answers.give_back(held)

    async def _answer_ae(self, body: bytes, held: HeldAnswer,
                         source: str | None = None) -> tuple[web.Response | _Answer, int]:
        """One round of a peer's session (`body`: opened). The push count is checked from the array header
        before the request is decoded (decoding and merging cost ~10-30 us per entry); the pushed entries are
        merged in chunks (anti_entropy.MERGE_CHUNK), yielding to the event loop between them, so probes and
        other requests are served meanwhile. The answer is cut to what the send budget and the answer budget
        (`held`, settled to the sealed answer's size) have room for. Returns the answer (or the refusal) and
        how many entries the request pushed."""
        agent, core = self.agent, self.core
        pushed = 0
        try:
            pushed = ae_request_push_count(body, self.limits)
            if pushed > AE_LIMITS.max_push:
                agent.stats.dropped["antientropy_push_count"] += 1
                return web.Response(status=413, text=(
                    f"anti-entropy: the request pushes {pushed} entries; this agent merges at most "
                    f"{AE_LIMITS.max_push} per request. Split pushes over rounds (agents since this limit do); "
                    "upgrade the asking agent")), pushed
            ae_request = decode_ae_request(body, self.limits)
            merge = PushMerge(self.store, ae_request, AE_LIMITS)
            while not merge.done:
                self._perform(core.merge_anti_entropy_push(merge, agent.now(), self.wall()))
                if not merge.done:
                    await asyncio.sleep(0)  # let probes, gossip and other requests run between chunks
            self._count_skipped(source or "a peer", merge.over_limit)
            budget = agent.node.send_budget
            now = agent.now()
            room = None if budget.unlimited else max(1, budget.answer_room(now) - STREAM_OVERHEAD)
            # The answer budget cuts the answer only when it binds (an answer is at most AE_MAX_RESPONSE).
            answer_room = self.answers.room(held.address, besides=held.size) - FETCH_ANSWER_OVERHEAD
            if answer_room < AE_MAX_RESPONSE:
                room = max(1, answer_room if room is None else min(room, answer_room))
            response, effects = core.serve_anti_entropy(ae_request, now, self.wall(), room, merged=merge)
        except (StateCodecError, AntiEntropyError) as exc:
            agent.stats.dropped["antientropy"] += 1
            return web.Response(status=400, text=str(exc)), pushed
        self._perform(effects)
        sealed = self._seal(encode_ae(response))
        # (An answer whose first node is larger than the room: the merge above is done and stays; the peer
        # sends the request again after the 503, and its push merges as stale.)
        reason = self.answers.settle(held, len(sealed))
        if reason is not None:
            return _answers_busy(reason), pushed
        headers = {AE_PUSH_REFUSED_HEADER: str(response.push_refused)} if response.push_refused else {}
        budget.charge_answer(len(sealed) + STREAM_OVERHEAD)
        self.stats.ae_bytes["served"] += len(sealed)
        return _Answer(sealed, headers), pushed

    async def _serve_replicate(self, request: web.Request) -> web.Response:
        body = await self._open_body(request, self.limits.max_message_bytes)
        try:
            effects = self.core.on_replicate(body, self.agent.now(), self.wall())
        except (StateCodecError, InvalidEntry) as exc:
            return web.Response(status=400, text=str(exc))
        self._perform(effects)  # logged before we acknowledge
        return self._sealed(b"ok")

    async def _serve_fetch(self, request: web.Request) -> web.StreamResponse:
        body = await self._open_body(request, 4096)
        try:
            (key,) = msgpack.unpackb(body, raw=False, max_str_len=4096, max_array_len=1)
            if not isinstance(key, str):
                raise ValueError("key must be a string")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return web.Response(status=400, text=f"fetch: expected [key]: {exc}")
        entry = self.store.entry(key)
        if entry is None:
            return web.Response(status=404, text="no such key")
        # Held under an estimate before the answer is rendered (a refused fetch renders nothing), then settled.
        held = self.answers.take(_remote(request), approx_entry_bytes(entry) + FETCH_ANSWER_OVERHEAD)
        if isinstance(held, str):
            return _answers_busy(held)
        try:
            answer = self.core.fetch_answer(key)
            if answer is None:  # (cannot be: nothing awaited since the entry was read)
                return web.Response(status=404, text="no such key")
            sealed = self._seal(answer)
            del answer
            reason = self.answers.settle(held, len(sealed))
            if reason is not None:
                return _answers_busy(reason)
            return await self._write_answer(request, _Answer(sealed, {}))
        finally:
            self.answers.give_back(held)

    async def _write_answer(self, request: web.Request, answer: _Answer) -> web.StreamResponse:
        """Write a peer's answer here, in the handler, under the HTTP layer's stall rule
        (`http_limits.write_under_stall_rule`): the caller holds its bytes in the answer budget until this
        returns, so they are counted for as long as the agent or the kernel holds them untaken. A peer that
        stops taking is reset, counted as the HTTP layer counts its own
        (`gossip_http_refused_total{reason="response_stalled"}`). The HTTP layer finds the response prepared
        and leaves it alone.

        A peer must take `http_limits.PEER_STALL_MIN_BYTES` (1 MiB) per stall window, not a client's 16 KiB:
        members read their answers at LAN speed, and at a client's floor ten connections trickling 2 KiB/s held
        the whole 32 MiB budget for as long as they liked, every honest fetch and round answered 503 (review F2).
        """
        response = web.StreamResponse(headers=answer.headers)
        response.content_type = "application/octet-stream"
        body, answer.body = [answer.body], b""  # the writer drops the body once the transport has it
        await http_limits.write_under_stall_rule(request, response, body,
                                                 min_bytes=http_limits.PEER_STALL_MIN_BYTES)
        return response

    # -- anti-entropy initiator -----------------------------------------------------------------------------
    def kick_anti_entropy(self) -> None:
        """Anti-entropy with a random live peer now (as the periodic one would)."""
        self._perform(self.core.kick_anti_entropy(self.agent.now()))

    async def _anti_entropy_worker(self) -> None:
        """Runs the sessions the core asks for, one at a time."""
        while True:
            await self._ae_kick.wait()
            self._ae_kick.clear()
            target, self._ae_next = self._ae_next, None
            if target is None:
                continue
            try:
                await self.sync_with(target.addr)
            except Exception:
                # One unexpected error (a peer's metadata no parser foresaw, say) must cost one session,
                # never end anti-entropy for the agent's lifetime (found by review).
                self.stats.ae["failures"] += 1
                log.exception("anti-entropy round failed")

    async def sync_with(self, addr: Address, peer: str | None = None) -> bool:
        """One anti-entropy session with the peer at `addr` (member `peer`, else the live member there); True if
        it completed. Under a byte budget each message is shrunk to the budget's `stream_room` and waits
        (bounded) for its bytes; a session the budget (ours, or the peer's "retry later") holds back is
        deferred, not failed. A session the peer says it is being repaired by (another session holds its push
        lease, core/ae_lease.py) pushes nothing more but goes on pulling to its end (whoever holds a lease may
        keep our pushes away, never our repairs); then the peer is skipped for a while (`anti_entropy_held`:
        our next session, soon, pushes to a member our budget can repair)."""
        core, agent, stats = self.core, self.agent, self.stats
        budget = agent.node.send_budget
        started = agent.now()
        session = core.start_anti_entropy(started, None if budget.unlimited else budget.stream_room())
        request: AeRequest | None = session.start()
        session_id = secrets.token_hex(8)  # names the session to the peer's push lease (core/ae_lease.py)
        try:
            while request is not None:
                answer, held, push_refused = await self._ae_round(addr, encode_ae(request), session_id)
                stats.ae_bytes["received"] += len(answer)
                if held and not session.stats.push_held:
                    stats.ae["push_held"] += 1
                    session.hold_pushes()
                request = await self._take_answer(session, request, answer, f"{addr[0]}:{addr[1]}", push_refused)
            if session.stats.push_held:
                name = peer or next((n for n, a in core.live_peers() if a == addr), None)
                now = agent.now()
                self._perform(core.anti_entropy_held(name, now + LEASE_HOLD, now))
        except _BudgetDeferral as exc:
            self._perform(core.anti_entropy_deferred(f"with {addr[0]}:{addr[1]}: {exc}", exc.retry_after,
                                                     agent.now()))
            return False
        except PeerBusy as exc:
            self._perform(core.anti_entropy_deferred(f"with {addr[0]}:{addr[1]}: {exc}", exc.retry_after,
                                                     agent.now()))
            return False
        except (StateCodecError, AntiEntropyError) as exc:
            # A bad answer: dropped and counted; what merged before the bad part was valid and stays.
            agent.stats.dropped["antientropy_answer"] += 1
            self._perform(core.anti_entropy_failed(f"with {addr[0]}:{addr[1]}: {exc}", agent.now()))
            return False
        except PeerError as exc:
            self._perform(core.anti_entropy_failed(f"with {addr[0]}:{addr[1]}: {exc}", agent.now()))
            return False
        agent.metrics.latency.anti_entropy_session.observe(max(0.0, agent.now() - started))
        s = session.stats
        if not s.in_sync and (s.repaired or s.pushed):
            log.debug("anti-entropy with %s:%d: %d rounds, %d repaired here, %d pushed", addr[0], addr[1],
                      s.rounds, s.repaired, s.pushed)
        return True

    async def _take_answer(self, session: Session, asked: AeRequest, answer: bytes,
                           peer: str = "a peer", push_refused: int = 0) -> AeRequest | None:
        """One answer of the peer, as hostile as any input: its counts are read from their array headers and
        checked against what `asked` asked before anything is built (`open_ae_response`), its entries decoded
        and merged `MERGE_CHUNK` at a time with the event loop running between chunks (an answer of 2 MiB of
        tiny entries was ~100k entries decoded and merged in one loop turn, a hostile 16 MiB one ~1M), then
        the rest compared (`push_refused`: the answer's AE_PUSH_REFUSED_HEADER). The next request, or None.
        Raises StateCodecError or AntiEntropyError on a bad answer."""
        core, agent = self.core, self.agent
        head, entries = open_ae_response(answer, self.limits, asked=asked,
                                         max_entries=AE_LIMITS.max_answer_entries,
                                         max_records=AE_LIMITS.max_records)
        merge = AnswerMerge(session, entries)
        while not merge.done:
            self._perform(core.merge_anti_entropy_answer(merge, agent.now(), self.wall()))
            if not merge.done:
                await asyncio.sleep(0)  # probes, gossip and peers' requests run between chunks
        self._count_skipped(peer, entries.refused)
        if push_refused:
            head = replace(head, push_refused=push_refused)
        request, effects = core.on_anti_entropy_reply(session, head, agent.now(), self.wall(), merged=merge)
        self._perform(effects)
        return request

    def _count_skipped(self, peer: str, skipped: Mapping[str, int]) -> None:
        """Entries of a peer's answer or push the decoder skipped as over its ceilings (the rest was applied):
        counted and logged as the store's own refusals are (`KvStore.refuse_remote`, `_log_refusals`)."""
        for reason, count in sorted(skipped.items()):
            self.store.refuse_remote(reason, f"anti-entropy with {peer}: {count} entries over this agent's "
                                             "decoding ceilings skipped (the rest applied)", count)

    async def _ae_round(self, addr: Address, body: bytes,
                        session_id: str | None = None) -> tuple[bytes, bool, int]:
        """One round of our session: the request goes when our budget has its bytes; a peer's "retry later"
        (429/503) is waited out and the same request sent again. Both waits together are bounded
        (AE_BUDGET_WAIT): past it the round raises _BudgetDeferral or PeerBusy (the session is deferred).
        Returns the answer, whether the peer said another session holds its push lease, and how many pushed
        entries it said it did not take (AE_PUSH_REFUSED_HEADER; 0 if absent or not a number)."""
        agent = self.agent
        waited = 0.0
        # Under a budget a large body goes only once the peer agrees (Expect: 100-continue): its "retry later"
        # then costs a round trip, not the body's bytes (they are given back to our budget), which each 429
        # spent again (up to a quarter of a second of a 30 kB/s budget per retry). Not for small bodies: a
        # refused Expect ends the connection (aiohttp), and a new one costs ~0.5 kB of packets.
        expect = not agent.node.send_budget.unlimited and len(body) >= AE_EXPECT_MIN_BODY
        while True:
            waited = await self._budget_wait(len(body), waited)
            self.stats.ae_bytes["sent"] += len(body)
            try:
                hints = {AE_PUSH_HEADER: "", AE_PUSH_REFUSED_HEADER: ""}
                answer = await self._exchange(addr, AE_PATH, body, max_bytes=AE_MAX_RESPONSE,
                                              expect_continue=expect, ticket=True,
                                              headers={AE_SESSION_HEADER: session_id} if session_id else None,
                                              answer_headers=hints)
                refused = hints[AE_PUSH_REFUSED_HEADER]
                return (answer, hints[AE_PUSH_HEADER] == PUSH_HELD,
                        int(refused) if refused.isascii() and refused.isdigit() and len(refused) <= 9 else 0)
            except PeerBusy as exc:
                if expect and not exc.body_sent:  # (a peer that read the body, then said 429: not given back)
                    self.stats.ae_bytes["sent"] -= len(body)
                    agent.node.send_budget.refund_stream(len(body))  # (the headers went: still charged)
                stream_deferred(agent.node.stats, "antientropy")
                # At least a step per retry: a peer's "retry after 0 s", forever, must still end the round
                # (sessions run one at a time: it stalled anti-entropy with every member, and hammered the peer).
                # A wait in milliseconds (a budget refilling) is taken as it is, above a smaller floor: whole
                # seconds left the session idle ~0.7 s per 429 at 30 kB/s.
                pause = max(exc.retry_after, AE_PRECISE_RETRY_MIN if exc.precise else AE_BUDGET_STEP)
                if waited + pause > AE_BUDGET_WAIT:
                    raise
                await asyncio.sleep(pause)
                waited += pause

    async def _budget_wait(self, body_bytes: int, waited: float) -> float:
        """Wait until the send budget lets a message of `body_bytes` go (it is charged then); the seconds
        waited so far in this round, updated. Past AE_BUDGET_WAIT raise _BudgetDeferral. One wait counts one
        deferral."""
        agent = self.agent
        budget = agent.node.send_budget
        counted = False
        while True:
            wait = budget.take_stream(body_bytes + STREAM_OVERHEAD, agent.now())
            if wait <= 0:
                return waited
            if not counted:
                stream_deferred(agent.node.stats, "antientropy")
                counted = True
            if waited + wait > AE_BUDGET_WAIT:
                raise _BudgetDeferral(wait)
            step = min(max(wait, AE_BUDGET_MIN_STEP), AE_BUDGET_STEP)
            await asyncio.sleep(step)
            waited += step


@dataclass(slots=True)
class _Answer:
    """A sealed answer to a peer, rendered and held in the answer budget, and the headers it goes with."""

    body: bytes
    headers: dict[str, str]


def _remote(request: web.Request) -> str:
    """The address an answer's bytes are budgeted by (core/answer_budget.py)."""
    return request.remote or "?"


def _answers_busy(reason: str) -> web.Response:
    """The "retry later" of an answer over the answer budget (`reason`: REFUSED_*, counted by the budget)."""
    whose = "answers to this address" if reason == REFUSED_ADDRESS else "this agent's answers to peers"
    return web.json_response({"error": f"too many bytes of {whose} not yet taken (answer budget); retry shortly"},
                             status=503, headers={"Retry-After": "1"})


class _BudgetDeferral(Exception):
    """Our byte budget cannot pay for the session's next message soon enough: defer the session."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the byte budget (gossip.maxBytesPerSecond) needs {retry_after:.1f} s more")
        self.retry_after = retry_after


def _write_snapshot(durable: DurableLog, image: StoreImage) -> None:
    """On a worker thread: the captured store, packed, as the new snapshot."""
    blob: bytes = msgpack.packb(image.to_plain(), use_bin_type=True)
    durable.finish_snapshot(blob)


MAX_REPLICA_ID_FILE = 1024


def _own_addresses(advertised: Address, request: web.Request) -> list[Address]:
    """The addresses a peer may have dialled to reach us (a ticket names one, io/peer_ticket.py): the one we
    advertise, and the local address this connection arrived at."""
    ours = [advertised]
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        ours.append((str(sockname[0]), int(sockname[1])))
    return ours


def _read_replica_id(path: Path, name: str) -> str | None:
    """This member's replica id from `path`, or None when the file is missing or is not one (too long, not UTF-8,
    another member's, a bad epoch): the caller then starts a fresh replica, which is always safe (its writes
    cannot reuse the old dots; the replayed records keep theirs)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_REPLICA_ID_FILE + 1)
    except OSError:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if len(raw) > MAX_REPLICA_ID_FILE or member_of(text) != name:
        return None
    try:
        return replica_id(name, text[len(name) + len(EPOCH_SEPARATOR):])
    except ValueError:
        return None


def _write_replica_id(path: Path, replica: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(replica + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StateCollector(Collector):
    """Prometheus families of the state layer (read on scrape only)."""

    def __init__(self, service: StateService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        st = svc.stats
        if svc._store is None:
            return
        s = svc._store.stats()
        yield GaugeMetricFamily("gossip_state_keys", "Live keys in the local replica.", value=s.keys)
        yield GaugeMetricFamily("gossip_state_tombstones", "Deleted keys whose tombstones are still held.",
                                value=s.tombstones)
        yield GaugeMetricFamily("gossip_state_graveyard", "Collected tombstones still remembered (until the TTL).",
                                value=s.graveyard)
        yield _counter("gossip_state_conflicts_detected", "Concurrent writes detected.", s.conflicts_detected)
        yield _counter("gossip_state_conflicts_resolved", "Conflicts resolved (LWW, or siblings written back).",
                       s.conflicts_resolved)
        yield _labelled("gossip_state_writes", "Local writes by operation.", "op", st.writes)
        yield _labelled("gossip_state_rumors", "State rumors received, by result (applied, duplicate, dropped, "
                        "pulled, ...; pull_busy: a value fetch a peer answered \"retry later\", sent again).",
                        "result", st.rumors)
        yield _counter("gossip_antientropy_sessions", "Anti-entropy sessions started.", st.ae["sessions"])
        yield _counter("gossip_antientropy_rounds", "Anti-entropy request/response rounds (initiated).",
                       st.ae["rounds"])
        yield _counter("gossip_antientropy_failures", "Anti-entropy sessions that failed.", st.ae["failures"])
        yield _counter("gossip_antientropy_served", "Anti-entropy rounds answered for peers.", st.ae["served"])
        yield _labelled("gossip_antientropy_bytes", "Anti-entropy body bytes: sent and received in sessions "
                        "this agent initiated, served in its answers to peers' sessions.",
                        "direction", st.ae_bytes)
        yield _labelled("gossip_antientropy_push_lease", "Anti-entropy push lease (one session at a time pushes "
                        "to an agent): held (our sessions told to stop pushing, another held the peer's lease), "
                        "held_out (answers telling a peer's session so).", "side",
                        {"held": st.ae["push_held"], "held_out": st.ae["push_held_out"]})
        yield _counter("gossip_antientropy_continued", "Anti-entropy sessions that ended with work left "
                       "(truncated), the next one started soon instead of a period later.", st.ae["continued"])
        yield _counter("gossip_antientropy_deferred", "Anti-entropy sessions this agent deferred for a byte "
                       "budget, its own or the peer's (HTTP 429/503 \"retry later\"); not failures.",
                       st.ae["deferred"])
        yield _labelled("gossip_antientropy_keys_repaired", "Keys repaired by anti-entropy: pulled (ours "
                        "changed), pushed (sent to the peer and taken), push_refused (sent, and the peer did not "
                        "take it: it kept its own state, or refused a key it lacks), pushed_in (peers' pushes that "
                        "changed ours); entries that changed nothing: pushed_in_stale (peers' pushes), pulled_stale "
                        "(answers).",
                        "side", st.ae_repaired)
        yield _labelled("gossip_state_write_concern", "Writes with w > 1 by outcome.", "result", st.write_concern)
        yield _counter("gossip_state_log_records", "Records appended to the durable log.", st.log_records)
        yield _counter("gossip_state_snapshots", "Snapshots written.", st.snapshots)
        yield _labelled("gossip_state_recovery_problems", "Recovery problems, never silent: snapshot_unreadable "
                        "(recovered from the log and the peers), record_unreadable (log records kept aside), "
                        "snapshot_item_refused (snapshot entries over the context bound, with a key a client could not "
                        "write or a kind its key's prefix does not allow: left out, kept aside).",
                        "problem", st.recovery)
        yield _labelled("gossip_state_refused", "Numbers and states refused at the edge, by reason (clock_drift, "
                        "counter_overflow, counter_too_large, crdt_invalid, context_too_large, state_too_large, "
                        "key_too_long, value_too_large, invalid_key, wrong_kind, invalid_entry): 400s to clients, "
                        "dropped rumors/entries from peers.",
                        "reason", s_refused(svc))
        answers = svc.answers
        yield _labelled("gossip_peer_answers_refused", "Peers' value fetches and anti-entropy rounds answered "
                        "503 \"retry later\" for the answer budget: budget (the agent's 32 MiB of answers not yet "
                        "taken was full), address (the asking address's 8 MiB share was).", "reason", answers.refused)
        yield GaugeMetricFamily("gossip_peer_answer_bytes", "Bytes of answers to peers (value fetches, anti-entropy "
                                "rounds) being written.", value=answers.used)
        yield GaugeMetricFamily("gossip_peer_answers_in_flight", "Answers to peers (value fetches, anti-entropy "
                                "rounds) being written.", value=answers.in_flight)
        yield _counter("gossip_state_watch_dropped", "Watch clients disconnected for being slow.",
                       svc.watchers.dropped)
        status = svc.convergence()
        yield GaugeMetricFamily("gossip_state_converged", "1 while every member publishes our root.",
                                value=int(status.converged))
        yield GaugeMetricFamily("gossip_state_agreeing_fraction", "Share of members whose root equals ours.",
                                value=status.fraction)
        yield GaugeMetricFamily("gossip_state_distinct_roots", "Distinct roots published.",
                                value=status.distinct_roots)
        lag = status.seconds_since_agreement
        yield GaugeMetricFamily("gossip_state_convergence_lag_seconds", "Seconds since the last full agreement "
                                "(NaN: never agreed).", value=math.nan if lag is None else lag)
        last = status.last_convergence_seconds
        yield GaugeMetricFamily("gossip_state_last_convergence_seconds", "Newest write to full agreement, last "
                                "measured (NaN: never).", value=math.nan if last is None else last)


def s_refused(svc: StateService) -> Mapping[str, int]:
    return dict(svc._store.refused) if svc._store is not None else {}


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc)
    c.add_metric([], value)
    return c


def _labelled(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        c.add_metric([key], value)
    return c


def state_extensions(config: AgentConfig) -> list[Extension]:
    """The state layer for `config` (wired into `extension.default_extensions`)."""
    return [StateService(config)]

