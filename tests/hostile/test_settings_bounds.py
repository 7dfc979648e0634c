"""Every number a config or a GossipCluster may set has a sane floor and ceiling (core/config.py declarations,
generated into the CRD and the docs' reference by tools/gen_settings.py).

antiEntropy.interval had no maximum (nor had most durations): "99999999999999999999h" was a valid spec, and a
timer at now + 3.6e23 s is a feature silently off, or an OverflowError in the event loop's timer heap.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

import pytest
import yaml

from gossip_agent.core.config import SECTIONS, AgentConfig, ConfigError, camel, from_mapping, settings_fields
from gossip_agent.core.settings_schema import crd_properties
from tools import gen_settings


def _numeric(tp: Any) -> bool:
    if get_origin(tp) in (Union, types.UnionType):
        return any(_numeric(arg) for arg in get_args(tp) if arg is not type(None))
    return tp in (int, float)


def _settings() -> list[tuple[str, str, Any, Any]]:
    out = []
    for key, _, cls in (("", "", AgentConfig), *SECTIONS):
        for f, tp, meta in settings_fields(cls):
            if meta.duration or _numeric(tp):
                out.append((key, camel(f.name), tp, meta))
    return out


SETTINGS = _settings()


@pytest.mark.parametrize(("section", "key", "tp", "meta"), SETTINGS, ids=[f"{s}.{k}" for s, k, _, _ in SETTINGS])
def test_every_number_has_a_minimum_and_a_maximum(section: str, key: str, tp: Any, meta: Any) -> None:
    assert meta.minimum is not None and meta.maximum is not None, f"{section}.{key}: no floor or no ceiling"
    assert meta.minimum < meta.maximum


def test_the_crd_carries_every_bound() -> None:
    """Integers and fractions: the schema's minimum/maximum (or a CEL rule: crd_maximum=False); durations (strings
    in the CRD): the range in the description, and the operator refuses the spec with the agent's parser."""
    crd = gen_settings.CRD.read_text()
    for section, key, _tp, meta in SETTINGS:
        if not section or not meta.in_spec:
            continue
        node = crd_properties(section)[key]
        if meta.duration:
            assert "Allowed: " in node["description"] and ".." in node["description"], (section, key)
        else:
            assert "minimum" in node, (section, key)
            assert "maximum" in node or (not meta.crd_maximum and f"self.{section}.{key} <=" in crd), (section, key)
    committed = yaml.safe_load(crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    ae = committed["properties"]["antiEntropy"]["properties"]["interval"]
    assert "Allowed: 1ms..24h." in ae["description"]


@pytest.mark.parametrize("text", ["25h", "99999999999999999999h", "1441m"])
def test_an_anti_entropy_interval_beyond_a_day_is_refused_with_its_range(text: str) -> None:
    with pytest.raises(ConfigError, match=r"antiEntropy.interval: must be 1ms\.\.24h"):
        from_mapping({"antiEntropy": {"interval": text}})
    assert from_mapping({"antiEntropy": {"interval": "24h"}}).anti_entropy.interval == 86400.0


@pytest.mark.parametrize(("section", "key"), [("gossip", "pushPullInterval"), ("membership", "reconnectInterval")])
def test_a_periodic_sync_is_off_or_at_most_once_a_second(section: str, key: str) -> None:
    from_mapping({section: {key: "0s"}})
    from_mapping({section: {key: "1s"}})
    with pytest.raises(ConfigError, match=f"{section}.{key}: must be 0s \\(off\\) or at least 1s"):
        from_mapping({section: {key: "1ms"}})
    with pytest.raises(ConfigError, match=f"{section}.{key}: must be 0s..24h"):
        from_mapping({section: {key: "25h"}})
