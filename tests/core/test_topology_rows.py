"""Second-hand coordinates (type 18) and the one reader registry: every member can estimate any pair soon
after it joins, without probing both ends; a fresher coordinate is never replaced by an older one; rows are
bounded and checked at decode; and an agent of the previous release (reads coordinates, not rows) never gets
a row in a packet that holds anything else (it would drop the whole packet: the ack, for instance)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import msgpack
import pytest

from gossip_agent.core import codec, topology_state
from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import (
    Ack,
    Alive,
    MemberSnapshot,
    MemberState,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PushPullState,
)
from gossip_agent.core.readers import COORDINATES, DIGESTS, PEER_COORDINATES, Readers
from gossip_agent.core.topology_state import FIRST_HAND_HOLD, ZONE_META_KEY, TopologyState
from tests.core.test_node import Cluster, cfg, node_with_peers, probe_with_lower_offers


def _c(x: float) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.5, 0.0)


def _sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


# -- the registry ---------------------------------------------------------------------------------------------


def test_reader_levels_only_rise_and_a_reset_forgets_them() -> None:
    r = Readers()
    digests = r.view(DIGESTS)
    assert "p" not in digests and not r.reads("p", DIGESTS)
    r.show("p", PEER_COORDINATES)
    assert "p" in digests and r.reads("p", COORDINATES) and r.reads("p", PEER_COORDINATES)
    r.show("p", DIGESTS)  # a digest later does not lower what it showed
    assert r.reads("p", PEER_COORDINATES)
    digests.add("q")
    assert r.reads("q", DIGESTS) and not r.reads("q", COORDINATES) and sorted(digests) == ["p", "q"]
    digests.discard("p")  # back from the dead: perhaps an older release now
    assert not r.reads("p", DIGESTS) and len(digests) == 1


def test_the_node_keeps_one_registry_for_digests_and_coordinates() -> None:
    a = node_with_peers(cfg("a"), 2, seed=3)
    a.handle_packet(Packet("p2", (_c(0.01),)), ("h", 2), 1.0)
    assert a.topology.reads_coordinates("p2") and "p2" in a._digest_readers  # a coordinate reader reads digests
    assert not a.topology.reads_rows("p2")


# -- codec ----------------------------------------------------------------------------------------------------


def test_rows_round_trip_and_are_bounded_at_decode() -> None:
    msg = PeerCoordinates((("p1", _c(0.25), 3.4), ("p2", _c(-0.5), 0.0)))
    [back] = codec.decode_packet(codec.encode_packet(Packet("a", (msg,)))).messages
    assert isinstance(back, PeerCoordinates) and [(n, age) for n, _, age in back.rows] == [("p1", 3.4), ("p2", 0.0)]
    assert back.rows[0][1].vec[0] == pytest.approx(0.25)
    assert codec.message_size(msg) == len(msgpack.packb(codec._message_tuple(msg), use_bin_type=True))
    old = PeerCoordinates((("p1", _c(0.0), 1e9),))  # an age past the wire's range travels at the cap
    [back] = codec.decode_packet(codec.encode_packet(Packet("a", (old,)))).messages
    assert isinstance(back, PeerCoordinates) and back.rows[0][2] == codec.MAX_COORDINATE_AGE
    body = codec._COORDINATE.pack(*(0.0,) * 11)

    def raw(rows: object) -> bytes:
        return bytes((codec.VERSION,)) + msgpack.packb(["a", [[18, rows]]], use_bin_type=True)

    for bad in ([["p", body, 1]] * (codec.MAX_PEER_COORDINATE_ROWS + 1), [["p", body[:-1], 1]], [["p", body]],
                [["p", body, -1]], [["p", body, 70000]], "rows", [[7, body, 1]]):
        with pytest.raises(codec.DecodeError):
            codec.decode_packet(raw(bad))
    assert isinstance(codec.decode_packet(raw([])).messages[0], PeerCoordinates)  # an empty offer is fine


# -- what the topology state keeps ---------------------------------------------------------------------------


def test_a_row_never_replaces_a_fresher_coordinate_and_hostile_rows_are_counted() -> None:
    topo = TopologyState(TopologyConfig(), max_peers=10)
    members = {"p1", "p2", "p3"}
    topo.on_coordinate("p1", _c(0.1), now=100.0)  # first-hand at t = 100
    kept = topo.on_rows("p2", PeerCoordinates((("p1", _c(0.9), 5.0), ("p3", _c(0.3), 5.0))), 102.0,
                        members.__contains__, "me")
    assert kept == 1 and topo.coordinates()["p1"].vec[0] == pytest.approx(0.1)  # row was current at 97: older
    assert topo.coordinates()["p3"].vec[0] == pytest.approx(0.3)
    kept = topo.on_rows("p2", PeerCoordinates((("p1", _c(0.7), 0.5),)), 102.0, members.__contains__, "me")
    assert kept == 0 and topo.coordinates()["p1"].vec[0] == pytest.approx(0.1)  # fresher, but p1's own stands
    later = 100.0 + FIRST_HAND_HOLD + 1
    kept = topo.on_rows("p2", PeerCoordinates((("p1", _c(0.7), 0.5),)), later, members.__contains__, "me")
    assert kept == 1 and topo.coordinates()["p1"].vec[0] == pytest.approx(0.7)  # after the hold: fresher wins
    nan = NetCoordinate((math.nan,) * 8, 0.0, 1.0, 0.0)
    kept = topo.on_rows("p2", PeerCoordinates((("me", _c(0.2), 0.0), ("stranger", _c(0.2), 0.0),
                                               ("p3", nan, 0.0))), 103.0, members.__contains__, "me")
    assert kept == 0 and topo.stats["rows_unknown_member"] == 2 and topo.stats["rows_rejected"] == 1
    assert "stranger" not in topo.coordinates() and topo.coordinates()["p3"].vec[0] == pytest.approx(0.3)
    assert topo.reads_rows("p2")


def test_each_peer_gets_every_change_once_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_state, "ROW_BURST", 1e9)  # the walk's order here, not the allowance
    topo = TopologyState(TopologyConfig(), max_peers=20)
    for i in range(7):
        topo.on_coordinate(f"p{i}", _c(i / 10), now=0.0)
    seen: list[str] = []
    while (msg := topo.rows_for("p0", 1.0)) is not None:
        seen += [name for name, _, _ in msg.rows]
    assert seen == [f"p{i}" for i in range(1, 7)]  # all but its own, each once
    assert topo.rows_for("p0", 2.0) is None  # nothing changed since
    topo.on_coordinate("p3", _c(0.45), now=3.0)  # a first-hand update (a noticeable move: moved_noticeably)
    topo.on_rows("p5", PeerCoordinates((("p7", _c(0.7), 1.0),)), 4.0, lambda n: True, "me")  # a kept row
    msg = topo.rows_for("p0", 5.0, limit=5)
    assert msg is not None and [(n, age) for n, _, age in msg.rows] == [("p3", 2.0), ("p7", 2.0)]
    assert msg.rows[0][1].vec[0] == pytest.approx(0.45)  # the new coordinate, not an early snapshot
    other = topo.rows_for("p6", 5.0, limit=20)  # another peer walks from the start, in order of change
    assert other is not None and [n for n, _, _ in other.rows] == ["p0", "p1", "p2", "p4", "p5", "p3", "p7"]
    topo.forget("p3")
    assert topo.rows_for("p1", 5.0, limit=20) is not None and all(
        n != "p3" for n, _, _ in topo.rows_for("p2", 5.0, limit=20).rows)  # type: ignore[union-attr]


# -- the node --------------------------------------------------------------------------------------------------


def test_rows_are_offered_in_a_packet_of_their_own_and_ride_on_acks_to_readers_only() -> None:
    a = node_with_peers(cfg("a"), 3, seed=3)
    a.handle_packet(Packet("p3", (_c(0.02),)), ("h", 3), 0.5)  # a's coordinate of p3, to pass on
    ping = Ping(7, "a", "p2", ("h", 2))
    # p2 reads coordinates (the previous release): the ack carries a's own coordinate, never rows.
    [ack] = _acks(a.handle_packet(Packet("p2", (_c(0.01), ping)), ("h", 2), 1.0))
    assert [type(m) for m in ack.packet.messages] == [Ack, NetCoordinate]
    # Once p2 sent rows it reads them: a few ride on the ack.
    a.handle_packet(Packet("p2", (PeerCoordinates(()),)), ("h", 2), 1.5)
    [ack] = _acks(a.handle_packet(Packet("p2", (ping,)), ("h", 2), 2.0))
    kinds = [type(m) for m in ack.packet.messages]
    # (a's own coordinate has not moved since p2 got it a second ago: it is not repeated; own_on_ack)
    assert kinds[:2] == [Ack, PeerCoordinates]
    rows = ack.packet.messages[1]
    assert isinstance(rows, PeerCoordinates) and [n for n, _, _ in rows.rows] == ["p3"]
    # Probing a member not known to read rows: an offer apart, before the ping (an older agent drops it alone).
    # (After our unanswered hello: beside the first or second probe of it.)
    effects = probe_with_lower_offers(a, lambda effects: any(
        [type(m) for m in s.packet.messages] == [PeerCoordinates] for s in _sends(effects)))
    kinds_all = [[type(m) for m in s.packet.messages] for s in _sends(effects)]
    for k in kinds_all:
        assert PeerCoordinates not in k or k == [PeerCoordinates]
    assert any(k == [PeerCoordinates] for k in kinds_all) or all(
        a.topology.reads_rows(s.packet.messages[0].target) for s in _sends(effects)  # type: ignore[union-attr]
        if isinstance(s.packet.messages[0], Ping))


def test_a_joiner_gets_the_coordinate_table_from_the_member_it_joins_through() -> None:
    a = node_with_peers(cfg("a"), 3, seed=3)
    for i, name in enumerate(("p2", "p3", "p4")):
        a.handle_packet(Packet(name, (_c(i / 100),)), ("h", i), 1.0)
    joiner = PushPullState("j", (MemberSnapshot("j", ("10.9.9.9", 7946), 0, MemberState.ALIVE, {}),), True)
    effects = a.merge_push_pull(joiner, 2.0, source_host="10.9.9.9")
    tables = [s for s in _sends(effects) if s.to == ("10.9.9.9", 7946)
              and any(isinstance(m, PeerCoordinates) for m in s.packet.messages)]
    assert tables and all(len(s.packet.messages) == 1 for s in tables)  # packets of their own
    names = {n for s in tables for m in s.packet.messages if isinstance(m, PeerCoordinates) for n, _, _ in m.rows}
    assert names == {"a", "p2", "p3", "p4"}
    # A join forged for that name from another host gets nothing; nor a repeat within the interval.
    again = PushPullState("j", joiner.members, True)
    assert not any(isinstance(m, PeerCoordinates) for s in _sends(a.merge_push_pull(again, 3.0, source_host="10.9.9.9"))
                   for m in s.packet.messages)


def test_in_a_zoned_cluster_every_member_soon_holds_every_coordinate() -> None:
    """Nine members in three zones probe mostly inside their zone; second-hand rows still bring every member
    every other member's coordinate within a few dozen probe rounds (before, far ones arrived only from
    far probes)."""
    c = Cluster(9, seed=5)
    zones = ["zone-a", "zone-b", "zone-c"]
    nodes = list(c.nodes.values())
    for i, node in enumerate(nodes):
        node.set_zone(zones[i % 3], 0.0)
    c.join_all()
    interval = nodes[0].config.membership.probe_interval
    c.advance(c.now + 25 * interval)
    missing = [(n.name, m.name) for n in nodes for m in nodes
               if m is not n and m.name not in n.topology.coordinates()]
    assert missing == []
    assert all(n.topology.stats["rows_kept"] > 0 for n in nodes)


def test_a_reader_of_rows_learns_at_its_first_ack_that_we_read_them_too() -> None:
    """Rows on an ack follow the piggyback rule, so a far prober might wait long for one; the first ack to a
    reader of rows carries an (empty) message anyway, and the prober offers no more."""
    a = node_with_peers(cfg("a"), 1, seed=3)
    ping = Ping(7, "a", "p2", ("h", 2))
    a.handle_packet(Packet("p2", (_c(0.01), PeerCoordinates(()))), ("h", 2), 1.0)
    [ack] = _acks(a.handle_packet(Packet("p2", (ping,)), ("h", 2), 2.0))
    assert [type(m) for m in ack.packet.messages][:3] == [Ack, NetCoordinate, PeerCoordinates]
    [ack] = _acks(a.handle_packet(Packet("p2", (ping,)), ("h", 2), 3.0))
    assert PeerCoordinates not in [type(m) for m in ack.packet.messages]  # nothing new to pass on
    b = node_with_peers(cfg("b"), 1, seed=4)  # the prober's side: p2's answer makes it a reader
    b.handle_packet(Packet("p2", (_c(0.01), PeerCoordinates(()))), ("h", 2), 1.0)
    for _ in range(5):
        effects: list[Effect] = []
        for _ in range(100):
            effects = b.tick(b.next_deadline())
            if any(isinstance(s.packet.messages[0], Ping) for s in _sends(effects)):
                break
        pings = [m for s in _sends(effects) for m in s.packet.messages if isinstance(m, Ping)]
        assert pings
        assert [PeerCoordinates] not in [[type(m) for m in s.packet.messages] for s in _sends(effects)]
        b.handle_packet(Packet("p2", (Ack(pings[0].seq, 0), _c(0.01))), ("h", 2), b.next_deadline())


def test_digests_ride_to_far_members_with_the_cross_zone_fraction_except_on_probes() -> None:
    """Under writes digests were the largest share of the cross-zone bytes with real agents; with topology
    awareness they ride on a packet to a far member as rumors do, with probability crossZoneFraction (always
    to a near one). Probes and acks keep them (the digests' reconciliation rides on probes, and probes
    mostly stay inside the zone already)."""
    a = node_with_peers(cfg("a"), 0, seed=3)
    a.set_zone("zone-a", 0.0)
    for i, zone in ((2, "zone-a"), (3, "zone-b")):
        a.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i), {ZONE_META_KEY: zone}),)), ("h", i), 0.0)
        a.handle_packet(Packet(f"p{i}", (_c(0.01), PeerCoordinates(()))), ("h", i), 0.0)
        a._digest_readers.add(f"p{i}")
    a.publish_root_digest("ab" * 16, 3, 1000, now=1.0)
    asked: Counter[tuple[str, bool]] = Counter()  # packets that were offered digests: destination, probe
    outgoing = a._digest_exchange.outgoing

    def counting(to: str, *args: Any, ping: bool = False, **kwargs: Any) -> Any:
        asked[(to, ping)] += 1
        return outgoing(to, *args, ping=ping, **kwargs)

    a._digest_exchange.outgoing = counting  # type: ignore[method-assign]
    for _ in range(400):
        for name in ("p2", "p3"):
            a._digests_for(name)
            a._digests_for(name, ping=True)
    f = a.topology.policy.cross_zone_fraction
    assert asked[("p2", False)] == 400 and asked[("p2", True)] == 400  # near: always
    assert 400 * (f - 0.07) < asked[("p3", False)] < 400 * (f + 0.07)  # far: about f of them
    assert asked[("p3", True)] == 400  # on a probe or ack: always


def test_a_forged_ping_does_not_carry_off_a_readers_rows() -> None:
    """A ping naming a reader of rows but another address (forged: its ack goes where the ping says) gets our
    coordinate but no rows: they advanced that reader's walk, so the reader itself never got them."""
    a = node_with_peers(cfg("a"), 3, seed=3)
    a.handle_packet(Packet("p2", (_c(0.01), PeerCoordinates(()))), ("h", 2), 0.5)
    a.handle_packet(Packet("p3", (_c(0.02),)), ("h", 3), 0.6)  # a's coordinate of p3, to pass on
    [forged] = _sends(a.handle_packet(Packet("p2", (Ping(7, "a", "p2", ("evil", 9)),)), ("evil", 9), 1.0))
    assert forged.to == ("evil", 9)
    assert PeerCoordinates not in [type(m) for m in forged.packet.messages]
    [ack] = _acks(a.handle_packet(Packet("p2", (Ping(8, "a", "p2", ("h", 2)),)), ("h", 2), 2.0))
    rows = [m for m in ack.packet.messages if isinstance(m, PeerCoordinates)]
    assert [n for m in rows for n, _, _ in m.rows] == ["p3"]


