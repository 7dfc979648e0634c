"""The replicated key-value state as an agent extension: store, durability, dissemination, anti-entropy,
write concern, convergence monitoring.

How a write travels:
1. The HTTP handler (io/state_http.py) calls `put`/`delete`/`update_*`; the store (core/kvstore.py) returns
   the key's new state.
2. `_commit` drains the store's changes into the append-only log *before* the handler answers (so a
   `kill -9` loses nothing acknowledged; `storage.fsync` decides what a machine crash may lose), tells the
   watchers, and counts them.
3. The key's whole state is broadcast as a state rumor (piggybacked, bounded retransmits, immediate
   forward). A state too big for a packet is announced instead (key, digest, our address) and receivers
   pull it from us over HTTP (core/replica.py).
4. With `?w=N` the state is also POSTed to N-1 live peers (`/v1/internal/replicate`), who log it before
   acknowledging; the handler answers once N members hold it, or 504 saying it may still converge.
Every change a peer's rumor or an anti-entropy exchange brings is logged and watched the same way, but not
re-broadcast by us (rumors are forwarded by the Node; repairs are local catch-ups).

Background loops (between `start` and `stop`):
- anti-entropy with a random live peer every `antiEntropy.interval` (jittered), at once after joining (or
  re-joining: push-pull on join catches up membership, not state) as told by the member events (our first
  live peer), and with a peer whose published root has differed from ours for a while (core/replica.py's
  RepairPlanner). No poll backs the events up: the runtime reports every member change, and the periodic
  session is the safety net anyway;
- a 100 ms housekeeping tick: publish root/keys/HLC in our metadata (rate-limited, only when changed), feed
  the convergence tracker from the members' metadata, acknowledge tombstones when every member publishes
  our root, collect garbage, fsync with `storage.fsync: interval`, and snapshot every
  `storage.snapshotEvery` records;
- every `RETIRE_EVERY` seconds (from the tick): retire the writers of members missing from the member
  table for longer than `state.tombstoneTtl`, unretire those whose member is back (core/replica.py's
  `Retirement`, `KvStore.context_writers` for safety), and snapshot at once when that changed the retired
  set (the snapshot carries it, the log does not).

Recovery (on first use, before any traffic): load the snapshot, replay the log after it. A data dir with
no state gets a fresh replica id (core/replica.py explains why), stored in `replica-id`.

Only the event loop thread touches the store; nothing awaits between reading and writing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gossip_agent.core.anti_entropy import AeRequest, AntiEntropyError, Limits, Session, respond
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.convergence import ConvergenceTracker, parse_state_meta, state_meta
from gossip_agent.core.crdt import Crdt
from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    C,
    CausalContext,
    Change,
    Entry,
    InvalidEntry,
    KvStore,
    entry_digest,
)
from gossip_agent.core.messages import Address, MemberState
from gossip_agent.core.node import StateDelegate
from gossip_agent.core.replica import (
    Announcement,
    MetaPublisher,
    RepairPlanner,
    Retirement,
    WriteConcern,
    counted_members,
    decode_payload,
    encode_announcement,
    hedge_delay,
    inline_budget,
    merged_meta,
    replica_id,
    status_block,
)
from gossip_agent.core.state_codec import (
    CodecLimits,
    StateCodecError,
    decode_ae_request,
    decode_ae_response,
    decode_change,
    encode_ae,
    encode_change,
    encode_rumor,
)
from gossip_agent.io.host import AgentHost, Extension
from gossip_agent.io.peer_client import PeerError
from gossip_agent.io.persistence import DurableLog
from gossip_agent.io.security import AuthError, Purpose

log = logging.getLogger("gossip_agent.state")

AE_PATH = "/v1/internal/antientropy"
REPLICATE_PATH = "/v1/internal/replicate"
FETCH_PATH = "/v1/internal/fetch"
TICK = 0.1
# Idle (nothing changed for BUSY_WINDOW): housekeeping wakes on a change, at the latest every IDLE_TICK, so
# an idle agent does not walk its member table ten times a second (changes wake it at once).
IDLE_TICK = 5.0
BUSY_WINDOW = 2.0
# Root publication: at most this often (each publication bumps our incarnation and gossips an Alive).
META_MIN_INTERVAL = 0.25
# A divergent peer is repaired from once both roots were stable this long, at most once per gap.
REPAIR_HOLD = 0.3
REPAIR_MIN_GAP = 0.5
# Tombstones acknowledged by every member are collected after this grace (lets the others see the same
# agreement before the first collection changes a root).
ACK_GRACE_MS = 3000
GC_EVERY = 1.0
# Retirement of reaped writers: a scan of the whole store, and the TTL it waits for is a day by default.
RETIRE_EVERY = 60.0
# Anti-entropy messages: entries per message (approximate) stay well below the HTTP body cap (4 MiB).
AE_LIMITS = Limits(max_entry_bytes=2 << 20)
AE_MAX_RESPONSE = 16 << 20
# Anti-entropy requests answered at once; more get 503 (the initiator retries in its next session).
AE_MAX_CONCURRENT = 4
# Remembered large-value announcements (key, digest): a repeat is not pulled or forwarded again.
ANNOUNCE_MEMORY = 4096
# Rumor payloads seen recently (by hash): epidemic spread delivers each one several times, and a repeat is
# dropped before decoding (decoding and merging dominate an agent's CPU under write load).
SEEN_MEMORY = 16384
# Peer bodies start with this byte: the security layer tells plaintext (< 0x80) from envelopes by the first
# byte, and a msgpack array starts at 0x90.
FRAME = b"\x01"



class StateStats:
    """Counters bumped on hot paths, exported on scrape."""

    def __init__(self) -> None:
        self.writes: Counter[str] = Counter()          # op: put, delete, counter, set
        self.rumors: Counter[str] = Counter()          # applied, duplicate, dropped, announced_pull, ...
        self.ae: Counter[str] = Counter()              # sessions, rounds, failures, in_sync, served
        self.ae_bytes: Counter[str] = Counter()        # direction: sent, received
        self.ae_repaired: Counter[str] = Counter()     # side: pulled (ours changed), pushed (theirs changed)
        self.write_concern: Counter[str] = Counter()   # met, timeout
        self.log_records = 0
        self.snapshots = 0
        self.replayed = 0
        self.watch_dropped = 0
        self.recovery: Counter[str] = Counter()        # snapshot_unreadable, record_unreadable


class StateService(Extension, StateDelegate):
    """The state layer of one agent. Build with `state_extensions(config)`."""

    name = "state"

    def __init__(self, config: AgentConfig, *, wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.wall = wall_clock
        self.rng = rng or random.Random()
        self.limits = CodecLimits.from_config(config.state, max_message_bytes=AE_MAX_RESPONSE)
        self.stats = StateStats()
        self.tracker = ConvergenceTracker()
        self.meta = MetaPublisher(META_MIN_INTERVAL)
        self.planner = RepairPlanner(REPAIR_HOLD, REPAIR_MIN_GAP)
        self.retirement = Retirement(config.state.tombstone_ttl)
        self._store: KvStore | None = None
        self._log: DurableLog | None = None
        self._agent: AgentHost | None = None
        self._announced: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._pulls: set[str] = set()
        self._kick = asyncio.Event()
        self._changed = asyncio.Event()
        self._had_peers = False
        self._last_gc = 0.0
        self._last_retire = -math.inf
        self._last_sync = 0.0
        self._inline_limit = 0
        self._stopping = False
        self._repair_target: str | None = None
        self._meta_warned = False
        self._log_error: str | None = None
        self._ae_serving = 0
        from gossip_agent.io.state_http import StateApi, WatchHub
        self.watchers = WatchHub()
        self.api = StateApi(self)

    # -- extension hooks ------------------------------------------------------------------------------------
    def state_delegate(self) -> StateDelegate:
        self.open()
        return self

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [*self.api.routes(),
                web.post(AE_PATH, self._serve_ae),
                web.post(REPLICATE_PATH, self._serve_replicate),
                web.post(FETCH_PATH, self._serve_fetch)]

    def attach(self, agent: AgentHost) -> None:
        self.open()
        self._agent = agent
        node = agent.node
        self._inline_limit = inline_budget(self.config.gossip.mtu, node.name, node.addr)
        agent.metrics.registry.register(StateCollector(self))

    def on_member_event(self, event: MemberEvent) -> None:
        self._changed.set()  # a member's liveness or published root changed: housekeeping has work
        if event.kind is not EventKind.REAP:
            self.retirement.seen(event.member.name)
        # Updates (every published root) are frequent and change no one's liveness.
        if self._agent is None or event.kind is EventKind.UPDATE:
            return
        has_peers = self._agent.node.counts()[MemberState.ALIVE] > 1  # O(1): events may come by thousands
        if has_peers and not self._had_peers:
            self.kick_anti_entropy()  # we (re)joined: catch up state at once
        self._had_peers = has_peers

    async def start(self) -> None:
        agent = self.agent
        agent.spawn(self._tick_loop(), "state-tick")
        if self.config.anti_entropy.enabled:
            agent.spawn(self._anti_entropy_loop(), "anti-entropy")

    async def stop(self) -> None:
        self._stopping = True
        self.watchers.close_all()
        if self._log is not None and self._store is not None:
            self._commit()
            try:
                self._snapshot()
            except OSError:
                log.exception("cannot write the state snapshot on stop")
            self._log.close()

    def status(self) -> Mapping[str, Any]:
        if self._store is None:
            return {}
        s = self._store.stats()
        return {"state": status_block(s.root, s.keys, s.hlc.wall_ms, s.tombstones, self._store.node),
                "convergence": self.tracker.status(self.wall()).to_json()}

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
                store = KvStore.restore(plain, self.config.state)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # Not fatal, and not silent: keep the bad file for inspection, start from the log, and let
                # anti-entropy bring back from the peers what only the snapshot held (it runs on join).
                aside = durable.set_aside_snapshot()
                self.stats.recovery["snapshot_unreadable"] += 1
                log.error("data dir %s: the state snapshot is unreadable (%s); moved it to %s and recovering from "
                          "the log and the peers", storage.data_dir, exc, aside.name)
        if store is None:
            replica = _read_replica_id(id_path) if records or snapshot is not None else None
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

    # -- commit path ----------------------------------------------------------------------------------------
    def _commit(self) -> list[Change]:
        """Log every pending change (before anything is acknowledged), then tell the watchers."""
        changes = self.store.drain_changes()
        if not changes:
            return changes
        self._changed.set()
        durable = self._log
        if durable is not None:
            try:
                for change in changes:
                    durable.append(encode_change(change))
            except OSError as exc:
                self._log_error = str(exc)  # readiness reports it; the write is not acknowledged (500)
                raise
            self._log_error = None
            self.stats.log_records += len(changes)
        self.watchers.publish([c for c in changes if c.origin != "prune"])  # no value changed
        return changes

    def _broadcast(self, entry: Entry) -> None:
        payload = encode_rumor(entry)
        self._seen[hash(payload)] = None  # our own rumor coming back is old news
        if len(payload) > self._inline_limit:
            ann = Announcement(entry.key, entry_digest(entry), self.agent.address)
            self._remember_announcement(ann.key, ann.digest)
            payload = encode_announcement(ann)
            self.stats.rumors["announced"] += 1
        self.agent.broadcast_state(payload, key=entry.key)

    def _local(self, op: str, entry: Entry | None) -> Entry | None:
        self._commit()
        if entry is not None:
            self.stats.writes[op] += 1
            self._broadcast(entry)
        return entry

    # -- local writes (HTTP handlers call these; StateError subclasses name invalid input) ------------------
    def put(self, key: str, value: bytes, context: CausalContext | None) -> Entry:
        entry = self.store.local_put(key, value, self.now_ms(), context)
        self._local("put", entry)
        return entry

    def delete(self, key: str, context: CausalContext | None) -> Entry | None:
        return self._local("delete", self.store.local_delete(key, self.now_ms(), context))

    def update_crdt(self, key: str, kind: type[C], mutate: Callable[[C, str, Hlc], C], op: str) -> Entry:
        self.store.update_crdt(key, kind, mutate, self.now_ms())
        entry = self.store.entry(key)
        assert entry is not None
        self._local(op, entry)
        return entry

    def get_crdt(self, key: str) -> Crdt | None:
        return self.store.get_crdt(key)

    # -- write concern --------------------------------------------------------------------------------------
    async def replicate(self, entry: Entry, w: int, timeout: float) -> WriteConcern:
        """Send `entry` to live peers until `w` members (us included) hold it or `timeout` passes."""
        concern = WriteConcern(w)
        if concern.met:
            return concern
        agent = self.agent
        payload = encode_rumor(entry)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hedge = hedge_delay(timeout)
        pending: dict[asyncio.Task[bool], str] = {}
        asked_at: dict[asyncio.Task[bool], float] = {}
        try:
            while not concern.met:
                now = loop.time()
                live = {m.name: m.addr for m in agent.live_members()}
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
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        if self._store is None or self._stopping:
            return False
        ident = hash(payload)
        if ident in self._seen:
            self.stats.rumors["duplicate"] += 1
            return False
        self._seen[ident] = None
        if len(self._seen) > SEEN_MEMORY:
            self._seen.popitem(last=False)
        try:
            item = decode_payload(payload, self.limits)
        except StateCodecError as exc:
            self.stats.rumors["dropped"] += 1
            log.debug("dropped a state rumor: %s", exc)
            return False
        if isinstance(item, Announcement):
            return self._on_announcement(item)
        try:
            changed = self._store.apply_remote(item, self.now_ms())
        except InvalidEntry as exc:
            self.stats.rumors["dropped"] += 1
            log.debug("dropped a state rumor: %s", exc)
            return False
        if not changed:
            self.stats.rumors["duplicate"] += 1
            return False
        self.stats.rumors["applied"] += 1
        self._commit()
        return True

    def _remember_announcement(self, key: str, digest: bytes) -> bool:
        """True if (key, digest) is new here."""
        ident = (key, digest)
        if ident in self._announced:
            return False
        self._announced[ident] = None
        while len(self._announced) > ANNOUNCE_MEMORY:
            self._announced.popitem(last=False)
        return True

    def _on_announcement(self, ann: Announcement) -> bool:
        if not self._remember_announcement(ann.key, ann.digest):
            self.stats.rumors["duplicate"] += 1
            return False
        if self.store.merkle.digest_of(ann.key) != ann.digest and ann.key not in self._pulls \
                and self._agent is not None:
            self._pulls.add(ann.key)
            self.agent.spawn(self._pull(ann), "state-pull")
        return True  # forward the announcement: others may lack the value too

    async def _pull(self, ann: Announcement) -> None:
        try:
            body = msgpack.packb([ann.key], use_bin_type=True)
            answer = await self._exchange(ann.origin, FETCH_PATH, body, max_bytes=self.limits.max_message_bytes)
            entry = decode_payload(answer, self.limits)
            if isinstance(entry, Announcement):
                raise StateCodecError("fetch answered with an announcement")
            if self.store.apply_remote(entry, self.now_ms()):
                self._commit()
                self.stats.rumors["pulled"] += 1
            else:
                self.stats.rumors["pulled_duplicate"] += 1
        except (PeerError, StateCodecError, InvalidEntry) as exc:
            self.stats.rumors["pull_failed"] += 1
            log.debug("pull of %r from %s:%d failed (anti-entropy will repair it): %s", ann.key,
                      ann.origin[0], ann.origin[1], exc)
        finally:
            self._pulls.discard(ann.key)

    async def _exchange(self, addr: Address, path: str, body: bytes, *, max_bytes: int,
                        timeout: float | None = None) -> bytes:
        """A sealed exchange with a peer's state endpoint (bodies framed with FRAME)."""
        answer = await self.agent.peer_client.exchange(addr, path, FRAME + body, max_bytes=max_bytes + 1,
                                                       timeout=timeout)
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

    def _sealed(self, body: bytes) -> web.Response:
        return web.Response(body=self.agent.security.seal(FRAME + body, Purpose.STREAM),
                            content_type="application/octet-stream")

    async def _serve_ae(self, request: web.Request) -> web.Response:
        if self._ae_serving >= AE_MAX_CONCURRENT:
            # Each answer is bounded (anti_entropy.Limits.max_scan), and so is how many run at once.
            self.stats.ae["busy"] += 1
            return web.Response(status=503, text="anti-entropy: too many concurrent requests, retry later")
        self._ae_serving += 1
        try:
            return await self._answer_ae(request)
        finally:
            self._ae_serving -= 1

    async def _answer_ae(self, request: web.Request) -> web.Response:
        body = await self._open_body(request, AE_MAX_RESPONSE)
        try:
            ae_request = decode_ae_request(body, self.limits)
            response = respond(self.store, ae_request, self.now_ms(), AE_LIMITS)
        except (StateCodecError, AntiEntropyError) as exc:
            self.agent.stats.dropped["antientropy"] += 1
            return web.Response(status=400, text=str(exc))
        changes = self._commit()
        self.stats.ae_repaired["pushed_in"] += sum(1 for c in changes if c.origin == "remote")
        self.stats.ae["served"] += 1
        return self._sealed(encode_ae(response))

    async def _serve_replicate(self, request: web.Request) -> web.Response:
        body = await self._open_body(request, self.limits.max_message_bytes)
        try:
            entry = decode_payload(body, self.limits)
            if isinstance(entry, Announcement):
                raise StateCodecError("replicate needs the whole entry")
            if self.store.apply_remote(entry, self.now_ms()):
                self._commit()  # logged before we acknowledge
                self.stats.rumors["replicated"] += 1
        except (StateCodecError, InvalidEntry) as exc:
            self.stats.rumors["dropped"] += 1
            return web.Response(status=400, text=str(exc))
        return self._sealed(b"ok")

    async def _serve_fetch(self, request: web.Request) -> web.Response:
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
        return self._sealed(encode_rumor(entry))

    # -- anti-entropy initiator -----------------------------------------------------------------------------
    def kick_anti_entropy(self) -> None:
        self._kick.set()

    async def _anti_entropy_loop(self) -> None:
        interval = self.config.anti_entropy.interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval * (0.5 + self.rng.random())):  # not wait_for: see _tick_loop
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self._anti_entropy_round()
            except Exception:
                # Like the housekeeping tick: one unexpected error (a peer's metadata no parser foresaw, say)
                # must cost one round, never end anti-entropy for the agent's lifetime (found by review).
                self.stats.ae["failures"] += 1
                log.exception("anti-entropy round failed")

    async def _anti_entropy_round(self) -> None:
        peers = self.agent.live_members()
        if not peers:
            return
        target = self._repair_target
        self._repair_target = None
        chosen = next((m for m in peers if m.name == target), None) if target else None
        peer = chosen or peers[int(self.rng.random() * len(peers))]
        published = parse_state_meta(peer.meta)
        if chosen is None and published is not None and published.root == self.store.root_hex():
            # The peer publishes our root: nothing to repair, so an idle cluster sends no AE traffic.
            self.stats.ae["skipped_same_root"] += 1
            return
        await self.sync_with(peer.addr)

    async def sync_with(self, addr: Address) -> bool:
        """One anti-entropy session with the peer at `addr`; True if it completed."""
        store = self.store
        stats = self.stats
        session = Session(store, AE_LIMITS)
        request: AeRequest | None = session.start()
        stats.ae["sessions"] += 1
        started = self.agent.now()
        self.planner.started(started)
        try:
            while request is not None:
                body = encode_ae(request)
                answer = await self._exchange(addr, AE_PATH, body, max_bytes=AE_MAX_RESPONSE)
                stats.ae_bytes["sent"] += len(body)
                stats.ae_bytes["received"] += len(answer)
                stats.ae["rounds"] += 1
                request = session.handle(decode_ae_response(answer, self.limits), self.now_ms())
                self._commit()
        except (PeerError, StateCodecError, AntiEntropyError) as exc:
            stats.ae["failures"] += 1
            log.debug("anti-entropy with %s:%d failed: %s", addr[0], addr[1], exc)
            self._commit()
            return False
        self.agent.metrics.latency.anti_entropy_session.observe(max(0.0, self.agent.now() - started))
        s = session.stats
        stats.ae_repaired["pulled"] += s.repaired
        stats.ae_repaired["pushed"] += s.pushed
        if s.in_sync:
            stats.ae["in_sync"] += 1
        elif s.repaired or s.pushed:
            log.debug("anti-entropy with %s:%d: %d rounds, %d repaired here, %d pushed", addr[0], addr[1],
                      s.rounds, s.repaired, s.pushed)
        return True

    # -- housekeeping ---------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        busy_until = 0.0
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("state housekeeping failed")
            now = self.agent.now()
            if self._changed.is_set():
                self._changed.clear()
                busy_until = now + BUSY_WINDOW
            if now < busy_until:
                await asyncio.sleep(TICK)
            else:
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that races the event being set
                # (an agent stopping right after a write then hung in stop(), waiting for this task).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_TICK):
                        await self._changed.wait()

    def tick(self) -> None:
        agent, store = self.agent, self.store
        now, wall = agent.now(), self.wall()
        node = agent.node
        stats = store.stats()
        # 1. our state in the membership metadata
        mine = state_meta(stats.root, stats.keys, stats.hlc.wall_ms)
        if self.meta.due(now, mine) and not node.leaving:
            try:
                agent.update_meta(merged_meta(node.meta, mine))
            except ValueError as exc:  # the member's own metadata leaves no room for ours
                if not self._meta_warned:
                    log.error("cannot publish the state root in the membership metadata: %s", exc)
                    self._meta_warned = True
            self.meta.done(now, mine)
        # 2. convergence, from what the members publish
        members = agent.members()
        roots = counted_members(members, node.name)
        status = self.tracker.observe(wall, stats.root, roots, newest_write_ms=stats.hlc.wall_ms or None)
        live = [m.name for m in members if m.state == MemberState.ALIVE and m.name != node.name]
        self.planner.observe(now, stats.root, {n: roots.get(n) for n in live})
        # 3. anti-entropy with a peer that stays divergent (after joining: `on_member_event`)
        target = self.planner.pick(now, live, self.rng.random())
        if target is not None:
            self._repair_target = target
            self.planner.started(now)
            self.kick_anti_entropy()
        # 4. tombstones every member holds, and garbage
        if status.converged and stats.tombstones:
            store.acknowledge_tombstones(self.now_ms())
        if now - self._last_gc >= GC_EVERY:
            self._last_gc = now
            if store.collect_garbage(self.now_ms(), ack_grace_ms=ACK_GRACE_MS):
                self._commit()
        if now - self._last_retire >= RETIRE_EVERY:
            self._last_retire = now
            self.retire_reaped()
        # 5. durability
        durable = self._log
        if durable is not None:
            cfg = self.config.storage
            if cfg.fsync == "interval" and now - self._last_sync >= cfg.fsync_interval:
                self._last_sync = now
                durable.sync()
            if durable.records_since_snapshot >= cfg.snapshot_every:
                self._snapshot()

    def retire_reaped(self) -> int:
        """Retire the writers whose member has been gone longer than the TTL (when the store says it is
        safe), unretire those whose member is back; returns how many were retired."""
        agent, store = self.agent, self.store
        writers = store.context_writers(self.now_ms())
        plan = self.retirement.plan(agent.now(), writers=writers, retired=store.retired,
                                    present={m.name for m in agent.members()}, me=store.node)
        retire = sorted(r for r in plan.retire if writers.get(r))
        if plan.unretire:
            store.unretire_nodes(plan.unretire)
            log.info("writers back in the cluster, no longer pruned: %s", ", ".join(sorted(plan.unretire)))
        if retire:
            keys = store.retire_nodes(retire)
            self._commit()
            log.info("retired writers of members gone longer than the tombstone TTL: %s (%d keys pruned)",
                     ", ".join(retire), keys)
        if retire or plan.unretire:
            self._snapshot()  # the retired set lives in the snapshot
        return len(retire)

    def _snapshot(self) -> None:
        if self._log is None or self._store is None:
            return
        self._commit()
        blob: bytes = msgpack.packb(self._store.snapshot(), use_bin_type=True)
        self._log.write_snapshot(blob)
        self.stats.snapshots += 1


