"""The order an agent handles received datagrams in: a critical write first, the rest of a burst after it.

WHY. On a busy machine an agent gets the CPU late, and by then several datagrams wait in its socket. They
were handled in arrival order, so a critical write (`?priority=critical`, core/critical.py) that came last
waited for every normal push, announcement and probe before it: their decoding, merging, logging and
relaying, ten datagrams per event-loop turn. Under a 100 writes/s background at N=50 that wait was a large
part of a hop, and a critical write is one hop (its writer sends it to every member), so it paid it once at
the slowest member, as a normal write did at every hop.

HOW. The runtime reads what waits (io/transport.py, up to `RECV_BATCH` a wake-up), authenticates each
datagram (cheap against decoding and handling it) and asks `codec.may_hold_critical_state` whether it may
carry a critical write (a byte scan, never false for one that does). Those are handled at once. The others
wait here, in arrival order, and are handled `HANDLE_BATCH` per event-loop turn (the loop's other ready
callbacks, HTTP requests and timers, run between turns, as they did between the transport's batches before).
Reordering datagrams is what a network may do anyway, and nothing in the protocol depends on their order.

BOUNDS. At most `MAX_HELD` datagrams and `MAX_HELD_BYTES` wait here (about the kernel buffer the transport
asks for); past either, the oldest is handled at once, so under overload the agent handles datagrams as it
did before, in order. The transport reads more only while there is room (`room`), so datagrams stay in the
kernel's buffer rather than here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gossip_agent.core.messages import Address

HANDLE_BATCH = 10
"""Normal datagrams handled per event-loop turn (the transport's read batch before this module)."""
MAX_HELD = 256
"""Most datagrams waiting here; past it the oldest is handled at once."""
MAX_HELD_BYTES = 1024 * 1024
"""Most bytes of datagrams waiting here (io/transport.py's RECV_BUFFER); past it the oldest is handled at once."""

Handler = Callable[[bytes, Address, int], None]
"""Handles one authenticated datagram: (plaintext, source, wire size)."""


class ReceiveOrder:
    """`offer` each authenticated datagram as it is read; `handle_some` once per event-loop turn while
    `pending`. A datagram that may hold a critical write is handled inside `offer`; the others in arrival order."""

    def __init__(self, handle: Handler, *, batch: int = HANDLE_BATCH, max_held: int = MAX_HELD,
                 max_bytes: int = MAX_HELD_BYTES) -> None:
        self._handle = handle
        self._batch = max(1, batch)
        self._max_held = max(0, max_held)
        self._max_bytes = max(0, max_bytes)
        self._held: deque[tuple[bytes, Address, int]] = deque()
        self._bytes = 0
        self.jumped = 0  # datagrams handled ahead of others that waited (metrics / tests)

    def offer(self, plain: bytes, src: Address, size: int, *, urgent: bool) -> None:
        if urgent:
            if self._held:
                self.jumped += 1
            self._handle(plain, src, size)
            return
        self._held.append((plain, src, size))
        self._bytes += len(plain)
        while self._held and (len(self._held) > self._max_held or self._bytes > self._max_bytes):
            self._handle_oldest()

    def handle_some(self) -> None:
        """Up to the batch of the oldest waiting datagrams (fewer if the handler's calls offered nothing)."""
        for _ in range(min(self._batch, len(self._held))):
            self._handle_oldest()

    def _handle_oldest(self) -> None:
        plain, src, size = self._held.popleft()
        self._bytes -= len(plain)
        self._handle(plain, src, size)

    def room(self) -> bool:
        """Whether the transport should read more now (else it leaves them in the kernel's buffer)."""
        return len(self._held) < self._max_held and self._bytes < self._max_bytes

    @property
    def pending(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        self._held.clear()
        self._bytes = 0
