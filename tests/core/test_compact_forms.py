"""The compact forms (reader level COMPACT): coordinates as half floats (types 20 and 21, half the bytes of the
older float32 types 14 and 18) and pings naming neither their sender nor its address (type 22). Only to
members that showed they read them, learnt by one offer in a packet of its own at the first ack to a member of
the older form (an older agent drops a whole packet holding a type it does not know, so no form may be
guessed)."""

from __future__ import annotations

import dataclasses
import math
import random
import struct

import msgpack
import pytest

from gossip_agent.core import codec
from gossip_agent.core.codec import DecodeError
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import UNKNOWN_ADDR, Ack, Alive, NetCoordinate, Packet, PeerCoordinates, Ping, PingReq
from gossip_agent.core.node import Node
from gossip_agent.core.readers import COMPACT, COORDINATES, SHORT_IDS
from gossip_agent.core.vivaldi import Coordinate
from tests.core.test_node import cfg, node_with_peers, tick_until_first_ping

PING = Ping(7, "a", "p2", ("h", 2))


def _c(x: float, *, compact: bool = False) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.05, 0.0, compact)


def _sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def _split(effects: list[Effect]) -> tuple[Send, list[Send]]:
    """The ack's send and the others (offers apart)."""
    sends = _sends(effects)
    [ack] = [s for s in sends if any(isinstance(m, Ack) for m in s.packet.messages)]
    return ack, [s for s in sends if s is not ack]


def _coordinates_in(send: Send) -> list[NetCoordinate | PeerCoordinates]:
    return [m for m in send.packet.messages if isinstance(m, NetCoordinate | PeerCoordinates)]


# -- the codec ---------------------------------------------------------------------------------------------------


def test_the_compact_forms_take_about_half_the_bytes_and_round_trip_at_half_precision() -> None:
    c = NetCoordinate((0.0123, -0.0004, 0.25, 0.0, 1e-6, -2.5, 0.001, 0.0), 0.0001, 0.37, -0.00002)
    wide, small = codec.message_size(c), codec.message_size(dataclasses.replace(c, compact=True))
    assert (wide, small) == (48, 26)
    rows = PeerCoordinates((("node-12", c, 1.5), ("node-13", c, 0.0)))
    assert codec.message_size(dataclasses.replace(rows, compact=True)) == codec.message_size(rows) - 2 * 22
    [back] = codec.decode_packet(codec.encode_packet(Packet("a", (dataclasses.replace(c, compact=True),)))).messages
    assert isinstance(back, NetCoordinate) and back.compact
    sent = (*c.vec, c.height, c.error, c.adjustment)
    got = (*back.vec, back.height, back.error, back.adjustment)
    assert got == codec.half_rounded(sent)
    for s, g in zip(sent, got, strict=True):
        assert g == pytest.approx(s, rel=2 ** -11, abs=6e-8)  # 11 significant bits; subnormals below 6e-5
    [rows_back] = codec.decode_packet(codec.encode_packet(Packet("a", (dataclasses.replace(rows, compact=True),)))
                                      ).messages
    assert isinstance(rows_back, PeerCoordinates) and rows_back.compact
    assert [(n, age) for n, _, age in rows_back.rows] == [("node-12", 1.5), ("node-13", 0.0)]
    assert not any(r.compact for _, r, _ in rows_back.rows)  # a row's form is its message's


def test_a_compact_body_of_another_length_is_malformed_and_huge_values_are_clamped_not_raised() -> None:
    for body in (b"", bytes(21), bytes(23), bytes(44)):
        for message in ([20, body], [21, [["b", body, 0]]]):
            with pytest.raises(DecodeError) as err:
                codec.decode_packet(bytes((codec.VERSION,)) + msgpack.packb(["x", [message]]))
            assert err.value.reason == "malformed"
    # Packing never raises: a value beyond the half range is sent at its largest finite value (a checked
    # coordinate is within 100 s; this is a guard, and the receiver's check refuses it anyway).
    huge = NetCoordinate((1e9,) + (0.0,) * 7, 0.0001, 0.05, -1e9, compact=True)
    [back] = codec.decode_packet(codec.encode_packet(Packet("a", (huge,)))).messages
    assert isinstance(back, NetCoordinate) and back.vec[0] == codec.HALF_MAX and back.adjustment == -codec.HALF_MAX
    # NaN and infinity travel as what they are, for the core's counted refusal.
    nan = struct.pack("<11e", math.nan, *([0.0] * 10))
    [odd] = codec.decode_packet(bytes((codec.VERSION,)) + msgpack.packb(["x", [[20, nan]]])).messages
    assert isinstance(odd, NetCoordinate) and math.isnan(odd.vec[0])


