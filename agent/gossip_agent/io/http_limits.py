"""Bounds on what one HTTP client can make the agent do: time, connections, body bytes, inflation, nesting.

Why each bound exists (issue 10, attacks 4 and 10):
- aiohttp inflates a `Content-Encoding: gzip` body as it arrives, on the event loop, before any handler or
  authentication runs: 4 concurrent 1 MiB gzip bombs stalled an agent for 7 s and grew RSS by 130 MB. The
  server is therefore built with `auto_decompress=False` (`handler_args`), and `guard_middleware` decides:
  peer endpoints never take HTTP-level compression (peers compress inside the sealed frame, which is
  authenticated before it is inflated, see core/codec.py), user routes take it only after `ApiAuth` passed;
  then `Inflater` decompresses incrementally (`zlib.decompressobj` with `max_length`) in a worker thread,
  at most `INFLATE_CONCURRENCY` at a time, and stops at the route's byte limit (413).
- Slow clients: a connection must deliver a complete request head within `HEADER_TIMEOUT` (aiohttp's
  keep-alive timer starts at connect and fires while no request is being handled; it is also the idle
  timeout between requests), and a body within `BODY_TIMEOUT` (408).
- Connections: at most `MAX_CONNECTIONS`, `MAX_CONNECTIONS_PER_CLIENT` from one address (`ConnectionGuard`;
  over the cap the connection is closed at once and counted).
- Bodies: `client_max_size` caps every body (413); routes check their own tighter limits.
- Memory: bodies over `SMALL_BODY` are held only within `BodyBudget`: 16 MiB of declared lengths per client
  address (over it a 503 with Retry-After, before a byte is read) and 64 MiB of bytes that arrived in all
  (charged as they are read: over it a 503 mid-body; declared lengths alone hold nothing there, so
  header-only connections cannot lock other clients out). Peer endpoints read their body before the seal can
  be checked, so without the budget one unauthenticated client with 100 connections each sending 4 MiB
  minus one byte pinned 420 MB of RSS (never returned to the OS), and 8 addresses could pin 4 GiB (review).
- Watches (`WatchSlots`): long-lived streams hold a slot for as long as the client likes, so a cap per
  address alone let 8 addresses take all 64 membership-watch slots and lock the operator out (review).
  The policy, per stream kind (membership watches, key watches):
  1. at most `per_address` watches from one client address (429);
  2. with API tokens, at most `total // WATCH_TOKEN_SHARE` (and at least `per_address`) per token, from any
     number of addresses (429): a leaked read token cannot take every slot;
  3. with API tokens, `total // WATCH_WRITE_RESERVE_SHARE` slots are held back for write-scope tokens
     (administrators): read tokens together hold at most the rest;
  4. when the slots open to the newcomer are full, fair share: the oldest watch of the holder (token, or
     address without tokens) with the most slots is ended (a last `error` line saying so), if the newcomer
     holds at least two fewer (so two clients never take turns evicting each other); a read-scope newcomer
     never ends a write-scope watch. Otherwise 503.
  Refusals count in `gossip_http_refused_total{reason="watch_address"|"watch_token"|"watch_full"}`,
  evictions in `gossip_watch_evicted_total{stream}`. Without tokens the API cannot tell clients apart beyond
  their address: one client with as many addresses as there are slots can still hold them all (one each),
  which is one more reason to configure tokens outside local development.
- Stream writes (`write_stream`): a watch's handler waits while the client's socket buffers are full, and a
  client that keeps the connection but stops reading would hold it (its slot, its pending lines) for as long
  as it likes: one non-reading key watch pinned ~400 MB (review). Every write to a stream (membership and key
  watches) must complete within `STREAM_WRITE_TIMEOUT` or the stream ends.
- Response writes (`stream_large_responses`): aiohttp writes a handler's response after the handler returned,
  in one transport write (the unsent rest of the body copied into the transport's buffer), and waits, untimed,
  while the client's socket buffers are full: 32 clients that sent GET for a 4 MiB value and never read held
  ~47 MB (review). A deadline on the whole response (30 s) fixed that but cut off honest slow readers (16 MiB
  at 256 KiB/s), and the per-address budget of unfinished large responses that came with it answered 503 to
  honest concurrent readers behind one address (35 readers of a large listing). Now a response over
  `SMALL_BODY` is written `RESPONSE_CHUNK` bytes at a time, each when the transport has room, and the
  connection is reset (`reset`: its unsent bytes dropped, the kernel's too; counted as `response_stalled`)
  only when the client stalls: takes fewer than `STALL_MIN_BYTES` in `STALL_WINDOW` seconds (`StallRule`).
  Taken means acknowledged: bytes in the kernel's send queue (SIOCOUTQ) count as not taken, else a non-reader
  would seem to take the few MiB a loopback socket buffers, and the answer is done only once the client has
  taken it all (50 clients that never read a 2.7 MiB listing held 133 MiB in the kernel's send queues, as
  long as they kept the connections). A piece the transport takes without pausing is written at once, in the
  handler's step: while the socket takes them, a body is handed over before the next request is rendered
  (else 50 such requests were all rendered first: +142 MiB of RSS, now +9). While a client does not read,
  the agent holds its rendered body, a chunk or two in the transport and what the kernel queued, for a window
  or two; with no whole-response deadline, a reader at any honest speed gets its whole answer.
  Small answers (at most `SMALL_BODY`), errors (HTTPExceptions) and HEAD answers are written under the rule
  too (`_write_small`), but only watched when a write has to wait (no wait for the client to take them, so
  a keep-alive connection's next request is not delayed): left to aiohttp, 128 connections that pipelined
  100 GETs of a 64 KiB value and never read held 342 MiB of kernel send queue, untimed (review). Until the
  reset, such a connection filled the kernel's autotuned send buffer (~3.7 MiB on loopback: 64 of them held
  237 MiB for a window, the connection cap ~3.7 GiB), so every connection's send buffer is clamped as it is
  accepted (`ConnectionGuard`, `CLIENT_SNDBUF`: 64 then held 15.7 MiB; keep-alive latency unchanged).
  Clients that trickle (above the floor) are not stalled, and 128 taking 4 KiB/s of a 4 MiB value held 764 MiB
  of RSS and 330 MiB of send queue, for up to an hour (review): so the large bodies being written are capped
  in all (`ResponseBudget`, `MAX_LARGE_RESPONSE_BYTES`, not per address: honest concurrent readers behind one
  address share it; past it a response waits up to `RESPONSE_BUDGET_WAIT` s, then 503 with Retry-After,
  counted as `response_budget`; one always goes when none is held), and a connection given a large answer
  has its kernel send buffer clamped to `LARGE_RESPONSE_SNDBUF` (`_clamp_send_buffer`). The cap alone was not
  fair: 64 connections of one address taking 2.5 KiB/s each held all of it, and every other client's large
  answer waited 10 s for a 503. So a response that has waited `RESPONSE_PREEMPT_AFTER` seconds resets the
  connection of the slowest holder that has held its room as long and taken less than `PREEMPT_RATE` bytes a
  second of it (`response_preempted`; its room given back at once, counted once): the other client then got
  its 4 MiB after 2.0 s. Holders at honest speeds are never reset, so readers behind one address that fit in
  the cap are all served, and past it the 503 stays. The rate is the holder's average since it got its room:
  a client whose receive buffer took a large first piece looks fast for a while (holds its room up to its
  buffer over `PREEMPT_RATE` seconds), and a client reading just above `PREEMPT_RATE` is not reset.
  Peer endpoints' answers go the same way (`write_under_stall_rule`, written in their handler, which holds
  their bytes in the state service's answer budget until the peer has taken them: core/answer_budget.py).
- Refusals that need no body (`refuse_before_body`): a route may name a cheap check (a "retry later" for a
  byte budget or a concurrency cap) that the guard runs after access control and before the body is read;
  its answer goes at once, so a request the agent would refuse anyway costs it no body bytes, memory or
  time (the anti-entropy endpoint read a whole 4 MiB body before answering 429).
- JSON: `loads_limited` answers a body nested deeper than `MAX_JSON_DEPTH` with 400 instead of the 500 a
  RecursionError gave.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import socket
import struct
import sys
import termios
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gossip_agent.io.auth import CALLER, OPEN, ApiAuth, Caller, RouteClass, route_class

log = logging.getLogger("gossip_agent.http")

HEADER_TIMEOUT = 15.0
BODY_TIMEOUT = 30.0
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_CLIENT = 128
MAX_WATCHES_PER_CLIENT = 16
# A stream write that has not drained within this long ends the stream: a reading client takes a 64 KiB
# batch in far less, while a client that stopped reading is let go within it.
STREAM_WRITE_TIMEOUT = 10.0
# When the agent stops, a watch stream has this long to write the lines it has pending (a client that keeps up
# takes them in milliseconds); then it is cut off, so a client that stopped reading does not hold the shutdown.
WATCH_STOP_FLUSH = 1.0
# Large responses are written RESPONSE_CHUNK bytes at a time; a client taking fewer than STALL_MIN_BYTES of one
# in STALL_WINDOW seconds has stalled and is cut off. 16 KiB in 10 s is 1.6 KiB/s: any reader that is reading
# passes it (an honest slow one at 256 KiB/s by 160 times), a stuck one is let go within 10-20 s.
RESPONSE_CHUNK = 64 * 1024
STALL_WINDOW = 10.0
STALL_MIN_BYTES = 16 * 1024
# Peers' answers (`write_under_stall_rule(..., min_bytes=PEER_STALL_MIN_BYTES)`, passed by the state service): a
# member takes its answer at machine speed, so one taking less than 1 MiB in a window is stuck or hostile.
PEER_STALL_MIN_BYTES = 1024 * 1024
# Large response bodies the agent is writing, in all (not per address: honest concurrent readers behind one
# address must not be refused): one that would pass it waits up to RESPONSE_BUDGET_WAIT seconds for room, then
# is answered 503 (`response_budget`); one always goes when none is held. Waiting bodies are held too, so at
# most MAX_WAITING_RESPONSE_BYTES of them wait (past it the 503 comes at once). Trickling clients (4 KiB/s,
# above the stall floor) otherwise held every rendered body for up to an hour: 128 of them, 764 MiB of RSS.
MAX_LARGE_RESPONSE_BYTES = 256 * 1024 * 1024
MAX_WAITING_RESPONSE_BYTES = 64 * 1024 * 1024
RESPONSE_BUDGET_WAIT = 10.0
# Fairness under the cap: a large response that has waited RESPONSE_PREEMPT_AFTER seconds for room resets the
# connection of the slowest holder that has held its room as long and whose client took less than PREEMPT_RATE
# bytes a second of it (counted as `response_preempted`): 64 connections taking 2.5 KiB/s each (above the
# stall floor) held the whole cap, and every other client's large answer waited 10 s for a 503. A holder at an
# honest slow reader's speed (PREEMPT_RATE and more) is never reset to make room.
RESPONSE_PREEMPT_AFTER = 2.0
PREEMPT_RATE = 32 * 1024
# The kernel send buffer of every connection, set as it is accepted (`ConnectionGuard`): autotuning grew it to
# ~3.7 MiB per connection, which pipelined small answers to a client that never reads filled for a stall window
# (64 such connections: 237 MiB of send queue; the 1,024-connection cap: ~3.7 GiB). Linux doubles the value set:
# 256 KiB, four of the largest small answers. A connection given a large answer gets LARGE_RESPONSE_SNDBUF:
# autotuning grew it to ~2.6 MiB, held for as long as a slow client kept taking (512 KiB, ~40 Mbit/s at 100 ms
# RTT).
CLIENT_SNDBUF = 128 * 1024
LARGE_RESPONSE_SNDBUF = 256 * 1024
# Watch-slot fair share (see the module docstring): a token holds at most 1/4 of a stream's slots, and 1/8
# of them are kept for write-scope tokens.
WATCH_TOKEN_SHARE = 4
WATCH_WRITE_RESERVE_SHARE = 8
MAX_JSON_DEPTH = 32
MAX_HEADERS = 64
MAX_HEADER_LINE = 8190
INFLATE_CONCURRENCY = 2
# Bodies larger than SMALL_BODY are read only within a byte budget: in all, and per client address.
SMALL_BODY = 64 * 1024
MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
MAX_BODY_BYTES_PER_CLIENT = 16 * 1024 * 1024
INFLATE_CHUNK = 256 * 1024
# Content-Encodings a user route accepts (after authentication); anything else is 415.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}

BODY = web.RequestKey("inflated_body", bytes)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PreBodyCheck = Callable[[web.Request], web.StreamResponse | None]
_PRE_BODY = "gossip_pre_body_check"
HTTP_STATS = web.AppKey("http_stats", Counter)
# The app's access policy, for what runs before its middlewares (`expect_refusal`).
API_AUTH = web.AppKey("api_auth", ApiAuth)


def handler_args() -> dict[str, Any]:
    """aiohttp server (RequestHandler) settings for `web.Application(handler_args=...)`."""
    return {"auto_decompress": False, "keepalive_timeout": HEADER_TIMEOUT, "max_headers": MAX_HEADERS,
            "max_line_size": MAX_HEADER_LINE, "max_field_size": MAX_HEADER_LINE, "lingering_time": 2.0}


class InflateError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def inflate_sync(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress `data`, refusing (413) once the output would pass `limit` bytes; never holds more than
    `limit + INFLATE_CHUNK` bytes of output."""
    inflater = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    pending = data
    try:
        while True:
            chunk = inflater.decompress(pending, INFLATE_CHUNK)
            size += len(chunk)
            if size > limit:
                raise InflateError(413, f"the decompressed body is larger than the limit of {limit} bytes")
            out.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not chunk):
                break
    except zlib.error as exc:
        raise InflateError(400, f"invalid compressed body: {exc}") from None
    if not inflater.eof:
        raise InflateError(400, "invalid compressed body: the stream ends early")
    if inflater.unused_data:
        raise InflateError(400, "invalid compressed body: bytes after the end of the stream")
    return b"".join(out)


