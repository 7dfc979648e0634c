"""Convergence tracking from published roots."""

from __future__ import annotations

from gossip_agent.core.convergence import (
    ConvergenceTracker,
    PublishedState,
    parse_state_meta,
    state_meta,
)

R1, R2 = "a" * 64, "b" * 64


def test_alone_is_converged() -> None:
    status = ConvergenceTracker().observe(10.0, R1, {})
    assert status.converged and status.fraction == 1.0 and status.distinct_roots == 1
    assert status.seconds_since_agreement == 0.0


def test_fraction_distinct_roots_and_lag() -> None:
    t = ConvergenceTracker()
    assert t.status(0.0).seconds_since_agreement is None
    s = t.observe(1.0, R1, {"b": R2, "c": R1, "d": None})
    assert not s.converged and s.fraction == 0.5 and s.distinct_roots == 2
    assert s.seconds_since_agreement is None  # never agreed yet
    t.observe(2.0, R1, {"b": R1, "c": R1, "d": R1})
    s = t.observe(5.5, R2, {"b": R1, "c": R1, "d": R1})
    assert not s.converged and s.seconds_since_agreement == 3.5
    assert t.status(7.0).seconds_since_agreement == 5.0
    assert t.agreements == 1


def test_convergence_time_is_measured_once_per_new_write() -> None:
    t = ConvergenceTracker()
    t.observe(100.0, R1, {"b": R2}, newest_write_ms=99_000)
    s = t.observe(100.25, R1, {"b": R1}, newest_write_ms=99_000)
    assert s.last_convergence_seconds == 1.25
    s = t.observe(200.0, R1, {"b": R1}, newest_write_ms=99_000)  # no new write: keep the measurement
    assert s.last_convergence_seconds == 1.25
    s = t.observe(300.5, R2, {"b": R2}, newest_write_ms=300_000)
    assert s.last_convergence_seconds == 0.5
    assert s.to_json() == {"converged": True, "fraction": 1.0, "distinctRoots": 1, "secondsSinceAgreement": 0.0,
                           "lastConvergenceSeconds": 0.5}


def test_state_meta_round_trip_and_garbage() -> None:
    meta = state_meta(R1, 12, 1_732_460_000_123)
    assert parse_state_meta(meta) == PublishedState(R1, 12, 1_732_460_000_123)
    assert sum(len(k) + len(v) for k, v in meta.items()) < 128
    assert parse_state_meta({}) is None
    assert parse_state_meta({**meta, "state.root": "zz" * 32}) is None
    assert parse_state_meta({**meta, "state.keys": "-1"}) is None
    assert parse_state_meta({**meta, "state.root": "ab"}) is None
