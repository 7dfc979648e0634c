"""Decide whether a live child still matches what the operator wants, and build the patch that fixes it.

A live object always has more than the operator sent: the API server fills defaults (terminationMessagePath,
clusterIPs, ...) and controllers add status. So "matches" means: every field the operator sets has the same
value live (a recursive subset; lists must have the same length and match element by element), with
Kubernetes quantities compared by value ("1024Mi" equals "1Gi") because the server canonicalises them.

The patch is a JSON merge patch (RFC 7386) of the desired object, plus `null` for keys the operator set last
time (recorded in an annotation) but no longer wants, like `kubectl apply`'s three-way merge. Keys added by
others (another controller's annotation) are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gossip_operator.spec import parse_quantity


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def matches(desired: Any, live: Any) -> bool:
    """True when every value in `desired` is present and equal in `live`."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(key in live and matches(value, live[key]) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(matches(d, v) for d, v in zip(desired, live, strict=True))
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, str | int) and isinstance(live, str | int) and not isinstance(desired, bool):
        a, b = parse_quantity(desired), parse_quantity(live)
        return a is not None and a == b
    return bool(desired == live and not isinstance(desired, bool) and not isinstance(live, bool))


def merge_patch(desired: Mapping[str, Any], last_applied: Mapping[str, Any] | None) -> dict[str, Any]:
    """The merge patch that turns a live object into `desired`, deleting keys only the last apply had."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        previous = (last_applied or {}).get(key)
        if isinstance(value, Mapping) and value:
            patch[key] = merge_patch(value, previous if isinstance(previous, Mapping) else None)
        else:
            patch[key] = value
    for key in (last_applied or {}):
        if key not in desired:
            patch[key] = None
    return patch


def without_paths(obj: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """A deep-enough copy of `obj` without the given key paths (for fields the server will not change)."""
    out = dict(obj)
    for path in paths:
        node: dict[str, Any] = out
        for i, key in enumerate(path):
            if key not in node or not isinstance(node[key], Mapping):
                if i == len(path) - 1:
                    node.pop(key, None)
                break
            if i == len(path) - 1:
                node.pop(key)
                break
            node[key] = dict(node[key])
            node = node[key]
    return out
