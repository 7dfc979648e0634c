"""spec.parse: defaults, every rule, and errors a user can act on."""

from __future__ import annotations

import pytest
import yaml

from gossip_agent.core.config import ConfigError, from_mapping
from gossip_operator.spec import InvalidSpec, parse, parse_quantity
from tests.operator.conftest import EXAMPLE_PATH


def _parse(**spec: object) -> object:
    return parse({"image": "gossip-agent:0.1.0", **spec}, name="demo", namespace="ns")


def _problems(name: str = "demo", **spec: object) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse({"image": "gossip-agent:0.1.0", **spec}, name=name, namespace="ns")
    return str(info.value)


def test_defaults() -> None:
    spec = _parse()
    assert (spec.replicas, spec.port, spec.preset, spec.image_pull_policy, spec.paused) == (3, 7946, "lan",
                                                                                            "IfNotPresent", False)
    assert spec.pdb_enabled and spec.pdb_max_unavailable == 1 and spec.pdb_min_available is None
    assert spec.storage_size == "1Gi" and not spec.storage_ephemeral
    assert spec.gossip_key_secret == "demo-gossip-key" and spec.gossip_key_secret_is_default
    assert spec.tls_secret is None and not spec.tls


def test_example_parses() -> None:
    doc = yaml.safe_load(EXAMPLE_PATH.read_text())
    spec = parse(doc["spec"], name=doc["metadata"]["name"], namespace="default")
    assert spec.replicas == 5
    assert spec.agent_sections["gossip"]["fanout"] == 3
    assert "size" not in spec.agent_sections.get("storage", {})


def test_operator_only_keys_stay_out_of_agent_sections() -> None:
    spec = _parse(storage={"size": "2Gi", "storageClassName": "fast", "fsync": "always"},
                  security={"gossipKeySecret": "shared-key", "tlsSecret": "demo-tls"})
    assert spec.agent_sections["storage"] == {"fsync": "always"}
    assert "security" not in spec.agent_sections
    assert spec.storage_size == "2Gi" and spec.storage_class_name == "fast"
    assert spec.gossip_key_secret == "shared-key" and not spec.gossip_key_secret_is_default
    assert spec.tls


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"membership": {"probeTimeout": "2s"}}, "membership.probeTimeout (2s) must be above 0 and below "
                                             "membership.probeInterval (1s, the lan preset)"),
    ({"preset": "wan", "membership": {"probeInterval": "2s"}}, "membership.probeTimeout (3s)"),
    ({"membership": {"probeInterval": "1s", "probeTimeout": "1s"}}, "below membership.probeInterval (1s)"),
    ({"membership": {"probeInterval": "fast"}}, "membership.probeInterval: expected a duration"),
    ({"gossip": {"fanout": 17}}, "gossip.fanout: must be 1..16"),
    ({"gossip": {"mtu": 1000, "maxMetaBytes": 600}}, "gossip.maxMetaBytes (600) must be at most half"),
    ({"gossip": {"interval": "0s"}}, "gossip.interval: must be 1ms..1m"),
    ({"replicas": -1}, "replicas: must be 0..1000"),
    ({"image": "bad image"}, "image: expected an image reference"),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}},
     "resources.requests.cpu (2) must not exceed resources.limits.cpu (500m)"),
    ({"resources": {"requests": {"memory": "lots"}}}, "resources.requests.memory: expected a quantity"),
    ({"storage": {"ephemeral": True, "size": "1Gi"}}, "storage.size: cannot be set when storage.ephemeral"),
    ({"storage": {"size": "0"}}, "storage.size: expected a positive quantity"),
    ({"podDisruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}}, "either minAvailable or maxUnavailable"),
    ({"podDisruptionBudget": {"minAvailable": 5}}, "minAvailable (5) is above replicas (3)"),
    ({"pod": {"labels": {"app.kubernetes.io/instance": "x"}}}, "pod.labels: app.kubernetes.io/instance"),
    ({"pod": {"nodeSelector": {"zone": 1}}}, "pod.nodeSelector: values must be strings"),
    ({"state": {"conflictPolicies": {"": "lww"}}}, "a key prefix must not be empty"),
    ({"gossip": {"fanot": 3}}, "gossip: unknown field(s) fanot"),
    ({"replica": 3}, "spec: unknown field(s) replica"),
    ({"security": {"tlsSecret": "Bad_Name"}}, "security.tlsSecret"),
])
def test_invalid_specs_name_the_field(spec: dict[str, object], fragment: str) -> None:
    assert fragment in _problems(**spec)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse({"image": "", "replicas": "3", "gossip": {"fanout": 0}}, name="demo", namespace="ns")
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("name", ["1demo", "a" * 53, "Demo", "demo-"])
def test_names_that_cannot_name_children(name: str) -> None:
    assert "metadata.name" in _problems(name=name)


def test_quantities() -> None:
    assert parse_quantity("1Gi") == parse_quantity("1024Mi") and parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("1e3") == parse_quantity("1k") and parse_quantity("x") is None


# Agent sections: the operator reports exactly what the agent's parser reports (the operator calls it).
AGENT_SECTION_CASES = [
    {"membership": {"probeTimeout": "2s"}},
    {"preset": "wan", "membership": {"probeInterval": "2s"}},
    {"membership": {"probeInterval": 1}},  # a bare number: refused by the CRD, the operator and the agent alike
    {"membership": {"reconnectInterval": "soon", "maxMembers": 3}},
    {"gossip": {"fanout": 17, "interval": "0s", "mode": "gossip"}},
    {"gossip": {"mtu": 1000, "maxMetaBytes": 600}},
    {"state": {"conflictPolicies": {"": "lww", "a/": "first"}, "maxKeyBytes": "256"}},
    {"storage": {"fsync": "sometimes", "fsyncInterval": "5"}},
    {"security": {"replayWindow": "2h"}},
]


@pytest.mark.parametrize("spec", AGENT_SECTION_CASES)
def test_agent_sections_get_the_agents_own_messages(spec: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as agent:
        from_mapping(spec)
    with pytest.raises(InvalidSpec) as operator:
        parse({"image": "gossip-agent:0.1.0", **spec}, name="demo", namespace="ns")
    assert operator.value.problems == agent.value.problems


def test_every_agent_setting_a_spec_may_hold_is_copied_to_the_agents() -> None:
    """membership.reconnectInterval and reconnectTimeout exist in the agent: a GossipCluster can set them."""
    from gossip_operator.manifests.configmap import agent_config

    spec = _parse(membership={"reconnectInterval": "1m", "reconnectTimeout": "2h"})
    assert spec.agent_sections["membership"] == {"reconnectInterval": "1m", "reconnectTimeout": "2h"}
    agent = from_mapping({**agent_config(spec, ""), "name": "demo-0"})  # what the agents read from the ConfigMap
    assert (agent.membership.reconnect_interval, agent.membership.reconnect_timeout) == (60.0, 7200.0)


def test_the_keys_the_operator_admits_are_the_crds() -> None:
    from gossip_operator import spec as module
    from tests.operator.conftest import CRD_PATH

    crd = yaml.safe_load(CRD_PATH.read_text())
    properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(properties) == module._TOP_LEVEL
    for section, known in module.AGENT_SECTIONS.items():
        operator_keys = module._OPERATOR_SECTION_KEYS.get(section, frozenset())
        assert known | operator_keys == set(properties[section]["properties"]), section
