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

from gossip_operator.manifests.common import KEYRING_KEY, Owner, labels
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
