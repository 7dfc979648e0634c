"""The CRD: valid for Kubernetes, structural, and the examples validate against its schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.operator.conftest import CRD_PATH, ROOT


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def _to_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (structural) → JSON Schema, rejecting unknown fields as the API server's strict field
    validation does: every object with properties gets additionalProperties false unless it preserves
    unknown fields."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _to_jsonschema(value)
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields") and \
            "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def _schema() -> dict[str, Any]:
    schema = _to_jsonschema(_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def test_crd_is_valid_kubernetes() -> None:
    kubernetes_validate.validate(_crd(), "1.30.0", strict=True)


def test_names_scope_and_subresources() -> None:
    crd = _crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "gossipclusters.gossip-operator.dev"
    assert (spec["group"], spec["scope"]) == ("gossip-operator.dev", "Namespaced")
    assert spec["names"]["shortNames"] == ["gsc", "gossip"] and "gc" not in spec["names"]["shortNames"]
    assert spec["names"]["categories"] == ["all"] and spec["names"]["kind"] == "GossipCluster"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0] == [
        "Replicas", "Alive", "Converged", "Root", "Age"]
    assert columns["Root"]["jsonPath"] == ".status.stateRootShort"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        found += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural_and_typed() -> None:
    root = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    preserved = []
    for path, node in _walk(root):
        if path in ("", ".metadata"):
            continue
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.append(path)
    # Pass-through only for core/v1 types too large to restate (affinity) and NetworkPolicy peers.
    assert preserved == [".spec.pod.affinity", ".spec.pod.affinity.nodeAffinity", ".spec.pod.affinity.podAffinity",
                         ".spec.pod.affinity.podAntiAffinity", ".spec.pod.networkPolicy.allowFrom[]"]


def test_cel_rules_cover_what_the_schema_cannot_say() -> None:
    spec = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    assert "duration(self.membership.probeTimeout) < duration(self.membership.probeInterval)" in rules
    assert "self.gossip.fanout <= 16" in rules


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "GossipCluster":
            jsonschema.validate(doc, _schema())


@pytest.mark.parametrize(("change", "message"), [
    ({"replicas": -1}, "minimum"),
    ({"fanout": 3}, "Additional properties"),
    ({"gossip": {"mode": "broadcast"}}, "is not one of"),
    ({"membership": {"probeInterval": "1 second"}}, "does not match"),
    ({"storage": {"size": "lots"}}, "does not match"),
    ({"pod": {"tolerations": [{"effect": "Sometimes"}]}}, "is not one of"),
])
def test_schema_rejects_bad_specs(change: dict[str, Any], message: str) -> None:
    doc = {"apiVersion": "gossip-operator.dev/v1alpha1", "kind": "GossipCluster", "metadata": {"name": "x"},
           "spec": {"image": "gossip-agent:0.1.0", **change}}
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(doc, _schema())
