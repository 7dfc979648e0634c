"""Pull requests name each payload once to each peer, and responders remember it (core/pull_ids.py); push-pull's
pull slot is spent only by a round that sends a request. Simulated time: the core is driven with explicit `now`."""

from __future__ import annotations

import random

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Alive, Packet, Ping, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import message_id, short_id
from gossip_agent.core.pull_ids import HeldClaims, RecentIds
from gossip_agent.core.readers import SHORT_IDS

from .test_node_modes import _Accept, is_pull, mode_config, node_with_peers


def sid(payload: bytes) -> int:
    return short_id(message_id(payload))


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def reader_pull_node(peers: int = 5) -> Node:
    node = node_with_peers("pull", peers)
    for m in node.members():
        if m.name != node.name:
            node.readers.show(m.name, SHORT_IDS)
    return node


# -- the asker's side ---------------------------------------------------------------------------------------
def test_each_id_is_named_once_to_each_peer_and_never_to_its_source() -> None:
    r = RecentIds()
    r.add(1, 0.0, "p2")
    r.add(2, 0.1, None)
    assert r.ids_for("p2", 0.2, 10.0) == (2,)  # 1 came from p2: it knows
    assert r.ids_for("p3", 0.2, 10.0) == (2, 1)
    r.asked("p3", 0.2)
    r.add(3, 0.3, "p4")
    r.add(1, 0.35, "p5")  # received again: still named as of its first arrival
    assert r.ids_for("p3", 0.4, 10.0) == (3,)  # 1 and 2 went to p3 with the last request
    assert r.ids_for("p3", 20.0, 10.0) == ()  # older than the window: forgotten
    r.forget("p3")
    r.add(4, 20.0)
    assert r.ids_for("p3", 20.0, 10.0) == (4,)


def test_recent_ids_and_asked_peers_are_bounded() -> None:
    r = RecentIds(max_ids=3, max_peers=2)
    for i in range(10):
        r.add(i, float(i))
        r.asked(f"p{i}", float(i))
    assert len(r) == 3
    assert r.ids_for("p0", 10.0, 100.0) == (9, 8, 7)  # p0's request time forgotten: bytes only, never a loss


# -- the responder's side -----------------------------------------------------------------------------------
def test_claims_are_remembered_per_asker_within_the_window_and_bounded() -> None:
    c = HeldClaims(max_per_asker=3, max_askers=2)
    c.note("a", (1, 2), 0.0)
    c.note("a", (3,), 1.0)
    assert c.held("a", 1.0, 10.0) == {1, 2, 3} and c.held("b", 1.0, 10.0) == frozenset()
    assert c.held("a", 10.5, 10.0) == {3}  # 1 and 2 were named more than 10 s ago
    c.note("a", (4, 5, 6, 7), 11.0)
    assert c.held("a", 11.0, 10.0) == {5, 6, 7}  # the newest 3
    c.note("b", (8,), 11.0)
    c.note("c", (9,), 11.0)  # a third asker: the least recent one ("a") is forgotten
    assert c.held("a", 11.0, 10.0) == frozenset() and len(c) == 2
    c.forget("b")
    assert c.held("b", 11.0, 10.0) == frozenset()


# -- the node -----------------------------------------------------------------------------------------------
def test_a_claim_made_before_we_held_the_payload_keeps_it_out_of_later_answers() -> None:
    """An asker names a payload once to each peer; a peer that did not hold it yet must remember the claim,
    or once it gets the payload it answers it back: in pull mode that was about one duplicate per delivery."""
    node = reader_pull_node()
    p3, p4 = node.member("p3"), node.member("p4")
    assert p3 is not None and p4 is not None
    # p3 holds "x" and says so, before we have it: nothing to answer.
    node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL, (sid(b"x"),)),)), p3.addr, 1.0)
    node.handle_packet(Packet("p4", (StateRumor(b"x"),)), p4.addr, 1.1)  # now we hold it (from p4)
    answer = sends(node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL),)), p3.addr, 1.2))
    assert not any(isinstance(m, StateRumor) for s in answer for m in s.packet.messages)


def test_a_forged_claim_is_not_remembered() -> None:
    """A request from another address than the asker's table host says nothing about what the asker holds."""
    node = reader_pull_node()
    p3, p4 = node.member("p3"), node.member("p4")
    assert p3 is not None and p4 is not None
    node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL, (sid(b"x"),)),)), ("evil", 9), 1.0)
    node.handle_packet(Packet("p4", (StateRumor(b"x"),)), p4.addr, 1.1)
    answer = sends(node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL),)), p3.addr, 1.2))
    assert StateRumor(b"x") in [m for s in answer for m in s.packet.messages]


def test_a_request_names_only_what_arrived_since_the_last_request_to_that_peer() -> None:
    node = reader_pull_node(peers=2)
    named: dict[str, list[int]] = {}  # each peer: the ids our requests named to it, in order
    t = 1.0
    for step in range(40):
        if step % 4 == 0:
            node.broadcast_state(b"w%d" % step, t)
        t += node.config.gossip.interval / node.config.gossip.fanout
        for e in sends(node.tick(t)):
            for m in e.packet.messages:
                if isinstance(m, ShortIds) and m.kind == ShortKind.PULL:
                    named.setdefault(next(x.name for x in node.members() if x.addr == e.to), []).extend(m.ids)
    writes = {sid(b"w%d" % step) for step in range(0, 40, 4)}
    assert set(named) == {"p2", "p3"}
    for ids in named.values():
        assert len(ids) == len(set(ids)), "an id named twice to one peer"
        assert set(ids) <= writes and len(set(ids)) >= len(writes) - 2  # (the last writes: maybe not asked yet)


# -- push-pull's pull slot ------------------------------------------------------------------------------------
def test_push_pull_keeps_its_pull_slot_through_rounds_that_send_nothing() -> None:
    """A round that sends no packet asked nobody: its pull slot is kept for the next packet a round sends. (Spent,
    the next slot came an interval after a round that ran a little late, after the next round's beat.)"""
    node = Node(mode_config("push-pull"), ("h", 1), random.Random(7), 0.0, _Accept())
    p2 = Alive("p2", 1, ("h", 2))
    node.handle_packet(Packet("p2", (p2,)), p2.addr, 0.0)  # queued, and never sent back to p2: rounds run
    node.readers.show("p2", SHORT_IDS)  # reads digests: a fresh one makes a round send
    t = 0.0
    for _ in range(10):
        t = node._next_gossip + 0.02  # each round runs 20 ms late
        for e in sends(node.tick(t)):  # p2 acks our probes at once
            ping = next((m for m in e.packet.messages if isinstance(m, Ping)), None)
            if ping is not None:
                node.handle_packet(Packet("p2", (Ack(ping.seq),)), p2.addr, t)
    assert node.queue_depth() and node.stats["gossip_packets"] == 0  # rounds ran, with nothing to send
    node.publish_root_digest("ab" * 32, 1, 1, now=t)
    out = sends(node.tick(node._next_gossip + 0.01))
    assert node.stats["gossip_packets"] == 1 and any(is_pull(m) for s in out for m in s.packet.messages)
