"""The Node on the broadcast-tree path (gossip.broadcast: tree): state rumors go to the tree's neighbours, tree
messages reach only members known to read them (others get them in packets of their own), hostile senders are
dropped, grafts are answered, pull mode never pushes, and a critical write goes to extra peers."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig, BroadcastPath, GossipMode
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Alive, Graft, IHave, Packet, Prune, PullRequest, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import PRUNE_AFTER, message_id

OLD_TYPES = (Alive, StateRumor, PullRequest)


class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True


def tree_node(peers: int = 6, *, mode: GossipMode = "push-pull", broadcast: BroadcastPath = "tree",
              readers: int = 0) -> Node:
    """Node "a" knowing alive p2..p(peers+1); the first `readers` of them have sent it a tree message."""
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, mode=mode, broadcast=broadcast))
    node = Node(cfg, ("h", 1), random.Random(3), 0.0, _Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
    for i in range(2, 2 + readers):
        node.handle_packet(Packet(f"p{i}", (Prune(),)), ("h", i), 0.0)  # no link: it only shows it reads them
    return node


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def addr_name(node: Node, send: Send) -> str:
    return next(m.name for m in node.members() if m.addr == send.to)


def test_first_tick_picks_fanout_eager_neighbours_and_tells_them_in_packets_of_their_own() -> None:
    node = tree_node()
    out = sends(node.tick(0.01))
    grafts = [s for s in out if any(isinstance(m, Graft) for m in s.packet.messages)]
    assert len(node.tree.eager) == node.config.gossip.fanout == len(grafts)
    # Nobody is known to read tree messages yet: an older agent would drop a whole packet holding one.
    assert all(not any(isinstance(m, OLD_TYPES) for m in s.packet.messages) for s in grafts)


def test_a_write_goes_to_the_eager_neighbours_only_once_everyone_reads_tree_messages() -> None:
    node = tree_node(readers=6)
    node.tick(0.01)
    out = sends(node.broadcast_state(b"w", 0.02))
    assert {addr_name(node, s) for s in out} == node.tree.eager
    assert all(StateRumor(b"w") in s.packet.messages for s in out)
    assert not any(isinstance(r, StateRumor) for r in node.queue.peek_all())  # nothing left for a flood
    assert node.stats["tree_flood_fallback"] == 0


def test_members_not_known_to_read_tree_messages_still_get_the_write_from_the_queue() -> None:
    node = tree_node(readers=0)
    node.tick(0.01)
    node.broadcast_state(b"w", 0.02)
    node.tick(0.02 + node.config.gossip.interval)  # after the tree had its time (core/held_floods.py)
    assert StateRumor(b"w") in node.queue.peek_all() and node.stats["tree_flood_fallback"] == 1


def test_a_relayed_write_goes_on_to_eager_neighbours_but_not_back_and_a_duplicate_prunes() -> None:
    node = tree_node(readers=6)
    node.tick(0.01)
    parent = sorted(node.tree.eager)[0]
    out = sends(node.handle_packet(Packet(parent, (StateRumor(b"r"),)), ("h", 0), 0.02))
    assert {addr_name(node, s) for s in out} == node.tree.eager - {parent}
    other = sorted(node.tree.eager - {parent})[0]
    node.handle_packet(Packet(other, (StateRumor(b"r"),)), ("h", 0), 0.03)
    for i in range(1, PRUNE_AFTER):  # a redundant link duplicates every payload
        payload = b"r%d" % i
        node.handle_packet(Packet(parent, (StateRumor(payload),)), ("h", 0), 0.03)
        node.handle_packet(Packet(other, (StateRumor(payload),)), ("h", 0), 0.03)
    assert other in node.tree.lazy and node.stats["tree_duplicates"] == PRUNE_AFTER
    # Due at once, and finite: the agent's runtime reads any infinity as "nothing to do" (its timer stopped).
    assert math.isfinite(node.next_deadline()) and node.next_deadline() <= 0.03
    pruned = [s for s in sends(node.tick(0.04)) if Prune() in s.packet.messages]
    assert [addr_name(node, s) for s in pruned] == [other]


def test_an_ihave_for_a_missing_write_is_grafted_and_a_graft_is_answered() -> None:
    node = tree_node(readers=6)
    node.tick(0.01)
    ident = message_id(b"lost")
    node.handle_packet(Packet("p7", (IHave((ident,)),)), ("h", 7), 1.0)
    out = sends(node.tick(1.0 + node.tree.graft_timeout + 1e-9))
    assert [(addr_name(node, s), [m for m in s.packet.messages if isinstance(m, Graft)]) for s in out
            if any(isinstance(m, Graft) for m in s.packet.messages)] == [("p7", [Graft((ident,))])]
    node.broadcast_state(b"mine", 2.0)
    answer = sends(node.handle_packet(Packet("p6", (Graft((message_id(b"mine"),)),)), ("h", 6), 2.1))
    assert any(StateRumor(b"mine") in s.packet.messages and s.to == ("h", 6) for s in answer)
    assert "p6" in node.tree.eager


def test_tree_messages_from_unknown_or_dead_senders_are_dropped_and_counted() -> None:
    node = tree_node(readers=0)
    node.handle_packet(Packet("forged", (Graft(()), IHave((1,)), Prune())), ("h", 99), 0.0)
    assert node.stats["tree_unknown_member"] == 3
    assert "forged" not in node.tree.neighbours()
    assert node.member("forged") is None


def test_pull_mode_never_pushes_a_write_and_flood_mode_never_uses_the_tree() -> None:
    for mode, broadcast in (("pull", "tree"), ("push-pull", "flood")):
        node = tree_node(readers=6, mode=mode, broadcast=broadcast)  # type: ignore[arg-type]
        node.tick(0.01)
        assert node.tree.neighbours() == set()
        out = sends(node.broadcast_state(b"w", 0.02))
        assert StateRumor(b"w") in node.queue.peek_all()
        if mode == "pull":
            assert out == []


def test_a_critical_write_goes_from_its_writer_to_every_member_of_a_small_cluster() -> None:
    """core/critical.py: one hop to everyone, beyond the tree (tests/core/test_critical_reach.py: larger ones)."""
    node = tree_node(peers=12, readers=12)
    node.tick(0.01)
    normal = {addr_name(node, s) for s in sends(node.broadcast_state(b"n", 0.02))}
    critical = {addr_name(node, s) for s in sends(node.broadcast_state(b"c", 0.03, critical=True))}
    assert normal == node.tree.eager
    assert critical > normal and len(critical) == 12


def test_a_write_near_the_inline_limit_is_flooded_even_beside_digests() -> None:
    """The flood path keeps DIGEST_ALLOWANCE free in its packets; a 1 KiB value is larger than what that leaves
    of the MTU, so it goes in a packet without digests (before, it never left but in anti-entropy)."""
    node = tree_node(readers=6, broadcast="flood")
    assert node.publish_root_digest("ab" * 32, 1, 1)
    payload = b"v" * 1100
    out = sends(node.broadcast_state(payload, 0.02))
    assert [s for s in out if StateRumor(payload) in s.packet.messages]


def test_a_graft_is_answered_to_the_member_address_and_bounded() -> None:
    """Whoever forges a member's name in a graft cannot aim the answer elsewhere nor draw more than
    MAX_GRAFT_ANSWER payloads with one message."""
    from gossip_agent.core.plumtree import MAX_GRAFT_ANSWER, MAX_IDS_PER_MESSAGE

    node = tree_node(readers=6)
    node.tick(0.01)
    payloads = [b"p%03d" % i for i in range(MAX_IDS_PER_MESSAGE)]
    for p in payloads:
        node.broadcast_state(p, 0.02)
    graft = Graft(tuple(message_id(p) for p in payloads))
    out = sends(node.handle_packet(Packet("p6", (graft,)), ("evil", 9), 0.03))
    assert not out and node.stats["tree_unverified"] == 1  # not from p6's host: dropped
    out = sends(node.handle_packet(Packet("p6", (graft,)), ("h", 6), 0.03))
    answered = [m for s in out for m in s.packet.messages if isinstance(m, StateRumor)]
    assert {s.to for s in out} == {("h", 6)}
    assert len(answered) == MAX_GRAFT_ANSWER


def test_a_packet_of_grafts_draws_at_most_max_graft_answer_distinct_payloads() -> None:
    """MAX_GRAFT_ANSWER bounds a whole packet, not each GRAFT in it: a forged packet of many one-id grafts (~13
    bytes each), or one graft naming the same id again and again, drew a payload per id (about 70x the bytes it
    cost) at the member it names."""
    from gossip_agent.core.plumtree import MAX_GRAFT_ANSWER

    node = tree_node(readers=6)
    node.tick(0.01)
    payloads = [b"x" * 500 + b"%03d" % i for i in range(3 * MAX_GRAFT_ANSWER)]
    for p in payloads:
        node.broadcast_state(p, 0.02)
    ids = [message_id(p) for p in payloads]
    repeated = Graft((ids[0],) * MAX_GRAFT_ANSWER)
    out = sends(node.handle_packet(Packet("p6", (repeated, repeated)), ("h", 6), 0.03))
    assert [m for s in out for m in s.packet.messages if isinstance(m, StateRumor)] == [StateRumor(payloads[0])]
    many = tuple(Graft((i,)) for i in ids)
    out = sends(node.handle_packet(Packet("p6", many), ("h", 6), 0.04))
    answered = [m for s in out for m in s.packet.messages if isinstance(m, StateRumor)]
    assert len(answered) == len(set(answered)) == MAX_GRAFT_ANSWER


def test_a_graft_answers_a_critical_payload_as_critical() -> None:
    """The tree's cache keeps payloads only: a critical write repaired by a graft went on as a normal one (behind
    gossip.coalesceDelay at every later hop, and held back by the byte budget's reserve for critical ones)."""
    node = tree_node(readers=6)
    node.tick(0.01)
    node.broadcast_state(b"urgent", 0.02, critical=True)
    node.broadcast_state(b"plain", 0.02)
    graft = Graft((message_id(b"urgent"), message_id(b"plain")))
    out = sends(node.handle_packet(Packet("p6", (graft,)), ("h", 6), 0.03))
    answered = [m for s in out for m in s.packet.messages if isinstance(m, StateRumor)]
    assert answered == [StateRumor(b"urgent", True), StateRumor(b"plain", False)]


