"""The suite must pass on a busy machine: no property test may fail because an example ran slowly."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def test_hypothesis_runs_without_deadlines_or_speed_health_checks() -> None:
    assert settings().deadline is None
    assert HealthCheck.too_slow in settings().suppress_health_check
