"""Hostile sizes inside a value entry's causal context and inside received member metadata.

A value entry's context named any number of writer nodes: one entry of 500k nodes (2.4 MiB) took ~0.8 s to
decode, was stored, and every later merge of its key paid again while every peer received it. Now every
path refuses a context past `vector_clock.MAX_CONTEXT_NODES` (16,384: honest contexts name the members that
wrote the key, at most membership.maxMembers, 5,000 by default, plus recent churn) at its header, before it is
built: UDP state rumors and /v1/internal/replicate (`decode_rumor`), anti-entropy pushes (`decode_ae_request`)
and answers (`AnswerEntries`), client contexts (`decode_context`), and in the store (`validate`, a merge whose
union would pass it), counted as `context_too_large`; a local write never stores its client's context.

Push-pull rows were decoded with metadata up to the largest gossip.maxMetaBytes any agent may set (32,500),
whatever this agent's setting: a 3.2 MiB state of large metadata maps cost ~145 ms to build. Now
`decode_push_pull(max_meta_bytes=...)` drops (and counts) a row whose metadata cannot fit the configured size,
before its map is built; the row-level check against `node.meta_size` stays where rumors are merged.
"""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core import codec
from gossip_agent.core import hlc as hlc_mod
from gossip_agent.core.ae_codec import decode_ae_request, encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeResponse
from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.kvstore import (
    CausalContext,
    InvalidEntry,
    KvStore,
    ValueEntry,
    Version,
    entry_to_plain,
)
from gossip_agent.core.messages import MemberSnapshot, MemberState, PushPullState
from gossip_agent.core.state_codec import decode_context, decode_rumor, encode_context, encode_rumor
from gossip_agent.core.vector_clock import MAX_CONTEXT_NODES, VersionVector
from tests.hostile.core_support import ae_request_raw, peak_memory_refusing

NOW_MS = 1_700_000_000_000


def _entry(key: str, writers: int, prefix: str = "w") -> ValueEntry:
    """A value entry written by `prefix`0 whose context names `writers` nodes."""
    plain: list[object] = []
    for i in range(writers):
        plain += [f"{prefix}{i}", 1]
    writer = f"{prefix}0"
    version = Version((writer, 1), hlc_mod.from_parts(NOW_MS, 0, writer), b"v")
    return ValueEntry(key, (version,), VersionVector.from_plain(plain))


def test_a_rumor_or_replicate_body_with_too_many_writers_is_refused() -> None:
    honest = _entry("k", 200)
    assert decode_rumor(encode_rumor(honest)) == honest
    assert decode_rumor(encode_rumor(_entry("k", MAX_CONTEXT_NODES))).context == _entry("k", MAX_CONTEXT_NODES).context
    with pytest.raises(StateCodecError, match="writer nodes"):
        decode_rumor(encode_rumor(_entry("k", MAX_CONTEXT_NODES + 1)))


def test_a_rumor_context_is_counted_at_its_header_before_it_is_built() -> None:
    """Refused from the header's count: the refusal copies the payload (msgpack buffers) but builds no node."""
    payload = encode_rumor(_entry("k", 4 * MAX_CONTEXT_NODES))
    peak = peak_memory_refusing(decode_rumor, payload, match="writer nodes")
    assert peak < 3 * len(payload), f"{peak} bytes built for a {len(payload)}-byte rumor"


def test_an_anti_entropy_push_with_too_many_writers_is_refused() -> None:
    ok = msgpack.packb([entry_to_plain(_entry("k", 300))])
    assert len(decode_ae_request(ae_request_raw(ok)).push) == 1
    bad = msgpack.packb([entry_to_plain(_entry("k", 300)), entry_to_plain(_entry("j", MAX_CONTEXT_NODES + 1))])
    with pytest.raises(StateCodecError, match="writer nodes"):
        decode_ae_request(ae_request_raw(bad))


def test_an_anti_entropy_answer_with_too_many_writers_is_refused() -> None:
    ok = encode_ae(AeResponse((4, 4), entries=(_entry("k", 300),)))
    assert len(open_ae_response(ok)[1].take(10)) == 1
    bad = encode_ae(AeResponse((4, 4), entries=(_entry("k", 300), _entry("j", MAX_CONTEXT_NODES + 1))))
    entries = open_ae_response(bad)[1]
    assert len(entries.take(1)) == 1  # what came before the bad entry is kept
    with pytest.raises(StateCodecError, match="writer nodes"):
        entries.take(1)


def test_the_store_refuses_an_oversized_context_and_an_oversized_union_and_keeps_its_state() -> None:
    store = KvStore("me")
    with pytest.raises(InvalidEntry, match="writer nodes"):
        store.apply_remote(_entry("k", MAX_CONTEXT_NODES + 1), NOW_MS)
    assert store.entry("k") is None
    half = MAX_CONTEXT_NODES // 2 + 1
    first = _entry("k", half, "a")
    assert store.apply_remote(first, NOW_MS)
    with pytest.raises(InvalidEntry, match="merged context"):  # disjoint writers, one entry at a time
        store.apply_remote(_entry("k", half, "b"), NOW_MS)
    assert store.entry("k") == first
    assert store.refused["context_too_large"] == 2


def test_a_client_context_naming_too_many_writers_is_refused() -> None:
    big = _entry("k", MAX_CONTEXT_NODES + 1).context
    with pytest.raises(StateCodecError, match="writer nodes"):
        decode_context(encode_context(CausalContext(big, hlc_mod.ZERO)))
    store = KvStore("me")
    full = CausalContext(_entry("k", MAX_CONTEXT_NODES).context, hlc_mod.ZERO)  # accepted, and none of it stored
    assert store.local_put("k", b"v", NOW_MS, full).context == VersionVector({"me": 1})
    assert store.refused == {}


def _state(meta_items: int, value: str = "x") -> PushPullState:
    big = {f"m{i}": value for i in range(meta_items)}
    return PushPullState("peer", (
        MemberSnapshot("peer", ("127.0.0.1", 7001), 1, MemberState.ALIVE, {"zone": "a"}),
        MemberSnapshot("big", ("127.0.0.1", 7002), 1, MemberState.ALIVE, big),
        MemberSnapshot("other", ("127.0.0.1", 7003), 1, MemberState.ALIVE, {}),
    ))


def test_a_push_pull_row_whose_metadata_exceeds_max_meta_bytes_is_dropped_and_counted() -> None:
    data = codec.encode_push_pull(_state(2_000))  # ~14 KB of metadata in one row; maxMetaBytes 512
    state = codec.decode_push_pull(data, 1 << 20, max_meta_bytes=512)
    assert [m.name for m in state.members] == ["peer", "other"]
    assert state.meta_dropped == 1
    honest = _state(40)  # 40 * (2-3 + 1 + 2) bytes: under 512
    assert codec.decode_push_pull(codec.encode_push_pull(honest), 1 << 20, max_meta_bytes=512) == honest


def test_a_push_pull_row_with_long_metadata_strings_is_dropped() -> None:
    data = codec.encode_push_pull(_state(3, "y" * 3_000))  # 3 entries, ~9 KB: the byte bound, not the count
    state = codec.decode_push_pull(data, 1 << 20, max_meta_bytes=512)
    assert [m.name for m in state.members] == ["peer", "other"] and state.meta_dropped == 1
