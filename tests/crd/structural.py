"""The API server's structural-schema rules for a CustomResourceDefinition, checked in pure Python.

kube-apiserver (k8s.io/apiextensions-apiserver, pkg/apis/apiextensions/validation) rejects a v1 CRD whose
`openAPIV3Schema` is not *structural*. Our CRD once shipped with `properties` beside `additionalProperties`
and every `kubectl apply -f crds/` failed. This module restates those rules so a unit test catches that class
of mistake without a server (tests/crd/test_cel.py runs the real server when it is built):

- `properties` and `additionalProperties` are mutually exclusive (and `additionalProperties` excludes
  `x-kubernetes-preserve-unknown-fields`, and is not allowed at the root);
- every node has a `type`, except with `x-kubernetes-int-or-string: true` (then it must have none) or
  `x-kubernetes-preserve-unknown-fields: true`; the root is an object; arrays have one `items` schema;
- `x-kubernetes-preserve-unknown-fields` / `x-kubernetes-int-or-string` / `x-kubernetes-embedded-resource` are
  true or absent; no JSON-Schema keywords the API server forbids (`$ref`, `uniqueItems: true`, ...);
- `default` is not at the root nor inside `metadata`, validates against its own schema (type, enum, pattern,
  bounds, required) and contains no field the schema would prune;
- `metadata` at the root is an object and may only restrict `name` and `generateName` (as strings); nothing
  else, not even a description;
- list types: `x-kubernetes-list-type: map` needs object items and non-empty `x-kubernetes-list-map-keys`, each
  key a scalar property of the items that is required or has a default; map keys only with list-type map;
  `set` needs scalar (or atomic) items;
- `x-kubernetes-validations`: each rule has a `rule` and a `message` (or `messageExpression`), `reason` is one
  of the four the API server accepts, `fieldPath` names a field that exists below the rule's node, and
  transition rules (`oldSelf`) are not placed under a list that is not a list-type map (the server has no
  old element to compare with there).
Errors are returned as the API server words them (`<path>: Forbidden: ...`), paths in its
`spec.validation.openAPIV3Schema.properties[spec]...` form.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema

ROOT_PATH = "spec.validation.openAPIV3Schema"
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_SCALARS = {"string", "integer", "number", "boolean"}
# JSON-Schema keywords the apiextensions v1 schema does not accept (they have no structural meaning).
_FORBIDDEN_KEYWORDS = ("$ref", "$schema", "definitions", "id", "patternProperties", "dependencies",
                       "additionalItems")
_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
_KNOWN_KEYS = {
    "type", "format", "title", "description", "default", "nullable", "example", "externalDocs", "enum",
    "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
    "maxItems", "minItems", "uniqueItems", "multipleOf", "maxProperties", "minProperties", "required",
    "items", "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-validations",
    *_FORBIDDEN_KEYWORDS,
}


def _forbidden(path: str, what: str) -> str:
    return f"{path}: Forbidden: {what}"


def _required(path: str, what: str) -> str:
    return f"{path}: Required value: {what}"


def _invalid(path: str, value: Any, what: str) -> str:
    return f"{path}: Invalid value: {value!r}: {what}"


def check_crd(crd: Mapping[str, Any]) -> list[str]:
    """Every structural-schema error of every version's schema (empty when the API server would accept it)."""
    errors: list[str] = []
    versions = (crd.get("spec") or {}).get("versions") or []
    if not versions:
        errors.append(_required("spec.versions", "must have at least one version"))
    for version in versions:
        schema = ((version.get("schema") or {}).get("openAPIV3Schema"))
        if not isinstance(schema, Mapping):
            errors.append(_required(f"{ROOT_PATH}", "schemas are required"))
            continue
        errors += check_schema(schema)
    return errors


