"""Stream (HTTP) exchanges with peers: push-pull sync, the TCP fallback probe, and a generic sealed
exchange for extensions (e.g. Merkle anti-entropy).

Every body is sealed by `Security` (stream purpose) both ways, so with a keyring a peer without the key is
neither answered nor believed. Every call has a total timeout (`membership.streamTimeout`) and a size cap
on the answer, checked from Content-Length and while reading, before the body is held in memory.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from gossip_agent.core import codec
from gossip_agent.core.messages import Ack, Address, Packet, Ping, PushPullState
from gossip_agent.io.peer_ticket import TICKET_HEADER, make_ticket
from gossip_agent.io.security import AuthError, Purpose, Security

PUSH_PULL_PATH = "/v1/internal/pushpull"
PING_PATH = "/v1/internal/ping"
MAX_PUSH_PULL_BYTES = 4 * 1024 * 1024
_OCTETS = "application/octet-stream"


class PeerError(Exception):
    """A stream exchange failed; `reason` labels metrics (timeout, refused, connect, status, busy, auth,
    decode, too_large)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# What a "retry later" answer may ask us to wait, at most (a peer's header is input like any other).
MAX_RETRY_AFTER = 60.0
DEFAULT_RETRY_AFTER = 1.0
# Retry-After is whole seconds (RFC 9110), too coarse for a byte budget that refills within a fraction of one:
# agents also send the wait in milliseconds here, and agents that read it wait only that long.
RETRY_AFTER_MS_HEADER = "X-Gossip-Retry-After-Ms"


class PeerBusy(PeerError):
    """The peer answered "retry later" (HTTP 429: its byte budget has no room now; 503: it serves as many
    requests as it may). Nothing is wrong with the peer: callers defer, they do not count a failure.
    `retry_after`: seconds the peer asked for (its Retry-After header, bounded)."""

    def __init__(self, status: int, retry_after: float, *, precise: bool = False, body_sent: bool = True) -> None:
        super().__init__("busy", f"HTTP {status}, retry after {retry_after:g} s")
        self.status = status
        self.retry_after = retry_after
        self.precise = precise  # from RETRY_AFTER_MS_HEADER (else whole seconds, rounded up)
        # Whether our body went: False only when the peer refused an `Expect: 100-continue` before it agreed
        # (a peer that said "100 Continue", read the body and then 429 got it: its bytes stay spent).
        self.body_sent = body_sent


class _Body(aiohttp.BytesPayload):
    """A request body that records whether it was written: with `Expect: 100-continue` it goes only once the
    peer agreed, and a "retry later" that came instead means it never went."""

    sent = False

    async def write(self, writer: Any) -> None:
        self.sent = True
        await super().write(writer)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        self.sent = True
        await super().write_with_length(writer, content_length)


