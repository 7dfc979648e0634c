"""A critical write waiting in an agent's socket behind a burst of other datagrams is handled first
(io/receive_order.py); the others keep their arrival order, a bounded batch per event-loop turn."""

from __future__ import annotations

import socket

from gossip_agent.core import codec
from gossip_agent.core.messages import Packet, StateRumor
from gossip_agent.io.receive_order import HANDLE_BATCH, ReceiveOrder
from gossip_agent.io.runtime import Agent
from gossip_agent.io.transport import RECV_BATCH
from tests.agent.test_runtime import RecordingExtension, config, eventually


def _packet(payload: bytes, critical: bool = False) -> bytes:
    return codec.encode_packet(Packet("writer", (StateRumor(payload, critical),)))


async def test_a_critical_write_behind_a_burst_is_handled_before_it() -> None:
    ext = RecordingExtension()
    agent = Agent(config("r0"), extensions=[ext])
    await agent.start()
    normal = [b"normal-%d" % i for i in range(3 * HANDLE_BATCH)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # All queued in the agent's socket before its loop looks (this coroutine does not yield meanwhile).
            for payload in normal:
                s.sendto(_packet(payload), ("127.0.0.1", agent.port))
            s.sendto(_packet(b"critical", critical=True), ("127.0.0.1", agent.port))
            await eventually(lambda: len(ext.payloads) == len(normal) + 1, what="every write handled")
        assert ext.payloads[0] == b"critical"  # (it came last: arrival order handled it last)
        assert ext.payloads[1:] == normal
        assert agent._received.jumped == 1
    finally:
        await agent.stop()


def test_waiting_datagrams_are_handled_a_batch_at_a_time_in_arrival_order() -> None:
    handled: list[bytes] = []
    order = ReceiveOrder(lambda plain, src, size: handled.append(plain), batch=3)
    for i in range(7):
        order.offer(b"%d" % i, ("127.0.0.1", 1), 1, urgent=False)
    order.offer(b"c", ("127.0.0.1", 1), 1, urgent=True)
    assert handled == [b"c"] and order.pending == 7 and order.jumped == 1
    order.handle_some()
    assert handled == [b"c", b"0", b"1", b"2"]
    order.handle_some()
    order.handle_some()
    assert handled == [b"c", *(b"%d" % i for i in range(7))] and order.pending == 0


def test_the_waiting_datagrams_are_bounded_by_count_and_bytes() -> None:
    handled: list[bytes] = []
    order = ReceiveOrder(lambda plain, src, size: handled.append(plain), max_held=4, max_bytes=10)
    for i in range(4):
        order.offer(b"%d" % i, ("127.0.0.1", 1), 1, urgent=False)
    assert not order.room() and handled == []
    order.offer(b"4", ("127.0.0.1", 1), 1, urgent=False)  # the oldest is handled at once, in order
    assert handled == [b"0"] and order.pending == 4
    order.offer(b"x" * 9, ("127.0.0.1", 1), 9, urgent=False)  # 4 + 9 bytes > 10: the oldest go until it fits
    assert handled == [b"0", b"1", b"2", b"3"] and order.pending == 2
    order.clear()
    assert order.room() and order.pending == 0


def test_a_wake_up_reads_deeper_than_a_turn_handles() -> None:
    """The transport reads enough in one wake-up for a critical write behind a burst to be found at once."""
    assert RECV_BATCH >= 4 * HANDLE_BATCH


def test_only_packets_that_may_hold_a_critical_write_jump() -> None:
    assert codec.may_hold_critical_state(_packet(b"v" * 300, critical=True))
    assert codec.may_hold_critical_state(_packet(b"v" * 70_000, critical=True))
    assert not codec.may_hold_critical_state(_packet(b"v" * 300))
