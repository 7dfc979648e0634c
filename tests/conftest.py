"""The `slow` group: long simulations that prove a property at full scale (1,000 nodes and the like).

The default run (`scripts/test`) skips them, with a reason that says how to run them, so the suite stays
within the time the README states on a busy 2-core machine; each has a smaller sibling in the default run
that proves the same property. They run when asked for: `scripts/test --slow` (everything), or a marker
expression that names them (`scripts/test -m slow`: only them).

Each slow test says what it costs: `@pytest.mark.slow(quiet_seconds=S)`, its CPU seconds (setup included)
on a quiet machine. Its timeout is `--slow-budget` times that: CI (.ci/run) passes 3, so a regression that
makes a simulation 3x slower fails there; the default, 10, leaves room for a laptop that is busy with other
work (wall time there is several times the CPU time).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# Property tests check properties, not speed: hypothesis' per-example deadline (200 ms) and its "too slow" health
# checks fail at random on a busy 2-core machine. One profile for the whole suite turns them off; the per-test
# `@settings(max_examples=...)` still bound the work.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])
settings.load_profile("suite")

pytest_plugins = ("pytester",)  # tests/test_slow_group.py checks these rules on a throwaway project

SLOW_HINT = "slow group: run with `scripts/test --slow` (all tests) or `scripts/test -m slow` (only these)"
DEFAULT_SLOW_BUDGET = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (long full-scale simulations); `-m slow` runs only them")
    parser.addoption("--slow-budget", type=float, default=DEFAULT_SLOW_BUDGET, metavar="FACTOR",
                     help="timeout of each slow test = FACTOR x its quiet-machine seconds "
                          f"(default {DEFAULT_SLOW_BUDGET:g}; CI uses 3)")


def slow_requested(config: pytest.Config) -> bool:
    """`--slow`, or a `-m` expression that mentions the marker (`-m slow`, `-m "slow and not netns"`)."""
    return bool(config.getoption("--slow")) or "slow" in (config.getoption("markexpr") or "")


def quiet_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    assert marker is not None
    seconds = marker.kwargs.get("quiet_seconds")
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise pytest.UsageError(f"{item.nodeid}: write @pytest.mark.slow(quiet_seconds=S), S its measured CPU time")
    return float(seconds)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = slow_requested(config)
    budget = float(config.getoption("--slow-budget"))
    skip = pytest.mark.skip(reason=SLOW_HINT)
    for item in items:
        if item.get_closest_marker("slow") is None:
            continue
        seconds = quiet_seconds(item)
        if run_slow:
            item.add_marker(pytest.mark.timeout(budget * seconds))
        else:
            item.add_marker(skip)
