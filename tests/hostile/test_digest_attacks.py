"""Digest summaries from spoofed sources (core/digest_riders.py `_on_digests`, core/digests.py reconciliation).

A summary makes us compare it with ours (a pass over the digest table: ~1.3 ms of CPU at 5,000 rows, for a
~150-byte packet) and owe the sender every row of each bucket that differs; a junk summary differs in every
bucket. Naming each member in turn, a flood of forged summaries cost CPU per packet and left an owed set of
the whole table per member (members x rows). Summaries now count only from the named member's table host.
"""

from __future__ import annotations

import random

from gossip_agent.core.messages import Alive, Digest, DigestSummary, Packet
from gossip_agent.core.node import Node
from tests.core.test_node import cfg
from tests.hostile.core_support import SPOOFER

WALL_MS = 1_700_000_000_000


def _node(members: int = 40) -> Node:
    a = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(3), 0.0)
    a.observe_wall_clock(WALL_MS / 1000, 0.0)
    a.publish_root_digest("ab" * 32, 10, WALL_MS, seq_floor=WALL_MS, now=0.0)
    for i in range(2, 2 + members):
        addr = (f"10.0.{i // 200}.{i % 200 + 2}", 7946)
        a.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, addr), Digest(f"p{i}", WALL_MS, b"\x01" * 8, 1, 0))),
                        addr, 0.0)
    return a


def test_spoofed_summaries_leave_nothing_owed() -> None:
    a = _node()
    junk = DigestSummary(b"\xff\xff" * 16, True)
    for i in range(2, 42):
        a.handle_packet(Packet(f"p{i}", (junk,)), SPOOFER, 1.0)
    assert not any(a._digest_exchange.pending(f"p{i}") for i in range(2, 42))
    assert a.stats["digest_summaries_unverified"] == 40
    own = a.table.get("p2").addr  # type: ignore[union-attr]
    a.handle_packet(Packet("p2", (junk,)), own, 1.1)  # from the member itself: reconciled
    assert a._digest_exchange.pending("p2")
