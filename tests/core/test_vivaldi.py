"""Vivaldi core: estimates, single-sample dynamics, the latency filter, adjustment, and hostile input."""

from __future__ import annotations

import math
import random

import pytest

from gossip_agent.core.vivaldi import (
    Coordinate,
    Rejection,
    VivaldiClient,
    VivaldiConfig,
    check_coordinate,
    estimate_rtt,
    raw_distance,
)

CFG = VivaldiConfig(dimensions=2)


def coord(x: float, y: float, height: float = 0.0, error: float = 1.5, adjustment: float = 0.0) -> Coordinate:
    return Coordinate((x, y), height, error, adjustment)


def test_estimate_is_vector_distance_plus_heights_plus_adjustments() -> None:
    a, b = coord(0.0, 0.0, 0.001), coord(0.003, 0.004, 0.002)
    assert raw_distance(a, b) == pytest.approx(0.005 + 0.003)
    assert estimate_rtt(a, b) == pytest.approx(0.008)
    assert estimate_rtt(coord(0, 0, 0.001, adjustment=0.001), coord(0.003, 0.004, 0.002, adjustment=0.0005)) \
        == pytest.approx(0.0095)
    # Adjustments that would make the estimate non-positive are ignored, not trusted.
    assert estimate_rtt(coord(0, 0, 0.001, adjustment=-1.0), b) == pytest.approx(0.008)


def test_fresh_client_starts_at_origin_with_maximum_error() -> None:
    c = VivaldiClient(CFG)
    assert c.coordinate == Coordinate((0.0, 0.0), CFG.height_min, CFG.error_max, 0.0)


def test_a_sample_moves_toward_the_measured_rtt_and_lowers_the_error() -> None:
    c = VivaldiClient(VivaldiConfig(dimensions=2, adjustment_window=0))
    peer = coord(0.010, 0.0, CFG.height_min, error=1.5)
    before = estimate_rtt(c.coordinate, peer)
    assert c.update("p", peer, 0.050, random.Random(1)) is None
    after = estimate_rtt(c.coordinate, peer)
    assert before < after < 0.050  # pushed away from the peer, part of the way (cc * weight)
    assert c.coordinate.vec[0] < 0.0  # away from the peer, which sits at +x
    assert c.stats.updates == 1
    # An accurate sample lowers the error estimate.
    c2 = VivaldiClient(VivaldiConfig(dimensions=2, adjustment_window=0))
    exact = estimate_rtt(c2.coordinate, peer)
    c2.update("p", peer, exact, random.Random(1))
    assert c2.coordinate.error < CFG.error_max


def test_coincident_points_separate_deterministically_given_the_rng() -> None:
    def run(seed: int) -> Coordinate:
        c = VivaldiClient(CFG)
        c.update("p", Coordinate.origin(CFG), 0.020, random.Random(seed))
        return c.coordinate
    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other
    assert math.hypot(*first.vec) > 0.0


def test_two_nodes_converge_to_their_rtt() -> None:
    rng = random.Random(3)
    a, b = VivaldiClient(CFG), VivaldiClient(CFG)
    for _ in range(200):
        a.update("b", b.coordinate, 0.030, rng)
        b.update("a", a.coordinate, 0.030, rng)
    assert estimate_rtt(a.coordinate, b.coordinate) == pytest.approx(0.030, rel=0.02)
    assert a.coordinate.error < 0.1


def test_latency_filter_uses_the_median_of_recent_samples() -> None:
    """One late ack among steady samples does not move the coordinate like a real change would."""
    steady, spiky = VivaldiClient(CFG), VivaldiClient(CFG)
    peer = coord(0.010, 0.0, error=0.1)
    for rtt in (0.020, 0.020):
        steady.update("p", peer, rtt, random.Random(1))
        spiky.update("p", peer, rtt, random.Random(1))
    steady.update("p", peer, 0.020, random.Random(1))
    spiky.update("p", peer, 2.0, random.Random(1))  # filtered: median(0.020, 0.020, 2.0) = 0.020
    assert spiky.coordinate == steady.coordinate
    spiky.forget("p")
    assert spiky.tracked_peers() == 0


def test_latency_filter_history_is_bounded() -> None:
    c = VivaldiClient(VivaldiConfig(dimensions=2, max_tracked_peers=3))
    for i in range(10):
        c.update(f"p{i}", coord(0.01, 0.0), 0.02, random.Random(i))
    assert c.tracked_peers() == 3


def test_adjustment_is_half_the_mean_residual_over_the_window() -> None:
    """Residuals the vectors cannot explain end up in the adjustment term (over the whole window)."""
    cfg = VivaldiConfig(dimensions=2, adjustment_window=4, cc=1e-9, ce=1e-9)  # vectors (almost) frozen
    c = VivaldiClient(cfg)
    peer = Coordinate((0.0, 0.0), cfg.height_min, 1.5, 0.0)
    c.update("p", peer, 0.010, random.Random(1))
    residual = 0.010 - raw_distance(c.coordinate, peer)
    assert c.coordinate.adjustment == pytest.approx(residual / (2 * 4), rel=1e-3)


def test_gravity_pulls_toward_the_origin_without_moving_a_converged_pair_much() -> None:
    cfg = VivaldiConfig(dimensions=2, gravity_rho=0.01, adjustment_window=0)
    c = VivaldiClient(cfg)
    c.coordinate = coord(1.0, 0.0, cfg.height_min, error=0.01)
    peer = coord(1.0 + 0.02, 0.0, cfg.height_min, error=1.5)
    c.update("p", peer, estimate_rtt(c.coordinate, peer), random.Random(1))
    assert math.hypot(*c.coordinate.vec) < 1.0  # pulled in although the sample was exact


