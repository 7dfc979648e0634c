"""Review (session 9): who may set a member's network coordinate.

- A coordinate (type 14) or a packet of second-hand rows (type 18) that names member X as its sender but does
  not come from X's host in our table was kept all the same (only its effect on X's reader level was held
  back): any host, without spoofing an address, could set every member's coordinate in our table, and a
  kept coordinate goes on to every peer in rows. Now counted (`coordinates_not_from_member_host`) and dropped.
- A second-hand row that claims age 0 replaces a first-hand coordinate we measured a moment ago (a row wins
  when it is "fresher", and its age is the sender's word): one member can keep rewriting the coordinates
  every other member holds of everyone, and each rewrite is passed on. Now a first-hand coordinate stands
  against rows for FIRST_HAND_HOLD, and a row about its own sender is refused.
"""

from __future__ import annotations

import pytest

from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.messages import NetCoordinate, Packet, PeerCoordinates
from gossip_agent.core.topology_state import FIRST_HAND_HOLD, TopologyState
from tests.core.test_node import cfg, node_with_peers


def _c(x: float) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.5, 0.0)


def test_a_coordinate_from_another_host_than_its_senders_is_not_kept() -> None:
    a = node_with_peers(cfg("a"), 3, seed=1)  # members p2..p4 at host "h"
    a.handle_packet(Packet("p2", (_c(0.1),)), ("h", 2), 1.0)
    a.handle_packet(Packet("p2", (_c(0.9),)), ("evil", 2), 2.0)  # names p2, comes from elsewhere
    assert a.topology.coordinates()["p2"].vec[0] == pytest.approx(0.1)
    assert a.stats["coordinates_not_from_member_host"] == 1


def test_rows_from_another_host_than_their_senders_are_not_kept() -> None:
    a = node_with_peers(cfg("a"), 3, seed=1)
    a.handle_packet(Packet("p2", (PeerCoordinates((("p3", _c(0.9), 0.0), ("p4", _c(0.8), 0.0))),)),
                    ("evil", 2), 1.0)
    assert "p3" not in a.topology.coordinates() and "p4" not in a.topology.coordinates()
    assert a.stats["coordinates_not_from_member_host"] == 1
    a.handle_packet(Packet("p2", (PeerCoordinates((("p3", _c(0.3), 0.0),)),)), ("h", 2), 2.0)
    assert a.topology.coordinates()["p3"].vec[0] == pytest.approx(0.3)  # from p2's host: kept as before


def test_a_row_claiming_age_zero_does_not_replace_a_first_hand_coordinate() -> None:
    topo = TopologyState(TopologyConfig(), max_peers=10)
    members = {"p1", "p2"}
    topo.on_coordinate("p1", _c(0.1), now=100.0)  # p1's own ack, just now
    topo.on_rows("p2", PeerCoordinates((("p1", _c(0.9), 0.0),)), 100.5, members.__contains__, "me")
    assert topo.coordinates()["p1"].vec[0] == pytest.approx(0.1)


def test_a_row_about_its_own_sender_is_refused_and_rows_fill_in_after_the_hold() -> None:
    topo = TopologyState(TopologyConfig(), max_peers=10)
    members = {"p1", "p2"}
    topo.on_rows("p2", PeerCoordinates((("p2", _c(0.9), 0.0),)), 100.0, members.__contains__, "me")
    assert "p2" not in topo.coordinates()
    topo.on_coordinate("p1", _c(0.1), now=100.0)
    topo.on_rows("p2", PeerCoordinates((("p1", _c(0.5), 0.0),)), 100.0 + FIRST_HAND_HOLD + 1,
                 members.__contains__, "me")
    assert topo.coordinates()["p1"].vec[0] == pytest.approx(0.5)  # not heard from p1 lately: the row counts
