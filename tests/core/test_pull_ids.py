"""Pull requests that name what the asker holds (wire type 19, core/pull_ids.py): the codec's short ids, the
asker's window of received payloads, answers that leave those out and count them as sent, and the reader
gating that keeps type 19 away from older agents (they drop a whole packet holding a type they do not know)."""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core import codec
from gossip_agent.core.broadcast import BroadcastQueue
from gossip_agent.core.config import GossipMode
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, PullRequest, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE, SHORT_ID_BYTES, message_id, short_id
from gossip_agent.core.pull_ids import RecentIds
from gossip_agent.core.readers import PEER_COORDINATES, SHORT_IDS

from .test_node_modes import drain, node_with_peers


def sid(payload: bytes) -> int:
    return short_id(message_id(payload))


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def raw(*message: object) -> bytes:
    return bytes((codec.VERSION,)) + msgpack.packb(["x", [list(message)]], use_bin_type=True)


# -- codec ------------------------------------------------------------------------------------------------
def test_short_ids_round_trip_at_four_bytes_an_id_and_are_labelled_by_kind() -> None:
    ids = (0, 1, (1 << 32) - 1)
    packet = Packet("a", (ShortIds(ShortKind.PULL, ids), ShortIds(ShortKind.OFFER), ShortIds(77, ids)))
    assert codec.decode_packet(codec.encode_packet(packet)) == packet  # a kind we do not know is kept
    assert codec.message_type(ShortIds(ShortKind.PULL)) == 19
    assert codec.message_size(ShortIds(ShortKind.PULL, ids)) == codec.message_size(ShortIds(ShortKind.PULL)) + 12
    old_kind = PullRequest("agent-1", ("10.0.0.1", 7946))
    assert codec.message_size(ShortIds(ShortKind.PULL)) < codec.message_size(old_kind) - 15
    assert [codec.message_label(ShortIds(k)) for k in (ShortKind.OFFER, ShortKind.PULL, 77)] == [
        "short_offer", "short_pull", "short_ids"]
    assert short_id(message_id(b"x")) == message_id(b"x") >> 32 < 1 << (8 * SHORT_ID_BYTES)


@pytest.mark.parametrize("message", [
    [19, 1, b"\x00" * 5],                                     # not a multiple of 4 bytes
    [19, 1, b"\x00" * 4 * (MAX_IDS_PER_MESSAGE + 1)],         # too many ids
    [19, 256, b""], [19, -1, b""], [19, True, b""],           # kind out of range, or not an int
    [19, 1, "abcd"], [19, 1], [19, 1, b"", 0],                # ids not bytes, wrong arity
])
def test_malformed_short_ids_are_refused(message: list[object]) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode_packet(raw(*message))


# -- the asker's window -------------------------------------------------------------------------------------
def test_recent_ids_keep_the_window_newest_first_and_are_bounded() -> None:
    r = RecentIds(max_ids=3)
    for i, t in ((1, 0.0), (2, 0.5), (3, 0.9)):
        r.add(i, t)
    assert r.ids_for("q1", 1.0, 0.6) == (3, 2)  # 1 is older than the window: forgotten (a peer never asked)
    r.add(2, 1.0)  # received again: keeps its first arrival (peers asked since were told then)
    r.add(4, 1.0)
    r.add(5, 1.0)
    assert r.ids_for("q2", 1.0, 10.0) == (5, 4, 3) and len(r) == 3


# -- the queue: held rumors count as sent -----------------------------------------------------------------
def test_a_rumor_the_asker_holds_is_not_sent_to_it_and_retires_once_everyone_holds_it() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    a, b = StateRumor(b"a"), StateRumor(b"b")
    q.enqueue(a, 10, sid=sid(b"a"))
    q.enqueue(b, 10, sid=sid(b"b"))
    assert q.take(1000, 3, to="p", held=frozenset({sid(b"a")})) == [b]
    assert q.take(1000, 3, to="p") == []  # a counts as sent to p: not later either
    assert q.take(1000, 3, to="q", held=frozenset({sid(b"a"), sid(b"b")})) == []
    assert len(q) == 0  # the other two members of three hold both: retired, nothing sent for them
    q.enqueue(a, 10, sid=sid(b"a"))
    assert q.take(1000, 3, to="p", to_live=False, held=frozenset({sid(b"a")})) == [a]  # a dead asker proves nothing


# -- the node -----------------------------------------------------------------------------------------------
def reader_pull_node() -> Node:
    node = node_with_peers("pull")
    for m in node.members():
        if m.name != node.name:
            node.readers.show(m.name, SHORT_IDS)
    return node


def test_a_pull_answer_leaves_out_what_the_request_says_the_asker_holds() -> None:
    """Without the ids, every member answered each asker with every rumor it held that it had not sent that
    asker, whoever else had delivered it meanwhile: ~7 copies per member at N = 8 (bench: 10.4x the floor)."""
    node = reader_pull_node()
    node.broadcast_state(b"old", 1.0)
    node.broadcast_state(b"new", 1.0)
    p3 = node.member("p3")
    assert p3 is not None
    answer = sends(node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL, (sid(b"old"),)),)), p3.addr, 1.1))
    states = [m for s in answer for m in s.packet.messages if isinstance(m, StateRumor)]
    assert states == [StateRumor(b"new")]
    # Counted as sent to p3: a later request that names nothing does not draw it either, and nothing to say
    # is no packet at all.
    assert sends(node.handle_packet(Packet("p3", (ShortIds(ShortKind.PULL),)), p3.addr, 1.2)) == []