class Inflater:
    """Bounded concurrency for decompression; large bodies are inflated off the event loop."""

    def __init__(self, concurrency: int = INFLATE_CONCURRENCY) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def inflate(self, data: bytes, encoding: str, limit: int) -> bytes:
        # zlib releases the GIL while it inflates, so a worker thread keeps the loop free; the semaphore
        # bounds the threads (and the memory: each holds at most limit + INFLATE_CHUNK of output).
        wbits = ENCODINGS[encoding]
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(None, inflate_sync, data, wbits, limit)


def loads_limited(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses nesting deeper than `max_depth` (ValueError, a 400 for callers)."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for name in item:
                    _check_text(name)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | str))
    return data


def _check_text(text: str) -> None:
    """JSON may spell a lone UTF-16 surrogate ("\\ud800"); `json.loads` returns it in a str that no UTF-8
    encoder accepts, so a value, set element or key holding one failed later, deep in the store, as a 500
    (found by review). Refused here, at the one JSON edge, as a 400."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"a string holds a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X}); "
                         "send valid Unicode") from None


def _json_error(status: int, message: str) -> web.HTTPException:
    exc = web.HTTPException(text=json.dumps({"error": message}), content_type="application/json")
    exc.set_status(status)
    return exc


class BodyBudget:
    """Bytes of large request bodies being held, in all and per client address (see the module docstring).

    Two counts, because a declared length costs nothing until its bytes arrive: a client address RESERVES
    each body's declared length (`reserve`, refused past `per_client`: what one address may claim is known
    before a byte is read), while the total counts bytes that ARRIVED (`charge`, as the body is read, refused
    past `total`). When the total counted declared lengths, 16 header-only connections from 4 addresses held
    all 64 MiB for 30 s and every other client's large body got 503 (review)."""

    def __init__(self, total: int = MAX_BODY_BYTES_IN_FLIGHT, per_client: int = MAX_BODY_BYTES_PER_CLIENT) -> None:
        self.total = total
        self.per_client = per_client
        self.used = 0  # arrived bytes, in all
        self.by_client: Counter[str] = Counter()  # reserved (declared) bytes, per client address

    def reserve(self, client: str, size: int) -> bool:
        if self.by_client[client] + size > self.per_client:
            return False
        self.by_client[client] += size
        return True

    def charge(self, size: int) -> bool:
        if self.used + size > self.total:
            return False
        self.used += size
        return True

    def release(self, client: str, reserved: int, charged: int) -> None:
        self.used -= charged
        self.by_client[client] -= reserved
        if self.by_client[client] <= 0:
            del self.by_client[client]


