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


@pytest.mark.parametrize("key", ["membership.probeInterval", "membership.probeTimeout", "membership.streamTimeout",
                                 "gossip.interval", "antiEntropy.interval"])
@pytest.mark.parametrize("text", ["0.0000000000000000000000000001ms", "0.5ms", "0s"])
def test_timer_intervals_have_a_floor_so_no_setting_makes_an_agent_spin(key: str, text: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"{key}: must be 1ms\.\.[0-9]+(m|h)\b"):
        from_mapping({section: {name: text}})