def test_pull_requests_name_the_payloads_received_within_the_window() -> None:
    node = reader_pull_node()
    p2 = node.member("p2")
    assert p2 is not None
    node.handle_packet(Packet("p2", (StateRumor(b"x"),)), p2.addr, 1.0)
    requests = [(e.to, m) for e in sends(node.tick(1.0 + node.config.gossip.interval)) for m in e.packet.messages
                if isinstance(m, ShortIds)]
    assert requests and all(r.kind == ShortKind.PULL for _, r in requests)
    # Named once to each peer asked (a probe's ping and the round may both ask one), never to p2: x came from it.
    named: dict[tuple[str, int], list[int]] = {}
    for to, r in requests:
        named.setdefault(to, []).extend(r.ids)
    assert all(ids == ([] if to == p2.addr else [sid(b"x")]) for to, ids in named.items())
    later = 1.0 + 2 * node._held_window()
    drain(node, later)
    requests = [m for e in sends(node.tick(later + 10)) for m in e.packet.messages if isinstance(m, ShortIds)]
    assert all(r.ids == () for r in requests)  # past the window: holders have retired it, naming it is waste


def test_type_19_goes_to_an_older_agent_only_in_an_offer_packet_of_its_own() -> None:
    """Mixed releases: a member that never sent us type 19 gets the old pull request, and short ids only as an
    offer apart beside a probe (an older agent drops that packet alone). A newer member's offer makes it a
    reader, answered with our own offer once, so both ends know; from then on its pull requests are short."""
    node = node_with_peers("pull")
    offers: list[Send] = []
    for e in sends(node.tick(0.0) + node.tick(5.0)):
        shorts = [m for m in e.packet.messages if isinstance(m, ShortIds)]
        assert not any(isinstance(m, ShortIds) and m.kind == ShortKind.PULL for m in e.packet.messages)
        if shorts:
            assert e.packet.messages == (ShortIds(ShortKind.OFFER),)
            offers.append(e)
    assert offers
    p4 = node.member("p4")
    assert p4 is not None and not node.readers.reads("p4", SHORT_IDS)
    back = sends(node.handle_packet(Packet("p4", (ShortIds(ShortKind.OFFER),)), p4.addr, 6.0))
    assert [(s.to, s.packet.messages) for s in back] == [(p4.addr, (ShortIds(ShortKind.OFFER),))]
    assert node.readers.reads("p4", SHORT_IDS)
    assert sends(node.handle_packet(Packet("p4", (ShortIds(ShortKind.OFFER),)), p4.addr, 6.1)) == []  # once
    assert node._pull_request("p4", ()) == ShortIds(ShortKind.PULL)
    assert isinstance(node._pull_request("p5", ()), PullRequest)
    assert sends(node.handle_packet(Packet("ghost", (ShortIds(ShortKind.OFFER),)), ("h", 99), 6.2)) == []
    assert node.stats["short_ids_unknown_member"] == 1


def test_push_mode_never_offers_short_ids() -> None:
    node = node_with_peers("push")
    assert not any(isinstance(m, ShortIds) for e in sends(node.tick(0.0) + node.tick(5.0))
                   for m in e.packet.messages)


def test_push_pull_asks_less_while_asking_brings_nothing() -> None:
    """On the tree state never waits in a queue, so a pull request in every gossip round (each round runs while
    convergence digests are fresh: under writes, every round) brought nothing but a packet of digests back.
    They back off as pull mode's do, to about one round a probe interval, while nothing fresh arrives."""
    node = node_with_peers("push-pull", broadcast="tree")
    for m in node.members():
        node.readers.show(m.name, SHORT_IDS)  # they read digests: rounds carry them
    rounds = asked = 0
    t = 0.0
    for _ in range(60):  # 12 s of rounds
        t += node.config.gossip.interval
        node.publish_root_digest(f"{int(t * 1000):064x}", 1, int(t * 1000), now=t)  # fresh digests: rounds run
        before = node.stats["gossip_packets"]
        out = sends(node.tick(t))
        rounds += node.stats["gossip_packets"] > before
        asked += any(isinstance(m, PullRequest | ShortIds) for e in out for m in e.packet.messages)
    assert rounds >= 30 and 1 <= asked <= 14


@pytest.mark.parametrize("mode", ["push", "pull", "push-pull"])
def test_a_previous_release_peer_never_gets_type_19_beside_other_messages(mode: GossipMode) -> None:
    """Peers at the previous release's level (they read digests, the tree and coordinates: type 18 and below)
    get type 19 only as an offer in a packet of its own, however the node is driven: writes, pull requests,
    the tree's announcements and grafts, probes. (Checked by hand against that release's decoder too.)"""
    node = node_with_peers(mode, broadcast="tree")
    for m in node.members():
        if m.name != node.name:
            node.readers.show(m.name, PEER_COORDINATES)
    p3 = node.member("p3")
    assert p3 is not None
    t, packets = 0.0, []
    for step in range(120):
        t += 0.05
        out = node.tick(t)
        if step % 3 == 0:
            out += node.broadcast_state(b"w%d" % step, t)
        if step % 5 == 0:
            out += node.handle_packet(Packet("p3", (PullRequest("p3", p3.addr), StateRumor(b"o%d" % step))),
                                      p3.addr, t)
        packets += [s.packet.messages for s in sends(out)]
    with_short = [msgs for msgs in packets if any(isinstance(m, ShortIds) for m in msgs)]
    assert len(packets) > 50 and with_short
    assert all(msgs == (ShortIds(ShortKind.OFFER),) for msgs in with_short)
