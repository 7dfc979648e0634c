"""UDP sends: straight to the socket while asyncio buffers nothing, through asyncio's buffer otherwise (a full
kernel buffer, or datagrams already waiting there: order is kept), and never an exception or a closed endpoint.

The endpoint here is a `UdpTransport` wired to fakes (a socket whose sendto can fail as the kernel's does, and
a transport that records what it was asked to buffer), so each path is taken on purpose, not by luck.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from gossip_agent.io.transport import MAX_WRITE_BUFFER, SendResult, UdpTransport

PEER = ("127.0.0.1", 7946)


class FakeSocket:
    """`sendto` succeeds, or raises what it is told to (once)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.fail: BaseException | None = None

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.sent.append((data, addr))
        return len(data)


class FakeTransport:
    """asyncio's selector datagram transport as the endpoint uses it: a buffer it sends from later."""

    def __init__(self) -> None:
        self.buffered: list[tuple[bytes, Any]] = []
        self.closing = False

    def sendto(self, data: bytes, addr: Any) -> None:
        self.buffered.append((data, addr))

    def get_write_buffer_size(self) -> int:
        return sum(len(d) for d, _ in self.buffered)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closing = True


def endpoint() -> tuple[UdpTransport, FakeSocket, FakeTransport]:
    sock, transport = FakeSocket(), FakeTransport()
    udp = UdpTransport(lambda data, src: None, sock=cast(Any, sock))
    udp.connection_made(cast(asyncio.BaseTransport, transport))
    return udp, sock, transport


def test_a_send_goes_straight_to_the_socket_while_nothing_is_buffered() -> None:
    udp, sock, transport = endpoint()
    assert udp.sendto(b"one", PEER) is SendResult.SENT
    assert sock.sent == [(b"one", PEER)] and transport.buffered == []


def test_a_full_kernel_buffer_hands_the_datagram_to_asyncio_and_later_ones_queue_behind_it() -> None:
    udp, sock, transport = endpoint()
    sock.fail = BlockingIOError()
    assert udp.sendto(b"one", PEER) is SendResult.SENT
    assert udp.sendto(b"two", PEER) is SendResult.SENT  # the socket would take it: order says no
    assert sock.sent == [] and transport.buffered == [(b"one", PEER), (b"two", PEER)]


def test_a_buffer_past_its_bound_drops_the_datagram() -> None:
    udp, sock, transport = endpoint()
    transport.buffered.append((bytes(MAX_WRITE_BUFFER + 1), PEER))
    assert udp.sendto(b"one", PEER) is SendResult.BUFFER_FULL
    assert sock.sent == [] and len(transport.buffered) == 1


def test_an_icmp_error_is_reported_as_asyncio_reports_it() -> None:
    """An OSError from sendto (an ICMP error for an earlier datagram) goes to error_received, as asyncio's own
    sendto does; the endpoint stays open."""
    udp, sock, _ = endpoint()
    sock.fail = ConnectionRefusedError()
    assert udp.sendto(b"one", PEER) is SendResult.SENT
    assert udp.send_errors == 1 and not udp.closed


@pytest.mark.parametrize("exc", [UnicodeError("encoding of hostname failed"), OverflowError("port")])
def test_any_other_failure_is_one_failed_message_and_the_endpoint_stays_open(exc: BaseException) -> None:
    """asyncio closes its transport on a non-OSError from the socket call; the direct send never does."""
    udp, sock, transport = endpoint()
    sock.fail = exc
    assert udp.sendto(b"one", PEER) is SendResult.ERROR
    assert udp.send_errors == 1 and not udp.closed and not transport.closing
    assert udp.sendto(b"two", PEER) is SendResult.SENT


def test_a_transport_that_cannot_tell_its_buffer_gets_every_datagram() -> None:
    """Without `get_write_buffer_size` the endpoint cannot know whether datagrams wait in the transport, so it
    never sends around them."""

    class OpaqueTransport:
        def __init__(self) -> None:
            self.buffered: list[tuple[bytes, Any]] = []

        def sendto(self, data: bytes, addr: Any) -> None:
            self.buffered.append((data, addr))

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    sock, transport = FakeSocket(), OpaqueTransport()
    udp = UdpTransport(lambda data, src: None, sock=cast(Any, sock))
    udp.connection_made(cast(asyncio.BaseTransport, transport))
    assert udp.sendto(b"one", PEER) is SendResult.SENT
    assert sock.sent == [] and transport.buffered == [(b"one", PEER)]


def test_a_closing_endpoint_sends_nothing() -> None:
    udp, sock, transport = endpoint()
    transport.closing = True
    assert udp.sendto(b"one", PEER) is SendResult.CLOSED
    assert sock.sent == [] and transport.buffered == []
