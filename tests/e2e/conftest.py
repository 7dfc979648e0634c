"""The e2e suite's gate and report: it runs only with GOSSIP_E2E=1 and a KUBECONFIG (and kubectl), and prints
what it measured at the end of the run."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.e2e.cluster import TIMINGS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if os.environ.get("GOSSIP_E2E") != "1" or not os.environ.get("KUBECONFIG"):
        reason = "set GOSSIP_E2E=1 and KUBECONFIG to run against a real cluster (tools/testcluster/e2e.sh does)"
    elif shutil.which("kubectl") is None:
        reason = "kubectl is not installed"
    if reason is None:
        return
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS.rows:
        terminalreporter.section("e2e measurements")
        for line in TIMINGS.rows:
            terminalreporter.write_line(line)
