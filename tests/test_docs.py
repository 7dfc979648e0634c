"""The docs and the dashboard agree with the code they describe.

- Every `gossip_*` metric the Grafana dashboard queries (its PromQL, parsed) and every one the docs name is a
  series a real agent's `/metrics` or the operator's registry exports; every operator family is documented.
- The README's Kubernetes commands use chart values that exist, and its `sed` really sets the agent image.
- Links in the docs resolve inside the repository; the docs cite no internal issue numbers; the benchmark
  tables have header rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gossip_agent.core.config import from_mapping
from gossip_agent.io.extension import default_extensions
from gossip_agent.io.runtime import Agent
from gossip_operator.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "charts" / "gossip-operator" / "dashboards" / "gossip-operator.json"
VALUES = REPO / "charts" / "gossip-operator" / "values.yaml"
EXAMPLE = REPO / "examples" / "gossipcluster.yaml"
DOCS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Series names a family of each type exposes (prometheus_client, text format 0.0.4).
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count",
             "_created"), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",),
             "stateset": ("",), "untyped": ("",), "unknown": ("",)}


def series_names(exposition: str) -> set[str]:
    """Every series name an exposition can carry, including families that have no sample yet (a labelled
    counter before its first increment still declares its type)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def agent_series() -> Iterator[set[str]]:
    """What a real agent (with its default extensions: the state layer) serves on /metrics."""
    import asyncio

    async def scrape() -> str:
        cfg = from_mapping({"preset": "local", "name": "docs", "bindAddress": "127.0.0.1", "port": 0})
        agent = Agent(cfg, extensions=default_extensions(cfg))
        await agent.start()
        try:
            return agent.render_metrics().decode()
        finally:
            await agent.stop()

    yield series_names(asyncio.run(scrape()))


def operator_series() -> set[str]:
    registry: CollectorRegistry = OperatorMetrics().registry
    return series_names(generate_latest(registry).decode())


# --- PromQL -------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)(\s*\()?")


def promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords, label names
    (inside `{...}` or a grouping clause), strings or durations."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _RANGE.sub("", expr)
    expr = _GROUPING.sub("", expr)
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on", "ignoring",
                "group_left", "group_right", "atan2"}
    return {m.group(1) for m in _IDENT.finditer(expr) if not m.group(2) and m.group(1).lower() not in keywords}


