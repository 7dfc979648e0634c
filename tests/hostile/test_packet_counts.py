"""Counts inside one packet that reached a loop unchecked (core/node.py `handle_packet`).

An honest packet holds at most one of the sender's own coordinates (on an ack, or alone as an offer). A
packet of a thousand coordinates (~50 B each) made us check each, store each and renumber the sender in every
peer's walk of coordinate updates a thousand times. Now one counts and the rest are dropped and counted
(`coordinates_over_limit`), as second-hand coordinate rows and pings already were.
"""

from __future__ import annotations

from gossip_agent.core.messages import NetCoordinate, Packet
from tests.hostile.core_support import lan_node


def test_one_coordinate_a_packet_counts() -> None:
    node = lan_node(mode="push", broadcast="flood")
    addr = node.table.get("p2").addr  # type: ignore[union-attr]
    coords = tuple(NetCoordinate((0.001 * (k + 1),) * 8, 0.0001, 0.5, 0.0) for k in range(1000))
    node.handle_packet(Packet("p2", coords), addr, 1.0)
    assert node.stats["coordinates_over_limit"] == 999
    assert node.topology.stats.get("coordinates_rejected", 0) == 0