# -- the node ----------------------------------------------------------------------------------------------------


def test_a_member_of_the_older_form_gets_ours_in_it_and_one_compact_offer_apart() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (_c(0.02),)), ("h", 2), 0.5)  # p2 showed the older form (a previous release)
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), 1.0))
    [own] = _coordinates_in(ack)
    assert isinstance(own, NetCoordinate) and not own.compact
    assert codec.message_type(own) is codec.MessageType.COORDINATE
    [offer] = apart
    [compact] = offer.packet.messages
    assert isinstance(compact, NetCoordinate) and compact.compact and offer.to == ("h", 2)
    assert a.stats["compact_coordinate_offers"] == 1
    # Once only: an older agent that dropped it gets the older form on every ack, and no more offers.
    a.topology.client.coordinate = Coordinate((0.01,) + (0.0,) * 7, 0.0001, 0.05, 0.0)  # moved: ours rides
    for t in (2.0, 3.0, 400.0):
        ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), t))
        assert not apart
        assert all(not m.compact for m in _coordinates_in(ack))
    assert a.stats["compact_coordinate_offers"] == 1


def test_once_it_sent_the_compact_form_it_gets_ours_and_rows_in_it_on_every_ack() -> None:
    a = node_with_peers(cfg("a"), 3, seed=3)
    a.handle_packet(Packet("p3", (_c(0.03),)), ("h", 3), 0.4)  # a coordinate of p3 to pass on as a row
    a.handle_packet(Packet("p2", (_c(0.02, compact=True), PeerCoordinates((), compact=True))), ("h", 2), 0.5)
    assert a.readers.level("p2") == COMPACT
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), 1.0))
    assert not apart  # no offer: it showed the form
    riders = _coordinates_in(ack)
    assert {type(m) for m in riders} == {NetCoordinate, PeerCoordinates}
    assert all(m.compact for m in riders)
    assert {codec.message_type(m) for m in riders} == {codec.MessageType.COMPACT_COORDINATE,
                                                       codec.MessageType.COMPACT_PEER_COORDINATES}
    # The values it decodes are the ones every receiver decodes (rounded to half floats for both forms).
    own = next(m for m in riders if isinstance(m, NetCoordinate))
    assert own == a.topology.coordinate_message(compact=True)
    assert dataclasses.replace(own, compact=False) == a.topology.coordinate_message()


def test_two_members_of_this_release_move_to_the_compact_form_after_the_first_acks() -> None:
    """a acks b's probe (older form and the offer); b's next ack to a goes compact, and a's after it too."""
    a = node_with_peers(cfg("a"), 1, seed=3)
    b = Node(cfg("p2"), ("h", 2), random.Random(4), 0.0)
    b.handle_packet(Packet("a", (Alive("a", 1, ("h", 1)),)), ("h", 1), 0.0)
    b.handle_packet(Packet("a", (a.topology.coordinate_message(),)), ("h", 1), 0.1)  # b knows a: older form
    a.handle_packet(Packet("p2", (b.topology.coordinate_message(),)), ("h", 2), 0.1)
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), 1.0))
    for send in (*apart, ack):  # b receives the offer and the ack
        b.handle_packet(send.packet, ("h", 1), 1.01)
    assert b.readers.level("a") >= COMPACT
    back, back_apart = _split(b.handle_packet(Packet("a", (Ping(9, "p2", "a", ("h", 1)),)), ("h", 1), 2.0))
    assert not back_apart  # b knows a reads the compact form: no offer from b
    assert all(m.compact for m in _coordinates_in(back)) and _coordinates_in(back)
    a.handle_packet(back.packet, ("h", 2), 2.01)
    assert a.readers.level("p2") >= COMPACT


def test_a_spoofed_compact_coordinate_does_not_raise_the_level_and_a_reset_offers_again() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (_c(0.02),)), ("h", 2), 0.5)
    a.handle_packet(Packet("p2", (_c(0.02, compact=True),)), ("evil", 9), 0.6)  # not from p2's host
    assert a.readers.level("p2") == COORDINATES
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), 1.0))
    assert len(apart) == 1 and all(not m.compact for m in _coordinates_in(ack))
    # p2 back at another release (a reset: back from suspicion or death, or moved): offered again.
    a.readers.show("p2", SHORT_IDS)
    a.topology.offer_again("p2")
    a.handle_packet(Packet("p2", (_c(0.02),)), ("h", 2), 5.0)
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), 6.0))
    assert len(apart) == 1 and a.stats["compact_coordinate_offers"] == 2


