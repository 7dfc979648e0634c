"""The user API of the replicated state: `/v1/kv`, `/v1/watch`, `/v1/crdt/...` (docs/agent-api.md).

Values are bytes. A PUT body is the raw value, unless the Content-Type is `application/json`: then
`{"value": "text"}` or `{"valueBase64": "..."}`, optionally with `"context"`. The causal context a reader
got (`X-Gossip-Context`, base64) goes back with a write, in that header or the JSON body, so the write
overwrites exactly what was read (it collapses siblings). A GET answers the raw value; when concurrent
values exist (`siblings` policy) or with `?format=json` it answers JSON: `{"key", "values": [{"value"} or
{"valueBase64"}, ...], "context"}` and `X-Gossip-Siblings: n`; the JSON also spells out what the opaque
context token holds, readable: the key's version vector, each value's dot and HLC timestamp.

Registers (`/v1/crdt/registers/lww/{name}`, `/v1/crdt/registers/mv/{name}`) take a value like a PUT does
and are CRDT keys like counters and sets (`crdt/registers/lww/...`, `crdt/registers/mv/...`): the
LWW-register keeps the value with the highest HLC; the MV-register keeps concurrent values, and a write with
the context its client read replaces exactly those (core/crdt.py).

Writes accept `?w=N` (holders including this agent, default 1) and `?timeout=seconds`.

A DELETE with a context deletes what the context names that this agent holds; one whose context names writes
this agent has not seen (read at another agent, not arrived here yet) leaves those live when they arrive, and
answers 409 `{"deleted": false, "remaining": [dots], ...}` instead of claiming the key is deleted. A PUT in
that case writes (2xx) and says what it could not replace: `"siblingsMayRemain": true`, `"remaining"`, `"advice"`.

Sizes are checked before anything is allocated (Content-Length, then a capped read); invalid input
answers 4xx with `{"error": "..."}` naming the problem. Keys are checked here, at the edge (`key_problem`):
no control characters (NUL included), no `.`/`..` path segments (keys often become file or URL paths in
the programs that read them), 1..state.maxKeyBytes bytes of UTF-8. JSON deeper than 32 levels is a 400.

The watch stream (`GET /v1/watch?prefix=`) is newline-delimited JSON, one line per change; every client
has a bounded list of pending lines, written in one go whenever its handler runs, and a client that falls
`WATCH_QUEUE` changes or `WATCH_QUEUE_BYTES` bytes behind is disconnected (it reconnects and re-reads: a watch
is a notification, not a log): its pending lines are dropped at once, and a handler waiting on the client's
full socket is cut off (the transport aborted) rather than left waiting; one that is not gets to say why in a
last line. A write that has not drained within `STREAM_WRITE_TIMEOUT` (io/http_limits.py, as for the membership
stream) ends the stream the same way; the periodic check below finds it, so no timer is armed per write. Bytes
are bounded as well as lines because lines differ wildly in size: a control character in a value escapes to
six bytes, so 1,024 lines of one 60 KB value held ~370 MB for a client that had stopped reading (review).
One periodic check for all watchers (not a timer per line) ends streams whose client hung up and sends
heartbeats on quiet ones. At most `MAX_WATCHERS` watches in all, shared fairly by `WatchSlots`
(io/http_limits.py: `MAX_WATCHES_PER_CLIENT` per address, per-token caps, a reserve for write tokens, eviction
of the busiest client's oldest watch).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.crdt import MAX_COUNTER_DELTA, LWWRegister, MVRegister, ORSet, PNCounter
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.keys import (
    COUNTERS,
    CRDT_PREFIXES,
    LWW_REGISTERS,
    MV_REGISTERS,
    SETS,
    control_char_problem,
    crdt_prefix,
    crdt_route,
    key_problem,
    kind_problem,
    with_article,
)
from gossip_agent.core.kvstore import (
    MAX_LOCAL_SIBLINGS,
    CausalContext,
    Change,
    CrdtEntry,
    Entry,
    InvalidKey,
    KindMismatch,
    StateError,
    TooManySiblings,
    ValueEntry,
    ValueTooLarge,
    read_context,
    read_result,
)
from gossip_agent.core.replica import parse_write_concern
from gossip_agent.core.state_codec import decode_context, encode_context
from gossip_agent.core.text import first_control_char
from gossip_agent.core.vector_clock import VersionVector
from gossip_agent.io import http_limits
from gossip_agent.io.critical_limit import CRITICAL_DOWNGRADED, CriticalLimit
from gossip_agent.io.http_limits import (
    MAX_WATCHES_PER_CLIENT,
    WatchRefused,
    WatchSlots,
    caller_of,
    count_watch,
    loads_limited,
    refuse_before_body,
    request_body,
    write_stream,
)

if TYPE_CHECKING:
    from gossip_agent.core.codec_limits import CodecLimits
    from gossip_agent.core.config import AgentConfig
    from gossip_agent.core.crdt import Crdt
    from gossip_agent.core.kvstore import C, KvStore
    from gossip_agent.core.replica import WriteConcern
    from gossip_agent.io.host import AgentHost


class StateBackend(Protocol):
    """What the HTTP handlers need of the replicated state (`io/state_service.StateService` is the one): the
    handlers never import the service, so the two modules have no import cycle and the API can be tested
    against a small fake."""

    config: AgentConfig
    limits: CodecLimits
    watchers: WatchHub

    @property
    def agent(self) -> AgentHost: ...

    @property
    def store(self) -> KvStore: ...

    def put(self, key: str, value: bytes, context: CausalContext | None, *, critical: bool = False) -> Entry: ...

    def delete(self, key: str, context: CausalContext | None, *, critical: bool = False) -> Entry | None: ...

    def update_crdt(self, key: str, kind: type[C], mutate: Callable[[C, str, Hlc], C], op: str) -> Entry: ...

    def get_crdt(self, key: str) -> Crdt | None: ...

    async def replicate(self, entry: Entry, w: int, timeout: float) -> WriteConcern: ...


_C = TypeVar("_C", PNCounter, ORSet, LWWRegister, MVRegister)

CONTEXT_HEADER = "X-Gossip-Context"
SIBLINGS_HEADER = "X-Gossip-Siblings"
# How each CRDT prefix's route is written (409 answers name the right route and method).
_WRITE_METHOD = {COUNTERS: "POST", SETS: "POST", LWW_REGISTERS: "PUT", MV_REGISTERS: "PUT"}
WATCH_QUEUE = 1024
# Pending bytes a watcher may hold (its lines are shared with other watchers, but a watcher's lag pins them):
# about 128 default-size (64 KiB) values, or 20 whose JSON escaped them six-fold. A single line over it is
# still queued when nothing else is pending, so a large value never ends a watch that keeps up.
WATCH_QUEUE_BYTES = 8 * 1024 * 1024
MAX_WATCHERS = 256
MAX_PREFIX_BYTES = 4096
WATCH_HEARTBEAT = 15.0
WATCH_DISCONNECT_CHECK = 1.0
# A watcher behind by several changes gets them in one write of at most about this many bytes.
WATCH_BATCH_BYTES = 64 * 1024
MAX_LIST = 1000
MAX_LIST_BYTES = 1 << 20  # a listing page ends early (with `next`) once its JSON passes this many bytes
MAX_SET_OPS = 1024
COUNTER_BODY = 64 * 1024  # JSON bodies of CRDT operations: a counter's delta, a set's adds and removes
SET_BODY = 1 << 20
MAX_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 5.0  # a w > 1 write waits at most this long by default
_JSON = "application/json"
_PRIORITIES = ("critical", "normal")  # ?priority= on PUT/DELETE /v1/kv/...
PRIORITY = "priority"
PRIORITY_HEADER = "X-Gossip-Priority"  # a write that gave ?priority= answers the priority it was made with


def _json_value_limit(max_value: int) -> int:
    """A JSON body carrying one value (base64 at worst) and its context."""
    return max_value * 2 + 65536


class ApiError(web.HTTPException):
    """A 4xx/5xx answer with `{"error": message}` naming the problem."""

    status_code = 400

    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": message}), content_type=_JSON)


def _error(status: int, message: str) -> ApiError:
    return ApiError(status, message)


def _state_error(exc: StateError) -> ApiError:
    if isinstance(exc, ValueTooLarge):
        return _error(413, str(exc))
    if isinstance(exc, KindMismatch | TooManySiblings):
        return _error(409, str(exc))
    return _error(400, str(exc))


def value_json(value: bytes) -> dict[str, str]:
    """A value in JSON: text when it is UTF-8, else base64."""
    try:
        return {"value": value.decode()}
    except UnicodeDecodeError:
        return {"valueBase64": base64.b64encode(value).decode()}


def context_token(context: CausalContext) -> str:
    return base64.b64encode(encode_context(context)).decode()


def hlc_json(ts: Hlc) -> dict[str, Any]:
    """An HLC timestamp, readable: its parts and the wall time it stands for (UTC, ISO 8601; null when a
    peer's clock put it outside what a date can show)."""
    try:
        when: str | None = datetime.fromtimestamp(ts.wall_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        when = None
    return {"wallMs": ts.wall_ms, "logical": ts.logical, "node": ts.node,
            "time": when.replace("+00:00", "Z") if when else None}


def vv_json(vv: VersionVector) -> dict[str, int]:
    """A version vector as {writer: counter} (writer = a replica id; counter = its writes seen)."""
    return dict(sorted(vv.items()))


def _not_deleted(key: str, remaining: Sequence[tuple[str, int]], *, wrote: bool) -> dict[str, Any]:
    """A DELETE's answer when its context names writes this agent has not seen (`KvStore.delete_leaves`): they
    stay live when they arrive, so the key is not deleted, and the answer says so (409, `"deleted": false`) and
    what to do. Every such DELETE used to answer 200 `{"deleted": true}` (ctx-review F2), and a client that
    checks only the status (every DELETE answered 200) or takes a 404 as "already gone" could not tell. The list
    is bounded by the token's: a DELETE's context comes only in its header (MAX_HEADER_LINE), a few hundred dots
    at most."""
    done = "the values this agent holds are deleted, but" if wrote else "this agent holds nothing live here, and"
    return {"key": key, "deleted": False, "remaining": [dot_json(d) for d in remaining],
            "error": f"{key!r} is not deleted: {done} {len(remaining)} write(s) named by the context have not "
                     "reached this agent; they stay live when they arrive (a delete covers only what this agent "
                     "has seen)",
            "advice": "read the key here (once those writes have arrived) and delete again with that context, or "
                      "delete at the agent you read from, or write with ?w=N so every agent holds a value before "
                      "its context is used elsewhere"}


MAX_LISTED_UNSEEN = 64
"""The most unseen writes a PUT's answer lists (`_unseen_note`; `remainingCount` gives them all): a PUT's context
may come in its JSON body, up to 64 KiB of token, thousands of dots."""


def _unseen_note(remaining: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """What a PUT's answer (still 2xx: the write was made and replicates) adds when its context names writes this
    agent has not seen (`KvStore.put_leaves`): they are not replaced when they arrive but stay as siblings. The
    answer used to say nothing, so a client took its read-modify-write for a resolution; the DELETE answers the
    same case with a 409 (`_not_deleted`), which a write does not need: nothing it claims is false, only
    incomplete, and a write retried on an error would add another sibling."""
    return {"siblingsMayRemain": True, "remaining": [dot_json(d) for d in remaining[:MAX_LISTED_UNSEEN]],
            "remainingCount": len(remaining),
            "advice": f"{len(remaining)} write(s) named by the context have not reached this agent; this write "
                      "does not replace them, and they stay as siblings when they arrive. Read the key again "
                      "(once they have arrived) and write back with that context, or write at the agent you "
                      "read from, or write with ?w=N so every agent holds a value before its context is used "
                      "elsewhere"}


def dot_json(dot: tuple[str, int]) -> dict[str, Any]:
    return {"node": dot[0], "counter": dot[1]}


def entry_json(entry: Entry, *, values: bool = True) -> dict[str, Any]:
    """One key's state for listings and watch events."""
    if isinstance(entry, CrdtEntry):
        out: dict[str, Any] = {"key": entry.key, "type": entry.value.TYPE}
        if values:
            out["value"] = _crdt_value(entry)
        return out
    result = read_result(entry)
    out = {"key": entry.key, "type": "value", "deleted": result.deleted, "siblings": len(result.values)}
    if values:
        out["values"] = [value_json(v) for v in result.values]
        out["context"] = context_token(result.context)
    return out


def _crdt_value(entry: CrdtEntry) -> Any:
    value = entry.value
    if isinstance(value, ORSet):
        return sorted(value.value())
    if isinstance(value, PNCounter):
        return value.value()
    if isinstance(value, LWWRegister):
        return None if value.data is None else value_json(value.data)
    if isinstance(value, MVRegister):
        return [value_json(v) for v in value.value()]
    return None


class WatchEnd(Enum):
    """Why a watch stream ends (after the lines queued before it are written)."""

    SLOW = "slow"        # fell WATCH_QUEUE changes or WATCH_QUEUE_BYTES behind: pending lines dropped
    STALLED = "stalled"  # a write did not drain within STREAM_WRITE_TIMEOUT: pending lines dropped
    ENDED = "ended"      # its slot was given away (told so when evicted)
    STOPPING = "stopping"  # the agent is stopping: lines not taken within WATCH_STOP_FLUSH dropped (no client
    #                        holds up the shutdown longer)
    GONE = "gone"        # the client hung up


_HEARTBEAT_LINE = b'{"event":"heartbeat"}\n'
# Ends that drop the pending lines and abort a pending write.
_CUT_OFF = (WatchEnd.SLOW, WatchEnd.STALLED, WatchEnd.STOPPING)


class Watcher:
    """One watch stream: the event lines not yet written, and how it ends.

    Why not a queue and a timed wait per line: under writes every delivered change makes one line per
    watcher, and arming and cancelling a timeout around each wait cost more than building the line. Here
    `WatchHub.publish` appends lines and resolves the handler's one pending future (made only when it had
    nothing left to write); the handler writes everything pending in one write. The hub's single periodic
    check (`WatchHub.check`) notices clients that hung up and quiet streams due a heartbeat.

    `abort` cuts the client off. Ending a stream as SLOW (or STOPPING) calls it while the handler waits on a
    write (`writing`): that write waits for a client that is not reading, and would otherwise hold the slot and
    the connection until the write timeout (or the agent's shutdown). The periodic check ends (STALLED) a
    stream whose one write has been pending for `stall_checks` checks. When the agent stops, `stop` lets the
    handler write what is pending first, and the hub cuts off (`finish(STOPPING)`) a stream that has not
    within `WATCH_STOP_FLUSH` (`WatchHub.close_all`)."""

    __slots__ = ("_abort", "_beat", "_closing", "_waiter", "end", "lines", "pending_bytes", "prefix",
                 "quiet_checks", "stalled_checks", "writing")

    def __init__(self, prefix: str, closing: Callable[[], bool], abort: Callable[[], None] = lambda: None) -> None:
        self.prefix = prefix
        self.lines: list[bytes] = []
        self.pending_bytes = 0  # the sum of len(lines)
        self.end: WatchEnd | None = None
        self.quiet_checks = 0  # periodic checks since the last write
        self.writing = False  # the handler is waiting for a write to drain (`write_started`, `write_done`)
        self.stalled_checks = 0  # periodic checks seen during the current write
        self._closing = closing
        self._abort = abort
        self._waiter: asyncio.Future[None] | None = None
        self._beat = False

    def offer(self, line: bytes) -> bool:
        """Queue `line` and wake the handler, unless that passes `WATCH_QUEUE` lines or `WATCH_QUEUE_BYTES`:
        then nothing is queued and the answer is False (the caller ends the stream as SLOW). A first line always
        fits, so one large value never ends a watch that keeps up.

        One call per line and watcher, because `WatchHub.publish` makes it for every watcher of every change
        (a check, then a push, then a wake were three); the wake is a call only when the handler waits, once
        per batch it writes."""
        lines = self.lines
        size = self.pending_bytes + len(line)
        if lines and (len(lines) >= WATCH_QUEUE or size > WATCH_QUEUE_BYTES):
            return False
        lines.append(line)
        self.pending_bytes = size
        if self._waiter is not None:
            self._wake()
        return True

    def finish(self, end: WatchEnd) -> None:
        """End the stream once the lines before this are written (the first reason given stands). A slow
        client's lines are dropped at once (it re-reads when it reconnects), and a write it is stuck on is cut
        short by aborting the connection."""
        if self.end is None:
            self.end = end
        if end in _CUT_OFF:
            self.lines = []
            self.pending_bytes = 0
            if self.writing:
                self._abort()
        self._wake()

    def stop(self) -> None:
        """The agent is stopping: end the stream once its pending lines are written (no new ones come: the
        hub no longer lists it). Unlike `finish(STOPPING)`, nothing is dropped or aborted."""
        if self.end is None:
            self.end = WatchEnd.STOPPING
        self._wake()

    @property
    def flushed(self) -> bool:
        """Nothing is left to write: no pending line, no write waiting for the client."""
        return not self.lines and not self.writing

    def write_started(self) -> None:
        self.writing = True
        self.stalled_checks = 0

    def write_done(self) -> None:
        self.writing = False

    def check(self, heartbeat_checks: int, stall_checks: int) -> WatchEnd | None:
        """The hub's periodic look: why the stream ends now (GONE: the client hung up; STALLED: one write has
        been pending for `stall_checks` checks, the client stopped reading), else None. A stream quiet for
        `heartbeat_checks` checks gets a heartbeat line."""
        if self._closing():
            self.finish(WatchEnd.GONE)
            return WatchEnd.GONE
        if self.writing:
            self.stalled_checks += 1
            if self.stalled_checks >= stall_checks:
                self.finish(WatchEnd.STALLED)
                return WatchEnd.STALLED
        self.quiet_checks += 1
        if self.quiet_checks >= heartbeat_checks:
            self._beat = True
            self._wake()
        return None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self, limit: int = WATCH_BATCH_BYTES) -> bytes:
        """The pending lines joined for one write, in order, up to about `limit` bytes (the rest stays)."""
        lines = self.lines
        self.quiet_checks = 0
        self._beat = False
        if not lines:
            return b""
        if len(lines) == 1:
            self.lines = []
            self.pending_bytes = 0
            return lines[0]
        size = count = 0
        for line in lines:
            size += len(line)
            count += 1
            if size >= limit:
                break
        if count == len(lines):
            self.lines = []
            self.pending_bytes = 0
            return b"".join(lines)
        self.lines = lines[count:]
        self.pending_bytes -= size
        return b"".join(lines[:count])

    async def next(self) -> bytes | WatchEnd:
        """What to write next (pending lines, or a heartbeat), or why the stream ends once nothing is left."""
        while True:
            if self.lines and self.end is not WatchEnd.GONE:
                return self.take()
            if self.end is not None:
                return self.end
            if self._beat:
                self.take()
                return _HEARTBEAT_LINE
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None


class WatchHub:
    """Watch clients: bounded pending lines each; publish never blocks. One periodic check (every
    `check_every` seconds while anyone watches) finds clients that hung up, writes that did not drain within
    `write_timeout` (default `STREAM_WRITE_TIMEOUT`), and streams due a heartbeat."""

    def __init__(self, check_every: float = WATCH_DISCONNECT_CHECK, heartbeat: float = WATCH_HEARTBEAT,
                 write_timeout: float | None = None) -> None:
        self._clients: dict[int, Watcher] = {}
        self._next = 0
        self.dropped = 0  # slow and stalled clients cut off
        self.check_every = check_every
        self._heartbeat_checks = max(1, round(heartbeat / check_every))
        self.write_timeout = http_limits.STREAM_WRITE_TIMEOUT if write_timeout is None else write_timeout
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._clients)

    def subscribe(self, prefix: str, closing: Callable[[], bool] = lambda: False,
                  abort: Callable[[], None] = lambda: None) -> tuple[int, Watcher]:
        """A new watcher of keys starting with `prefix`; `closing` says whether its client has hung up, `abort`
        cuts it off (see `Watcher`)."""
        self._next += 1
        watcher = Watcher(prefix, closing, abort)
        self._clients[self._next] = watcher
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.check_every, self.check)
        return self._next, watcher

    def unsubscribe(self, ident: int) -> None:
        self._clients.pop(ident, None)

    def end(self, ident: int) -> None:
        """End one watch (its slot was given away): its handler writes what is pending, then stops. It stays
        listed (publish skips it) until its handler unsubscribes, so the periodic check still ends a write of
        those lines that does not drain."""
        watcher = self._clients.get(ident)
        if watcher is not None:
            watcher.finish(WatchEnd.ENDED)

    def publish(self, changes: Sequence[Change]) -> None:
        clients = self._clients
        if not clients:
            return
        slow: list[int] = []
        for change in changes:
            line: bytes | None = None
            key = change.key
            for ident, watcher in clients.items():
                if not key.startswith(watcher.prefix) or watcher.end is not None:
                    continue
                if line is None:
                    line = _event_line(change)
                if not watcher.offer(line):
                    self.dropped += 1
                    slow.append(ident)
                    watcher.finish(WatchEnd.SLOW)
        for ident in slow:
            del clients[ident]

    def check(self) -> None:
        """The periodic check (the timer calls it; tests may too): hung-up clients end, quiet streams beat."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A write pending at `stalls` checks in a row has waited at least write_timeout (checks are
        # check_every apart; the first may come at once).
        beats, stalls = self._heartbeat_checks, 1 + math.ceil(self.write_timeout / self.check_every)
        for ident, watcher in list(self._clients.items()):
            end = watcher.check(beats, stalls)
            if end is not None:
                del self._clients[ident]
                self.dropped += end is WatchEnd.STALLED
        if self._clients:
            self._timer = asyncio.get_running_loop().call_later(self.check_every, self.check)

    def close_all(self) -> None:
        """The agent stops: every stream ends once its handler has written its pending lines, and one that
        has not within `http_limits.WATCH_STOP_FLUSH` (its client is not keeping up) is cut off then: its lines
        dropped, the write it waits on aborted. Cutting every stream off at once lost the last lines of
        watchers that were keeping up (review, session 16); ending them with no bound (ENDED, before that)
        let a client that had stopped reading hold its handler, the lines and the agent's shutdown until the
        server's own shutdown timeout cancelled it (review). Returns at once: the cut-off is a timer, and
        the server's shutdown waits for the handlers."""
        stopping = list(self._clients.values())
        self._clients.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for watcher in stopping:
            watcher.stop()
        if not stopping:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (its handlers cannot run either): nothing can be flushed
            self._cut_off(stopping)
            return
        loop.call_later(http_limits.WATCH_STOP_FLUSH, self._cut_off, stopping)

    def _cut_off(self, stopping: list[Watcher]) -> None:
        """The flush time is over: streams still writing or with lines pending end now, their lines dropped."""
        for watcher in stopping:
            if not watcher.flushed:
                watcher.finish(WatchEnd.STOPPING)