def test_pushes_too_large_to_share_a_packet_leave_at_once_and_small_ones_still_wait() -> None:
    """core/coalesce.py holds a push that follows another to the same neighbour within gossip.coalesceDelay, so
    that later ones share its packet. Two pushes that cannot share one gain nothing by waiting: at 100 writes/s
    of 1 KiB every batch held one push, ~10 ms per tree hop and a timer wake-up per push for no header saved."""
    node = tree_node(readers=6)
    node.tick(0.01)
    eager = node.tree.eager
    room = node._coalesce.max_bytes
    big = [bytes([i]) * (room // 2) for i in range(2)]
    small = [bytes([i]) * 100 for i in range(2)]
    for payload in big:  # the second too, right after the first
        out = sends(node.broadcast_state(payload, 0.02))
        assert {addr_name(node, s) for s in out} == eager
        assert all(StateRumor(payload) in s.packet.messages for s in out)
    assert len(node._coalesce) == 0 and node._coalesce.next_deadline() == math.inf
    first = sends(node.broadcast_state(small[0], 1.0))  # after a quiet spell: at once
    assert {addr_name(node, s) for s in first} == eager
    assert sends(node.broadcast_state(small[1], 1.001)) == []  # waits for the next ones to join it
    assert len(node._coalesce) == len(eager)


def test_a_packet_of_payloads_alone_from_another_host_is_counted_and_changes_no_link() -> None:
    """handle_packet skips the work for non-rumor messages when a packet holds payloads only (the tree's pushes):
    such a packet from a host other than its sender's is still counted, and still proves no link."""
    node = tree_node(readers=6)
    node.tick(0.01)
    sender = sorted({f"p{i}" for i in range(2, 8)} - node.tree.neighbours())[0]
    node.handle_packet(Packet(sender, (StateRumor(b"x"),)), ("elsewhere", 1), 0.02)
    assert node.stats["packets_not_from_member_host"] == 1
    assert node.tree.seen(message_id(b"x")) and sender not in node.tree.neighbours()
    node.handle_packet(Packet(sender, (StateRumor(b"y"),)), ("h", 9), 0.03)  # its host (any port)
    assert node.stats["packets_not_from_member_host"] == 1 and sender in node.tree.lazy