def _busy() -> web.HTTPException:
    busy = _json_error(503, "too many large request bodies in flight (from this client or in all); retry shortly")
    busy.headers["Retry-After"] = "1"
    return busy


def refuse_before_body(check: PreBodyCheck, handler: Handler) -> Handler:
    """`handler`, marked so that `guard_middleware` runs `check` after access control and before it reads the
    body: a response `check` returns, or an HTTPException it raises, is the answer (the body is never read;
    aiohttp discards what the client still sends, within its lingering time). `check` must be cheap and must
    not read the body. On a peer route with a keyring, access control is the sealed body: `check` must then
    answer only requests whose headers prove membership (io/peer_ticket.py), see `expect_refusal`."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    setattr(guarded, _PRE_BODY, check)  # a marker the guard looks for
    return guarded


def expect_refusal(check: PreBodyCheck) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An `expect_handler` for a route (`web.post(path, handler, expect_handler=...)`): a client that sends
    `Expect: 100-continue` and waits for it (peers do, under a byte budget) gets `check`'s refusal instead,
    and never sends the body: a "retry later" costs neither side the body's bytes on the wire nor the
    asker's budget. Otherwise "100 Continue", as aiohttp's default does.

    Access control comes first, as on every other path: aiohttp runs this before the middlewares, so it runs
    the app's `ApiAuth` (`API_AUTH`, set by the app's builder) itself, and a client it refuses gets its 401/403
    (a peer route with a TLS CA: no verified client certificate). Peer routes with a keyring are proved by the
    sealed body: `check` must then refuse only requests whose headers prove membership (io/peer_ticket.py)
    and let any other one through to its body, which is authenticated before anything else is done."""

    async def handler(request: web.Request) -> web.StreamResponse | None:
        auth = request.app.get(API_AUTH)
        if auth is not None:
            try:
                auth.check(request)
            except web.HTTPException as exc:
                request.app[HTTP_STATS][f"auth_{exc.status}"] += 1
                raise
        refusal = check(request)
        if refusal is not None:
            request.app[HTTP_STATS]["refused_before_body"] += 1
            return refusal
        expect = request.headers.get("Expect", "")
        if request.version == HttpVersion11:
            if expect.lower() != "100-continue":
                raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect[:64]}")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # (the response's own bytes start now)
        return None

    return handler


