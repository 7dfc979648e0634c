"""Second-hand coordinate rows spread as a rumor does, not walked to every peer by every holder.

Before, every change a member held (and every coordinate again each 120 s) was owed to each of its peers, by
each of N holders, while an ack carries two rows: at N = 50 the walks never emptied and an idle agent sent
two rows on every ack for good (about 110 of its 200 payload bytes a second, rows its peers already held).
Now a change goes to `row_sends` peers from each member that keeps it, an echo of it (a peer sending back the
coordinate we hold) spends one of those sends, there is no periodic re-walk, and a row passes on only a move of
at least ROW_MOVE_FLOOR (on loopback, round trips of 0.1-0.3 ms jitter by as much as themselves and every
Vivaldi sample was a "noticeable" move): once the coordinates are known, the rows stop. Fast and deterministic."""

from __future__ import annotations

import pytest

from gossip_agent.core import topology_state
from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.messages import NetCoordinate, PeerCoordinates
from gossip_agent.core.topology_state import (
    ROW_BURST,
    ROW_MOVE_FLOOR,
    ROW_RATE,
    ROW_YOUNG,
    TopologyState,
    row_sends,
)
from gossip_agent.core.vivaldi import Coordinate
from gossip_agent.sim.cluster import Simulation
from gossip_agent.sim.network import LinkProfile


def _c(x: float) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.05, 0.0)


def _topology_with(peers: int) -> TopologyState:
    topo = TopologyState(TopologyConfig(), max_peers=100)
    for i in range(peers):
        topo.on_coordinate(f"p{i}", _c(0.01 + i / 1000), now=0.0)
    return topo


def _receivers_of(topo: TopologyState, name: str, askers: int, now: float) -> list[str]:
    got = []
    for i in range(askers):
        msg = topo.rows_for(f"q{i}", now, limit=100)
        if msg is not None and any(n == name for n, _, _ in msg.rows):
            got.append(f"q{i}")
    return got


def test_row_sends_grows_with_the_log_of_the_cluster() -> None:
    assert row_sends(1) == 4
    assert row_sends(9) == 4
    assert row_sends(10) == 8 and row_sends(50) == 8
    assert row_sends(1000) == 16
    assert row_sends(0) >= 1


def test_a_change_goes_to_row_sends_peers_then_leaves_every_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_state, "ROW_BURST", 1e9)  # all the askers at one instant: no allowance here
    topo = _topology_with(10)
    topo.on_coordinate("p3", _c(0.05), now=1.0)  # a new change of p3, with 10 coordinates held
    budget = row_sends(11)
    got = _receivers_of(topo, "p3", 3 * budget, 2.0)
    assert len(got) == budget  # before: every one of the 24 askers
    assert _receivers_of(topo, "p3", 3 * budget, 3.0) == []


def test_an_echo_of_a_change_spends_one_of_its_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_state, "ROW_BURST", 1e9)
    topo = _topology_with(10)
    topo.on_coordinate("p3", _c(0.05), now=1.0)
    held = topo.coordinates()["p3"]
    echo = NetCoordinate(tuple(held.vec), held.height, held.error, held.adjustment)
    budget = row_sends(11)
    for i in range(budget - 1):  # peers sending back the very coordinate we hold: they have it
        # (after FIRST_HAND_HOLD: before it, a row about a member that just sent us its own is not looked at)
        topo.on_rows(f"p{i + 4}", PeerCoordinates((("p3", echo, 0.0),)), 20.0 + i, lambda n: True, "me")
    assert topo.stats["rows_unchanged"] == budget - 1
    assert len(_receivers_of(topo, "p3", 3 * budget, 40.0)) == 1


def _rows_sent_between(sim: Simulation, start: float, end: float) -> int:
    """Start `sim` (all at once), let it converge, and count the coordinate rows sent from `start` to `end`;
    every member must then hold every other member's coordinate."""
    sim.start_all(seeds=2, spread=2.0)
    sim.run_until_condition(sim.converged, timeout=60, check_every=0.5)
    rows: list[int] = []
    sim.on_send.append(lambda t, i, send: rows.extend(
        len(m.rows) for m in send.packet.messages if isinstance(m, PeerCoordinates) and t > start))
    sim.run_until(end)
    n = len(sim.names)
    assert all(sim.node(i).topology.coordinates_known == n - 1 for i in range(n))
    return sum(rows)


