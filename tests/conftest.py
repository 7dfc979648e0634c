"""The `slow` group: long simulations that prove a property at full scale (1,000 nodes and the like).

The default run (`scripts/test`) skips them, with a reason that says how to run them, so the suite stays
within the time the README states on a busy 2-core machine; each has a smaller sibling in the default run
that proves the same property. They run when asked for: `scripts/test --slow` (everything), or a marker
expression that names them (`scripts/test -m slow`: only them; CI runs that, see .ci/run). Each slow test
carries its own `pytest.mark.timeout`, 3x its CPU time on a quiet machine.
"""

from __future__ import annotations

import pytest

SLOW_HINT = "slow group: run with `scripts/test --slow` (all tests) or `scripts/test -m slow` (only these)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (long full-scale simulations); `-m slow` runs only them")


def slow_requested(config: pytest.Config) -> bool:
    """`--slow`, or a `-m` expression that mentions the marker (`-m slow`, `-m "slow and not netns"`)."""
    return bool(config.getoption("--slow")) or "slow" in (config.getoption("markexpr") or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if slow_requested(config):
        return
    skip = pytest.mark.skip(reason=SLOW_HINT)
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