# -- compact pings -----------------------------------------------------------------------------------------------


def test_a_compact_ping_is_21_bytes_smaller_and_the_node_fills_in_its_source() -> None:
    whole = Ping(123456, "ours-33", "ours-12", ("127.0.0.1", 31012))
    compact = dataclasses.replace(whole, compact=True)
    assert codec.message_size(whole) - codec.message_size(compact) == 21  # the name (8), host (10), port (3)
    [back] = codec.decode_packet(codec.encode_packet(Packet("ours-12", (compact,)))).messages
    assert back == Ping(123456, "ours-33", "", UNKNOWN_ADDR, True)


def test_our_probes_ping_compactly_only_a_member_that_showed_the_compact_forms() -> None:
    for shown in (SHORT_IDS, COMPACT):
        a = node_with_peers(cfg("a"), 1, seed=3)
        a.readers.show("p2", shown)
        _, probe = tick_until_first_ping(a)
        ping = probe.packet.messages[0]
        assert isinstance(ping, Ping) and ping.compact == (shown == COMPACT)


def test_a_compact_ping_from_the_members_host_is_acked_at_its_table_address_and_shows_its_level() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (_c(0.02),)), ("h", 2), 0.5)
    compact = Ping(7, "a", "", UNKNOWN_ADDR, True)
    ack, _ = _split(a.handle_packet(Packet("p2", (compact,)), ("h", 40000), 1.0))  # (a mapped source port)
    assert ack.to == ("h", 2) and _coordinates_in(ack)  # the table address, with the riders
    assert a.readers.level("p2") == COMPACT
    assert a.stats["acks_bare"] == 0


def test_a_compact_ping_from_elsewhere_gets_the_bare_ack_where_it_came_from_and_shows_nothing() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (_c(0.02),)), ("h", 2), 0.5)
    compact = Ping(7, "a", "", UNKNOWN_ADDR, True)
    # Naming p2 from another host: p2 moved before its Alive reached us, or a forgery. The ack goes back to the
    # sender, bare (nothing owed to p2 rides to an address that is not p2's in our table).
    [ack] = _sends(a.handle_packet(Packet("p2", (compact,)), ("elsewhere", 9), 1.0))
    assert ack.to == ("elsewhere", 9) and [type(m) for m in ack.packet.messages] == [Ack]
    assert a.readers.level("p2") == COORDINATES and a.stats["acks_bare"] == 1
    # From a sender we do not know at all: the same.
    [ack] = _sends(a.handle_packet(Packet("stranger", (compact,)), ("h", 77), 2.0))
    assert ack.to == ("h", 77) and [type(m) for m in ack.packet.messages] == [Ack]


def test_a_relayed_ping_is_compact_only_to_a_reader_at_its_table_address() -> None:
    a = node_with_peers(cfg("a"), 2, seed=3)
    a.readers.show("p3", COMPACT)
    for target_addr, compact in ((("h", 3), True), (("h", 99), False)):
        req = PingReq(5, "p3", target_addr, "p2", ("h", 2), want_nack=False)
        [relay] = [s for s in _sends(a.handle_packet(Packet("p2", (req,)), ("h", 2), 1.0)) if s.to == target_addr]
        ping = relay.packet.messages[0]
        assert isinstance(ping, Ping) and ping.compact == compact and ping.source == "a"


def test_a_newer_incarnation_gets_the_whole_forms_until_it_shows_the_compact_ones_again() -> None:
    """A member restarted between our probes, never suspected, at the same address, may run an earlier release
    (a rollback): it would drop our compact probes and acks whole. Its newer incarnation lowers its level below
    the compact forms; one offer at our next ack brings a member of this release back to them."""
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (_c(0.02, compact=True),)), ("h", 2), 0.5)
    assert a.readers.level("p2") == COMPACT
    a.handle_packet(Packet("p2", (Alive("p2", 2, ("h", 2)),)), ("h", 2), 5.0)  # same address: no reset
    assert a.readers.level("p2") == SHORT_IDS
    t, probe = tick_until_first_ping(a)
    ping = probe.packet.messages[0]
    assert isinstance(ping, Ping) and not ping.compact
    ack, apart = _split(a.handle_packet(Packet("p2", (PING,)), ("h", 2), t + 0.1))
    assert all(not m.compact for m in _coordinates_in(ack)) and len(apart) == 1  # the offer, once more
    a.handle_packet(Packet("p2", (_c(0.02, compact=True),)), ("h", 2), t + 0.2)  # it shows them again
    assert a.readers.level("p2") == COMPACT
