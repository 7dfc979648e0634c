"""The UDP endpoint receives datagrams of every size a peer can send, through a bounded receive buffer.

The endpoint asks each recvfrom for RECV_SIZE bytes instead of asyncio's 256 KiB default (whose allocation
per datagram cost about half of an agent's receive CPU): nothing a peer can send may be cut short by that.
"""

from __future__ import annotations

import asyncio
import socket

from gossip_agent.core.codec import MAX_PACKET_BYTES
from gossip_agent.core.messages import Address
from gossip_agent.io.transport import RECV_BATCH, RECV_SIZE, SendResult, open_udp


async def test_the_largest_datagram_arrives_whole_and_the_recv_size_is_bounded() -> None:
    got: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
    receiver = await open_udp("127.0.0.1", 0, lambda data, src: got.put_nowait((data, src)))
    sender = await open_udp("127.0.0.1", 0, lambda data, src: None)
    try:
        assert RECV_SIZE >= MAX_PACKET_BYTES
        max_size = getattr(receiver._transport, "max_size", None)
        assert max_size is None or max_size == RECV_SIZE  # (the selector loop's transport has it)
        sizes = [1, 1200, MAX_PACKET_BYTES]
        for n in sizes:
            assert sender.sendto(bytes([n % 251]) * n, receiver.local_address) is SendResult.SENT
        for n in sizes:
            data, src = await asyncio.wait_for(got.get(), 10)
            assert data == bytes([n % 251]) * n and src == sender.local_address
    finally:
        receiver.close()
        sender.close()


async def test_sendto_still_refuses_bad_hosts_after_good_ones_were_cached() -> None:
    endpoint = await open_udp("127.0.0.1", 0, lambda data, src: None)
    try:
        good = ("127.0.0.1", endpoint.local_address[1])
        assert endpoint.sendto(b"x", good) is SendResult.SENT
        assert endpoint.sendto(b"x", good) is SendResult.SENT  # now from the cache of valid hosts
        assert endpoint.sendto(b"x", ("é" * 64, 1)) is SendResult.BAD_ADDRESS
        assert endpoint.sendto(b"x", ("127.0.0.1", 0)) is SendResult.BAD_ADDRESS  # port checked every time
        assert endpoint.sendto(b"x", ("127.0.0.1", 70000)) is SendResult.BAD_ADDRESS
        assert not endpoint.closed
    finally:
        endpoint.close()



async def test_datagrams_waiting_together_are_read_in_one_wake_up_then_drained_once() -> None:
    """What is already in the socket is read in the same event-loop turn (at most RECV_BATCH), in order, and
    `on_drained` (the runtime re-arms its timer there) runs once per turn, not once per datagram."""
    events: list[bytes | None] = []
    receiver = await open_udp("127.0.0.1", 0, lambda data, src: events.append(data), lambda: events.append(None))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        count = RECV_BATCH + 3
        for i in range(count):  # all queued before the loop looks: this coroutine does not yield meanwhile
            sender.sendto(b"%d" % i, receiver.local_address)
        async with asyncio.timeout(10):
            while len([e for e in events if e is not None]) < count:
                await asyncio.sleep(0.01)
        assert [e for e in events if e is not None] == [b"%d" % i for i in range(count)]
        assert events[:RECV_BATCH + 1] == [*(b"%d" % i for i in range(RECV_BATCH)), None]  # one turn, then drained
        assert events.count(None) == 2  # two wake-ups for RECV_BATCH + 3 datagrams
    finally:
        sender.close()
        receiver.close()