def check_schema(root: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if root.get("type") != "object":
        errors.append(_invalid(f"{ROOT_PATH}.type", root.get("type"), "must be object at the root"))
    if "default" in root:
        errors.append(_forbidden(f"{ROOT_PATH}.default", "must not be set at the root"))
    for key in ("x-kubernetes-int-or-string", "nullable"):
        if root.get(key):
            errors.append(_forbidden(f"{ROOT_PATH}.{key}", "must be false at the root"))
    properties = root.get("properties") or {}
    for key in ("apiVersion", "kind"):
        node = properties.get(key)
        if isinstance(node, Mapping) and node.get("type") != "string":
            errors.append(_invalid(f"{ROOT_PATH}.properties[{key}].type", node.get("type"), "must be string"))
    metadata = properties.get("metadata")
    if isinstance(metadata, Mapping):
        errors += _check_metadata(metadata, f"{ROOT_PATH}.properties[metadata]")
    errors += _check_node(root, ROOT_PATH, in_list_without_keys=False, in_metadata=False, is_root=True)
    return errors


def _check_metadata(node: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if node.get("type") not in (None, "object"):
        errors.append(_invalid(f"{path}.type", node.get("type"), "must be object"))
    allowed = {"type", "properties"}
    extra = sorted(set(node) - allowed)
    if extra:
        errors.append(_forbidden(path, f"must not specify anything other than name and generateName, "
                                       f"but metadata is implicitly specified (found {', '.join(extra)})"))
    for name, sub in (node.get("properties") or {}).items():
        if name not in ("name", "generateName"):
            errors.append(_forbidden(f"{path}.properties[{name}]", "must not be specified (only name and "
                                                                   "generateName may be restricted)"))
        elif not isinstance(sub, Mapping) or sub.get("type") != "string":
            errors.append(_invalid(f"{path}.properties[{name}].type", (sub or {}).get("type"), "must be string"))
        elif "default" in sub:
            errors.append(_forbidden(f"{path}.properties[{name}].default", "must not be set inside metadata"))
    return errors


def _children(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(kind, schema, path) of the direct sub-schemas: properties, items, additionalProperties."""
    for name, sub in (node.get("properties") or {}).items():
        yield "property", sub, f"{path}.properties[{name}]"
    items = node.get("items")
    if isinstance(items, Mapping):
        yield "items", items, f"{path}.items"
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield "additionalProperties", additional, f"{path}.additionalProperties"


def _check_node(node: Any, path: str, *, in_list_without_keys: bool, in_metadata: bool,
                is_root: bool = False) -> list[str]:
    if not isinstance(node, Mapping):
        return [_invalid(path, node, "must be a schema object")]
    errors: list[str] = []
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    int_or_string = node.get("x-kubernetes-int-or-string")
    node_type = node.get("type")

    for key in sorted(set(node) - _KNOWN_KEYS):
        errors.append(_forbidden(f"{path}.{key}", "unknown field"))
    for key in _FORBIDDEN_KEYWORDS:
        if key in node:
            errors.append(_forbidden(f"{path}.{key}", f"{key} is not supported"))
    if node.get("uniqueItems") is True:
        errors.append(_forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the runtime "
                                                        "complexity becomes quadratic"))
    for key in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
                "x-kubernetes-embedded-resource"):
        if key in node and node[key] is not True:
            errors.append(_invalid(f"{path}.{key}", node[key], "must be true or undefined"))

    # types
    if int_or_string:
        if node_type is not None:
            errors.append(_forbidden(f"{path}.type", "must be empty if x-kubernetes-int-or-string is true"))
    elif node_type is None:
        if not preserve:
            errors.append(_required(f"{path}.type", "must not be empty for specified object fields"))
    elif node_type not in _TYPES:
        errors.append(_invalid(f"{path}.type", node_type, f"must be one of {', '.join(sorted(_TYPES))}"))
    if int_or_string and preserve:
        errors.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", preserve,
                               "must be false if x-kubernetes-int-or-string is true"))
    if node.get("x-kubernetes-embedded-resource") and node_type != "object":
        errors.append(_invalid(f"{path}.type", node_type, "must be object if x-kubernetes-embedded-resource is true"))

    # properties vs additionalProperties
    additional = node.get("additionalProperties")
    if additional is not None:
        if node.get("properties"):
            errors.append(_forbidden(f"{path}.additionalProperties",
                                     "additionalProperties and properties are mutual exclusive"))
        if preserve:
            errors.append(_forbidden(f"{path}.additionalProperties",
                                     "additionalProperties and x-kubernetes-preserve-unknown-fields are mutual "
                                     "exclusive"))
        if is_root:
            errors.append(_forbidden(f"{path}.additionalProperties", "must not be used at the root"))
    if (node.get("properties") or isinstance(additional, Mapping)) and node_type not in (None, "object"):
        errors.append(_invalid(f"{path}.type", node_type, "must be object when properties are given"))
    if node_type == "array":
        if not isinstance(node.get("items"), Mapping):
            errors.append(_required(f"{path}.items", "must be specified (one schema) for type array"))
    elif "items" in node:
        errors.append(_forbidden(f"{path}.items", "items is only allowed for type array"))
    for junctor in ("allOf", "oneOf", "anyOf", "not"):
        if junctor in node:
            errors += _check_junctor(node[junctor], f"{path}.{junctor}")

    # required names declared properties
    for name in node.get("required") or []:
        if node.get("properties") is not None and name not in node["properties"] and not preserve:
            errors.append(_invalid(f"{path}.required", name, "is not a declared property"))

    # defaults
    if "default" in node and not is_root:
        if in_metadata:
            errors.append(_forbidden(f"{path}.default", "must not be set inside metadata"))
        errors += _check_default(node, path)

    # list types
    errors += _check_list_type(node, path)

    # CEL rules
    errors += _check_validations(node, path, in_list_without_keys=in_list_without_keys)

    list_type = node.get("x-kubernetes-list-type")
    for kind, sub, sub_path in _children(node, path):
        below_unkeyed_list = in_list_without_keys or (kind == "items" and list_type != "map")
        sub_in_metadata = in_metadata or (is_root and sub_path.endswith(".properties[metadata]"))
        if is_root and sub_path.endswith(".properties[metadata]"):
            continue  # checked by _check_metadata
        errors += _check_node(sub, sub_path, in_list_without_keys=below_unkeyed_list, in_metadata=sub_in_metadata)
    return errors


def _check_junctor(value: Any, path: str) -> list[str]:
    """Inside allOf/anyOf/oneOf/not only value validations are allowed (no type, default, properties' types)."""
    errors = []
    schemas = value if isinstance(value, list) else [value]
    for i, schema in enumerate(schemas):
        sub_path = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(schema, Mapping):
            errors.append(_invalid(sub_path, schema, "must be a schema object"))
            continue
        for key in ("type", "default", "nullable", "additionalProperties", "x-kubernetes-preserve-unknown-fields",
                    "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "description"):
            if key in schema:
                errors.append(_forbidden(f"{sub_path}.{key}", "must be undefined to be structural"))
    return errors


def _check_list_type(node: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if keys is not None and list_type != "map":
        errors.append(_forbidden(f"{path}.x-kubernetes-list-map-keys",
                                 "must be empty if x-kubernetes-list-type is not map"))
    if list_type is None:
        return errors
    if list_type not in ("atomic", "set", "map"):
        errors.append(_invalid(f"{path}.x-kubernetes-list-type", list_type, "must be atomic, set or map"))
        return errors
    if node.get("type") != "array":
        errors.append(_invalid(f"{path}.type", node.get("type"), "must be array if x-kubernetes-list-type is set"))
        return errors
    items = node.get("items") if isinstance(node.get("items"), Mapping) else {}
    if list_type == "set":
        atomic = items.get("x-kubernetes-map-type") == "atomic" or items.get("x-kubernetes-list-type") == "atomic"
        if items.get("type") not in _SCALARS and not atomic:
            errors.append(_invalid(f"{path}.items.type", items.get("type"),
                                   "must be a scalar type if x-kubernetes-list-type is set"))
    if list_type in ("set", "map") and items.get("nullable"):
        errors.append(_forbidden(f"{path}.items.nullable", f"cannot be nullable when x-kubernetes-list-type is "
                                                           f"{list_type}"))
    if list_type == "map":
        if items.get("type") != "object":
            errors.append(_invalid(f"{path}.items.type", items.get("type"),
                                   "must be object if x-kubernetes-list-type is map"))
        if not keys:
            errors.append(_required(f"{path}.x-kubernetes-list-map-keys",
                                    "must not be empty if x-kubernetes-list-type is map"))
        properties = items.get("properties") or {}
        required = set(items.get("required") or [])
        for i, key in enumerate(keys or []):
            key_path = f"{path}.x-kubernetes-list-map-keys[{i}]"
            prop = properties.get(key)
            if prop is None:
                errors.append(_invalid(key_path, key, "entries must all be names of item properties"))
                continue
            if prop.get("type") not in _SCALARS:
                errors.append(_invalid(key_path, key, "must be a scalar typed property"))
            if key not in required and "default" not in prop:
                errors.append(_required(f"{path}.items.properties[{key}].default", "this property is in "
                                        "x-kubernetes-list-map-keys, so it must have a default or be a required "
                                        "property"))
            if prop.get("nullable"):
                errors.append(_forbidden(f"{path}.items.properties[{key}].nullable", "this property is in "
                                         "x-kubernetes-list-map-keys, so it cannot be nullable"))
    return errors


def to_jsonschema(node: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """A structural schema as JSON Schema (x-kubernetes-* dropped; int-or-string as integer|string; with
    `strict`, objects with properties reject unknown fields, as the server's strict field validation does)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format"):
            continue
        if key == "properties":
            out[key] = {k: to_jsonschema(v, strict=strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = to_jsonschema(value, strict=strict)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if strict and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def _check_default(node: Mapping[str, Any], path: str) -> list[str]:
    """The server validates a default against its schema after pruning; a default holding a field the schema
    does not declare is an error too ("must not have unknown fields")."""
    try:
        jsonschema.validate(node["default"], to_jsonschema({k: v for k, v in node.items() if k != "default"}))
    except jsonschema.ValidationError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        return [_invalid(f"{path}.default{where}", exc.instance, exc.message)]
    return []


_FIELD_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']+)'\]|\[(\d+)\]")


def _resolve_field_path(node: Mapping[str, Any], field_path: str) -> bool:
    """Does `.a.b['c'][0]` name a field below `node`? (What the server checks for fieldPath.)"""
    position = 0
    current: Mapping[str, Any] = node
    while position < len(field_path):
        match = _FIELD_PATH_PART.match(field_path, position)
        if not match:
            return False
        position = match.end()
        name = match.group(1) or match.group(2)
        if name is not None:
            properties = current.get("properties") or {}
            if name in properties:
                current = properties[name]
            elif isinstance(current.get("additionalProperties"), Mapping):
                current = current["additionalProperties"]
            else:
                return False
        else:
            if not isinstance(current.get("items"), Mapping):
                return False
            current = current["items"]
    return True


def _check_validations(node: Mapping[str, Any], path: str, *, in_list_without_keys: bool) -> list[str]:
    errors = []
    rules = node.get("x-kubernetes-validations")
    if rules is None:
        return errors
    if not isinstance(rules, list):
        return [_invalid(f"{path}.x-kubernetes-validations", rules, "must be a list")]
    for i, rule in enumerate(rules):
        rule_path = f"{path}.x-kubernetes-validations[{i}]"
        if not isinstance(rule, Mapping) or not isinstance(rule.get("rule"), str) or not rule["rule"].strip():
            errors.append(_required(f"{rule_path}.rule", "rule is not specified"))
            continue
        extra = sorted(set(rule) - {"rule", "message", "messageExpression", "reason", "fieldPath",
                                    "optionalOldSelf"})
        if extra:
            errors.append(_forbidden(rule_path, f"unknown field(s) {', '.join(extra)}"))
        message = rule.get("message")
        if message is None and not rule.get("messageExpression"):
            errors.append(_required(f"{rule_path}.message", "a message (or messageExpression) tells the user what "
                                                            "went wrong; without one they get the rule text"))
        elif message is not None and (not isinstance(message, str) or not message.strip() or "\n" in message):
            errors.append(_invalid(f"{rule_path}.message", message, "message must be non-empty and on one line"))
        reason = rule.get("reason")
        if reason is not None and reason not in _REASONS:
            errors.append(_invalid(f"{rule_path}.reason", reason, f"must be one of {', '.join(sorted(_REASONS))}"))
        field_path = rule.get("fieldPath")
        if field_path is not None and not _resolve_field_path(node, field_path):
            errors.append(_invalid(f"{rule_path}.fieldPath", field_path, "fieldPath must be a valid path to a "
                                                                          "field below the rule's schema"))
        if "oldSelf" in rule["rule"] and in_list_without_keys:
            errors.append(_forbidden(f"{rule_path}.rule", "oldSelf cannot be used on an element of a list that "
                                                          "is not x-kubernetes-list-type map"))
    return errors
