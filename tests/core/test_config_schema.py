"""The settings' declarations (core/config.py) are complete, and the parser enforces exactly what they declare."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gossip_agent.core.config import (
    PRESETS,
    SECTIONS,
    AgentConfig,
    ConfigError,
    Setting,
    camel,
    choices,
    convert,
    format_duration,
    from_mapping,
    parse_duration,
    settings_fields,
    to_mapping,
)
from gossip_agent.core.settings_schema import crd_properties, preset_defaults, spec_keys

ALL = [(key, cls) for key, _, cls in (("", "", AgentConfig), *SECTIONS)]
FIELDS = [(f"{key}.{camel(f.name)}" if key else camel(f.name), key, f, tp, meta)
          for key, cls in ALL for f, tp, meta in settings_fields(cls)]


def _mapping(key: str, value: Any) -> dict[str, Any]:
    section, _, name = key.rpartition(".")
    return {section: {name: value}} if section else {name: value}


@pytest.mark.parametrize(("key", "meta"), [(k, m) for k, _, _, _, m in FIELDS], ids=[k for k, *_ in FIELDS])
def test_every_setting_says_why_in_one_line(key: str, meta: Setting) -> None:
    assert meta.why and "\n" not in meta.why and meta.why.endswith("."), key


def test_every_float_is_a_declared_duration_and_names_do_not_matter() -> None:
    """Durations are known by their declaration, not by a key-name suffix or the text of a type; a float that
    is not a duration (topology.crossZoneFraction) is a plain number with both bounds declared."""
    assert all(meta.duration or (meta.minimum is not None and meta.maximum is not None)
               for _, _, _, tp, meta in FIELDS if tp is float)
    plain, duration = Setting("A number."), Setting("A duration.", duration=True)
    assert convert("retryInterval", float, plain, 2) == 2.0
    assert convert("size", float, duration, "2m") == 120.0
    with pytest.raises(ConfigError, match="retryInterval: expected a duration"):
        convert("retryInterval", float, duration, 2)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.05, 0.1, 0.2, 0.5, 1.5, 3.0, 30.0, 60.0, 90.0, 86400.0,
                                     0.0125, 1e-05, 1234.5678])
def test_format_duration_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), "k") == seconds


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_round_trips_through_its_mapping(preset: str) -> None:
    cfg = AgentConfig.preset_config(preset)
    data = to_mapping(cfg)
    assert data["membership"]["probeTimeout"] == format_duration(cfg.membership.probe_timeout)
    assert from_mapping(data) == cfg


def _out_of_range(meta: Setting, tp: Any) -> list[Any]:
    values: list[float] = []
    if meta.minimum is not None:
        values.append(meta.minimum if meta.above else meta.minimum - (0.5 if meta.duration else 1))
    if meta.maximum is not None:
        values.append(meta.maximum * 2 if meta.duration else meta.maximum + 1)
    return [format_duration(v) if meta.duration else int(v) for v in values if v >= 0]


RANGED = [(key, tp, meta) for key, _, _, tp, meta in FIELDS if _out_of_range(meta, tp)]


@pytest.mark.parametrize(("key", "tp", "meta"), RANGED, ids=[k for k, *_ in RANGED])
def test_every_declared_range_is_enforced(key: str, tp: Any, meta: Setting) -> None:
    for value in _out_of_range(meta, tp):
        with pytest.raises(ConfigError) as info:
            from_mapping(_mapping(key, value))
        assert any(p.startswith(f"{key}: must be") for p in info.value.problems), (value, info.value.problems)


CHOICES = [(key, tp) for key, _, _, tp, _ in FIELDS if choices(tp)]


@pytest.mark.parametrize(("key", "tp"), CHOICES, ids=[k for k, _ in CHOICES])
def test_every_enum_refuses_other_words_and_lists_the_allowed_ones(key: str, tp: Any) -> None:
    allowed = choices(tp)
    assert allowed
    if key == "preset":
        return  # the preset is read first (it picks the base): its own message, checked elsewhere
    for value in allowed:
        from_mapping(_mapping(key, value) | ({"security": {"tlsCertFile": "c", "tlsKeyFile": "k",
                                                            "tlsCaFile": "a", "tlsClientAuth": value}}
                                              if key == "security.tlsClientAuth" else {}))
    with pytest.raises(ConfigError, match=f"{key}: must be one of {', '.join(allowed)}, got 'other'"):
        from_mapping(_mapping(key, "other"))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"gossip": {"fanout": 0, "mode": "x", "interval": 1}, "state": {"maxKeyBytes": "1"},
                      "storage": {"snapshotEvery": 0}, "membership": {"probeTimot": "1s"}})
    assert len(info.value.problems) == 6, info.value.problems


def test_maps_are_bounded() -> None:
    with pytest.raises(ConfigError, match="state.conflictPolicies: at most 64 entries"):
        from_mapping({"state": {"conflictPolicies": {f"p{i}/": "lww" for i in range(65)}}})


def test_crd_defaults_only_where_no_preset_changes_the_default() -> None:
    for key, attr, cls in SECTIONS:
        properties = crd_properties(key)
        for f, _, meta in settings_fields(cls):
            if meta.in_spec:
                assert ("default" in properties[camel(f.name)]) == meta.crd_default, (key, f.name)
            if meta.crd_default:
                assert preset_defaults(attr, f.name) is None


def test_reconnect_settings_can_be_set_in_a_gossipcluster() -> None:
    assert {"reconnectInterval", "reconnectTimeout"} <= spec_keys()["membership"]
    cfg = from_mapping({"membership": {"reconnectInterval": "5s", "reconnectTimeout": "1h"}})
    assert (cfg.membership.reconnect_interval, cfg.membership.reconnect_timeout) == (5.0, 3600.0)


def test_operator_keys_are_not_the_agents() -> None:
    """The agent knows only its own settings; the operator's keys (storage.size ...) are stripped by callers."""
    for data in ({"replicas": 3}, {"storage": {"size": "1Gi"}}, {"security": {"tlsSecret": "x"}}):
        with pytest.raises(ConfigError, match="unknown key"):
            from_mapping(data)


def test_fields_are_frozen_dataclasses() -> None:
    for _, cls in ALL:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