def _read_replica_id(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


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
                        "pulled, ...).", "result", st.rumors)
        yield _counter("gossip_antientropy_sessions", "Anti-entropy sessions started.", st.ae["sessions"])
        yield _counter("gossip_antientropy_rounds", "Anti-entropy request/response rounds (initiated).",
                       st.ae["rounds"])
        yield _counter("gossip_antientropy_failures", "Anti-entropy sessions that failed.", st.ae["failures"])
        yield _counter("gossip_antientropy_served", "Anti-entropy rounds answered for peers.", st.ae["served"])
        yield _labelled("gossip_antientropy_bytes", "Anti-entropy bytes of sessions this agent initiated.",
                        "direction", st.ae_bytes)
        yield _labelled("gossip_antientropy_keys_repaired", "Keys repaired by anti-entropy: pulled (ours "
                        "changed), pushed (sent to the peer), pushed_in (peers' pushes that changed ours).",
                        "side", st.ae_repaired)
        yield _labelled("gossip_state_write_concern", "Writes with w > 1 by outcome.", "result", st.write_concern)
        yield _counter("gossip_state_log_records", "Records appended to the durable log.", st.log_records)
        yield _counter("gossip_state_snapshots", "Snapshots written.", st.snapshots)
        yield _labelled("gossip_state_recovery_problems", "Recovery problems, never silent: snapshot_unreadable "
                        "(recovered from the log and the peers), record_unreadable (log records kept aside).",
                        "problem", st.recovery)
        yield _labelled("gossip_state_refused", "Numbers refused at the edge, by reason (clock_drift, "
                        "counter_overflow, crdt_invalid): 400s to clients, dropped rumors/entries from peers.",
                        "reason", s_refused(svc))
        yield _counter("gossip_state_watch_dropped", "Watch clients disconnected for being slow.",
                       svc.watchers.dropped)
        status = svc.tracker.status(svc.wall())
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

