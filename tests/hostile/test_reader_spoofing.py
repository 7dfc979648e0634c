"""A spoofed packet cannot raise a peer's reader level (core/readers.py, core/sending.py `_from_table_host`).

New message types go only to a peer that has shown it reads them, because an older agent drops a whole packet
holding a type it does not know. Without encryption anyone can send a packet naming an older agent as its
sender and holding a digest, a tree message or a coordinate: that used to mark the older agent as a reader, and
every packet we sent it from then on carried types it drops -- its probes' acks too, so it would soon be
suspected. A packet now raises the level only when it comes from the named member's host in our table (with
encryption on it is authenticated as well).
"""

from __future__ import annotations

import random

import pytest

from gossip_agent.core.effects import Send
from gossip_agent.core.messages import (
    Ack,
    Alive,
    Dead,
    DigestSummary,
    IHave,
    Message,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    Prune,
    Suspect,
)
from gossip_agent.core.node import Node
from tests.core.test_node import cfg
from tests.hostile.core_support import SPOOFER

COORD = NetCoordinate((0.001,) * 8, 0.0001, 0.5, 0.0)


def _node() -> Node:
    a = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(3), 0.0)
    for i in range(2, 6):
        addr = (f"10.0.0.{i}", 7946)
        a.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, addr),)), addr, 0.0)
    return a


SHOWING: list[tuple[str, Message]] = [
    ("digest summary", DigestSummary(b"", False)),
    ("tree prune", Prune()),
    ("tree ihave", IHave(())),
    ("coordinate", COORD),
    ("coordinate rows", PeerCoordinates(())),
]


@pytest.mark.parametrize(("what", "msg"), SHOWING, ids=[w for w, _ in SHOWING])
def test_a_spoofed_packet_does_not_raise_the_level_and_the_real_one_does(what: str, msg: Message) -> None:
    a = _node()
    a.handle_packet(Packet("p2", (msg,)), SPOOFER, 1.0)
    assert a.readers.level("p2") == 0, what
    assert a.stats["packets_not_from_member_host"] == 1
    a.handle_packet(Packet("p2", (msg,)), ("10.0.0.2", 40000), 1.1)  # its host (any port)
    assert a.readers.level("p2") > 0, what


def test_after_a_spoofed_packet_our_acks_to_an_older_agent_hold_only_what_it_reads() -> None:
    """The effect that mattered: an ack to an older agent holding a digest or a coordinate is dropped whole by
    it (a missed ack: soon a suspicion)."""
    a = _node()
    a.publish_root_digest("ab" * 32, 10, 1_700_000_000_000, now=0.5)
    a.handle_packet(Packet("p2", (Prune(), COORD, PeerCoordinates(()))), SPOOFER, 1.0)
    out = a.handle_packet(Packet("p2", (Ping(5, "a", "p2", ("10.0.0.2", 7946)),)), ("10.0.0.2", 7946), 1.1)
    types = {type(m) for e in out if isinstance(e, Send) for m in e.packet.messages}
    assert Ack in types and types <= {Ack, Alive, Suspect, Dead}, types
