"""A write-concern push (/v1/internal/replicate, up to 4 MiB, unauthenticated in plaintext mode) is one entry:
what decoding it builds is now bounded by the entry's shape, as a pushed anti-entropy entry's is.

Before: the payload was one `unpackb` bounded only by "one array per 2 bytes". A 4 MiB value entry whose key
held 4M empty arrays built 129 MiB and held the event loop 1.5 s (974 ms CPU, load ~3.5) before "key must be
a string"; an OR-set of 300k tiny elements (3.6 MiB) was built whole (~4 s of the loop) before the store found
its state above `max_value_bytes`. Now (core/state_codec.decode_rumor): the tag is read as a byte, the entry's
head as for a push, a CRDT state longer than the CRDT ceiling is refused before it is built, and a value
entry's fields are built one by one in their fixed shape (scalars, one flat context, versions of 5).
"""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core import hlc
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.replica import decode_payload
from gossip_agent.io.state_service import StateService
from tests.hostile.agent_support import raw_exchange, running
from tests.hostile.core_support import MIB as _MIB
from tests.hostile.core_support import NESTED_1MIB, array_header, peak_memory_refusing

_N = (1 << 18) - 64


def _value_entry(key: bytes, context: bytes = b"\x90", versions: bytes = b"\x90") -> bytes:
    return b"\x92\x01\x94\x00" + key + context + versions


def _orset(elements: int) -> bytes:
    items = [[f"{chr(33 + i % 90)}{chr(33 + i // 90 % 90)}{chr(33 + i // 8100)}", ["n", i + 1]]
             for i in range(elements)]
    return msgpack.packb([1, [1, "crdt/sets/set", hlc.to_plain(hlc.ZERO), ["orset", [["n", elements], items]]]])


@pytest.mark.parametrize("where", ["key", "context", "version", "strings"])
def test_nested_arrays_where_a_value_entry_has_scalars_are_refused_as_built(where: str) -> None:
    nested = NESTED_1MIB
    strings = array_header(_N * 2) + b"\xa1a" * (_N * 2)  # 1 MiB, 512k one-letter strings
    version = b"\x91\x95\xa1n\x01\x01\x00"
    data = {"key": _value_entry(nested),
            "context": _value_entry(b"\xa1k", b"\x92" + nested + b"\x01"),
            "version": _value_entry(b"\xa1k", b"\x92\xa1n\x01", version + nested),
            "strings": _value_entry(b"\xa1k", b"\x92\xa1n\x01", version + strings)}[where]
    peak = peak_memory_refusing(decode_payload, data)
    # (a copy of the input: msgpack's buffer) was 32x, and 4.2x for the strings
    assert peak < 2 * len(data), f"{peak / _MIB:.0f} MiB built for a {len(data) / _MIB:.1f} MiB entry"


@pytest.mark.parametrize("where", ["key", "timestamp"])
def test_nested_arrays_where_a_crdt_entry_has_scalars_are_refused_as_built(where: str) -> None:
    """A CRDT entry's key and timestamp are built with bounds of their own, not one array per 2 bytes of the
    entry: 1 MiB of nested arrays in either built ~33 MiB and ~0.7 s of CPU (review)."""
    nested = NESTED_1MIB
    timestamp = msgpack.packb(hlc.to_plain(hlc.ZERO))
    state = msgpack.packb(["orset", [["n", 1], []]])
    key, stamp = (nested, timestamp) if where == "key" else (b"\xa3set", nested)
    data = b"\x92\x01\x94\x01" + key + stamp + state
    peak = peak_memory_refusing(decode_payload, data)
    assert peak < 2 * len(data), f"{peak / _MIB:.0f} MiB built for a {len(data) / _MIB:.1f} MiB entry"
    honest = b"\x92\x01\x94\x01" + msgpack.packb("crdt/sets/set") + timestamp + state
    assert decode_payload(honest).key == "crdt/sets/set"  # (the same shape with scalars decodes)


def test_a_crdt_state_over_the_ceiling_is_refused_before_it_is_built() -> None:
    data = _orset(100_000)  # 1.2 MiB; config.CRDT_STATE_CEILING is 1 MiB
    # (It used to decode: the store refused it once built. Now skipped unbuilt and counted, state_too_large.)
    peak = peak_memory_refusing(decode_payload, data, error=EntryOverLimit, match="CRDT state ceiling")
    assert peak < 4 * len(data), f"{peak / _MIB:.0f} MiB built for a {len(data) / _MIB:.1f} MiB entry"


async def test_the_agent_answers_400_and_stores_nothing() -> None:
    """End to end (this held before too: the store refused the state once built, after seconds at 4 MiB)."""
    body = b"\x01" + _orset(100_000)  # (FRAME + payload: a plaintext agent's peer body)
    async with running("victim") as agent:
        head = (f"POST /v1/internal/replicate HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        answer = await raw_exchange(agent.port, head + body)
        assert answer.startswith(b"HTTP/1.1 400") and b"CRDT state ceiling" in answer
        (state,) = agent.extensions
        assert isinstance(state, StateService) and state.store.entry("crdt/sets/set") is None
        assert state.store.refused == {"state_too_large": 1}  # (gossip_state_refused_total)
