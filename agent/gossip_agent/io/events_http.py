"""The membership event stream, `GET /v1/members/watch` (like `serf monitor`; docs/agent-api.md).

Format: newline-delimited JSON (`application/x-ndjson`), one object per line with `"event"` naming it, the
same framing as the key-value `GET /v1/watch`. Chosen over Server-Sent Events because every consumer here
(gossipctl, the operator, `curl | jq`) reads lines, and one API should not frame its two streams two ways.

What a client reads:
1. `snapshot`: the member table as it is now (`members`, as `GET /v1/members`), this agent's name and, with
   the state layer, its convergence status. Taken in the same event-loop step as the subscription, so no
   change falls between the snapshot and the first delta.
2. Deltas, as the Node reports them (runtime `_on_member_event`): `join`, `suspect`, `alive` (a suspicion
   refuted, or a dead member back), `dead`, `left`, `reap` (removed from the table), each with `member`;
   `update` (address or metadata: every state-root publication is one, so they are frequent) only with
   `?updates=true`. `refute`: this agent refuted a rumor about itself (its incarnation bumped; the runtime
   sees the Node's `refutations` count move).
3. `convergence`: the state layer's agreement changed (`converged` flipped, or our Merkle root moved).
   Sampled every `CONVERGENCE_SAMPLE` seconds while someone watches and reported at most once per
   `CONVERGENCE_MIN_INTERVAL`, the latest state with `rootChanges` counting the root moves seen since the
   last report: a write storm gives one line a second, not one per write.
4. `heartbeat` after `HEARTBEAT` seconds without events (a dead connection is noticed by both sides).

Bounded: at most `MAX_WATCHERS` streams, shared by `WatchSlots` (io/http_limits.py): `MAX_PER_CLIENT` from
one address (429); with API tokens at most a quarter per token (429) and an eighth kept for write-scope
tokens; when full, the oldest stream of the busiest client ends (a last `error` line, `"evicted": true`) if
the newcomer holds at least two fewer, else 503. Each stream has a queue of `QUEUE` events. Publishing never
blocks the agent: a client that falls `QUEUE` events behind is removed, told so in a last `error` line, and
disconnected (it reconnects and gets a fresh snapshot: a watch is a notification, not a log); a write that
the client does not read within `STREAM_WRITE_TIMEOUT` (io/http_limits.py, shared with the key watch) closes
the connection. Both count in `gossip_member_watch_dropped_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.messages import MemberSnapshot
from gossip_agent.io.auth import OPEN, Caller
from gossip_agent.io.http_api import member_json
from gossip_agent.io.http_limits import WatchRefused, WatchSlot, WatchSlots, caller_of, count_watch, write_stream
from gossip_agent.io.metrics import AgentStats

PATH = "/v1/members/watch"
QUEUE = 1024  # lines are shared between queues: 1,024 events of ~250 B, whoever watches
MAX_WATCHERS = 64
MAX_PER_CLIENT = 8
HEARTBEAT = 15.0
# While idle, how often to check that the client is still connected (aiohttp does not cancel a handler
# whose client went away), so its slot is freed within a second rather than at the next heartbeat.
LIVENESS_CHECK = 1.0
CONVERGENCE_SAMPLE = 0.5
CONVERGENCE_MIN_INTERVAL = 1.0
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


class WatchedAgent(Protocol):
    """What the hub reads from the agent (the runtime's `Agent`, or a fake in tests)."""

    def members(self) -> list[MemberSnapshot]: ...
    def status(self) -> Mapping[str, Any]: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...


@dataclass(eq=False)
class Watcher:
    """One stream's subscription: its queue holds encoded lines; None = "too slow", b"" = "agent stopping"."""

    updates: bool
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE + 1))
    slot: WatchSlot | None = None

    @property
    def evicted(self) -> bool:
        """Its slot went to a client holding fewer (fair share, io/http_limits.py `WatchSlots`)."""
        return self.slot is not None and self.slot.evicted


