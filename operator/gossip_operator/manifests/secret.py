"""The gossip keyring Secret, generated when absent.

Format (key `keyring`): one base64-encoded 32-byte key per line, the primary (encrypting) key first; agents
decrypt with any key of the ring, so keys rotate without a partition: add a key, roll, make it primary, roll,
remove the old one. The random bytes come from the caller: this module draws no randomness.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from gossip_operator.manifests.common import API_TOKENS_KEY, KEYRING_KEY, Owner, labels
from gossip_operator.spec import ClusterSpec

KEY_BYTES = 32


def keyring_text(keys: Sequence[bytes]) -> str:
    if not keys:
        raise ValueError("a keyring needs at least one key")
    for key in keys:
        if len(key) != KEY_BYTES:
            raise ValueError(f"gossip keys are {KEY_BYTES} bytes, got {len(key)}")
    return "".join(base64.b64encode(key).decode() + "\n" for key in keys)


def parse_keyring(text: str) -> list[bytes]:
    """Keys of a keyring text; raises ValueError naming the bad line."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            key = base64.b64decode(line.strip(), validate=True)
        except ValueError as exc:
            raise ValueError(f"keyring line {number}: not base64") from exc
        if len(key) != KEY_BYTES:
            raise ValueError(f"keyring line {number}: {len(key)} bytes, expected {KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise ValueError("keyring is empty")
    return keys


def keyring_hash(secret_data_b64: str | None) -> str:
    """Checksum of a Secret's (base64) keyring value, for the pod template: a new keyring rolls the pods."""
    return hashlib.sha256((secret_data_b64 or "").encode()).hexdigest()[:16]


def render(spec: ClusterSpec, owner: Owner | None, keys: Sequence[bytes]) -> dict[str, Any]:
    """A Secret named spec.gossip_key_secret. `owner` None: not garbage-collected with the cluster."""
    meta: dict[str, Any] = {"name": spec.gossip_key_secret, "namespace": spec.namespace,
                            "labels": labels(spec, "gossip-key")}
    if owner is not None:
        meta["ownerReferences"] = [owner.reference()]
    encoded = base64.b64encode(keyring_text(keys).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": {KEYRING_KEY: encoded}}


# -- the HTTP API's bearer tokens -------------------------------------------------------------------------------
# `<cluster>-api-tokens`, key `tokens`: "read:<token>" and "write:<token>" lines (the agent's
# security.apiTokensFile format). Generated once, owned by the cluster; users read the tokens from it (gossipctl
# --token), the operator uses the read token for its status queries. Rotation: edit the Secret; agents re-read it.


def api_tokens_secret_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-api-tokens"


def render_api_tokens(spec: ClusterSpec, owner: Owner, read_token: str, write_token: str) -> dict[str, Any]:
    """The tokens Secret. The random tokens come from the caller (this module draws no randomness)."""
    meta: dict[str, Any] = {"name": api_tokens_secret_name(spec), "namespace": spec.namespace,
                            "labels": labels(spec, "api-tokens"), "ownerReferences": [owner.reference()]}
    text = f"read:{read_token}\nwrite:{write_token}\n"
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "data": {API_TOKENS_KEY: base64.b64encode(text.encode()).decode()}}


def read_token(secret_data_b64: str | None) -> str | None:
    """A token the operator may query agents with: the first `read` token, else the first `write` token."""
    try:
        text = base64.b64decode(secret_data_b64 or "").decode()
    except (ValueError, UnicodeDecodeError):
        return None
    pairs = [line.strip().partition(":") for line in text.splitlines() if ":" in line]
    by_scope = {scope.strip(): token.strip() for scope, _, token in reversed(pairs)}
    return by_scope.get("read") or by_scope.get("write") or None
