"""Coordinates of members we hold dead or left are neither kept nor taken (core/node.py, core/topology_state.py).

A dead member's coordinate used to stay in the RTT table until the member was reaped, and one arriving later,
first-hand (a packet naming the dead member as sender) or second-hand (a row of type 18 from a live member),
was stored again: /v1/coordinates listed the dead, /v1/rtt estimated to them, rows passed them on.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gossip_agent.core.messages import Alive, Dead, NetCoordinate, Packet, PeerCoordinates
from gossip_agent.core.node import Node
from gossip_agent.io.topology_http import topology_routes
from tests.core.test_node import cfg, node_with_peers


def _c(x: float) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.5, 0.0)


def _with_coordinates() -> Node:
    a = node_with_peers(cfg("a"), 4, seed=3)  # p2..p5 at ("h", 2..5)
    for i in range(2, 6):
        a.handle_packet(Packet(f"p{i}", (_c(0.01 * i), PeerCoordinates(()))), ("h", i), 0.5)
    assert set(a.topology.coordinates()) == {"p2", "p3", "p4", "p5"}
    return a


def test_a_member_that_dies_or_leaves_loses_its_coordinate() -> None:
    a = _with_coordinates()
    a.handle_packet(Packet("p2", (Dead("p3", 1, "p2"),)), ("h", 2), 1.0)  # declared dead by p2
    a.handle_packet(Packet("p4", (Dead("p4", 1, "p4"),)), ("h", 4), 1.0)  # p4 leaves
    assert set(a.topology.coordinates()) == {"p2", "p5"}
    assert a.topology.estimate("a", "p3", "a") is None and a.topology.estimate("p2", "p4", "a") is None
    rows = [a.topology.rows_for("p5", 2.0) for _ in range(4)]
    assert {n for r in rows if r is not None for n, _, _ in r.rows} <= {"p2"}  # no row names the dead


def test_coordinates_of_the_dead_are_refused_first_and_second_hand() -> None:
    a = _with_coordinates()
    a.handle_packet(Packet("p2", (Dead("p3", 1, "p2"),)), ("h", 2), 1.0)
    before = a.stats["coordinates_unknown_member"]
    a.handle_packet(Packet("p3", (_c(0.5),)), ("h", 3), 2.0)  # first-hand, from the dead
    assert "p3" not in a.topology.coordinates()
    assert a.stats["coordinates_unknown_member"] == before + 1
    a.handle_packet(Packet("p2", (PeerCoordinates((("p3", _c(0.6), 0.0),)),)), ("h", 2), 2.1)  # second-hand
    assert "p3" not in a.topology.coordinates()
    assert a.topology.stats["rows_unknown_member"] >= 1
    # Rows from a dead sender are not taken either, whatever they name.
    a.handle_packet(Packet("p3", (PeerCoordinates((("p5", _c(0.7), 0.0),)),)), ("h", 3), 2.2)
    assert a.topology.coordinates()["p5"].vec[0] != 0.7
    # Back alive (a refutation): its coordinates count again.
    a.handle_packet(Packet("p3", (Alive("p3", 2, ("h", 3)),)), ("h", 3), 3.0)
    a.handle_packet(Packet("p3", (_c(0.8),)), ("h", 3), 3.1)
    assert "p3" in a.topology.coordinates()


async def test_the_http_api_neither_lists_nor_estimates_to_the_dead() -> None:
    a = _with_coordinates()
    a.handle_packet(Packet("p2", (Dead("p3", 1, "p2"),)), ("h", 2), 1.0)
    app = web.Application()
    app.add_routes(topology_routes(lambda: a))
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/v1/coordinates")).json()
        assert [row["name"] for row in body["coordinates"]] == ["a", "p2", "p4", "p5"]
        resp = await client.get("/v1/rtt", params={"from": "p2", "to": "p3"})
        assert resp.status == 409 and "p3' is dead" in await resp.text()
        assert (await client.get("/v1/rtt", params={"from": "p2", "to": "p4"})).status == 200


async def test_hostile_queries_get_clear_4xx_answers() -> None:
    """Repeated, empty, over-long, undecodable and unknown parameters: 400 or 404 with the reason, never a 500;
    /v1/coordinates takes no parameters at all (it ignored them, so a typo such as ?zone=a looked filtered)."""
    a = _with_coordinates()
    app = web.Application()
    app.add_routes(topology_routes(lambda: a))
    async with TestClient(TestServer(app)) as client:
        cases = {"/v1/coordinates?zone=a": 400, "/v1/rtt?to=p2&to=p3": 400, "/v1/rtt?to=": 400,
                 "/v1/rtt?to=p2&from=": 400, "/v1/rtt?to=" + "x" * 300: 400, "/v1/rtt?To=p2": 400,
                 "/v1/rtt?to=%ff%fe": 404, "/v1/rtt?to=p2%00": 404, "/v1/rtt?to=%E2%80%AEp2": 404,
                 "/v1/rtt?to=a": 200, "/v1/rtt?from=p5&to=p2": 200}
        for query, status in cases.items():
            resp = await client.get(query)
            assert resp.status == status, (query, resp.status, await resp.text())
        assert "\u202e" not in await (await client.get("/v1/rtt?to=%E2%80%AEp2")).text()  # names are escaped
