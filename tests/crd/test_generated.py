"""The CRD's agent sections and the docs' configuration reference are what tools/gen_settings.py writes from
the settings' declarations (agent/gossip_agent/core/config.py): edit the declarations, never the copies."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gossip_agent.core.config import (
    SECTIONS,
    AgentConfig,
    ConfigError,
    camel,
    choices,
    format_duration,
    from_mapping,
    settings_fields,
)
from tests.crd.structural import to_jsonschema
from tools import gen_settings


@pytest.mark.parametrize("path", sorted(gen_settings.expected()), ids=lambda p: str(p.relative_to(gen_settings.ROOT)))
def test_committed_copy_is_what_the_generator_writes(path: Path) -> None:
    expected = gen_settings.expected()
    assert path in expected
    committed = path.read_text()
    assert committed == expected[path], (
        f"{path} differs from the settings declared in agent/gossip_agent/core/config.py: "
        f"run {gen_settings.COMMAND} and commit the result")


def test_the_generator_leaves_the_hand_written_crd_alone() -> None:
    """Outside the marked blocks the CRD is byte-for-byte what was committed (operator fields, CEL, columns)."""
    text = gen_settings.CRD.read_text()
    outside = gen_settings._CRD_BLOCK.sub("", text)
    assert gen_settings._CRD_BLOCK.sub("", gen_settings.render_crd(text)) == outside
    assert "x-kubernetes-validations" in outside and "additionalPrinterColumns" in outside


def test_a_stale_copy_is_reported_with_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stale = gen_settings.CRD.read_text().replace("maxMembers:", "maxMembrs:", 1)
    copy = tmp_path / "crd.yaml"
    copy.write_text(stale)
    monkeypatch.setattr(gen_settings, "CRD", copy)
    monkeypatch.setattr(gen_settings, "CRD_COPIES", (copy,))
    assert gen_settings.main(["--check"]) == 1
    assert f"run {gen_settings.COMMAND}" in capsys.readouterr().out
    assert gen_settings.main([]) == 0 and copy.read_text() == gen_settings.render_crd(stale)
    assert "maxMembers:" in copy.read_text() and "maxMembrs" not in copy.read_text()


# --- the CRD's schema and the agent's parser agree on every value the schema can judge --------------------

def _cases() -> list[tuple[str, str, Any]]:
    """(section, key, value) for every setting a GossipCluster may hold: valid values, wrong types, values out
    of the schema's range, malformed durations, unknown enum words."""
    base = AgentConfig()
    cases: list[tuple[str, str, Any]] = []
    for section, attr, cls in SECTIONS:
        for f, tp, meta in settings_fields(cls):
            if not meta.in_spec:
                continue
            key, default = camel(f.name), getattr(getattr(base, attr), f.name)
            allowed = choices(tp)
            if allowed:
                values: list[Any] = [*allowed, "other", 1]
            elif meta.duration:
                values = [format_duration(default), 1, "1 s", "1d", "-1s", "1" * 40 + "s"]
            elif tp is bool:
                values = [True, False, "true", 1]
            elif tp is int:
                values = [default, "1", 1.5, True]
                values += [] if meta.minimum is None else [int(meta.minimum) - 1]
                values += [] if meta.maximum is None or not meta.crd_maximum else [int(meta.maximum) + 1]
            else:  # a map of conflict policies
                values = [{"a/": "siblings"}, {"a/": "first"}, ["a/"], {f"p{i}/": "lww" for i in range(65)}]
            cases += [(section, key, value) for value in values]
    return cases


CASES = _cases()


@functools.cache
def _section_schema(section: str) -> dict[str, Any]:
    crd = yaml.safe_load(gen_settings.CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return to_jsonschema(spec["properties"][section])


@pytest.mark.parametrize(("section", "key", "value"), CASES, ids=[f"{s}.{k}={v!r}"[:60] for s, k, v in CASES])
def test_the_crd_schema_and_the_agent_parser_agree(section: str, key: str, value: Any) -> None:
    """A value the CRD refuses the agent refuses too, and the other way round (ranges of durations and rules
    between settings are the parser's alone: the cases here stay clear of them)."""
    schema = _section_schema(section)
    by_schema = jsonschema.Draft4Validator(schema).is_valid({key: value})
    try:
        from_mapping({section: {key: value}})
        by_agent = True
    except ConfigError:
        by_agent = False
    assert by_schema == by_agent, f"{section}.{key}: {value!r}: CRD {'accepts' if by_schema else 'refuses'}, " \
                                  f"agent {'accepts' if by_agent else 'refuses'}"
