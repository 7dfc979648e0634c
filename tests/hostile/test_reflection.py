"""Forged pings and ping-reqs must not turn an agent into a reflector.

A ping names the address its ack goes to, and a ping-req names two (the target's and the asker's). Anyone can
send one with a victim's address in it. What we answer to an address that is not the named member's table
address is the bare message (an ack, a ping, a nack), never the riders an honest member gets:
piggybacked rumors, convergence digests, IHAVE announcements, second-hand coordinate rows. Before this rule a
forged 50-byte ping drew about an MTU's worth (~20x) at the victim.

The amplification ratio is bytes out (everything sent to the victim) / bytes in (the forged packet), both as
encoded packets (core/codec.py; encryption adds the same overhead to both sides).
"""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import (
    Ack,
    Address,
    IHave,
    Nack,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PingReq,
)
from gossip_agent.core.node import Node
from gossip_agent.core.readers import PEER_COORDINATES
from tests.hostile.core_support import lan_node

VICTIM: Address = ("192.0.2.66", 53)
ATTACKER: Address = ("198.51.100.7", 4000)



def _loaded_node() -> tuple[Node, str]:
    """Agent "a" with every kind of rider waiting for its lazy tree neighbour (a reader of every message type):
    queued membership rumors, a fresh convergence digest, announced write ids, coordinates to pass on."""
    node = lan_node(peers=28, tree_readers=True, meta={"role": "x" * 40})
    for i in range(2, 30):
        addr = (f"10.0.0.{i}", 7946)
        node.handle_packet(Packet(f"p{i}", (NetCoordinate((0.001 * i,) * 8, 0.0001, 0.5, 0.0),)), addr, 0.0)
        node.readers.show(f"p{i}", PEER_COORDINATES)
    node.tick(0.01)
    lazy = next(f"p{i}" for i in range(2, 30) if f"p{i}" not in node.tree.eager)
    addr = node.table.get(lazy).addr  # type: ignore[union-attr]
    node.handle_packet(Packet(lazy, (IHave(()),)), addr, 0.02)
    assert lazy in node.tree.lazy
    node.publish_root_digest("ab" * 32, 1000, 1_700_000_000_000, now=0.03)
    for k in range(40):
        node.broadcast_state(b"write-%d" % k, 0.04)
    return node, lazy


def _bytes_to(effects: list[Effect], to: Address) -> tuple[int, list[object]]:
    sends = [e for e in effects if isinstance(e, Send) and e.to == to]
    return sum(len(codec.encode_packet(s.packet)) for s in sends), [m for s in sends for m in s.packet.messages]


def test_a_forged_ping_draws_only_the_bare_ack() -> None:
    node, lazy = _loaded_node()
    forged = Packet(lazy, (Ping(7, "a", lazy, VICTIM),))
    size_in = len(codec.encode_packet(forged))
    size_out, msgs = _bytes_to(node.handle_packet(forged, ATTACKER, 1.0), VICTIM)
    ratio = size_out / size_in
    print(f"forged ping: {size_in} B in, {size_out} B out, amplification {ratio:.2f}x")
    assert [type(m) for m in msgs] == [Ack]
    assert ratio <= 1.0
    assert node.stats["acks_bare"] == 1
    # The same ping from the member's own address gets the riders (what the victim used to get): this setup
    # does hold them, so the check above is not vacuous.
    own = node.table.get(lazy).addr  # type: ignore[union-attr]
    honest = Packet(lazy, (Ping(8, "a", lazy, own),))
    size_honest, riders = _bytes_to(node.handle_packet(honest, own, 1.01), own)
    print(f"honest ping: {size_in} B in, {size_honest} B out, {size_honest / size_in:.2f}x")
    assert size_honest / size_in > 10
    assert {IHave, PeerCoordinates} <= {type(m) for m in riders}


def test_a_ping_from_an_unknown_name_draws_the_bare_ack() -> None:
    node, _ = _loaded_node()
    forged = Packet("nobody", (Ping(7, "a", "nobody", VICTIM),))
    _, msgs = _bytes_to(node.handle_packet(forged, ATTACKER, 1.0), VICTIM)
    assert [type(m) for m in msgs] == [Ack]


def test_a_forged_ping_req_sends_only_bare_pings_acks_and_nacks_to_addresses_off_the_table() -> None:
    """A ping-req naming a member with the victim's address as the target's (or as the asker's) makes us send the
    victim a bare ping (or a bare ack / nack), not a packet of riders."""
    node, lazy = _loaded_node()
    req = Packet(lazy, (PingReq(5, "p3", VICTIM, lazy, ATTACKER, want_nack=True),))
    size_in = len(codec.encode_packet(req))
    size_out, msgs = _bytes_to(node.handle_packet(req, ATTACKER, 1.0), VICTIM)
    assert [type(m) for m in msgs] == [Ping]
    assert size_out / size_in <= 1.5
    req = Packet(lazy, (PingReq(6, "p3", node.table.get("p3").addr, lazy, VICTIM, want_nack=True),))  # type: ignore[union-attr]
    node.handle_packet(req, ATTACKER, 1.1)
    _, msgs = _bytes_to(node.tick(1.1 + node.config.membership.probe_timeout), VICTIM)
    assert [type(m) for m in msgs] == [Nack]


def test_a_flood_of_ping_reqs_is_capped() -> None:
    """Every ping-req is remembered for a probe interval and scanned by next_deadline: a flood grew that (and the
    pings we sent for it) without bound."""
    from gossip_agent.core.probing import _MAX_RELAYS

    node, lazy = _loaded_node()
    target = node.table.get("p3").addr  # type: ignore[union-attr]
    pings = 0
    for k in range(3 * _MAX_RELAYS):
        out = node.handle_packet(Packet(lazy, (PingReq(k, "p3", target, lazy, ATTACKER, want_nack=False),)),
                                 ATTACKER, 1.0)
        pings += sum(isinstance(m, Ping) for e in out if isinstance(e, Send) for m in e.packet.messages)
    assert pings == _MAX_RELAYS and len(node._relays) == _MAX_RELAYS
    assert node.stats["ping_reqs_over_cap"] == 2 * _MAX_RELAYS
    node.tick(1.0 + node.config.membership.probe_interval)  # expired: room again
    assert not node._relays


def test_a_packet_of_many_pings_draws_one_ack() -> None:
    """An honest packet holds one ping (and one ping-req) at most; a datagram stuffed with pings naming a member's
    own address drew an ack with riders per ping at that member."""
    node, lazy = _loaded_node()
    own = node.table.get(lazy).addr  # type: ignore[union-attr]
    stuffed = Packet(lazy, tuple(Ping(k, "a", lazy, own) for k in range(200)))
    size_in = len(codec.encode_packet(stuffed))
    size_out, msgs = _bytes_to(node.handle_packet(stuffed, ATTACKER, 1.0), own)
    print(f"200 pings in one packet: {size_in} B in, {size_out} B out, {size_out / size_in:.2f}x")
    assert sum(isinstance(m, Ack) for m in msgs) == 1
    assert size_out < size_in
    assert node.stats["pings_over_limit"] == 199
    reqs = Packet(lazy, tuple(PingReq(k, "p3", VICTIM, lazy, own, want_nack=False) for k in range(50)))
    _, msgs = _bytes_to(node.handle_packet(reqs, ATTACKER, 1.1), VICTIM)
    assert [type(m) for m in msgs] == [Ping]