def _abort(request: web.Request) -> None:
    """Drop a streaming client's connection at once (nothing more is written to it)."""
    if request.transport is not None:
        request.transport.abort()


def _query_key(value: str, name: str) -> str:
    """A key-like query parameter (prefix, after): bounded, no control characters."""
    if len(value) > MAX_PREFIX_BYTES:
        raise _error(400, f"{name} is longer than {MAX_PREFIX_BYTES} characters")
    if first_control_char(value) is not None:
        raise _error(400, f"{name} contains a control character")
    return value


_quote = encode_basestring_ascii  # what json.dumps does to a str
_b64 = base64.b64encode


def _event_line(change: Change) -> bytes:
    """One watch line. Every delivered write makes one (once, for every watcher), so a plain value's line (the
    common case) is spelled directly, byte for byte what `_event_line_generic` (json.dumps) gives (a test holds
    them equal): bytes joined once (not a str grown by `+` and encoded: a 1 KiB value was copied about ten
    times), the entry's live values and context read from it (no ReadResult built), the
    origin's tail spelled once per origin."""
    entry = change.entry
    if type(entry) is ValueEntry and not entry.is_tombstone:
        values = []
        for version in entry.live:  # (each has a value: the values of `read_result(entry).values`)
            value = version.value
            if value is None:
                continue
            try:
                values.append(b'{"value":' + _quote(value.decode()).encode() + b"}")
            except UnicodeDecodeError:
                values.append(b'{"valueBase64":"' + _b64(value) + b'"}')
        tail = _ORIGIN_TAILS.get(change.origin) or b'","origin":' + _quote(change.origin).encode() + b"}\n"
        token = encode_context(read_context((v.dot for v in entry.live), entry.timestamp, compact=True))
        return b"".join((b'{"event":"put","key":', _quote(entry.key).encode(), b',"type":"value","deleted":',
                         b"false" if values else b"true", b',"siblings":', b"%d" % len(values),
                         b',"values":[', b",".join(values), b'],"context":"',
                         _b64(token), tail))
    return _event_line_generic(change)