@pytest.mark.parametrize(("rtt", "reason"), [
    (-0.001, Rejection.RTT_NEGATIVE),
    (math.nan, Rejection.RTT_NOT_FINITE),
    (math.inf, Rejection.RTT_NOT_FINITE),
    (11.0, Rejection.RTT_TOO_LARGE),
])
def test_bad_rtts_are_counted_and_change_nothing(rtt: float, reason: Rejection) -> None:
    c = VivaldiClient(CFG)
    before = c.coordinate
    assert c.update("p", coord(0.01, 0.0), rtt, random.Random(1)) is reason
    assert c.coordinate == before and c.stats.rejected == {reason: 1} and c.stats.updates == 0
    assert c.tracked_peers() == 0


def test_zero_rtt_is_accepted_as_the_floor() -> None:
    c = VivaldiClient(CFG)
    assert c.update("p", coord(0.01, 0.0), 0.0, random.Random(1)) is None
    assert all(math.isfinite(x) for x in c.coordinate.vec)


@pytest.mark.parametrize(("fields", "reason"), [
    (((0.0,), 0.0, 1.0, 0.0), Rejection.DIMENSIONS),
    (((0.0, 0.0, 0.0), 0.0, 1.0, 0.0), Rejection.DIMENSIONS),
    (((math.nan, 0.0), 0.0, 1.0, 0.0), Rejection.NOT_FINITE),
    (((0.0, math.inf), 0.0, 1.0, 0.0), Rejection.NOT_FINITE),
    (((0.0, 0.0), math.nan, 1.0, 0.0), Rejection.NOT_FINITE),
    (((0.0, 0.0), 0.0, math.inf, 0.0), Rejection.NOT_FINITE),
    (((0.0, 0.0), 0.0, 1.0, -math.inf), Rejection.NOT_FINITE),
    ((("0", 0.0), 0.0, 1.0, 0.0), Rejection.MALFORMED),
    (((True, 0.0), 0.0, 1.0, 0.0), Rejection.MALFORMED),
    (((0.0, 0.0), None, 1.0, 0.0), Rejection.MALFORMED),
    ((7, 0.0, 1.0, 0.0), Rejection.MALFORMED),
    (("ab", 0.0, 1.0, 0.0), Rejection.MALFORMED),
    (({"x": 1.0, "y": 2.0}, 0.0, 1.0, 0.0), Rejection.MALFORMED),
    (([0.0] * 1_000_000, 0.0, 1.0, 0.0), Rejection.DIMENSIONS),
    (((10**400, 0.0), 0.0, 1.0, 0.0), Rejection.OUT_OF_RANGE),
    (((1e9, 0.0), 0.0, 1.0, 0.0), Rejection.OUT_OF_RANGE),
    (((0.0, 0.0), 1e9, 1.0, 0.0), Rejection.OUT_OF_RANGE),
    (((0.0, 0.0), -0.001, 1.0, 0.0), Rejection.OUT_OF_RANGE),
    (((0.0, 0.0), 0.0, -1.0, 0.0), Rejection.OUT_OF_RANGE),
    (((0.0, 0.0), 0.0, 1.0, -1e9), Rejection.OUT_OF_RANGE),
])
def test_hostile_peer_coordinates_are_refused_at_the_edge(fields: tuple[object, object, object, object],
                                                        reason: Rejection) -> None:
    vec, height, error, adjustment = fields
    assert check_coordinate(vec, height, error, adjustment, CFG) is reason
    client = VivaldiClient(CFG)
    assert client.accept(vec, height, error, adjustment) is None
    assert client.stats.rejected == {reason: 1}


def test_valid_peer_coordinate_passes_with_error_clamped() -> None:
    got = check_coordinate([0.001, -0.002], 0.0, 99.0, 0.0005, CFG)
    assert got == Coordinate((0.001, -0.002), CFG.height_min, CFG.error_max, 0.0005)
    assert VivaldiClient(CFG).accept([0.001, -0.002], 0, 99, 0.0005) == got  # ints are numbers too
    assert check_coordinate(*got.as_tuple(), CFG) == got  # round trip through the plain form


def test_update_refuses_a_coordinate_that_skipped_the_edge_check() -> None:
    c = VivaldiClient(CFG)
    assert c.update("p", Coordinate((math.nan, 0.0), 0.0, 1.0), 0.01, random.Random(1)) is Rejection.NOT_FINITE
    assert c.update("p", Coordinate((0.0,), 0.0, 1.0), 0.01, random.Random(1)) is Rejection.DIMENSIONS
    assert c.stats.rejected == {Rejection.NOT_FINITE: 1, Rejection.DIMENSIONS: 1}
    assert c.coordinate == Coordinate.origin(CFG)


def test_a_barrage_of_extreme_but_valid_samples_keeps_the_coordinate_finite() -> None:
    rng = random.Random(5)
    c = VivaldiClient(CFG)
    for i in range(500):
        peer = check_coordinate([rng.uniform(-100, 100), rng.uniform(-100, 100)], rng.uniform(0, 100),
                                rng.uniform(0, 1.5), rng.uniform(-10, 10), CFG)
        assert isinstance(peer, Coordinate)
        c.update(f"p{i % 7}", peer, rng.choice([0.0, 1e-9, 10.0, rng.uniform(0, 10)]), rng)
        assert all(math.isfinite(x) for x in (*c.coordinate.vec, c.coordinate.height, c.coordinate.error))


@pytest.mark.parametrize("bad", [{"dimensions": 0}, {"cc": 0.0}, {"gravity_rho": math.nan},
                                 {"latency_filter_size": 0}, {"adjustment_window": -1}])
def test_config_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VivaldiConfig(**bad)  # type: ignore[arg-type]
