"""The CRD passes the API server's structural-schema rules (tests/crd/structural.py), and the checker catches each
rule's violation, the one that once shipped first among them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crd.structural import check_crd, check_schema

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = [ROOT / "crds" / "gossipclusters.gossip-operator.dev.yaml",
             ROOT / "charts" / "gossip-operator" / "crds" / "gossipclusters.gossip-operator.dev.yaml"]


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILES[0].read_text())


@pytest.mark.parametrize("path", CRD_FILES, ids=["crds", "chart-crds"])
def test_the_crd_is_structural(path: Path) -> None:
    assert check_crd(yaml.safe_load(path.read_text())) == []


def test_the_defect_that_shipped_is_caught_with_the_api_servers_words() -> None:
    """`additionalProperties: false` beside `properties` under spec.resources: kube-apiserver rejected the
    whole CRD with exactly this error."""
    crd = _crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["resources"]["additionalProperties"] = False
    assert check_crd(crd) == [
        "spec.validation.openAPIV3Schema.properties[spec].properties[resources].additionalProperties: "
        "Forbidden: additionalProperties and properties are mutual exclusive"]


def _root(**spec_node: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"spec": {"type": "object", **spec_node}}}


P = "spec.validation.openAPIV3Schema.properties[spec]"
INT_OR_STRING = {"x-kubernetes-int-or-string": True}


@pytest.mark.parametrize(("schema", "error"), [
    (_root(properties={"a": {"type": "string"}}, additionalProperties={"type": "string"}),
     f"{P}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"),
    (_root(properties={"a": {"description": "no type"}}),
     f"{P}.properties[a].type: Required value: must not be empty for specified object fields"),
    (_root(properties={"a": {"type": "array"}}),
     f"{P}.properties[a].items: Required value: must be specified (one schema) for type array"),
    (_root(properties={"a": {"type": "string", **INT_OR_STRING}}),
     f"{P}.properties[a].type: Forbidden: must be empty if x-kubernetes-int-or-string is true"),
    (_root(properties={"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": False}}),
     f"{P}.properties[a].x-kubernetes-preserve-unknown-fields: Invalid value: False: must be true or undefined"),
    (_root(properties={"a": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}),
     f"{P}.properties[a].uniqueItems: Forbidden: uniqueItems cannot be set to true"),
    (_root(properties={"a": {"type": "integer", "minimum": 1, "default": 0}}),
     f"{P}.properties[a].default: Invalid value: 0: 0 is less than the minimum of 1"),
    (_root(properties={"a": {"type": "string", "enum": ["x", "y"], "default": "z"}}),
     f"{P}.properties[a].default: Invalid value: 'z': 'z' is not one of ['x', 'y']"),
    (_root(properties={"a": {"type": "object", "default": {"b": 1}, "properties": {"c": {"type": "integer"}}}}),
     f"{P}.properties[a].default: Invalid value: {{'b': 1}}: Additional properties are not allowed"),
    (_root(properties={"a": {"type": "object", "default": {}, "required": ["c"],
                             "properties": {"c": {"type": "integer"}}}}),
     f"{P}.properties[a].default: Invalid value: {{}}: 'c' is a required property"),
    (_root(properties={"l": {"type": "array", "x-kubernetes-list-type": "map",
                             "items": {"type": "object", "properties": {"k": {"type": "string"}}}}}),
     f"{P}.properties[l].x-kubernetes-list-map-keys: Required value: must not be empty"),
    (_root(properties={"l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                             "items": {"type": "object", "properties": {"k": {"type": "string"}}}}}),
     f"{P}.properties[l].items.properties[k].default: Required value: this property is in "
     "x-kubernetes-list-map-keys, so it must have a default or be a required property"),
    (_root(properties={"l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["z"],
                             "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}}}}}),
     f"{P}.properties[l].x-kubernetes-list-map-keys[0]: Invalid value: 'z': entries must all be names of item"),
    (_root(properties={"l": {"type": "array", "x-kubernetes-list-map-keys": ["k"], "items": {"type": "string"}}}),
     f"{P}.properties[l].x-kubernetes-list-map-keys: Forbidden: must be empty if x-kubernetes-list-type is not map"),
    (_root(properties={"a": {"type": "integer"}}, **{"x-kubernetes-validations": [{"rule": "self.a > 0"}]}),
     f"{P}.x-kubernetes-validations[0].message: Required value"),
    (_root(properties={"a": {"type": "integer"}},
           **{"x-kubernetes-validations": [{"rule": "self.a > 0", "message": "m", "fieldPath": ".b"}]}),
     f"{P}.x-kubernetes-validations[0].fieldPath: Invalid value: '.b': fieldPath must be a valid path"),
    (_root(properties={"a": {"type": "integer"}},
           **{"x-kubernetes-validations": [{"rule": "self.a > 0", "message": "m", "reason": "Nope"}]}),
     f"{P}.x-kubernetes-validations[0].reason: Invalid value: 'Nope'"),
    (_root(properties={"l": {"type": "array", "items": {
        "type": "object", "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.a == oldSelf.a", "message": "m"}]}}}),
     f"{P}.properties[l].items.x-kubernetes-validations[0].rule: Forbidden: oldSelf cannot be used"),
    (_root(properties={"a": {"type": "object", "$ref": "#/definitions/x"}}),
     f"{P}.properties[a].$ref: Forbidden"),
])
def test_each_rule_is_checked(schema: dict[str, Any], error: str) -> None:
    errors = check_schema(schema)
    assert any(e.startswith(error) for e in errors), errors


@pytest.mark.parametrize(("metadata", "error"), [
    ({"type": "object", "properties": {"labels": {"type": "object"}}},
     "spec.validation.openAPIV3Schema.properties[metadata].properties[labels]: Forbidden"),
    ({"type": "object", "description": "x"},
     "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name"),
    ({"type": "string"}, "spec.validation.openAPIV3Schema.properties[metadata].type: Invalid value: 'string'"),
    ({"type": "object", "properties": {"name": {"type": "string", "default": "x"}}},
     "spec.validation.openAPIV3Schema.properties[metadata].properties[name].default: Forbidden"),
])
def test_metadata_may_only_restrict_name_and_generate_name(metadata: dict[str, Any], error: str) -> None:
    errors = check_schema({"type": "object", "properties": {"metadata": metadata}})
    assert any(e.startswith(error) for e in errors), errors


def test_root_rules() -> None:
    assert "spec.validation.openAPIV3Schema.default: Forbidden: must not be set at the root" in check_schema(
        {"type": "object", "default": {}})
    assert any("must be object at the root" in e for e in check_schema({"type": "string"}))
    assert any(e.startswith("spec.validation.openAPIV3Schema.additionalProperties: Forbidden: must not be used at")
               for e in check_schema({"type": "object", "additionalProperties": {"type": "string"}}))


def test_valid_forms_are_accepted() -> None:
    """What the server accepts must pass too: int-or-string without type, preserve-unknown-fields without type,
    maps (additionalProperties alone), list-maps with required keys, transition rules on plain objects."""
    schema = _root(properties={
        "q": INT_OR_STRING,
        "free": {"x-kubernetes-preserve-unknown-fields": True},
        "m": {"type": "object", "additionalProperties": {"type": "string"}},
        "closed": {"type": "object", "additionalProperties": False},
        "l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
              "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}},
                        "x-kubernetes-validations": [{"rule": "self.k == oldSelf.k", "message": "k is immutable"}]}},
        "o": {"type": "object", "default": {}, "properties": {"n": {"type": "integer", "default": 3}},
              "x-kubernetes-validations": [{"rule": "self.n == oldSelf.n", "message": "immutable",
                                            "fieldPath": ".n", "reason": "FieldValueForbidden"}]},
    })
    schema["properties"]["metadata"] = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}}
    assert check_schema(copy.deepcopy(schema)) == []
