"""UDP transport: best-effort datagrams in and out (memberlist's packet interface).

Received datagrams go straight to a callback on the event loop thread (no queue to grow), and `on_drained`
runs once after each wake-up's datagrams (the runtime re-arms its timer there, not per packet). asyncio's
selector transport reads one datagram per event-loop turn, so under load every datagram paid a turn of its
own (an epoll call, the loop's bookkeeping): on that loop, when several are waiting in the socket, one wake-up
reads up to `RECV_BATCH` of them itself, then calls `on_drained`. uvloop (io/event_loop.py) already reads
every waiting datagram in one wake-up, one callback each: there `on_drained` is called soon after the last
(`call_soon`, once per wake-up), and the transport reads nothing itself (it would only find the socket empty).

Sends never wait: a datagram goes straight to the socket while the loop's buffer is empty (what asyncio's own
`sendto` does after argument checks and bookkeeping that cost more than the rest of our send); if the kernel
buffer is full, the loop's transport buffers it and the datagrams after it, and further sends are dropped once
that buffer passes `MAX_WRITE_BUFFER` bytes, as UDP would drop them anyway.

A send never closes the endpoint: asyncio's datagram transport closes itself on any non-OSError raised by
the socket call (e.g. `UnicodeError: encoding of hostname failed` for a host a peer made up), so `sendto`
refuses hosts that are not ASCII hostnames or IP literals before the call and turns whatever the call still
raises into a per-message failure (`SendResult`; the direct send never hands such an error to asyncio). If the
endpoint closes anyway, `closed` says so and the runtime reopens it (and reports not ready meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, cast

from gossip_agent.core.hosts import wire_host
from gossip_agent.core.messages import Address
from gossip_agent.io.seeds import address_info

log = logging.getLogger(__name__)
MAX_WRITE_BUFFER = 256 * 1024
# The kernel's default receive buffer (~200 KiB) is fine for a few hundred members; raise it for bursts.
RECV_BUFFER = 1024 * 1024
# Bytes asked of each recvfrom: no UDP payload is longer (65,507 over IPv4, 65,527 over IPv6 without jumbograms).
# asyncio's selector transport asks 256 KiB by default, and CPython allocates that whole buffer (an mmap and
# page faults: malloc's large-block path) for every datagram before shrinking it: about half of the CPU an
# agent spent receiving a small datagram, measured.
RECV_SIZE = 65536
# Datagrams read in one wake-up at most (the first by asyncio, the rest here): a bounded turn (~10 small
# packets' work), so timers and HTTP requests still get the loop between batches.
RECV_BATCH = 10


class SendResult(Enum):
    """What became of one datagram; every value but SENT is a counted drop with that reason."""

    SENT = "sent"
    CLOSED = "udp_closed"
    BUFFER_FULL = "send_buffer_full"
    BAD_ADDRESS = "bad_address"
    ERROR = "send_error"


_SENT, _CLOSED, _BUFFER_FULL = SendResult.SENT, SendResult.CLOSED, SendResult.BUFFER_FULL
_BAD_ADDRESS, _ERROR = SendResult.BAD_ADDRESS, SendResult.ERROR


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None],
                 on_drained: Callable[[], None] | None = None, sock: socket.socket | None = None,
                 *, read_batches: bool = True) -> None:
        self._on_datagram = on_datagram
        self._on_drained = on_drained  # after each wake-up's datagrams (one or a batch)
        self._sock = sock  # the bound socket itself (asyncio hands out a wrapper without recvfrom)
        # Read the rest of a burst ourselves (asyncio's selector loop); else the loop delivers the burst and
        # `on_drained` runs once soon after it (uvloop).
        self._read_batches = read_batches and sock is not None
        self._drain_pending = False
        self._transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0
        self.lost = False
        # The transport's buffered bytes (once connected); None: it cannot say, so never send around it.
        self._buffered: Callable[[], int] | None = None

    # -- asyncio.DatagramProtocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport; it quacks like one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        # Selector datagram transports have it (typeshed does not say so).
        self._buffered = getattr(transport, "get_write_buffer_size", None)
        # (`max_size` is the selector transport's recvfrom size; other loops' transports lack it, and keep theirs.)
        if getattr(transport, "max_size", 0) > RECV_SIZE:
            transport.max_size = RECV_SIZE  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        if not self._read_batches:
            self._one_of_a_burst(data, addr)
            return
        try:
            self._on_datagram(data, (str(addr[0]), int(addr[1])))
            sock = self._sock
            if sock is None:
                return
            for _ in range(RECV_BATCH - 1):  # the others already waiting, in this same turn
                if self.closed:  # (closed meanwhile: asyncio would read no more either)
                    return
                try:
                    data, addr = sock.recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # as asyncio's own read does: an ICMP error for an earlier send
                    self.error_received(exc)
                    continue
                self._on_datagram(data, (str(addr[0]), int(addr[1])))
        finally:
            if self._on_drained is not None:
                self._on_drained()

    def _one_of_a_burst(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        """A loop that reads every waiting datagram itself: `on_drained` once, after the wake-up's callbacks."""
        try:
            self._on_datagram(data, (str(addr[0]), int(addr[1])))
        finally:
            if not self._drain_pending and self._on_drained is not None:
                self._drain_pending = True
                asyncio.get_running_loop().call_soon(self._drained)

    def _drained(self) -> None:
        self._drain_pending = False
        if self._on_drained is not None:
            self._on_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None:
            log.error("udp endpoint closed: %s", exc)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a dead peer lands here on Linux; it is expected, not an error.
        self.send_errors += 1
        log.debug("udp error: %s", exc)

    # -- ours ------------------------------------------------------------------------------------------
    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    @property
    def closed(self) -> bool:
        t = self._transport
        return self.lost or t is None or t.is_closing()

    def sendto(self, data: bytes, addr: Address) -> SendResult:
        """Queue one datagram, or say why it was dropped. Never raises, never closes the endpoint.

        While nothing waits in asyncio's buffer the datagram goes straight to our socket (what asyncio's
        `sendto` does first, without its argument checks and bookkeeping: one send per packet out); a full
        kernel buffer (EAGAIN) hands it to asyncio, which buffers it and sends it when the socket is writable,
        and later datagrams queue behind it there, in order."""
        t = self._transport
        if t is None or self.lost or t.is_closing():
            return _CLOSED
        if not wire_host(addr[0]) or not 0 < addr[1] <= 0xFFFF:  # (hosts found valid are remembered there)
            return _BAD_ADDRESS
        sock, size = self._sock, self._buffered
        buffered = 0 if size is None else size()
        if sock is not None and size is not None and not buffered:
            try:
                sock.sendto(data, addr)
                return _SENT
            except (BlockingIOError, InterruptedError):
                pass  # the kernel buffer is full: asyncio's buffer takes it (below)
            except OSError as exc:  # as asyncio's sendto: an ICMP error for an earlier send, reported now
                self.error_received(exc)
                return _SENT
            except Exception as exc:
                self.send_errors += 1
                log.debug("udp send to %r failed: %s", addr, exc)
                return _ERROR
        elif buffered > MAX_WRITE_BUFFER:
            return _BUFFER_FULL
        try:
            t.sendto(data, addr)
        except Exception as exc:  # the transport may still have closed itself (fatal error): runtime reopens
            self.send_errors += 1
            log.debug("udp send to %r failed: %s", addr, exc)
            return _ERROR
        if t.is_closing():
            return _ERROR
        return _SENT

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp(host: str, port: int, on_datagram: Callable[[bytes, Address], None],
                   on_drained: Callable[[], None] | None = None) -> UdpTransport:
    """A bound UDP endpoint (port 0: the kernel picks). The socket is made and bound here, as asyncio would
    (the first address of `host` that binds), so the protocol can read batches from it."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = await address_info(host, port, family=family, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    if not infos:
        raise OSError(f"no address for udp {host}:{port}")
    sock = _bound(infos)
    # Only asyncio's selector loop reads one datagram per callback (uvloop reads a burst per wake-up).
    protocol = UdpTransport(on_datagram, on_drained, sock,
                            read_batches=isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop))
    try:
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol


def _bound(infos: Sequence[tuple[Any, ...]]) -> socket.socket:
    """A non-blocking socket bound to the first of `infos` that binds; the last error if none does."""
    error: OSError | None = None
    for fam, kind, proto, _, addr in infos:
        sock = socket.socket(fam, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    assert error is not None
    raise error
