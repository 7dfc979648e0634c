"""A member held dead that then says it left is LEFT (core/membership_rumors.py `_dead_to_left`): on a loaded
machine a member was declared dead before its refutation went round, then left, and stayed dead for good where
the death came first."""

from __future__ import annotations

import random

from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.membership import MemberState
from gossip_agent.core.messages import Alive, Dead, Packet
from gossip_agent.core.node import Node
from tests.core.test_node import cfg


def _node_with(peer: str, incarnation: int) -> Node:
    node = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(1), 0.0)
    node.handle_packet(Packet(peer, (Alive(peer, incarnation, ("10.0.0.2", 7946)),)), ("10.0.0.2", 7946), 0.0)
    assert node.table.get(peer) is not None
    return node


def _events(effects: list[object], name: str) -> list[EventKind]:
    return [e.kind for e in effects if isinstance(e, MemberEvent) and e.member.name == name]


def test_a_dead_member_that_says_it_left_is_left_and_the_word_spreads() -> None:
    node = _node_with("b", 3)
    node.handle_packet(Packet("c", (Dead("b", 3, "c"),)), ("10.0.0.3", 7946), 1.0)
    assert node.table.get("b").state == MemberState.DEAD  # type: ignore[union-attr]
    out = node.handle_packet(Packet("b", (Dead("b", 3, "b"),)), ("10.0.0.2", 7946), 2.0)
    member = node.table.get("b")
    assert member is not None and member.state == MemberState.LEFT
    assert _events(out, "b") == [EventKind.LEFT]
    assert node.stats["left_after_dead"] == 1
    assert any(isinstance(r, Dead) and r.name == "b" and r.sender == "b" for r in node.queue.peek_all())


def test_a_leave_older_than_the_death_does_not_undo_it_and_others_deaths_change_nothing() -> None:
    node = _node_with("b", 3)
    node.handle_packet(Packet("c", (Dead("b", 4, "c"),)), ("10.0.0.3", 7946), 1.0)
    out = node.handle_packet(Packet("b", (Dead("b", 3, "b"),)), ("10.0.0.2", 7946), 2.0)  # older: stale
    assert node.table.get("b").state == MemberState.DEAD  # type: ignore[union-attr]
    assert _events(out, "b") == [] and node.stats["left_after_dead"] == 0
    node.handle_packet(Packet("b", (Dead("b", 4, "b"),)), ("10.0.0.2", 7946), 3.0)
    assert node.table.get("b").state == MemberState.LEFT  # type: ignore[union-attr]
    out = node.handle_packet(Packet("c", (Dead("b", 4, "c"),)), ("10.0.0.3", 7946), 4.0)  # left stays left
    assert node.table.get("b").state == MemberState.LEFT  # type: ignore[union-attr]
    assert _events(out, "b") == [] and node.stats["left_after_dead"] == 1


def test_a_left_member_is_reaped_after_the_reap_delay_from_its_leave() -> None:
    node = _node_with("b", 3)
    node.handle_packet(Packet("c", (Dead("b", 3, "c"),)), ("10.0.0.3", 7946), 1.0)
    node.handle_packet(Packet("b", (Dead("b", 3, "b"),)), ("10.0.0.2", 7946), 2.0)
    reap_after = node.config.membership.reap_after
    node.tick(2.0 + reap_after - 0.5)
    assert node.table.get("b") is not None
    out = node.tick(2.0 + reap_after + 0.5)
    assert node.table.get("b") is None and _events(out, "b") == [EventKind.REAP]
