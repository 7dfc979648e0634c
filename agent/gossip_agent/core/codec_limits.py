"""The limits every decoder of untrusted state bytes applies, and the one error it raises.

Why a separate module: decoding is where untrusted bytes meet the store, and the rumor and log codec
(`state_codec`), the anti-entropy codec (`ae_codec`) and the entry decoding they share (`entry_decoding`)
hold to the same three rules: (1) input longer than the message cap is refused before parsing, (2) msgpack
parses with limits on string, binary, array and map lengths, so a forged length prefix ("a 4 GiB string
follows") fails instead of allocating, and (3) the shape of the result is validated. Whatever the input, the
only exception is `StateCodecError`. This module holds the caps (`CodecLimits`), msgpack's length limits for
an input of a given size (`msgpack_caps`) and the one bounded read of a single field (`unpack_field`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from gossip_agent.core.config import CRDT_STATE_CEILING, KEY_BYTES_CEILING, VALUE_BYTES_CEILING


class StateCodecError(ValueError):
    """Malformed, oversized or unknown input; the message says which."""


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Caps applied while decoding.

    `max_key_bytes`, `max_value_bytes` and `max_crdt_bytes` are what a peer's entry may hold, not what a client
    may write: a key, value or CRDT state written or merged under larger state limits than this replica's
    (lowered since, or set so elsewhere) must still decode here (a replica that refused them never converged,
    and every anti-entropy answer carrying the key failed whole). So they are the fixed ceilings (config's
    KEY_BYTES_CEILING, VALUE_BYTES_CEILING, CRDT_STATE_CEILING), whatever the configured limits. A CRDT state
    costs CPU in proportion to its size on every merge, so one over its ceiling is skipped unbuilt."""

    max_key_bytes: int = KEY_BYTES_CEILING
    max_value_bytes: int = VALUE_BYTES_CEILING
    max_crdt_bytes: int = CRDT_STATE_CEILING
    max_message_bytes: int = 16 << 20   # whole message, checked before parsing
    max_str_bytes: int = max(4096, KEY_BYTES_CEILING)      # any string (keys, node names, set elements)
    max_bin_bytes: int = max(1 << 20, VALUE_BYTES_CEILING)  # any binary (values, hash blocks, listings)
    max_items: int = 1 << 20            # any array or map length


DEFAULT_LIMITS = CodecLimits()

MSGPACK_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException)
"""What msgpack raises on malformed input (or input past its caps): each turned into a StateCodecError."""


def msgpack_caps(size: int, limits: CodecLimits) -> dict[str, Any]:
    """msgpack's length limits for an input of `size` bytes: no string, binary, array or map longer than the
    input could hold or `limits` allow, and no extension types."""
    return {"max_str_len": min(size, limits.max_str_bytes), "max_bin_len": min(size, limits.max_bin_bytes),
            "max_array_len": min(size, limits.max_items), "max_map_len": min(size, limits.max_items),
            "max_ext_len": 0}


class _TooManyLists(Exception):
    pass


def _counting_hooks(limit: int) -> dict[str, Any]:
    """msgpack list_hook and object_hook that refuse the `limit`+1-th array or map as soon as it is built
    (inner ones first)."""
    built = 0

    def count(items: Any) -> Any:
        nonlocal built
        built += 1
        if built > limit:
            raise _TooManyLists
        return items
    return {"list_hook": count, "object_hook": count}


def unpack_field(data: bytes | memoryview, limits: CodecLimits, max_lists: int, what: str,
                 max_len: int | None = None) -> Any:
    """One field, refused as soon as it builds more than `max_lists` arrays and maps, or (`max_len`) an array
    or map longer than that (refused at its header, before its items are built)."""
    most = min(len(data), limits.max_items, len(data) if max_len is None else max_len)
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, **_counting_hooks(max_lists),
            max_str_len=min(len(data), limits.max_str_bytes), max_bin_len=min(len(data), limits.max_bin_bytes),
            max_array_len=most, max_map_len=most, max_ext_len=0)
    except _TooManyLists:
        raise StateCodecError(f"{what}: more nested arrays or maps than the field can hold") from None
    except MSGPACK_ERRORS as err:
        raise StateCodecError(f"malformed msgpack: {type(err).__name__}: {err}") from None
