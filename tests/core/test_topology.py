"""Topology-aware peer choice: near/far classification, the guaranteed far share, determinism, edge cases."""

from __future__ import annotations

import math
import random

import pytest

from gossip_agent.core.topology import (
    Candidate,
    TopologyPolicy,
    choose_one,
    choose_peers,
    far_pick_count,
    parse_zone,
    split_near_far,
)

POLICY = TopologyPolicy(cross_zone_fraction=0.2)


def zoned(n: int, zones: int = 3) -> list[Candidate]:
    return [Candidate(f"n{i}", f"z{i % zones}") for i in range(n)]


def test_same_zone_is_near_other_zones_far() -> None:
    near, far = split_near_far(zoned(9), "z0", POLICY)
    assert {c.zone for c in near} == {"z0"} and len(near) == 3
    assert {c.zone for c in far} == {"z1", "z2"} and len(far) == 6


def test_without_zones_rtt_decides_relative_to_the_nearest() -> None:
    cands = [Candidate(f"a{i}", rtt=0.001 + i * 1e-5) for i in range(10)]
    cands += [Candidate(f"b{i}", rtt=0.030) for i in range(20)]
    near, far = split_near_far(cands, None, POLICY)
    assert {c.name[0] for c in near} == {"a"} and {c.name[0] for c in far} == {"b"}


def test_unknown_zone_and_rtt_counts_as_far_and_bad_rtts_are_unknown() -> None:
    cands = [Candidate("same", "z0"), Candidate("blank"), Candidate("nan", rtt=math.nan),
             Candidate("neg", rtt=-1.0)]
    near, far = split_near_far(cands, "z0", POLICY)
    assert [c.name for c in near] == ["same"]
    assert sorted(c.name for c in far) == ["blank", "nan", "neg"]


def test_far_pick_count_has_the_exact_mean() -> None:
    rng = random.Random(1)
    draws = [far_pick_count(3, 0.15, rng) for _ in range(20_000)]
    assert set(draws) == {0, 1}
    assert sum(draws) / len(draws) == pytest.approx(0.45, abs=0.02)
    assert far_pick_count(10, 0.2, rng) == 2  # whole number: no randomness


def test_share_of_far_picks_matches_the_fraction() -> None:
    rng = random.Random(2)
    cands = zoned(300)
    picks = [p for _ in range(2000) for p in choose_peers(cands, 3, local_zone="z0", policy=POLICY, rng=rng)]
    share = sum(p.zone != "z0" for p in picks) / len(picks)
    assert share == pytest.approx(0.2, abs=0.02)


def test_single_picks_are_far_with_probability_f() -> None:
    rng = random.Random(3)
    cands = zoned(30)
    picks = [choose_one(cands, local_zone="z1", policy=POLICY, rng=rng) for _ in range(5000)]
    assert sum(p is not None and p.zone != "z1" for p in picks) / 5000 == pytest.approx(0.2, abs=0.02)


def test_picks_are_distinct_and_deterministic_given_the_rng() -> None:
    cands = zoned(60)
    first = choose_peers(cands, 5, local_zone="z0", policy=POLICY, rng=random.Random(9))
    again = choose_peers(cands, 5, local_zone="z0", policy=POLICY, rng=random.Random(9))
    assert first == again and len({c.name for c in first}) == 5


def test_a_small_near_class_is_filled_from_far() -> None:
    cands = [Candidate("only-near", "z0")] + [Candidate(f"f{i}", "z1") for i in range(10)]
    got = choose_peers(cands, 4, local_zone="z0", policy=POLICY, rng=random.Random(1))
    assert len(got) == 4 and got[0].name == "only-near"
    lonely = choose_peers([Candidate(f"f{i}", "z1") for i in range(5)], 2, local_zone="z0", policy=POLICY,
                          rng=random.Random(1))
    assert len(lonely) == 2


def test_near_picks_are_spread_over_the_zone_not_the_nearest_few() -> None:
    """Uniform within the near class: choosing 'the nearest' would form cliques and hurt mixing in the zone."""
    rng = random.Random(4)
    cands = [Candidate(f"n{i}", "z0", rtt=0.001 + i * 1e-4) for i in range(50)]
    seen = {p.name for _ in range(400) for p in choose_peers(cands, 3, local_zone="z0", policy=POLICY, rng=rng)}
    assert len(seen) == 50


def test_edge_cases() -> None:
    rng = random.Random(1)
    assert choose_peers([], 3, local_zone="z0", policy=POLICY, rng=rng) == []
    assert choose_peers(zoned(5), 0, local_zone="z0", policy=POLICY, rng=rng) == []
    assert sorted(c.name for c in choose_peers(zoned(3), 5, local_zone="z0", policy=POLICY, rng=rng)) == \
        ["n0", "n1", "n2"]
    assert choose_one([], local_zone=None, policy=POLICY, rng=rng) is None
    with pytest.raises(ValueError):
        choose_peers(zoned(3), -1, local_zone="z0", policy=POLICY, rng=rng)


@pytest.mark.parametrize("bad", [{"cross_zone_fraction": 0.0}, {"cross_zone_fraction": 1.5},
                                 {"cross_zone_fraction": math.nan}, {"near_rtt_ratio": 0.5},
                                 {"near_rtt_quantile": 2.0}])
def test_policy_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TopologyPolicy(**bad)


@pytest.mark.parametrize(("raw", "zone"), [
    ("eu-west-1a\n", "eu-west-1a"), (b"us-central1-b", "us-central1-b"), ("", None), ("  \n", None),
    ("zone_1.a", "zone_1.a"), ("a" * 63, "a" * 63),
])
def test_zone_labels_are_parsed(raw: object, zone: str | None) -> None:
    assert parse_zone(raw) == zone


@pytest.mark.parametrize("raw", ["-eu", "eu-", "eu west", "zone/a", "a" * 64, "x" * 10_000, b"\xff\xfe",
                                 "z\u00e9", 42, None])
def test_bad_zone_labels_are_refused_with_a_reason(raw: object) -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_zone(raw)
