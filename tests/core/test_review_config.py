"""Boundary inputs through the one settings schema: every bad duration is a ConfigError naming the key."""

from __future__ import annotations

import pytest

from gossip_agent.core.config import ConfigError, from_mapping, parse_duration


@pytest.mark.parametrize("text", ["1s\n", "500ms\n", " 1s", "1e9h", "\u0661s", "-1s", "1 s", ""])
def test_a_malformed_duration_is_a_config_error_naming_the_key(text: str) -> None:
    # "1s\n" is what a YAML block scalar (`probeInterval: |`) or a file read into an env var gives.
    with pytest.raises(ConfigError, match="membership.probeInterval"):
        from_mapping({"membership": {"probeInterval": text}})
    with pytest.raises(ConfigError, match="k: expected a duration"):
        parse_duration(text, "k")
