"""The agent's settings as the other layers need them, read from the one declaration in `core/config.py`.

- `spec_keys()`: the keys a GossipCluster's agent sections admit (what the operator copies into the ConfigMap
  and what `gossipctl up` accepts);
- `crd_properties(section)`: that section's openAPI v3 properties for the CRD (types, ranges, enums, patterns,
  descriptions, and the defaults the CRD stores);
- `reference_table()`: the configuration reference in docs/agent-api.md.

`tools/gen_settings.py` writes the last two into the CRD copies and the doc; a test fails when a committed copy
differs. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from gossip_agent.core.config import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    PRESET_GOSSIP,
    PRESET_MEMBERSHIP,
    PRESETS,
    SECTIONS,
    AgentConfig,
    Setting,
    camel,
    choices,
    format_duration,
    settings_fields,
    to_text,
)

# The sections whose defaults a preset changes, by AgentConfig attribute.
_PRESET_SECTIONS: Mapping[str, Mapping[str, Any]] = {"membership": PRESET_MEMBERSHIP, "gossip": PRESET_GOSSIP}


def spec_keys() -> dict[str, frozenset[str]]:
    """camelCase keys a GossipCluster's agent sections may set, by section."""
    return {key: frozenset(camel(f.name) for f, _, meta in settings_fields(cls) if meta.in_spec)
            for key, _, cls in SECTIONS}


def spec_top_level_keys() -> frozenset[str]:
    """Agent keys at the top of a GossipCluster spec: the sections and the top-level settings it may set."""
    return frozenset({key for key, _, _ in SECTIONS} | {
        camel(f.name) for f, _, meta in settings_fields(AgentConfig) if meta.in_spec})


def preset_defaults(attr: str, name: str) -> dict[str, Any] | None:
    """{preset: default} when the presets disagree on this setting's default, else None."""
    presets = _PRESET_SECTIONS.get(attr)
    if presets is None:
        return None
    values = {preset: getattr(presets[preset], name) for preset in PRESETS}
    return values if len(set(values.values())) > 1 else None


def _user_text(meta: Setting, value: Any) -> str:
    """A default as a user writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return to_text(meta, value)
    if isinstance(value, tuple | Mapping):
        return "none" if not value else str(value)
    return str(value)


def _default_text(attr: str, name: str, meta: Setting, value: Any) -> str:
    by_preset = preset_defaults(attr, name)
    if by_preset is not None:
        return ", ".join(f"{preset} {_user_text(meta, v)}" for preset, v in by_preset.items())
    return _user_text(meta, value)


def range_text(meta: Setting) -> str:
    """The allowed numbers, as the parser's messages state them ("" when unbounded)."""
    low, high = meta.minimum, meta.maximum
    if meta.above and high is None:
        return f"above {to_text(meta, low or 0)}"
    if low is not None and high is not None:
        return f"{to_text(meta, low)}..{to_text(meta, high)}"
    if low is not None:
        return f"at least {to_text(meta, low)}"
    if high is not None:
        return f"at most {to_text(meta, high)}"
    return ""


def _schema_type(tp: Any, meta: Setting) -> dict[str, Any]:
    allowed = choices(tp)
    if allowed is not None:
        return {"type": "string", "enum": list(allowed)}
    if meta.duration:
        return {"type": "string", "maxLength": DURATION_MAX_LENGTH, "pattern": DURATION_PATTERN}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        node: dict[str, Any] = {"type": "integer"}
        if meta.minimum is not None:
            node["minimum"] = int(meta.minimum)
        if meta.maximum is not None and meta.crd_maximum:
            node["maximum"] = int(meta.maximum)
        return node
    if tp is float:  # a plain number (a fraction); durations are strings, above
        node = {"type": "number"}
        if meta.minimum is not None:
            node["minimum"] = meta.minimum
        if meta.maximum is not None and meta.crd_maximum:
            node["maximum"] = meta.maximum
        return node
    if get_origin(tp) is Mapping:
        value_type = get_args(tp)[1]
        node = {"type": "object"}
        if meta.max_items is not None:
            node["maxProperties"] = meta.max_items
        node["additionalProperties"] = ({"type": "string", "enum": list(get_args(value_type))}
                                        if get_origin(value_type) is Literal else {"type": "string"})
        return node
    raise AssertionError(f"no CRD type for {tp!r}")


def crd_properties(section: str) -> dict[str, dict[str, Any]]:
    """openAPI v3 properties of one agent section of the GossipCluster CRD (the keys a spec may set)."""
    (attr, cls), = ((a, c) for key, a, c in SECTIONS if key == section)
    base = AgentConfig()
    out: dict[str, dict[str, Any]] = {}
    for f, tp, meta in settings_fields(cls):
        if not meta.in_spec:
            continue
        node = _schema_type(tp, meta)
        default = getattr(getattr(base, attr), f.name)
        if meta.crd_default:
            if preset_defaults(attr, f.name) is not None:
                raise AssertionError(f"{section}.{camel(f.name)}: a preset changes its default; no CRD default")
            node["default"] = format_duration(default) if meta.duration else default
        description = meta.why
        limits = range_text(meta) if meta.duration or not meta.crd_maximum else ""
        if limits:
            description += f" Allowed: {limits}."
        description += f" Default: {_default_text(attr, f.name, meta, default)}."
        node["description"] = description
        out[camel(f.name)] = node
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_table() -> str:
    """The configuration reference (Markdown): every setting, its default, its range, its meaning."""
    base = AgentConfig()
    rows = ["| Key | Default | Allowed | In a GossipCluster | Meaning |", "|---|---|---|---|---|"]
    for key, attr, cls in (("", "", AgentConfig), *SECTIONS):
        obj = getattr(base, attr) if attr else base
        for f, tp, meta in settings_fields(cls):
            name = f"{key}.{camel(f.name)}" if key else camel(f.name)
            allowed_values = choices(tp)
            allowed = " \\| ".join(allowed_values) if allowed_values else range_text(meta)
            if meta.duration:
                allowed = f"duration{', ' + allowed if allowed else ''}"
            elif meta.unit:
                allowed = f"{allowed} {meta.unit}".strip()
            default = _default_text(attr, f.name, meta, getattr(obj, f.name))
            rows.append(f"| `{name}` | {_cell(default)} | {allowed} | {'yes' if meta.in_spec else 'no'} "
                        f"| {_cell(meta.why)} |")
    return "\n".join(rows) + "\n"