def parse_retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds only; a date or garbage gets the default), within
    [0, MAX_RETRY_AFTER]."""
    text = (value or "").strip()
    if not text or len(text) > 6 or not (text.isascii() and text.isdigit()):
        return DEFAULT_RETRY_AFTER
    return min(MAX_RETRY_AFTER, float(int(text)))


def parse_retry_after_ms(value: str | None) -> float | None:
    """Seconds from RETRY_AFTER_MS_HEADER (an integer of milliseconds), within [0, MAX_RETRY_AFTER]; None when
    absent or not one (then Retry-After counts)."""
    text = (value or "").strip()
    if not text or len(text) > 9 or not (text.isascii() and text.isdigit()):
        return None
    return min(MAX_RETRY_AFTER, int(text) / 1000)


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, but never more than `limit` bytes held (PeerError too_large past it)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PeerError("too_large", f"more than {limit} bytes")
        chunks.append(chunk)


class PeerClient:
    def __init__(self, security: Security, *, timeout: float, ssl_context: ssl.SSLContext | None = None,
                 max_connections: int = 16) -> None:
        self.security = security
        self.timeout = timeout
        self._ssl = ssl_context
        self._scheme = "https" if ssl_context is not None else "http"
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One pooled session; short keep-alive so an idle agent holds few sockets.
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=5.0,
                                         ssl=self._ssl if self._ssl is not None else False)
        self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, addr: Address, path: str) -> str:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        return f"{self._scheme}://{host}:{addr[1]}{path}"

    async def exchange(self, addr: Address, path: str, body: bytes, *, max_bytes: int,
                       timeout: float | None = None, expect_continue: bool = False, ticket: bool = False,
                       headers: Mapping[str, str] | None = None,
                       answer_headers: dict[str, str] | None = None) -> bytes:
        """POST a sealed body, return the opened answer (at most `max_bytes`). Raises PeerError only.
        `expect_continue`: send the headers first (`Expect: 100-continue`) and the body only once the peer
        agrees, so a "retry later" costs one round trip instead of the body (io/http_limits.expect_refusal).
        `ticket`: with a keyring, prove membership in the headers too (io/peer_ticket.py), so the peer may
        answer before the body (it answers that only to members). `headers`: more request headers;
        `answer_headers`: the answer's values of the headers named by its keys are put in it (hints from the
        peer, input like any other: callers check them)."""
        if self._session is None:
            raise PeerError("closed")
        sealed = _Body(self.security.seal(body, Purpose.STREAM), content_type=_OCTETS)
        limit = max_bytes + 64  # the envelope
        sent_headers = {**(headers or {}), "Content-Type": _OCTETS}
        proof = make_ticket(self.security, "POST", path, addr) if ticket else None
        if proof is not None:
            sent_headers[TICKET_HEADER] = proof
        try:
            async with self._session.post(
                    self.url(addr, path), data=sealed, headers=sent_headers, expect100=expect_continue,
                    timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                if resp.status in (429, 503):
                    precise = parse_retry_after_ms(resp.headers.get(RETRY_AFTER_MS_HEADER))
                    if precise is not None:
                        raise PeerBusy(resp.status, precise, precise=True, body_sent=sealed.sent)
                    raise PeerBusy(resp.status, parse_retry_after(resp.headers.get("Retry-After")),
                                   body_sent=sealed.sent)
                if resp.status != 200:
                    raise PeerError("status", f"HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > limit:
                    raise PeerError("too_large", f"{resp.content_length} bytes")
                data = await read_capped(resp.content, limit)
                if answer_headers is not None:
                    for name in answer_headers:
                        answer_headers[name] = resp.headers.get(name, "")[:256]
        except PeerError:
            raise
        except TimeoutError:
            raise PeerError("timeout") from None
        except aiohttp.ClientConnectorError as exc:
            # Refused: the host answered that nothing listens on the port (no agent there any more).
            reason = "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "connect"
            raise PeerError(reason, str(exc) or type(exc).__name__) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerError("connect", str(exc) or type(exc).__name__) from None
        try:
            return self.security.open(data, Purpose.STREAM)
        except AuthError as exc:
            raise PeerError("auth", str(exc)) from None

    async def push_pull(self, addr: Address, state: PushPullState, max_bytes: int = MAX_PUSH_PULL_BYTES,
                        max_members: int | None = None, max_meta_bytes: int | None = None) -> PushPullState:
        """One exchange: our view out, the peer's back (refused past `max_bytes` or `max_members` rows, with the
        decoder's reason, e.g. `too_many_members`)."""
        answer = await self.exchange(addr, PUSH_PULL_PATH, codec.encode_push_pull(state), max_bytes=max_bytes)
        try:
            return codec.decode_push_pull(answer, max_bytes, max_members, max_meta_bytes=max_meta_bytes)
        except codec.DecodeError as exc:
            raise PeerError(exc.reason, str(exc)) from None

    async def ping(self, addr: Address, ping: Ping, sender: str, timeout: float | None = None) -> bool:
        """The TCP fallback probe: True if `addr` answered as `ping.target` with a matching ack."""
        body = codec.encode_packet(Packet(sender, (ping,)))
        try:
            answer = await self.exchange(addr, PING_PATH, body, max_bytes=1024, timeout=timeout)
        except PeerError as exc:
            if exc.reason in ("status", "busy"):
                return False
            raise
        try:
            packet = codec.decode_packet(answer)
        except codec.DecodeError as exc:
            raise PeerError("decode", exc.reason) from None
        return any(isinstance(m, Ack) and m.seq == ping.seq for m in packet.messages)
