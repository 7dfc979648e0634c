"""Real-network fault tests: gossip agents in Linux network namespaces on a bridge (see netns.py).

The whole directory is skipped, with the reason, unless we are root, `ip netns add` works and nft or iptables
can install rules inside a namespace (CI's .ci/run installs iproute2, nftables and iptables).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.chaos.netns import environment_problem

HERE = Path(__file__).resolve().parent


@functools.cache
def _problem() -> str | None:
    try:
        return environment_problem()
    except Exception as exc:  # a broken environment is a reason to skip, not an error in every test
        return f"network namespace check failed: {exc}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    problem = _problem()
    if problem:
        pytest.skip(f"network namespace tests skipped: {problem}")
