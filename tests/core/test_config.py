import pathlib

import pytest
import yaml

from gossip_agent.core.config import AgentConfig, ConfigError, from_mapping, parse_duration, to_mapping

ROOT = pathlib.Path(__file__).parents[2]


def test_presets_use_memberlist_timings() -> None:
    lan = AgentConfig.preset_config("lan")
    assert (lan.membership.probe_interval, lan.membership.probe_timeout) == (1.0, 0.5)
    assert (lan.gossip.interval, lan.gossip.fanout, lan.membership.indirect_checks) == (0.2, 3, 3)
    local = AgentConfig.preset_config("local")
    assert local.membership.probe_timeout == 0.2 and local.gossip.interval == 0.1
    wan = AgentConfig.preset_config("wan")
    assert wan.membership.probe_interval == 5.0 and wan.gossip.fanout == 4


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0),
                                               ("1.5s", 1.5)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "k") == seconds


# A bare number is refused (is 3 seconds or milliseconds?), as the CRD and the operator refuse it: one rule.
@pytest.mark.parametrize("bad", ["fast", "-1s", True, [1], "1d", 3, 0.5, " 1s", "1" * 40 + "s"])
def test_bad_durations_name_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match="membership.probeInterval"):
        from_mapping({"membership": {"probeInterval": bad}})


def test_example_manifest_spec_is_a_valid_agent_config() -> None:
    from gossip_agent.cli.cluster import agent_mapping  # the spec without the operator's keys

    doc = yaml.safe_load((ROOT / "examples" / "gossipcluster.yaml").read_text())
    cfg = from_mapping(agent_mapping(doc["spec"]))
    assert cfg.gossip.mode == "push-pull" and cfg.membership.probe_timeout == 0.5


def test_round_trip() -> None:
    cfg = from_mapping({"name": "x", "seeds": ["a:1", "b:2"], "preset": "local",
                        "state": {"conflictPolicies": {"carts/": "siblings"}}})
    assert from_mapping(to_mapping(cfg)) == cfg


@pytest.mark.parametrize(("data", "message"), [
    ({"membership": {"probeTimeot": "1s"}}, "unknown key"),
    ({"membership": {"probeTimeout": "2s"}}, "below membership.probeInterval"),
    ({"gossip": {"mode": "gossip"}}, "gossip.mode"),
    ({"gossip": {"fanout": 17}}, "gossip.fanout"),
    ({"seeds": ["nohost"]}, "seeds"),
    ({"preset": "fast"}, "preset"),
    ({"state": {"conflictPolicy": "first"}}, "conflictPolicy"),
    ({"gossip": {"fanout": "3"}}, "expected an integer"),
])
def test_invalid_configs_are_rejected_with_a_clear_message(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(data)


@pytest.mark.parametrize(("name", "message"), [
    ("a\udc80b", "valid UTF-8"),      # GOSSIP_NAME holding an undecodable byte arrives as a lone surrogate
    ("a\x1b[2Jb", "control characters"),
    ("x" * 129, "1..128 bytes"),
])
def test_bad_agent_names_are_config_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"name": name})