def test_one_packet_passes_at_most_one_message_of_rows() -> None:
    """MAX_PEER_COORDINATE_ROWS bounds one message; an honest packet holds one at most (an ack's, an offer, a
    table part), so the rest of a packet stuffed with them (a 64 KB datagram fits about a thousand rows, each a
    check and a change every peer's walk then carries) is counted and dropped."""
    a = node_with_peers(cfg("a"), 4, seed=3)
    first = PeerCoordinates((("p3", _c(0.02), 0.0),))
    second = PeerCoordinates((("p4", _c(0.03), 0.0),))
    a.handle_packet(Packet("p2", (first, second)), ("h", 2), 1.0)
    assert "p3" in a.topology.coordinates() and "p4" not in a.topology.coordinates()
    assert a.stats["coordinate_rows_over_limit"] == 1


def test_a_row_echoing_the_coordinate_we_hold_is_no_change() -> None:
    """A row's age is counted from when its sender sent it, so the way there (and the 0.1 s rounding) makes a
    coordinate we passed on look fresher when it comes back. Kept as a change, every such echo went to the end
    of every peer's walk again (in a 9-member simulation 238 of 275 kept rows were echoes), and real changes
    waited behind them."""
    topo = TopologyState(TopologyConfig(), max_peers=10)
    # Held second-hand (a first-hand one would stand against any row for FIRST_HAND_HOLD).
    topo.on_rows("p4", PeerCoordinates((("p1", _c(0.1), 0.0),)), 100.0, lambda n: True, "me")
    while topo.rows_for("p2", 100.0) is not None:
        pass
    kept = topo.on_rows("p3", PeerCoordinates((("p1", _c(0.1), 0.0),)), 100.05, lambda n: True, "me")
    assert kept == 0 and topo.stats["rows_unchanged"] == 1
    assert topo.rows_for("p2", 101.0) is None  # nothing new to pass on
    kept = topo.on_rows("p3", PeerCoordinates((("p1", _c(0.2), 0.0),)), 102.0, lambda n: True, "me")
    assert kept == 1 and topo.rows_for("p2", 102.0) is not None  # a real change still goes


def _acks(effects: list[Effect]) -> list[Send]:
    """The sends that hold an ack (a reader of the older coordinate form also gets ours in the compact form
    once, in a packet of its own)."""
    return [s for s in _sends(effects) if any(isinstance(m, Ack) for m in s.packet.messages)]