def test_promql_parser_finds_metrics_not_labels_functions_or_strings() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, pod) (rate(gossip_x_bucket{namespace=~"$ns", a="gossip_no"}'
            '[$__rate_interval]))) / on(pod) group_left(node) gossip_y offset 5m and bool gossip_z')
    assert promql_metrics(expr) == {"gossip_x_bucket", "gossip_y", "gossip_z"}


def dashboard_queries() -> list[str]:
    """Every PromQL text in the dashboard: panel targets (rows nest panels) and templating queries."""
    board = json.loads(DASHBOARD.read_text())
    out: list[str] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for panel in panels(board.get("panels", [])):
        out.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and isinstance(text, str):
            # label_values(metric{...}, label) / query_result(expr): the first argument is PromQL.
            inner = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", text, re.S)
            out.append((inner.group(1).rsplit(",", 1)[0] if "label_values" in text else inner.group(1))
                       if inner else text)
    return out


def test_every_metric_the_dashboard_queries_is_exported(agent_series: set[str]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20, "the dashboard's panels were not found"
    used = {name for q in queries for name in promql_metrics(q)}
    gossip = {name for name in used if name.startswith("gossip_")}
    assert gossip, used
    exported = agent_series | operator_series()
    assert not gossip - exported, f"dashboard queries metrics nobody exports: {sorted(gossip - exported)}"


# --- metric names in prose ----------------------------------------------------------------------------

_CODE = re.compile(r"`([^`\n]+)`")
_METRIC_IN_CODE = re.compile(r"\b(gossip_[a-z0-9_]+)(\*?)(?![a-z0-9_./<])")
_NOT_METRICS = {"gossip_agent", "gossip_operator"}  # the Python packages


def doc_metric_names() -> dict[str, set[str]]:
    """`gossip_*` names written in inline code in the docs (module paths and package names excluded); a
    trailing `*` (`gossip_operator_*`) names a family prefix."""
    found: dict[str, set[str]] = {}
    for doc in DOCS:
        for code in _CODE.findall(doc.read_text()):
            for name, star in _METRIC_IN_CODE.findall(code):
                if name not in _NOT_METRICS:
                    found.setdefault(name + star, set()).add(doc.relative_to(REPO).as_posix())
    return found


def test_every_metric_the_docs_name_is_exported(agent_series: set[str]) -> None:
    named = doc_metric_names()
    assert "gossip_state_keys" in named and "gossip_operator_clusters" in named, sorted(named)
    exported = agent_series | operator_series()
    families = {re.sub(r"_(total|created|bucket|sum|count)$", "", s) for s in exported} | exported
    missing = {}
    for name, docs in named.items():
        if name.endswith("*"):
            ok = any(s.startswith(name[:-1]) for s in exported)
        else:
            ok = name in exported or name in families
        if not ok:
            missing[name] = sorted(docs)
    assert not missing, f"docs name metrics nobody exports: {missing}"


def test_docs_operator_lists_every_operator_family() -> None:
    text = (REPO / "docs" / "operator.md").read_text()
    families = {f.name for f in OperatorMetrics().registry.collect()}
    undocumented = {f for f in families if not re.search(rf"`{f}(_total)?[{{`]", text)}
    assert not undocumented, f"docs/operator.md does not list {sorted(undocumented)}"


# --- the Kubernetes quick path ------------------------------------------------------------------------

def _has_value(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_helm_set_flags_in_the_docs_name_real_chart_values() -> None:
    values = yaml.safe_load(VALUES.read_text())
    readme = (REPO / "README.md").read_text()
    flags = {(doc.name, key) for doc in DOCS for key in re.findall(r"--set(?:-string)?\s+([\w.]+)=", doc.read_text())}
    assert {key for name, key in flags if name == "README.md"} >= {"image.repository", "image.tag"}, flags
    unknown = sorted((name, key) for name, key in flags if not _has_value(values, key))
    assert not unknown, f"--set of values the chart does not have: {unknown}"
    # The README builds and pushes the images before installing the chart.
    k8s = readme[readme.index("## In Kubernetes"):]
    order = [k8s.index(step) for step in ("build -f Dockerfile.operator", "build -f Dockerfile.agent",
                                           "push $REGISTRY/gossip-operator", "push $REGISTRY/gossip-agent",
                                           "helm install")]
    assert order == sorted(order)


def test_readme_sed_points_the_example_at_the_pushed_agent_image() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r'sed "s\|(.+?)\|(.+?)\|" examples/gossipcluster\.yaml', readme)
    assert match, "the README's sed of the example was not found"
    pattern, replacement = match.groups()
    example = EXAMPLE.read_text()
    edited = re.sub(pattern, replacement.replace("$REGISTRY", "registry.example.com/gossip")
                    .replace("$VERSION", "0.1.0"), example)
    assert yaml.safe_load(edited)["spec"]["image"] == "registry.example.com/gossip/gossip-agent:0.1.0"


# --- links, references, tables ------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve_inside_the_repository(doc: Path) -> None:
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:|#", target):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_internal_issue_numbers_or_outside_files(doc: Path) -> None:
    text = doc.read_text()
    assert not re.search(r"\bissue[- ]?#?\d+|\bissues? #\d+|\(#\d+\)", text, re.I), doc.name
    # Files that only exist on the developers' machines (the testbed notes, sibling checkouts).
    assert not re.search(r"TESTBED\.md|\.\./shared|/work/", text), doc.name


def test_benchmark_tables_have_header_rows() -> None:
    lines = (REPO / "bench" / "README.md").read_text().splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))]
    assert len(starts) >= 4
    for i in starts:
        assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", lines[i + 1]), f"table at line {i + 1} has no header row"
    # The figures are tables, not fixed-width text in code blocks.
    text = "\n".join(lines)
    assert not re.search(r"```\n(join|kill|idle)[^\n|]*\s{3,}", text)