def test_once_coordinates_are_known_and_still_an_idle_cluster_sends_no_rows() -> None:
    """The simulator measures no round trips, so coordinates stay where they are: after the start the rows
    must die out. Before, the 120 s re-walk and the walks to every peer kept two rows on every ack."""
    assert _rows_sent_between(Simulation(20, seed=3), 300.0, 420.0) == 0


def test_a_row_passes_on_no_move_under_the_floor_however_small_the_distance() -> None:
    topo = TopologyState(TopologyConfig(), max_peers=20)
    topo.client.coordinate = Coordinate((0.0,) * 8, 0.0001, 0.05, 0.0)
    topo.on_coordinate("p1", _c(0.0002), now=0.0)  # 0.2 ms away, as on loopback
    assert topo.rows_for("p2", 0.5) is not None
    t = ROW_YOUNG + 1.0
    topo.on_coordinate("p1", _c(0.0002 + ROW_MOVE_FLOOR / 2), now=t)  # 250 % of the distance, under the floor
    assert topo.rows_for("p2", t) is None
    topo.on_coordinate("p1", _c(0.0002 + 2 * ROW_MOVE_FLOOR), now=t + 1.0)
    assert topo.rows_for("p2", t + 1.0) is not None


def test_on_loopback_like_links_the_rows_die_out_once_every_coordinate_is_known() -> None:
    """Round trips measured (`measure_rtt`) on links of 0.05 ms + up to 0.1 ms jitter: coordinates wander
    at every sample. Before the floor, rows rode on every ack for good (110 B/s per member at N = 30)."""
    sim = Simulation(20, seed=2, link=LinkProfile(latency=0.00005, jitter=0.0001), measure_rtt=True)
    assert _rows_sent_between(sim, 240.0, 360.0) == 0


def test_moves_go_out_within_a_small_allowance_and_first_coordinates_always() -> None:
    """After ROW_BURST rows of moves, at most ROW_RATE a second; a move over the allowance is skipped for that
    peer (counted), not held. A member's first coordinate is never rationed: with zone-aware probing, rows are
    how a young cluster learns far coordinates."""
    topo = TopologyState(TopologyConfig(), max_peers=200)
    topo.client.coordinate = Coordinate((0.0,) * 8, 0.0001, 0.05, 0.0)
    for i in range(40):
        topo.on_coordinate(f"p{i}", _c(0.010 + i / 10_000), now=0.0)
    for k in range(12):  # the first coordinates go out, unrationed, until each has had its row_sends
        topo.rows_for(f"w{k}", 0.5, limit=100)
    assert topo.rows_for("w99", 0.5, limit=100) is None and topo.stats["rows_rationed"] == 0
    t = ROW_YOUNG + 1.0
    for i in range(40):  # each moves by 10 ms: news by any rule
        topo.on_coordinate(f"p{i}", _c(0.020 + i / 10_000), now=t)
    sent = 0
    for k in range(60):  # one asker a second for a minute, as acks go
        msg = topo.rows_for(f"q{k}", t + k, limit=2)
        sent += len(msg.rows) if msg is not None else 0
    assert ROW_RATE * 60 <= sent <= ROW_BURST + ROW_RATE * 60 + 1  # before: 2 on every ack, 120
    assert topo.stats["rows_rationed"] > 0
    topo.on_coordinate("newcomer", _c(0.03), now=t + 61.0)  # the allowance is spent: a first one still goes
    msg = topo.rows_for("q99", t + 61.0, limit=2)
    assert msg is not None and any(n == "newcomer" for n, _, _ in msg.rows)


def test_any_row_about_a_member_spends_a_send_of_our_first_coordinate_of_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At a start every member owes every first coordinate to row_sends peers, most of which hold it already:
    a row about that member from a peer (whatever its coordinate) says that peer does."""
    monkeypatch.setattr(topology_state, "ROW_BURST", 1e9)
    topo = _topology_with(10)  # ten first coordinates pending
    budget = row_sends(11)
    for i in range(budget - 1):  # rows about p9 (noted with all ten held) from peers, older than ours: not kept
        topo.on_rows(f"p{i}", PeerCoordinates((("p9", _c(0.5), 100.0),)), 20.0 + i, lambda n: True, "me")
    assert topo.stats["rows_not_fresher"] == budget - 1
    assert len(_receivers_of(topo, "p9", 3 * budget, 40.0)) == 1