_ORIGIN_TAILS = {origin: b'","origin":' + _quote(origin).encode() + b"}\n"
                 for origin in ("local", "remote", "gc", "prune", "restore")}


def _event_line_generic(change: Change) -> bytes:
    entry = change.entry
    if entry is None:
        event: dict[str, Any] = {"key": change.key, "event": "collected"}
    elif isinstance(entry, ValueEntry) and entry.is_tombstone:
        event = {"key": change.key, "event": "delete"}
    else:
        event = {"event": "put" if isinstance(entry, ValueEntry) else "update", **entry_json(entry)}
    event["origin"] = change.origin
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class StateApi:
    """HTTP handlers bound to one state backend (the StateService)."""

    def __init__(self, service: StateBackend) -> None:
        self.svc = service
        # ?priority=critical is bounded per agent and per client; over it a write is made as a normal one.
        self.critical_limit = CriticalLimit(service.config.state.critical_writes_per_second,
                                            lambda: service.agent.now())
        self.watch_slots = WatchSlots(MAX_WATCHERS, MAX_WATCHES_PER_CLIENT, "watches")

    def routes(self) -> list[web.AbstractRouteDef]:
        put = refuse_before_body(self._before_value("key", "", priority=True), self.put)
        counter = refuse_before_body(self._before_body("name", COUNTERS, COUNTER_BODY), self.counter_update)
        add = refuse_before_body(self._before_body("name", SETS, SET_BODY), self.set_update)
        lww = refuse_before_body(self._before_value("name", LWW_REGISTERS), self.lww_set)
        mv = refuse_before_body(self._before_value("name", MV_REGISTERS), self.mv_set)
        return [
            web.get("/v1/kv", self.list_keys),
            web.put("/v1/kv/{key:.+}", put),
            web.post("/v1/kv/{key:.+}", put),
            web.get("/v1/kv/{key:.+}", self.get),
            web.delete("/v1/kv/{key:.+}", self.delete),
            web.get("/v1/watch", self.watch),
            web.post("/v1/crdt/counters/{name:.+}", counter),
            web.get("/v1/crdt/counters/{name:.+}", self.counter_get),
            web.post("/v1/crdt/sets/{name:.+}", add),
            web.get("/v1/crdt/sets/{name:.+}", self.set_get),
            web.put("/v1/crdt/registers/lww/{name:.+}", lww),
            web.post("/v1/crdt/registers/lww/{name:.+}", lww),
            web.get("/v1/crdt/registers/lww/{name:.+}", self.lww_get),
            web.put("/v1/crdt/registers/mv/{name:.+}", mv),
            web.post("/v1/crdt/registers/mv/{name:.+}", mv),
            web.get("/v1/crdt/registers/mv/{name:.+}", self.mv_get),
        ]

    # -- refusals before the body is read (io/http_limits.refuse_before_body) -------------------------------
    def _before_body(self, name: str, prefix: str, limit: int, *,
                     priority: bool = False) -> Callable[[web.Request], web.StreamResponse | None]:
        """A write's checks that need no body: its key, `w`/`timeout` (and `priority`), and its declared
        length against the route's limit. They ran after the guard had read the body (up to 4 MiB): a
        value over `state.maxValueBytes` or a bad key was refused only once all of it had arrived."""

        def check(request: web.Request) -> None:
            self._key(request, name, prefix)
            self._write_params(request)
            if priority:
                self._critical(request)
            self._check_length(request, limit, "JSON body")

        return check

    def _before_value(self, name: str, prefix: str, *,
                      priority: bool = False) -> Callable[[web.Request], web.StreamResponse | None]:
        """`_before_body` for a route whose body is a value: raw (`state.maxValueBytes`) or JSON."""

        def check(request: web.Request) -> None:
            self._key(request, name, prefix)
            self._write_params(request)
            if priority:
                self._critical(request)
            max_value = self.svc.config.state.max_value_bytes
            if request.content_type == _JSON:
                self._check_length(request, _json_value_limit(max_value), "JSON body")
            else:
                self._check_length(request, max_value, "value")

        return check

    @staticmethod
    def _check_length(request: web.Request, limit: int, what: str) -> None:
        # (A compressed body's length says nothing of what it inflates to: the read checks that. "identity" is no
        # encoding at all.)
        if request.content_length is not None and request.content_length > limit \
                and request.headers.get("Content-Encoding", "identity").strip().lower() == "identity":
            raise _error(413, f"{what} is {request.content_length} bytes; the limit is {limit}")

    # -- input -------------------------------------------------------------------------------------------
    def _key(self, request: web.Request, name: str = "key", prefix: str = "") -> str:
        key = prefix + request.match_info[name]
        problem = key_problem(key)
        if problem:
            raise _error(400, problem)
        try:
            self.svc.store.check_key(key)
        except InvalidKey as exc:
            raise _error(400, str(exc)) from None
        return key

    def _held_key(self, request: web.Request, name: str = "key", prefix: str = "") -> str:
        """`_key` for a read or a delete: a key this replica holds passes whatever its length. state.maxKeyBytes
        limits new keys; one written under a larger limit (lowered since) stays readable and deletable."""
        key = prefix + request.match_info[name]
        if self.svc.store.entry(key) is not None and key_problem(key) is None:
            return key
        return self._key(request, name, prefix)

    async def _read(self, request: web.Request, limit: int, what: str) -> bytes:
        """The body, refusing more than `limit` bytes before holding them."""
        self._check_length(request, limit, what)
        # The guard middleware already read (and inflated) it within the app-wide bounds.
        body = await request_body(request)
        if len(body) > limit:
            raise _error(413, f"{what} is {len(body)} bytes; the limit is {limit}")
        return body

    async def _json(self, request: web.Request, limit: int = COUNTER_BODY) -> dict[str, Any]:
        body = await self._read(request, limit, "JSON body")
        try:
            data = loads_limited(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _error(400, f"invalid JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise _error(400, "JSON body must be an object")
        return data

    def _context(self, raw: Any) -> CausalContext | None:
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise _error(400, "context must be the base64 token a read returned")
        try:
            return decode_context(base64.b64decode(raw, validate=True), self.svc.limits)
        except (binascii.Error, ValueError, StateCodecError) as exc:
            raise _error(400, f"invalid context (send back the {CONTEXT_HEADER} a read returned): {exc}") from None

    @staticmethod
    def _critical(request: web.Request) -> bool:
        """`?priority=critical|normal` (default normal): a critical write's rumor jumps every queue, goes to
        more peers and is relayed as critical (core/broadcast.py, core/critical.py)."""
        if len(request.query.getall("priority", ())) > 1:
            raise _error(400, "priority given more than once: give it once (critical or normal)")
        raw = request.query.get("priority", "normal")
        if raw not in _PRIORITIES:
            raise _error(400, f"priority must be critical or normal, got {raw[:20]!r}")
        return raw == "critical"

    @staticmethod
    def _critical_client(request: web.Request) -> str:
        caller = caller_of(request)
        return f"token:{caller.token}" if caller.token is not None else f"address:{request.remote or '?'}"

    def _refund_critical(self, request: web.Request, critical: bool) -> None:
        """A critical write that wrote nothing (refused, or a delete of no key) does not spend its client's
        critical place (io/critical_limit.py)."""
        if critical:
            self.critical_limit.refund(self._critical_client(request))

    def _critical_granted(self, request: web.Request) -> bool:
        """Whether a write that asked for critical stays critical (io/critical_limit.py): within the agent's
        and its client's (bearer token, else address) rate. Else it is made as a normal one, and counted."""
        if self.critical_limit.allow(self._critical_client(request)):
            return True
        count_watch(request, CRITICAL_DOWNGRADED)
        return False

    def _write_params(self, request: web.Request) -> tuple[int, float]:
        try:
            w = parse_write_concern(request.query.get("w"))
        except ValueError as exc:
            raise _error(400, str(exc)) from None
        raw = request.query.get("timeout")
        timeout = DEFAULT_WRITE_TIMEOUT
        if raw is not None:
            try:
                timeout = float(raw)
            except ValueError:
                raise _error(400, f"timeout must be seconds (a number), got {raw[:20]!r}") from None
            if not 0 < timeout <= MAX_TIMEOUT:
                raise _error(400, f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {raw[:20]!r}")
        return w, timeout

    async def _concern(self, entry: Entry, w: int, timeout: float, body: dict[str, Any]) -> web.Response:
        """Answer once `w` members hold `entry`, or 504."""
        if w > 1:
            agent = self.svc.agent
            started = agent.now()
            concern = await self.svc.replicate(entry, w, timeout)
            if concern.met:
                agent.metrics.latency.write_ack.observe(max(0.0, agent.now() - started))
            body["acknowledged"] = concern.holders
            if not concern.met:
                body["error"] = concern.timeout_message(timeout)
                return web.json_response(body, status=504)
        else:
            body["acknowledged"] = 1
        return web.json_response(body)

    # -- /v1/kv ------------------------------------------------------------------------------------------
    async def _value_body(self, request: web.Request) -> tuple[bytes, CausalContext | None]:
        """A written value and the context sent with it: the raw body and `X-Gossip-Context`, or the JSON
        body `{"value"|"valueBase64", "context"}`."""
        max_value = self.svc.config.state.max_value_bytes
        context = self._context(request.headers.get(CONTEXT_HEADER))
        if request.content_type == _JSON:
            data = await self._json(request, _json_value_limit(max_value))
            unknown = set(data) - {"value", "valueBase64", "context"}
            if unknown:
                raise _error(400, f"unknown field(s) {', '.join(sorted(unknown))}; expected value or "
                                  "valueBase64, and context")
            if ("value" in data) == ("valueBase64" in data):
                raise _error(400, "JSON body needs exactly one of value (text) or valueBase64")
            if "value" in data:
                if not isinstance(data["value"], str):
                    raise _error(400, "value must be a string (use valueBase64 for bytes)")
                value = data["value"].encode()
            else:
                try:
                    value = base64.b64decode(data["valueBase64"], validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise _error(400, "valueBase64 is not valid base64") from None
            if "context" in data:
                context = self._context(data["context"])
        else:
            value = await self._read(request, max_value, "value")
        return value, context

    @staticmethod
    def _plain_key(key: str) -> str:
        """409 for a PUT/DELETE on /v1/kv under a CRDT prefix (core/keys.py: such keys hold their CRDT only; a
        plain value there made the CRDT's route fail for the key), naming the route to use instead."""
        prefix = crdt_prefix(key)
        if prefix is not None:
            kind = with_article(CRDT_PREFIXES[prefix])
            raise _error(409, f"{key!r} is under {prefix!r}, whose keys hold {kind} only; use "
                              f"{_WRITE_METHOD[prefix]} {crdt_route(key)}")
        return key

    @staticmethod
    def _kind_advice(key: str, held: str) -> str:
        """What a 409 for `key`, which holds `held` (a CRDT type or "a plain value"), tells the client to do: a
        CRDT under its own prefix is read at its route (the prefix stripped); a legacy entry of the wrong kind
        (an old snapshot, an older peer) is replaced by a write of the right kind where its key belongs."""
        prefix = crdt_prefix(key)
        if prefix is None:
            return (f"{key!r} holds {with_article(held)}, a legacy entry outside the CRDT prefixes "
                    f"({', '.join(CRDT_PREFIXES)}) that no CRDT route serves; a PUT/DELETE here replaces it")
        if kind_problem(key, held) is None:
            return f"{key!r} holds {with_article(held)}; read it with GET {crdt_route(key)}"
        return (f"{key!r} holds {with_article(held)}, a legacy entry of the wrong kind (keys under {prefix!r} hold "
                f"{with_article(CRDT_PREFIXES[prefix])}); a {_WRITE_METHOD[prefix]} {crdt_route(key)} replaces it")

    async def put(self, request: web.Request) -> web.Response:
        key = self._plain_key(self._key(request))
        w, timeout = self._write_params(request)
        critical = self._critical(request)
        value, context = await self._value_body(request)
        critical = critical and self._critical_granted(request)
        try:
            entry = self.svc.put(key, value, context, critical=critical)
        except StateError as exc:
            self._refund_critical(request, critical)  # refused (e.g. too many siblings)
            raise _state_error(exc) from None
        assert isinstance(entry, ValueEntry)
        result = read_result(entry)
        token = context_token(result.context)
        body: dict[str, Any] = {"key": key, "context": token, "siblings": len(result.values)}
        remaining = self.svc.store.put_leaves(key, context)
        if remaining:
            body.update(_unseen_note(remaining))
        response = await self._concern(entry, w, timeout, body)
        response.headers[CONTEXT_HEADER] = token
        if PRIORITY in request.query:
            response.headers[PRIORITY_HEADER] = "critical" if critical else "normal"
        return response

    async def get(self, request: web.Request) -> web.StreamResponse:
        key = self._held_key(request)
        entry = self.svc.store.entry(key)
        if isinstance(entry, CrdtEntry):
            raise _error(409, self._kind_advice(key, entry.value.TYPE))
        if entry is None:
            raise _error(404, f"no such key: {key!r}")
        result = read_result(entry)
        token = context_token(result.context)
        headers = {CONTEXT_HEADER: token, SIBLINGS_HEADER: str(len(result.values))}
        if result.deleted:
            return web.json_response({"error": f"{key!r} was deleted", "key": key, "deleted": True,
                                      "context": token, "versionVector": vv_json(entry.context)},
                                     status=404, headers=headers)
        if len(result.values) == 1 and request.query.get("format") != "json":
            return web.Response(body=result.values[0], content_type="application/octet-stream", headers=headers)
        # `writer` and `hlc` (its wall milliseconds) predate `dot`/`timestamp`; kept for existing readers.
        versions = [{**value_json(v.value or b""), "writer": v.timestamp.node, "hlc": v.timestamp.wall_ms,
                     "dot": dot_json(v.dot), "timestamp": hlc_json(v.timestamp)} for v in result.versions]
        return web.json_response({"key": key, "policy": self.svc.store.policy_for(key), "values": versions,
                                  "versionVector": vv_json(entry.context), "timestamp": hlc_json(entry.timestamp),
                                  "context": token}, headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        key = self._plain_key(self._held_key(request))
        w, timeout = self._write_params(request)
        critical = self._critical(request)
        context = self._context(request.headers.get(CONTEXT_HEADER))
        critical = critical and self._critical_granted(request)
        try:
            entry = self.svc.delete(key, context, critical=critical)
        except StateError as exc:
            self._refund_critical(request, critical)
            raise _state_error(exc) from None
        remaining = self.svc.store.delete_leaves(key, context)
        if entry is None:
            self._refund_critical(request, critical)  # nothing was written
            if remaining:
                return web.json_response(_not_deleted(key, remaining, wrote=False), status=409)
            raise _error(404, f"no such key: {key!r}")
        body = _not_deleted(key, remaining, wrote=True) if remaining else {"key": key, "deleted": True}
        response = await self._concern(entry, w, timeout, body)
        if remaining and response.status == 200:
            response.set_status(409)
        if PRIORITY in request.query:
            response.headers[PRIORITY_HEADER] = "critical" if critical else "normal"
        return response

    async def list_keys(self, request: web.Request) -> web.Response:
        q = request.query
        prefix, after = _query_key(q.get("prefix", ""), "prefix"), _query_key(q.get("after", ""), "after") or None
        raw = q.get("limit", "100")
        # isascii: "²".isdigit() is True but int("²") raises (a 500 before this check).
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not 1 <= int(raw) <= MAX_LIST:
            raise _error(400, f"limit must be an integer 1..{MAX_LIST}, got {raw[:20]!r}")
        values = q.get("values", "false").lower() in ("1", "true", "yes")
        page = self.svc.store.scan(prefix, after, int(raw))
        # Entries are encoded one by one and the page ends early (with its `next` cursor) past
        # MAX_LIST_BYTES: 1,000 values of 64 KiB made one listing ~87 MB of JSON built on the event loop,
        # and 4 such GETs stalled the agent 3.7 s (found by review).
        parts: list[str] = []
        size = 0
        next_after = page.next_after
        for entry in page.entries:
            if parts and size >= MAX_LIST_BYTES:
                next_after = page.entries[len(parts) - 1].key
                break
            part = json.dumps(entry_json(entry, values=values))
            parts.append(part)
            size += len(part)
        body = '{"entries": [' + ", ".join(parts) + '], "next": ' + json.dumps(next_after) + "}"
        return web.Response(text=body, content_type=_JSON)

    # -- /v1/watch ---------------------------------------------------------------------------------------
    async def watch(self, request: web.Request) -> web.StreamResponse:
        hub = self.svc.watchers
        prefix = _query_key(request.query.get("prefix", ""), "prefix")
        evictions = self.watch_slots.evictions
        ident = 0
        try:
            slot = self.watch_slots.acquire(request.remote or "?", caller_of(request), lambda: hub.end(ident))
        except WatchRefused as exc:
            count_watch(request, exc.reason)
            raise _error(exc.status, str(exc)) from None
        if self.watch_slots.evictions != evictions:
            count_watch(request, "evicted_kv")
        ident, watcher = hub.subscribe(prefix, lambda: (t := request.transport) is None or t.is_closing(),
                                       lambda: _abort(request))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-cache"})

        async def send(data: bytes) -> None:
            # No timer per write (see `Watcher`): the hub's check ends a write pending for too long, and a
            # slow client's pending write, by aborting the connection; the write then returns or raises.
            watcher.write_started()
            try:
                await response.write(data)
            finally:
                watcher.write_done()

        async def last(data: bytes) -> None:
            """The line saying why the stream ends: the hub no longer watches this write, so it is timed."""
            try:
                await write_stream(response, data)
            except TimeoutError:
                _abort(request)

        try:
            await response.prepare(request)
            await send(json.dumps({"event": "watching", "prefix": prefix}).encode() + b"\n")
            while True:
                item = await watcher.next()  # no timer per line: the hub's periodic check wakes a quiet one
                if isinstance(item, bytes):
                    await send(item)
                    continue
                if item is WatchEnd.SLOW:
                    await last(json.dumps({"event": "error", "error": (
                        f"watch client too slow: more than {WATCH_QUEUE} changes or {WATCH_QUEUE_BYTES} bytes "
                        "pending; reconnect and re-read")}).encode() + b"\n")
                elif item is WatchEnd.ENDED and slot.evicted:
                    await last(json.dumps({"event": "error", "evicted": True, "error": (
                        "this watch's slot went to a client holding fewer watches (fair share); reconnect "
                        "later")}).encode() + b"\n")
                break  # too slow, evicted, the agent is stopping, or the client hung up
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        finally:
            hub.unsubscribe(ident)
            self.watch_slots.release(slot)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    # -- /v1/crdt ----------------------------------------------------------------------------------------
    async def counter_update(self, request: web.Request) -> web.Response:
        key = self._key(request, "name", COUNTERS)
        w, timeout = self._write_params(request)
        data = await self._json(request)
        delta = data.get("delta")
        if set(data) - {"delta"} or isinstance(delta, bool) or not isinstance(delta, int) \
                or not -MAX_COUNTER_DELTA <= delta <= MAX_COUNTER_DELTA:
            raise _error(400, f'body must be {{"delta": integer}} with |delta| <= {MAX_COUNTER_DELTA} (2^32)')
        return await self._update_crdt(request, key, PNCounter, lambda c, node, _: c.increment(node, delta),
                                       "counter", "value", w, timeout)

    async def counter_get(self, request: web.Request) -> web.Response:
        value = self._typed_crdt(self._held_key(request, "name", COUNTERS), PNCounter, "counter")
        return web.json_response({"name": request.match_info["name"],
                                  "value": value.value() if value is not None else 0})

    async def set_update(self, request: web.Request) -> web.Response:
        key = self._key(request, "name", SETS)
        w, timeout = self._write_params(request)
        data = await self._json(request, SET_BODY)
        if set(data) - {"add", "remove"}:
            raise _error(400, 'body must be {"add": [strings], "remove": [strings]}')
        add, remove = data.get("add", []), data.get("remove", [])
        max_element = self.svc.config.state.max_key_bytes
        for name, items in (("add", add), ("remove", remove)):
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise _error(400, f"{name} must be a list of strings")
            if len(items) > MAX_SET_OPS:
                raise _error(400, f"{name} holds {len(items)} elements; at most {MAX_SET_OPS} per request")
            for index, item in enumerate(items):
                if not 0 < len(item.encode(errors="replace")) <= max_element:
                    raise _error(400, f"set elements must be 1..{max_element} bytes of UTF-8")
                # Removing stays allowed, so elements added before this check can be cleaned up.
                problem = control_char_problem(item, f"{name}[{index}]", "set elements") if name == "add" else None
                if problem is not None:
                    raise _error(400, problem)
        if not add and not remove:
            raise _error(400, 'nothing to do: give "add" and/or "remove"')

        def mutate(s: ORSet, node: str, _: Any) -> ORSet:
            return s.update(node, add, remove)  # one copy: O(ops + size), not O(ops * size)

        return await self._update_crdt(request, key, ORSet, mutate, "set", "elements", w, timeout)

    async def set_get(self, request: web.Request) -> web.Response:
        value = self._typed_crdt(self._held_key(request, "name", SETS), ORSet, "set")
        return web.json_response({"name": request.match_info["name"],
                                  "elements": sorted(value.value()) if value is not None else []})

    def _typed_crdt(self, key: str, cls: type[_C], kind: str) -> _C | None:
        """The CRDT under `key` if it is a `cls` (None if absent or deleted); 409 if the key holds a legacy entry
        of another kind (a plain value, another CRDT: an old snapshot, an older peer), saying that a write here
        replaces it (kvstore.update_crdt does, under the CRDT's own prefix)."""
        entry = self.svc.store.entry(key)
        if entry is None or entry.is_tombstone:
            return None
        if isinstance(entry, CrdtEntry) and isinstance(entry.value, cls):
            return entry.value
        held = entry.value.TYPE if isinstance(entry, CrdtEntry) else "plain value"
        prefix = crdt_prefix(key)
        method = _WRITE_METHOD[prefix] if prefix is not None else "write"
        raise _error(409, f"{key!r} holds {with_article(held)}, not {with_article(kind)}: a legacy entry of the "
                          f"wrong kind; a {method} here replaces it")

    async def _update_crdt(self, request: web.Request, key: str, cls: type[_C], mutate: Callable[[_C, str, Any], _C],
                           kind: str, field: str, w: int, timeout: float) -> web.Response:
        """Apply `mutate` to the CRDT under `key`, then answer with its value once `w` members hold it."""
        try:
            entry = self.svc.update_crdt(key, cls, mutate, kind)
        except StateError as exc:
            raise _state_error(exc) from None
        assert isinstance(entry, CrdtEntry)
        return await self._concern(entry, w, timeout, {"name": request.match_info["name"],
                                                       field: _crdt_value(entry)})

    # -- /v1/crdt/registers ------------------------------------------------------------------------------
    async def lww_set(self, request: web.Request) -> web.Response:
        """Assign a last-writer-wins register (stamped with a fresh HLC: it wins over every value this
        agent has seen). A context is meaningless here and refused, so a client expecting MV semantics
        learns it at once."""
        key = self._key(request, "name", LWW_REGISTERS)
        w, timeout = self._write_params(request)
        value, context = await self._value_body(request)
        if context is not None:
            raise _error(400, "an LWW register takes no context (the latest write wins); use "
                              "/v1/crdt/registers/mv/ to keep concurrent values")
        try:
            entry = self.svc.update_crdt(key, LWWRegister, lambda r, _, ts: r.assign(value, ts), "register")
        except StateError as exc:
            raise _state_error(exc) from None
        assert isinstance(entry, CrdtEntry) and isinstance(entry.value, LWWRegister)
        return await self._concern(entry, w, timeout, {"name": request.match_info["name"], **value_json(value),
                                                       "timestamp": hlc_json(entry.value.timestamp)})

    async def lww_get(self, request: web.Request) -> web.Response:
        key = self._held_key(request, "name", LWW_REGISTERS)
        register = self._typed_crdt(key, LWWRegister, "LWW register")
        if register is None or register.data is None:
            raise _error(404, f"no such register: {request.match_info['name']!r}")
        return web.json_response({"name": request.match_info["name"], "type": "lww", **value_json(register.data),
                                  "timestamp": hlc_json(register.timestamp)})

    async def mv_set(self, request: web.Request) -> web.Response:
        """Assign a multi-value register: with the context a read returned, replace exactly the values read
        (siblings collapse); without, replace what this agent holds."""
        key = self._key(request, "name", MV_REGISTERS)
        w, timeout = self._write_params(request)
        value, context = await self._value_body(request)
        seen = context.vv if context is not None else None

        def assign(r: MVRegister, node: str, _: Hlc) -> MVRegister:
            out = r.assign(node, value, seen)
            if len(out.values) > max(MAX_LOCAL_SIBLINGS, len(r.values)):  # (one that shrinks them passes)
                raise TooManySiblings(f"{key!r} would hold {len(out.values)} concurrent values; read it and "
                                      "write back with its context to resolve them")
            return out

        try:
            entry = self.svc.update_crdt(key, MVRegister, assign, "register")
        except StateError as exc:
            raise _state_error(exc) from None
        assert isinstance(entry, CrdtEntry) and isinstance(entry.value, MVRegister)
        body = self._mv_json(request, entry)
        response = await self._concern(entry, w, timeout, body)
        response.headers[CONTEXT_HEADER] = body["context"]
        return response

    async def mv_get(self, request: web.Request) -> web.Response:
        key = self._held_key(request, "name", MV_REGISTERS)
        self._typed_crdt(key, MVRegister, "MV register")
        entry = self.svc.store.entry(key)
        if not isinstance(entry, CrdtEntry) or not isinstance(entry.value, MVRegister):
            raise _error(404, f"no such register: {request.match_info['name']!r}")
        body = self._mv_json(request, entry)
        return web.json_response(body, headers={CONTEXT_HEADER: body["context"],
                                                SIBLINGS_HEADER: str(len(body["values"]))})

    def _mv_json(self, request: web.Request, entry: CrdtEntry) -> dict[str, Any]:
        register = entry.value
        assert isinstance(register, MVRegister)
        values = [{**value_json(register.values[d]), "dot": dot_json(d)} for d in sorted(register.values)]
        return {"name": request.match_info["name"], "type": "mv", "values": values,
                "versionVector": vv_json(register.context),
                "context": context_token(read_context(register.values, entry.timestamp))}
