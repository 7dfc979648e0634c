"""UDP transport: best-effort datagrams in and out (memberlist's packet interface).

Received datagrams go straight to a callback on the event loop thread (no queue to grow). Sends never wait:
if the kernel buffer is full and asyncio starts buffering, further sends are dropped once that buffer
passes `MAX_WRITE_BUFFER` bytes, as UDP would drop them anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from gossip_agent.core.messages import Address

log = logging.getLogger(__name__)
MAX_WRITE_BUFFER = 256 * 1024
# The kernel's default receive buffer (~200 KiB) is fine for a few hundred members; raise it for bursts.
RECV_BUFFER = 1024 * 1024


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0

    # -- asyncio.DatagramProtocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport; it quacks like one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        self._on_datagram(data, (str(addr[0]), int(addr[1])))

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

    def sendto(self, data: bytes, addr: Address) -> bool:
        """Queue one datagram; False if it was dropped (closed, or the write buffer is full)."""
        t = self._transport
        if t is None or t.is_closing() or _buffered(t) > MAX_WRITE_BUFFER:
            return False
        t.sendto(data, addr)
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _buffered(t: asyncio.DatagramTransport) -> int:
    # Selector datagram transports have it (typeshed does not say so); without it, assume nothing buffered.
    size = getattr(t, "get_write_buffer_size", None)
    return int(size()) if size is not None else 0


async def open_udp(host: str, port: int, on_datagram: Callable[[bytes, Address], None]) -> UdpTransport:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpTransport(on_datagram), local_addr=(host, port), family=family)
    return protocol