class ConvergenceDigest:
    """When a convergence change deserves an event (pure: the caller passes the time and the status).

    Reports the latest `(converged, root)` when it differs from the last one reported, at most once per
    `min_interval`; root moves in between are only counted. The first observation is a baseline (the
    snapshot reported it)."""

    def __init__(self, min_interval: float = CONVERGENCE_MIN_INTERVAL) -> None:
        self.min_interval = min_interval
        self._reported: tuple[bool, str] | None = None
        self._reported_at = -math.inf
        self._root: str | None = None
        self._changes = 0

    def observe(self, now: float, status: Mapping[str, Any]) -> dict[str, Any] | None:
        conv, state = status.get("convergence"), status.get("state")
        if not isinstance(conv, Mapping) or not isinstance(state, Mapping):
            return None
        current = (bool(conv.get("converged")), str(state.get("root")))
        if self._root is not None and current[1] != self._root:
            self._changes += 1
        self._root = current[1]
        if self._reported is None:
            self._reported, self._reported_at = current, now
            return None
        if current == self._reported or now - self._reported_at < self.min_interval:
            return None
        event = {"event": "convergence", "converged": current[0], "root": current[1],
                 "fraction": conv.get("fraction"), "distinctRoots": conv.get("distinctRoots"),
                 "rootChanges": self._changes}
        self._reported, self._reported_at, self._changes = current, now, 0
        return event


def _line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def convergence_json(status: Mapping[str, Any]) -> dict[str, Any] | None:
    conv, state = status.get("convergence"), status.get("state")
    if not isinstance(conv, Mapping) or not isinstance(state, Mapping):
        return None
    return {"converged": conv.get("converged"), "root": state.get("root"), "fraction": conv.get("fraction"),
            "distinctRoots": conv.get("distinctRoots")}


class MemberWatchHub:
    """The watchers of one agent. `publish` never blocks (see the module docstring)."""

    def __init__(self, agent: WatchedAgent, stats: AgentStats, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, queue_size: int = QUEUE,
                 max_watchers: int = MAX_WATCHERS, max_per_client: int = MAX_PER_CLIENT,
                 sample_every: float = CONVERGENCE_SAMPLE) -> None:
        self.agent = agent
        self.stats = stats
        self.wall = wall
        self.monotonic = monotonic
        self.queue_size = queue_size
        self.slots = WatchSlots(max_watchers, max_per_client, "membership watchers")
        self.sample_every = sample_every
        self._watchers: list[Watcher] = []
        self._digest = ConvergenceDigest()
        self._sampler: asyncio.Task[Any] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._watchers)

    @property
    def max_watchers(self) -> int:
        return self.slots.total

    @max_watchers.setter
    def max_watchers(self, value: int) -> None:
        self.slots.total = value

    @property
    def max_per_client(self) -> int:
        return self.slots.per_address

    @max_per_client.setter
    def max_per_client(self, value: int) -> None:
        self.slots.per_address = value

    # -- subscriptions ---------------------------------------------------------------------------------
    def subscribe(self, *, updates: bool = False, client: str = "", caller: Caller = OPEN) -> tuple[Watcher, bytes]:
        """A new watcher from address `client` and its snapshot line; WatchRefused when there is no slot for
        it (a watch evicted to make room gets b"" and reads `evicted`)."""
        if self._closed:
            raise WatchRefused(503, "watch_full", "the agent is stopping")
        watcher = Watcher(updates, asyncio.Queue(self.queue_size + 1))
        watcher.slot = self.slots.acquire(client, caller, lambda: self._evict(watcher))
        self._watchers.append(watcher)
        self.stats.member_watchers = len(self._watchers)
        status = self.agent.status()
        snapshot: dict[str, Any] = {
            "event": "snapshot", "time": self._time(), "self": status.get("name"),
            "members": [member_json(m) for m in sorted(self.agent.members(), key=lambda m: m.name)]}
        conv = convergence_json(status)
        if conv is not None:
            snapshot["convergence"] = conv
            if self._sampler is None:
                self._digest = ConvergenceDigest()
                self._digest.observe(self.monotonic(), status)
                self._sampler = self.agent.spawn(self._sample_loop(), "member-watch-convergence")
        return watcher, _line(snapshot)

    def unsubscribe(self, watcher: Watcher) -> None:
        if watcher.slot is not None:
            self.slots.release(watcher.slot)
        if watcher not in self._watchers:
            return
        self._watchers.remove(watcher)
        self.stats.member_watchers = len(self._watchers)

    def _evict(self, watcher: Watcher) -> None:
        """End `watcher`'s stream (its slot is already gone): b"" wakes its handler, which sees `evicted`.
        A watcher still in the hub always has a free queue slot (`publish` keeps one)."""
        self.unsubscribe(watcher)
        with contextlib.suppress(asyncio.QueueFull):
            watcher.queue.put_nowait(b"")

    def dropped(self) -> None:
        """A stream closed for not reading (the handler's write timed out)."""
        self.stats.member_watch_dropped += 1

    def close_all(self) -> None:
        """The agent stops: every stream ends (b"")."""
        self._closed = True
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                watcher.queue.put_nowait(b"")
        self._watchers.clear()
        self.slots.clear()
        self.stats.member_watchers = 0
        if self._sampler is not None:
            self._sampler.cancel()

    # -- publishing (event loop; never blocks) -----------------------------------------------------------
    def publish(self, event: dict[str, Any], *, update: bool = False) -> None:
        if not self._watchers:
            return
        line: bytes | None = None
        for watcher in list(self._watchers):
            if update and not watcher.updates:
                continue
            if line is None:
                event.setdefault("time", self._time())
                line = _line(event)
            if watcher.queue.qsize() >= self.queue_size:
                self.unsubscribe(watcher)
                self.stats.member_watch_dropped += 1
                watcher.queue.put_nowait(None)  # the slot kept free: "you are too slow"
                continue
            watcher.queue.put_nowait(line)

    def member_event(self, event: MemberEvent) -> None:
        if self._watchers:
            self.publish({"event": event.kind.value, "member": member_json(event.member)},
                         update=event.kind is EventKind.UPDATE)

    def refuted(self, me: MemberSnapshot | None) -> None:
        if self._watchers and me is not None:
            self.publish({"event": "refute", "member": member_json(me), "incarnation": me.incarnation})

    async def _sample_loop(self) -> None:
        try:
            while self._watchers:
                await asyncio.sleep(self.sample_every)
                event = self._digest.observe(self.monotonic(), self.agent.status())
                if event is not None:
                    self.publish(event)
        finally:
            self._sampler = None

    def _time(self) -> float:
        return round(self.wall(), 3)