def guard_middleware(auth: ApiAuth, inflater: Inflater, max_body: int,
                     budget: BodyBudget | None = None) -> Middleware:
    """Authenticate, then read (and, on user routes, inflate) the body within its time and size bounds,
    all before the handler runs; the handler finds the body in `request.read()` or `request[BODY]`."""

    bodies = budget or BodyBudget()

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        stats = request.app[HTTP_STATS]
        try:
            kind = auth.check(request)
        except web.HTTPException as exc:
            stats[f"auth_{exc.status}"] += 1
            raise
        if request.content_length is not None and request.content_length > max_body:
            stats["body_too_large"] += 1
            raise _json_error(413, f"the request body is {request.content_length} bytes; the limit is {max_body}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity" and (kind is RouteClass.PEER or encoding not in ENCODINGS):
            stats["encoding_refused"] += 1
            raise _json_error(415, f"Content-Encoding {encoding[:32]!r} is not accepted here"
                                   + (" (peers compress inside the sealed frame)" if kind is RouteClass.PEER
                                      else f"; use one of {', '.join(sorted(ENCODINGS))} or none"))
        check: PreBodyCheck | None = getattr(request.match_info.handler, _PRE_BODY, None)
        if check is not None:
            try:
                refusal = check(request)
            except web.HTTPException:
                stats["refused_before_body"] += 1
                raise
            if refusal is not None:
                stats["refused_before_body"] += 1
                return refusal
        if not request.body_exists or request.method in ("GET", "HEAD"):
            return await handler(request)
        size = max_body if request.content_length is None else request.content_length
        reserved = size if size > SMALL_BODY else 0
        client = request.remote or "?"
        if reserved and not bodies.reserve(client, reserved):
            stats["body_budget"] += 1
            raise _busy()
        charged = 0
        try:
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    chunks = bytearray()
                    while chunk := await request.content.readany():
                        if len(chunks) + len(chunk) > max_body:
                            raise web.HTTPRequestEntityTooLarge(max_size=max_body,
                                                                actual_size=len(chunks) + len(chunk))
                        chunks += chunk
                        # Bytes past SMALL_BODY are charged as they arrive (a small body never waits for
                        # budget; one that grows past it pays for what it holds).
                        due = len(chunks) - charged if len(chunks) > SMALL_BODY else 0
                        if due and not bodies.charge(due):
                            stats["body_budget"] += 1
                            raise _busy()
                        charged += due
                    raw = bytes(chunks)
                    del chunks
                    request._read_bytes = raw  # what request.read() returns to the handler (aiohttp's cache)
            except TimeoutError:
                stats["body_timeout"] += 1
                raise _json_error(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s") from None
            except web.HTTPRequestEntityTooLarge:
                stats["body_too_large"] += 1
                raise _json_error(413, f"the request body is larger than the limit of {max_body} bytes") from None
            except ConnectionResetError:
                # The client hung up mid-body: counted, not a logged traceback per connection (log flooding).
                stats["body_aborted"] += 1
                raise _json_error(400, "the connection closed before the body arrived") from None
            if encoding != "identity":
                try:
                    request[BODY] = await inflater.inflate(raw, encoding, max_body)
                except InflateError as exc:
                    stats["inflate_refused"] += 1
                    raise _json_error(exc.status, str(exc)) from None
            return await handler(request)
        finally:
            if reserved or charged:
                bodies.release(client, reserved, charged)

    return guard


class StallRule:
    """The progress rule for one large response (see the module docstring), as a pure function of the time
    and the bytes the client has taken: at the end of each `window` seconds, a client that took fewer than
    `min_bytes` in it has stalled; one that took more starts a new window. A rule on progress rather than on
    the whole response's time: a deadline on the whole cut off honest slow readers (16 MiB at 256 KiB/s takes
    64 s, past a 30 s deadline), while a client that stops taking is let go within a window or two whatever
    the response's size."""

    __slots__ = ("min_bytes", "taken_before", "window", "window_end")

    def __init__(self, now: float, *, window: float, min_bytes: int) -> None:
        self.window = window
        self.min_bytes = min_bytes
        self.window_end = now + window
        self.taken_before = 0  # bytes taken when the current window opened

    def stalled(self, now: float, taken: int) -> bool:
        """Whether the client has stalled, seen at `now` having taken `taken` bytes in all; before the
        window's end always False (the writer asks again at `window_end`)."""
        if now < self.window_end:
            return False
        if taken - self.taken_before < self.min_bytes:
            return True
        self.taken_before = taken
        self.window_end = now + self.window
        return False


# The ioctl that reads a TCP socket's send queue (bytes written but not yet acknowledged by the peer): Linux's
# SIOCOUTQ, which is TIOCOUTQ. Elsewhere only the transport's own buffer counts as not taken.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None


def unsent_bytes(transport: asyncio.Transport) -> int:
    """Bytes written to `transport` that its client has not taken yet: those in the transport's buffer plus
    those in the kernel's send queue (which would otherwise count as taken although nobody read them: a
    loopback socket's send buffer alone grows to a few MiB)."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile (fileno -1): the write finds out
            unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    return unsent


def reset(transport: asyncio.Transport) -> None:
    """Close the connection and drop every byte not yet taken, the kernel's too: a plain close (or the
    transport's abort) leaves the send queue for the kernel to deliver, to a client that does not read, for
    as long as TCP keeps an orphaned connection; a zero linger time makes the close a reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(eq=False)
class HeldResponse:
    """A large response holding room in a `ResponseBudget` (compared by identity): its size, since when (loop
    time), and, once its writer starts (`_write_progressing`), how many bytes its client has taken and how to
    reset its connection; `preempted` once the budget reset it to make room (its room given back then)."""

    size: int
    since: float
    taken: Callable[[], int] = lambda: 0
    cut: Callable[[], None] | None = None
    preempted: bool = False


class ResponseBudget:
    """Bytes of large response bodies being written, in all (`MAX_LARGE_RESPONSE_BYTES`, read when asked unless
    set, so tests may shorten it), and of those waiting for room (`MAX_WAITING_RESPONSE_BYTES`): see the
    constants. Not per address, so honest concurrent readers behind one address share the whole of it; a
    response that waits past `RESPONSE_PREEMPT_AFTER` resets the slowest holder below `PREEMPT_RATE`
    (`_preempt`), so slow clients cannot keep the room from others."""

    def __init__(self, total: int | None = None, waiting: int | None = None) -> None:
        self._total = total
        self._waiting = waiting
        self.used = 0
        self.waiting = 0
        self.preempted = 0
        self._held: dict[HeldResponse, None] = {}
        self._freed = asyncio.Event()

    @property
    def total(self) -> int:
        return MAX_LARGE_RESPONSE_BYTES if self._total is None else self._total

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.total

    async def take(self, size: int, wait: float, held: HeldResponse | None = None) -> bool:
        """Hold `size` bytes, waiting up to `wait` seconds for room (past `RESPONSE_PREEMPT_AFTER` of it,
        resetting slow holders to make some); False if there was none. `held` (its size `size`) registers the
        response as one that may be reset so: give it back with `give_back(size, held)`."""
        if not self._fits(size):
            if self.waiting + size > (MAX_WAITING_RESPONSE_BYTES if self._waiting is None else self._waiting):
                return False
            self.waiting += size
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            preempt_at = loop.time() + RESPONSE_PREEMPT_AFTER
            try:
                while not self._fits(size):
                    now = loop.time()
                    if now >= deadline:
                        return False
                    if now >= preempt_at and self._preempt(now, size):
                        continue
                    # Past preempt_at, looked at again every 1/4 s: holders grow old enough, or slow, meanwhile.
                    pause = min(preempt_at, deadline) - now if now < preempt_at else min(0.25, deadline - now)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await self._freed.wait()
            finally:
                self.waiting -= size
        self.used += size
        if held is not None:
            held.since = asyncio.get_running_loop().time()  # (its rate counts from here, not from its wait)
            self._held[held] = None
        return True

    def _preempt(self, now: float, size: int) -> bool:
        """Make room for a waiting response of `size` bytes by resetting the holders whose clients take slowest,
        each below `PREEMPT_RATE` bytes a second over the time it has held its room (at least
        `RESPONSE_PREEMPT_AFTER`), slowest first and only as many as it needs; their room is given back at once.
        None is reset unless those it may reset would make it fit (else honest slow readers were reset for a
        response that still got its 503: review); False then."""
        slow = []
        for held in self._held:
            age = now - held.since
            if held.cut is not None and age >= RESPONSE_PREEMPT_AFTER and (rate := held.taken() / age) < PREEMPT_RATE:
                slow.append((rate, held))
        slow.sort(key=lambda pair: pair[0])
        freed, victims = 0, 0
        for _, held in slow:
            freed += held.size
            victims += 1
            if self.used - freed == 0 or self.used - freed + size <= self.total:
                break
        else:
            return False
        for _, held in slow[:victims]:
            del self._held[held]
            held.preempted = True
            self.preempted += 1
            self.used -= held.size  # its body is dropped with its connection; counted once, here
            assert held.cut is not None
            held.cut()
        self._wake()  # (other waiters may fit in what is left)
        return True

    def give_back(self, size: int, held: HeldResponse | None = None) -> None:
        if held is not None:
            if held.preempted:
                return  # given back when it was reset
            self._held.pop(held, None)
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()


def stream_large_responses(budget: ResponseBudget | None = None) -> Middleware:
    """Write every response the handler returned or raised and did not prepare itself under the `StallRule`
    (`STALL_WINDOW`, `STALL_MIN_BYTES`, read when a request comes, so tests may shorten them); a client that
    stalls has its connection reset (`reset`), counted as `response_stalled`.

    aiohttp would write a handler's `web.Response` after the middlewares return, in one transport write that
    copies the unsent rest of the body into the transport's buffer, and wait, untimed, while the client's
    socket buffers are full. A large one (a body over `SMALL_BODY`) goes out here as a `StreamResponse` with
    its length set, in chunks, each written when the transport has room, within `budget` (`ResponseBudget`:
    else 503, `response_budget`) and with the connection's kernel send buffer clamped to
    `LARGE_RESPONSE_SNDBUF`: while the client is not taking, the agent holds the rendered body and at most a
    chunk or two in the transport (its high-water mark), and only until the rule lets the client go. Small
    ones, errors (HTTPExceptions, written here and raised again for aiohttp, which finds them written) and
    HEAD answers are written here whole (`_write_small`): left to aiohttp, 128 connections that pipelined 100
    GETs of a 64 KiB value each and never read held 342 MiB of kernel send queue for as long as they liked
    (review). Responses the handler prepared itself (watch streams, peers' answers) are timed where written."""

    large = budget or ResponseBudget()

    @web.middleware
    async def stream(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _write_small(request, exc)
            raise
        if response.prepared:
            return response
        if not _streamable(request, response):
            await _write_small(request, response)
            return response
        assert isinstance(response, web.Response)
        rendered = response.body
        assert isinstance(rendered, bytes | bytearray)
        size = len(rendered)
        if route_class(request.method, request.path) is RouteClass.PEER:
            # A member's answer (membership push-pull, bounded by the protocol) is not held to the clients' cap,
            # which clients could fill (a push-pull's 10 s stream timeout ends before the cap's wait would), but
            # must be taken at a member's pace, as the state service's answers are.
            streamed, body = _as_stream(response)
            del response, rendered  # the body lives in `body` only, emptied once the body is all written
            await _write_progressing(request, streamed, body, min_bytes=PEER_STALL_MIN_BYTES)
            return streamed
        held = HeldResponse(size, asyncio.get_running_loop().time())
        if not await large.take(size, RESPONSE_BUDGET_WAIT, held):
            del response, rendered
            request.app[HTTP_STATS]["response_budget"] += 1
            busy = _json_error(503, "too many large responses are being written (the agent's limit is "
                                    f"{large.total} bytes in all); retry shortly")
            busy.headers["Retry-After"] = "1"
            await _write_small(request, busy)
            raise busy
        try:
            streamed, body = _as_stream(response)
            del response, rendered  # as above
            await _write_progressing(request, streamed, body, held=held)
        finally:
            large.give_back(size, held)
            if held.preempted:
                request.app[HTTP_STATS]["response_preempted"] += 1
        return streamed

    return stream


def _as_stream(response: web.Response) -> tuple[web.StreamResponse, list[memoryview]]:
    """`response` as the `StreamResponse` `_write_progressing` writes (its status, headers and length) and its
    body in the one-item list the writer empties; the caller then drops its own references to the body."""
    assert isinstance(response.body, bytes | bytearray)
    streamed = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
    streamed.content_length = len(response.body)
    return streamed, [memoryview(response.body)]


async def _write_small(request: web.Request, response: web.StreamResponse) -> None:
    """Prepare and finish `response` (not prepared yet) under the stall rule, without waiting for the client
    to take it: a write the transport takes without pausing goes at once, in this step (a client that reads
    adds no latency); one that has to wait, because the client is not taking, is watched, and a client that
    takes less than `STALL_MIN_BYTES` in a `STALL_WINDOW` (its earlier answers' bytes count) is reset."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return  # the client is gone already: aiohttp finds that out itself
    body = response.body if isinstance(response, web.Response) else None
    head = 1024 + sum(len(name) + len(value) + 4 for name, value in response.headers.items())
    size = len(body) if isinstance(body, bytes | bytearray) else None
    fits = (size is not None and not response.compression
            and transport.get_write_buffer_size() + size + head <= _pause_threshold(transport))

    async def write() -> None:
        await response.prepare(request)
        await response.write_eof()

    try:
        if fits:
            # The transport takes it without pausing, so the write cannot wait on the client.
            await write()
            return
        loop = asyncio.get_running_loop()
        rule = StallRule(loop.time(), window=STALL_WINDOW, min_bytes=STALL_MIN_BYTES)
        writer = request.writer
        before, written = unsent_bytes(transport), writer.output_size
        if await _progressing(write(), rule, lambda: before + writer.output_size - written - unsent_bytes(transport)):
            return
        request.app[HTTP_STATS]["response_stalled"] += 1
        reset(transport)  # aiohttp's own write_eof then finds the connection closed
    except ConnectionError:
        pass  # the client hung up: aiohttp's write_eof finds the connection closed, as it would have


async def _progressing(step: Awaitable[None], rule: StallRule, taken: Callable[[], int]) -> bool:
    """Await `step` (a write, which waits while the transport is full); False if the client stalled under
    `rule`, seen through `taken` (the bytes it has taken so far), at each window's end."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(step)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, rule.window_end - loop.time()))
            if rule.stalled(loop.time(), taken()):
                return False
            if done:
                task.result()
                return True
    finally:
        if not task.done():  # stalled, or the handler was cancelled (the server shuts down)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task


async def write_under_stall_rule(request: web.Request, response: web.StreamResponse, held: list[bytes], *,
                                 min_bytes: int | None = None) -> None:
    """Write the body `held` holds (its one item, taken out as the writing starts) as `response` (its length
    set here), as `stream_large_responses` writes a handler's large answer, and return when the client has
    taken it all or the stall rule has let it go: for a handler that must know when its answer is no longer
    held (the state service's answer budget for peers' answers). `min_bytes` is the rule's floor per window
    for this write (None: `STALL_MIN_BYTES`; peers: `PEER_STALL_MIN_BYTES`)."""
    response.content_length = len(held[0])
    body = [memoryview(held.pop())]
    await _write_progressing(request, response, body, min_bytes=min_bytes)


def _streamable(request: web.Request, response: web.StreamResponse) -> bool:
    """A response `stream_large_responses` writes itself: an unprepared plain `web.Response` whose body is
    more than `SMALL_BODY` bytes, sent as is (not compressed, not chunked, no cookies to carry over)."""
    if not isinstance(response, web.Response) or response.prepared or request.method == "HEAD":
        return False
    body = response.body
    return (isinstance(body, bytes | bytearray) and len(body) > SMALL_BODY and not response.chunked
            and not response.compression and not response.cookies and response.status not in (204, 304))


async def _write_progressing(request: web.Request, response: web.StreamResponse, body_holder: list[memoryview], *,
                             min_bytes: int | None = None, held: HeldResponse | None = None) -> None:
    """Write the body `body_holder` holds (its one item, taken out once written: from then on the transport and
    the kernel hold what the client has not taken, and the agent no longer holds the rendered body too). `held`:
    its room in the `ResponseBudget`, told how much the client has taken and how to reset the connection."""
    body = body_holder.pop()
    transport = request.transport
    if transport is None:
        return  # the client is gone already
    loop = asyncio.get_running_loop()
    rule = StallRule(loop.time(), window=STALL_WINDOW, min_bytes=STALL_MIN_BYTES if min_bytes is None else min_bytes)
    handed = 0  # body bytes given to the transport
    _clamp_send_buffer(transport)
    if held is not None:
        held.taken = lambda: handed - unsent_bytes(transport)
        held.cut = lambda: reset(transport)

    def progressing(step: Awaitable[None]) -> Awaitable[bool]:
        # (an earlier answer's tail going out counts too)
        return _progressing(step, rule, lambda: handed - unsent_bytes(transport))

    try:
        await response.prepare(request)
        chunk = RESPONSE_CHUNK
        size = len(body)
        room = _pause_threshold(transport)
        # aiohttp sends the head with the first piece: counted (generously) as part of that write, which is
        # shorter by as much so that it too may go at once.
        head = 1024 + sum(len(name) + len(value) + 4 for name, value in response.headers.items())
        offset = 0
        while offset < size:
            extra = head if offset == 0 else 0
            step = min(chunk, room - extra) if extra and room > extra else chunk
            # A copy: a slice would keep the whole body alive in a transport (uvloop's) that keeps it unsent.
            piece = bytes(body[offset:offset + step])
            offset += len(piece)
            handed += len(piece)
            if transport.get_write_buffer_size() + len(piece) + extra <= room:
                # The transport takes it without pausing, so the write cannot wait on the client: written in
                # this step, with no task and no turn of the loop, while the socket takes what comes. Without
                # this, 50 requests for a 2.7 MiB listing were all rendered before any was handed over: +142 MiB.
                await response.write(piece)
            elif not await progressing(response.write(piece)):
                break
        else:
            del body, piece  # all handed over (the transport copies what the socket does not take at once)
            # Written is not taken: the kernel's send queue grows to a few MiB per connection (50 clients
            # that never read a 2.7 MiB listing held 133 MiB there, for as long as they kept the connections).
            # The answer is done when the client has taken it all, or the rule lets it go.
            if await progressing(response.write_eof()) and await progressing(_until_taken(transport)):
                # All taken: a kept-alive connection's send buffer goes back to every connection's clamp (the
                # large answer's stayed, doubling what pipelined small answers could queue there: review).
                _clamp_send_buffer(transport, CLIENT_SNDBUF)
                return
        request.app[HTTP_STATS]["response_stalled"] += 1
        reset(transport)  # aiohttp's own write_eof then finds the connection closed
    except ConnectionError:
        pass  # the client hung up: aiohttp's write_eof finds the connection closed, as it would have


def _clamp_send_buffer(transport: asyncio.Transport, size: int | None = None) -> None:
    """Cap the connection's kernel send buffer at `size` (None: `LARGE_RESPONSE_SNDBUF`; setting it stops its
    autotuning): a client that takes slowly, above the stall floor, otherwise had the kernel hold up to
    ~2.6 MiB for it, and one that never reads its pipelined small answers ~3.7 MiB for a stall window."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LARGE_RESPONSE_SNDBUF if size is None else size)


def _pause_threshold(transport: asyncio.Transport) -> int:
    """The transport's write buffer size past which it pauses its writer (its high-water mark; 0 if unknown:
    then every write is watched)."""
    try:
        return int(transport.get_write_buffer_limits()[1])
    except (AttributeError, NotImplementedError, TypeError, IndexError):
        return 0


async def _until_taken(transport: asyncio.Transport) -> None:
    """Return once the client has taken every byte written to `transport` (or the connection is closing):
    polled, every millisecond at first and at most every 1/4 s (a reader that keeps up is done at once, and a
    connection's next request waits for this)."""
    pause = 0.001
    while not transport.is_closing() and unsent_bytes(transport) > 0:
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.25)


async def request_body(request: web.Request) -> bytes:
    """The request body as the handler should see it (inflated when it was compressed)."""
    if BODY in request:
        return request[BODY]
    return await request.read()


class ConnectionGuard:
    """Caps open connections, in total and per client address; counts what it refused."""

    def __init__(self, max_total: int = MAX_CONNECTIONS, max_per_client: int = MAX_CONNECTIONS_PER_CLIENT) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.per_client: Counter[str] = Counter()
        self.refused = 0
        self._open: dict[object, str] = {}

    def admit(self, handler: object, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if len(self._open) >= self.max_total or self.per_client[client] >= self.max_per_client:
            self.refused += 1
            return False
        self._open[handler] = client
        self.per_client[client] += 1
        return True

    def release(self, handler: object) -> None:
        client = self._open.pop(handler, None)
        if client is not None:
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def attach(self, server: web.Server) -> None:
        """Wrap the server's connection bookkeeping (the only per-connection hook aiohttp offers)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if not self.admit(handler, transport):
                handler.force_close()
            else:
                _clamp_send_buffer(transport, CLIENT_SNDBUF)  # before a byte is written to it

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.release(handler)
            lost(handler, exc)

        setattr(server, "connection_made", connection_made)  # noqa: B010 - instance override on purpose
        setattr(server, "connection_lost", connection_lost)  # noqa: B010


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server refuses connections over `ConnectionGuard`'s caps."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard or ConnectionGuard()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        self.guard.attach(server)
        return server


@dataclass(eq=False)
class WatchSlot:
    """One open watch. `holder` is what fair share counts by: the token when there is one, else the address."""

    address: str
    holder: str
    write: bool
    on_evict: Callable[[], None]
    evicted: bool = False


class WatchRefused(Exception):
    """No slot for this watch: `status` 429 (over a per-client cap) or 503 (full), `reason` for the metric."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class WatchSlots:
    """The watch slots of one stream kind and who holds them (the policy is in the module docstring).

    Pure bookkeeping: `acquire` decides, and ends an evicted watch only through its `on_evict` callback (the
    stream's handler then writes its last line and closes)."""

    def __init__(self, total: int, per_address: int, what: str = "watches") -> None:
        self.total = total
        self.per_address = per_address
        self.what = what
        self.evictions = 0
        self._slots: dict[WatchSlot, None] = {}  # insertion-ordered: oldest first
        self._by_address: Counter[str] = Counter()
        self._by_holder: Counter[str] = Counter()
        self._write = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def per_token(self) -> int:
        return max(self.per_address, self.total // WATCH_TOKEN_SHARE)

    @property
    def write_reserve(self) -> int:
        return self.total // WATCH_WRITE_RESERVE_SHARE

    def held_by(self, address: str) -> int:
        return self._by_address[address]

    def acquire(self, address: str, caller: Caller = OPEN,
                on_evict: Callable[[], None] = lambda: None) -> WatchSlot:
        """A slot for a watch from `address` by `caller`, or WatchRefused; may evict another watch first."""
        tokens = caller.token is not None
        holder = f"token:{caller.token}" if tokens else f"address:{address}"
        if self._by_address[address] >= self.per_address:
            raise WatchRefused(429, "watch_address", f"too many {self.what} from {address} (limit "
                                                     f"{self.per_address} per client address)")
        if tokens and self._by_holder[holder] >= self.per_token:
            raise WatchRefused(429, "watch_token", f"too many {self.what} with this token (limit "
                                                   f"{self.per_token} per client token)")
        if not self._room(tokens, caller.write):
            victim = self._fair_share_victim(holder, tokens and not caller.write)
            if victim is None:
                detail = f"limit {self.total}" + (f", {self.write_reserve} of them kept for write-scope tokens"
                                                  if tokens and not caller.write else "")
                raise WatchRefused(503, "watch_full", f"too many {self.what} ({detail}); retry later")
            self.release(victim)
            victim.evicted = True
            self.evictions += 1
            victim.on_evict()
        slot = WatchSlot(address, holder, caller.write, on_evict)
        self._slots[slot] = None
        self._by_address[address] += 1
        self._by_holder[holder] += 1
        self._write += slot.write
        return slot

    def release(self, slot: WatchSlot) -> None:
        """The watch ended (idempotent: an evicted watch's handler releases it again)."""
        if slot not in self._slots:
            return
        del self._slots[slot]
        self._write -= slot.write
        for counts, name in ((self._by_address, slot.address), (self._by_holder, slot.holder)):
            counts[name] -= 1
            if counts[name] <= 0:
                del counts[name]

    def clear(self) -> None:
        self._slots.clear()
        self._by_address.clear()
        self._by_holder.clear()
        self._write = 0

    def _room(self, tokens: bool, write: bool) -> bool:
        if len(self._slots) >= self.total:
            return False
        return not tokens or write or len(self._slots) - self._write < self.total - self.write_reserve

    def _fair_share_victim(self, holder: str, read_only: bool) -> WatchSlot | None:
        """The oldest watch of the busiest holder, if it holds at least two more than `holder`; a read-scope
        newcomer (`read_only`) only competes with read-scope watches."""
        counts: Counter[str] = Counter()
        oldest: dict[str, WatchSlot] = {}
        for slot in self._slots:  # oldest first
            if read_only and slot.write:
                continue
            counts[slot.holder] += 1
            oldest.setdefault(slot.holder, slot)
        if not counts:
            return None
        # The most slots wins; among equals, the one whose oldest watch is oldest (dicts keep that order).
        busiest = max(oldest, key=lambda h: counts[h])
        if self._by_holder[holder] + 1 < counts[busiest]:
            return oldest[busiest]
        return None


def caller_of(request: web.Request) -> Caller:
    """Who sent `request` (set by `ApiAuth.check`; an open API, or an app without the guard, is OPEN)."""
    caller = request.get(CALLER)
    return caller if isinstance(caller, Caller) else OPEN


async def write_stream(response: web.StreamResponse, data: bytes) -> None:
    """Write `data` to a streaming response; TimeoutError when the client has not taken it within
    `STREAM_WRITE_TIMEOUT` (read when called, so tests may shorten it)."""
    await asyncio.wait_for(response.write(data), STREAM_WRITE_TIMEOUT)


def count_watch(request: web.Request, key: str) -> None:
    """Count a watch refusal (`watch_*`) or eviction (`evicted_<stream>`) in the app's HTTP stats."""
    stats = request.app.get(HTTP_STATS)
    if stats is not None:
        stats[key] += 1


class HttpCollector(Collector):
    """`gossip_http_refused_total{reason}`: requests and connections the guard refused (read on scrape)."""

    def __init__(self, stats: Counter[str], guard: ConnectionGuard) -> None:
        self.stats = stats
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("gossip_http_refused", "HTTP requests and connections refused, by reason "
                                     "(auth_401, auth_403, encoding_refused, body_too_large, body_timeout, "
                                     "body_budget, body_aborted, inflate_refused, connection_cap, "
                                     "response_stalled (a client took less than 16 KiB of its responses in 10 s "
                                     "while one waited: the connection was closed), response_budget (a large "
                                     "response waited for room under the agent's cap on large responses being "
                                     "written, then got 503), response_preempted (a large response whose client "
                                     "took it too slowly was reset to make room for one that waited), "
                                     "watch_address, watch_token, watch_full, refused_before_body: a route's "
                                     "retry-later answered before the body was read).", labels=["reason"])
        evicted = CounterMetricFamily("gossip_watch_evicted", "Watches ended to give their slot to a client "
                                      "holding fewer (fair share), by stream (members, kv).", labels=["stream"])
        downgraded = CounterMetricFamily("gossip_critical_downgraded", "Writes that asked for ?priority=critical "
                                         "and were made as normal ones: over state.criticalWritesPerSecond (for "
                                         "the agent, or half of it for one client).")
        downgraded.add_metric([], self.stats.get("critical_downgraded", 0))
        for reason, count in sorted(self.stats.items()):
            if reason.startswith("evicted_"):
                evicted.add_metric([reason.removeprefix("evicted_")], count)
            elif reason == "critical_downgraded":
                continue
            else:
                family.add_metric([reason], count)
        family.add_metric(["connection_cap"], self.guard.refused)
        yield family
        yield evicted
        yield downgraded
        yield GaugeMetricFamily("gossip_http_connections", "Open HTTP connections.",
                                value=sum(self.guard.per_client.values()))
