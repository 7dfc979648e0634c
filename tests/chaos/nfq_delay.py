"""A packet delayer for network-namespace tests: holds queued packets for a fixed time, then accepts them.

`tc netem` is not available on our machines (TESTBED.md), so delay comes from netfilter: an nftables rule
sends the packets to delay to an NFQUEUE (`queue num Q`), and this process (PyPI `netfilterqueue`, bound to
those queues in the namespace it runs in) gives each one its verdict `accept` DELAY ms after it arrived.
Packets are never changed, reordered within a queue, or dropped by us (the kernel drops when a queue holds
more than --max-len packets, which the counters in /proc/net/netfilter/nfnetlink_queue show).

    python tests/chaos/nfq_delay.py --queue 101:10 --queue 110:10 [--max-seconds 3600]

One process serves every queue (one delay each): a heap of (due time, packet) and a select() over the
queues' netlink sockets, so one core's worth of Python is spent only on the packets themselves. It runs
until SIGTERM/SIGINT (then accepts what it still holds and unbinds) or --max-seconds (a bound in case the
test that started it died without stopping it). It prints "ready" once every queue is bound.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import selectors
import signal
import socket
import sys
import time
from typing import Any

from netfilterqueue import COPY_META, NetfilterQueue

MAX_QUEUES = 64
MAX_DELAY_MS = 10_000.0
IDLE_WAIT = 0.5


def _queue_spec(text: str) -> tuple[int, float]:
    num, _, delay = text.partition(":")
    try:
        q, d = int(num), float(delay)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUEUE:DELAY_MS, got {text!r}") from None
    if not 0 <= q <= 65535 or not 0 <= d <= MAX_DELAY_MS:
        raise argparse.ArgumentTypeError(f"queue 0..65535 and delay 0..{MAX_DELAY_MS:g} ms, got {text!r}")
    return q, d / 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queue", type=_queue_spec, action="append", required=True, metavar="QUEUE:DELAY_MS")
    p.add_argument("--max-len", type=int, default=8192, help="packets a queue may hold (kernel drops beyond)")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long whatever happens")
    args = p.parse_args(argv)
    if len(args.queue) > MAX_QUEUES:
        p.error(f"at most {MAX_QUEUES} queues")

    due: list[tuple[float, int, Any]] = []
    order = itertools.count()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    selector = selectors.DefaultSelector()
    queues: list[tuple[NetfilterQueue, socket.socket]] = []
    for num, delay in args.queue:
        def hold(pkt: Any, delay: float = delay) -> None:
            heapq.heappush(due, (time.monotonic() + delay, next(order), pkt))

        nfq = NetfilterQueue()
        nfq.bind(num, hold, max_len=args.max_len, mode=COPY_META)
        sock = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, nfq)
        queues.append((nfq, sock))
    print("ready", flush=True)
    end = time.monotonic() + args.max_seconds
    try:
        while not stopping and time.monotonic() < end:
            now = time.monotonic()
            wait = min(IDLE_WAIT, max(0.0, due[0][0] - now)) if due else IDLE_WAIT
            for key, _ in selector.select(wait):
                key.data.run(block=False)
            now = time.monotonic()
            while due and due[0][0] <= now:
                heapq.heappop(due)[2].accept()
    finally:
        while due:  # nothing held is lost on the way out
            heapq.heappop(due)[2].accept()
        for nfq, sock in queues:
            selector.unregister(sock)
            sock.close()
            nfq.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