def _flag(raw: str | None, name: str) -> bool:
    value = (raw or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be true or false, got {value[:20]!r}"}),
                             content_type="application/json")


def member_watch_routes(hub: MemberWatchHub) -> list[web.AbstractRouteDef]:
    """`GET /v1/members/watch[?updates=true]` served from `hub`."""

    async def watch(request: web.Request) -> web.StreamResponse:
        updates = _flag(request.query.get("updates"), "updates")
        evictions = hub.slots.evictions
        try:
            watcher, snapshot = hub.subscribe(updates=updates, client=request.remote or "?",
                                              caller=caller_of(request))
        except WatchRefused as exc:
            count_watch(request, exc.reason)
            raise _refused(exc) from None
        if hub.slots.evictions != evictions:
            count_watch(request, "evicted_members")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            await write_stream(response, snapshot)
            idle = 0.0
            while True:
                try:
                    line = await asyncio.wait_for(watcher.queue.get(), LIVENESS_CHECK)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return response  # the client went away
                    idle += LIVENESS_CHECK
                    if idle < HEARTBEAT:
                        continue
                    line = _line({"event": "heartbeat", "time": hub._time()})
                idle = 0.0
                if line is None:
                    await write_stream(response, _line({"event": "error", "error": (
                        f"watch client too slow: more than {hub.queue_size} events pending; reconnect for a "
                        "fresh snapshot")}))
                    break
                if not line:
                    if watcher.evicted:
                        await write_stream(response, _line({"event": "error", "evicted": True, "error": (
                            "this stream's slot went to a client holding fewer streams (fair share); reconnect "
                            "later")}))
                    break  # evicted, or the agent is stopping
                await write_stream(response, line)
        except TimeoutError:
            hub.dropped()  # the client stopped reading: free the connection rather than wait on it
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionResetError:
            return response
        finally:
            hub.unsubscribe(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    return [web.get(PATH, watch)]


def _refused(exc: WatchRefused) -> web.HTTPException:
    refused = web.HTTPException(text=json.dumps({"error": str(exc)}), content_type="application/json")
    refused.set_status(exc.status)
    if exc.status == 503:
        refused.headers["Retry-After"] = "5"
    return refused

