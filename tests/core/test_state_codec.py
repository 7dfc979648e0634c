"""State and anti-entropy codecs: round trips, limits enforced before allocation, and garbage only ever raises
StateCodecError."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip_agent.core.ae_codec import decode_ae_request, decode_ae_response, encode_ae
from gossip_agent.core.anti_entropy import AeRequest, AeResponse, Children, Listing, Session, respond
from gossip_agent.core.codec_limits import CodecLimits, StateCodecError, msgpack_caps
from gossip_agent.core.config import CRDT_STATE_CEILING, KEY_BYTES_CEILING, VALUE_BYTES_CEILING, StateConfig
from gossip_agent.core.crdt import MVRegister, ORSet, PNCounter
from gossip_agent.core.entry_decoding import EntryOverLimit, decode_entry
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import CausalContext, Change, KvStore
from gossip_agent.core.state_codec import (
    decode_change,
    decode_context,
    decode_rumor,
    encode_change,
    encode_context,
    encode_rumor,
)
from gossip_agent.core.vector_clock import VersionVector

T = 1_700_000_000_000
DECODERS = [decode_rumor, decode_change, decode_context, decode_ae_request, decode_ae_response]
# What a decoder may raise (entry_decoding): the message is malformed, or one well-formed entry is refused (a
# mutated key byte may well make a key no client could write: EntryOverLimit `invalid_key`, session 16).
REFUSALS = (StateCodecError, EntryOverLimit)


def sample_store() -> KvStore:
    s = KvStore("node-a", StateConfig(conflict_policies={"carts/": "siblings"}))
    s.local_put("ns/key", b"value", T)
    s.local_put("carts/1", b"x", T)
    s.apply_remote(KvStore("node-b").local_put("carts/1", b"y", T))
    s.local_put("gone", b"v", T)
    s.local_delete("gone", T + 1)
    s.update_crdt("crdt/counters/pn", PNCounter, lambda c, n, _: c.increment(n, -4), T)
    s.update_crdt("crdt/sets/set", ORSet, lambda c, n, _: c.add(n, "e"), T)
    s.update_crdt("crdt/registers/mv/mv", MVRegister, lambda c, n, _: c.assign(n, b"m"), T)
    return s


def sample_payloads() -> list[bytes]:
    s = sample_store()
    out = [encode_rumor(s.entry(k)) for k in s.all_keys()]  # type: ignore[arg-type]
    out += [encode_change(c) for c in s.drain_changes()]
    out.append(encode_context(CausalContext(VersionVector({"a": 3}), Hlc(5, 1, "a"))))
    peer = KvStore("p")
    session = Session(peer)
    request: AeRequest | None = session.start()
    while request is not None:
        out.append(encode_ae(request))
        response = respond(s, request, T)
        out.append(encode_ae(response))
        request = session.handle(response, T)
    return out


def test_round_trips() -> None:
    s = sample_store()
    for key in s.all_keys():
        entry = s.entry(key)
        assert entry is not None and decode_rumor(encode_rumor(entry)) == entry
    for change in s.drain_changes():
        assert decode_change(encode_change(change)) == change
    assert decode_change(encode_change(Change("k", None, "gc"))) == Change("k", None, "gc")
    ctx = CausalContext(VersionVector({"a": 3, "b": 1}), Hlc(5, 1, "a"))
    assert decode_context(encode_context(ctx)) == ctx
    response = AeResponse((2, 8), b"\x01" * 32, (Children((0, 0), b"\x02" * 128, bytes(4)),),
                          (Listing((1, 2), b"\x03" * 32),), (s.entry("ns/key"),), ("k",), True)  # type: ignore[arg-type]
    assert decode_ae_response(encode_ae(response)) == response
    request = AeRequest((2, 8), None, ((1, 1),), ((2, 3),), (s.entry("crdt/counters/pn"),), (b"\x00" * 8,), ((3, 9),))  # type: ignore[arg-type]
    assert decode_ae_request(encode_ae(request)) == request


def test_limits_are_enforced() -> None:
    limits = CodecLimits(max_key_bytes=8, max_value_bytes=16)
    ok = KvStore("a").local_put("short", b"x" * 16, T)
    assert decode_rumor(encode_rumor(ok), limits) == ok
    with pytest.raises(EntryOverLimit, match="key") as over:
        decode_rumor(encode_rumor(KvStore("a").local_put("much-too-long", b"x", T)), limits)
    assert over.value.reason == "key_too_long"
    with pytest.raises(EntryOverLimit, match="value") as over:
        decode_rumor(encode_rumor(KvStore("a").local_put("short", b"x" * 17, T)), limits)
    assert over.value.reason == "value_too_large"
    with pytest.raises(StateCodecError, match="cap"):
        decode_rumor(b"\x00" * 100, CodecLimits(max_message_bytes=99))


def test_configured_limits_are_write_limits_not_decode_limits() -> None:
    """An entry written under a larger state.maxKeyBytes / maxValueBytes decodes at an agent configured with
    lowered ones: the configured limits refuse only local writes (F3: the new replica never converged)."""
    limits = CodecLimits()
    assert (limits.max_key_bytes, limits.max_value_bytes) == (KEY_BYTES_CEILING, VALUE_BYTES_CEILING)
    long_key = KvStore("a").local_put("k" * 200, b"x" * 1000, T)
    assert decode_rumor(encode_rumor(long_key), limits) == long_key
    assert limits.max_crdt_bytes == CRDT_STATE_CEILING  # (CRDT states: a fixed ceiling too)


@pytest.mark.parametrize("forged", [
    b"\xdb\xff\xff\xff\xff",            # str32 claiming 4 GiB
    b"\xc6\xff\xff\xff\xff",            # bin32 claiming 4 GiB
    b"\xdd\xff\xff\xff\xff",            # array32 claiming 4 billion items
    b"\xdf\xff\xff\xff\xff",            # map32 claiming 4 billion pairs
    b"\x92\x01\xc6\x7f\xff\xff\xff",    # [1, bin32 of 2 GiB]
    b"\xc7\xff\x01" + b"\x00" * 10,     # ext8: extensions are refused
    b"\x91" * 100_000,                  # nesting far deeper than any valid message
])
def test_forged_lengths_fail_fast(forged: bytes) -> None:
    for decode in DECODERS:
        with pytest.raises(StateCodecError):
            decode(forged)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(StateCodecError):
        decode_rumor("text")  # type: ignore[arg-type]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_the_codec_error(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(*REFUSALS):
            decode(data)


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=10)
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), plain, plain, plain)
def test_structured_garbage_only_raises_the_codec_error(tag: int, a: object, b: object, c: object) -> None:
    for shape in ([tag, a], [tag, a, b], [tag, a, b, c], [tag, a, b, c, a, b, c, a], [tag, 0, a, [b, c]],
                  [tag, [0, "k", a, b]], [tag, [1, "k", [1, 0, "n"], [a, b]]], [tag, "k", "local", [0, "k", a, b]]):
        data = msgpack.packb(shape, use_bin_type=True)
        for decode in DECODERS:
            with contextlib.suppress(*REFUSALS):
                decode(data)


@pytest.mark.parametrize("counts", [None, 7, "ab", [1, 2]])
def test_ae_response_children_with_non_bytes_counts_raise_the_codec_error(counts: object) -> None:
    # Found by the fuzz test above: the hash-length check read len(counts) before checking its type.
    data = msgpack.packb([4, [2, 8], None, [[0, 0, bytes(64), counts]], [], [], [], False], use_bin_type=True)
    with pytest.raises(StateCodecError, match="children"):
        decode_ae_response(data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_messages_only_raise_the_codec_error(data: st.DataObject) -> None:
    payloads = sample_payloads()
    payload = bytearray(data.draw(st.sampled_from(payloads)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        payload = payload[: data.draw(st.integers(0, len(payload)))]
    for decode in DECODERS:
        with contextlib.suppress(*REFUSALS):
            decode(bytes(payload))


def _fresh_rumor(payload: bytes, limits: CodecLimits) -> object:
    """What `decode_rumor` gave before rumors had kept readers: a fresh value-entry reader per rumor, capped by
    the rumor's own size (the outcome: the entry, or the codec error's class)."""
    try:
        if payload[:2] != bytes([0x92, 1]) or payload[3:4] == b"\x01":  # (not a value entry: nothing kept)
            return decode_rumor(payload, limits)
        return decode_entry(memoryview(payload)[2:], limits, msgpack_caps(len(payload), limits), "state rumor")
    except REFUSALS as err:
        return type(err)


def _kept_rumor(payload: bytes, limits: CodecLimits) -> object:
    try:
        return decode_rumor(payload, limits)
    except REFUSALS as err:
        return type(err)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_kept_rumor_readers_decode_a_stream_of_good_and_bad_rumors_as_fresh_ones_do(data: st.DataObject) -> None:
    """Rumors of every size class (kept readers, one per class) and over REUSE_READER_BYTES (fresh readers),
    good ones between mutated, truncated and trailing-byte ones (after which a kept reader starts afresh):
    each decodes to what a fresh reader gives, or both refuse it."""
    from gossip_agent.core.state_codec import REUSE_READER_BYTES
    limits = CodecLimits()
    store = KvStore("w-1", StateConfig(max_value_bytes=256 << 10, conflict_policy="siblings"))
    other = KvStore("w-2", StateConfig(max_value_bytes=256 << 10))
    good = []
    for i, size in enumerate((0, 10, 200, 1000, 1100, 3000, 20_000, REUSE_READER_BYTES - 60, REUSE_READER_BYTES,
                              100_000)):
        store.local_put(f"k/{i}", bytes(size), T + i)
        store.apply_remote(other.local_put(f"k/{i}", b"\xff" * (size // 2), T + i))  # two siblings
        entry = store.entry(f"k/{i}")
        assert entry is not None
        good.append(encode_rumor(entry))
    store.update_crdt("crdt/counters/pn", PNCounter, lambda c, n, _: c.increment(n, 2), T)
    counter = store.entry("crdt/counters/pn")
    assert counter is not None
    good.append(encode_rumor(counter))  # (a CRDT entry: no kept reader)
    stream = []
    for _ in range(data.draw(st.integers(1, 12))):
        payload = bytearray(data.draw(st.sampled_from(good)))
        how = data.draw(st.sampled_from(["good", "mutate", "truncate", "trailing"]))
        if how == "mutate":
            for _ in range(data.draw(st.integers(1, 3))):
                payload[data.draw(st.integers(0, min(len(payload) - 1, 80)))] = data.draw(st.integers(0, 255))
        elif how == "truncate":
            payload = payload[:data.draw(st.integers(0, len(payload) - 1))]
        elif how == "trailing":
            payload += data.draw(st.binary(min_size=1, max_size=8))
        stream.append(bytes(payload))
    for payload in stream + good:
        assert _kept_rumor(payload, limits) == _fresh_rumor(payload, limits)
    for payload in good:
        assert decode_rumor(payload, limits) == decode_rumor(payload, limits)  # (the kept reader, again)


def test_a_kept_rumor_reader_still_refuses_forged_lengths_and_nested_arrays_at_once() -> None:
    """The bounds of a kept reader are its size class's (within twice the rumor's size): a 1 kB rumor whose
    context claims 100,000 items, or whose versions nest arrays, is refused before anything is built, and the
    next good rumor of that class decodes."""
    entry = KvStore("w-1").local_put("k", b"v" * 1000, T)
    good = encode_rumor(entry)
    head = good[:good.index(b"k") + 1]  # [1, [0, "k", ...
    for bad in (head + b"\xdd\x00\x01\x86\xa0" + bytes(900),  # a context of 100,000 items
                head + b"\x92\xa3w-1\x01" + b"\x91" * 900,      # versions nested 900 deep
                head + b"\x92\xa3w-1\x01\x91\x95\xa3w-1\x01" + b"\xce\xff\xff\xff\xff" * 200):
        with pytest.raises(StateCodecError):
            decode_rumor(bad)
        assert decode_rumor(good) == entry


def test_a_kept_rumor_reader_forgets_the_shape_of_a_rumor_it_refused() -> None:
    """A rumor refused halfway through its versions leaves nothing behind in its size class's kept reader: the
    next rumor, whose context nests an array, is refused by the shape check at once, as a fresh reader does
    (not later, after its arrays were built)."""
    pack = functools.partial(msgpack.packb, use_bin_type=True)
    version = ["n", 1, 5, 0, b"x"]
    refused_mid_versions = pack([1, [0, "k", ["n", 1], [version, ["n", 1, 5], *[version] * 8]]])
    nested_context = pack([1, [0, "k", [[1, 2, 3, 4, 5], "n", 1, "m", 2], [version]]])
    with pytest.raises(StateCodecError) as fresh:
        decode_rumor(nested_context)
    with pytest.raises(StateCodecError):
        decode_rumor(refused_mid_versions)
    with pytest.raises(StateCodecError) as after:
        decode_rumor(nested_context)
    assert str(after.value) == str(fresh.value) and "an entry is [0, key" in str(after.value)


def test_a_log_record_from_the_stores_encoding_is_the_record_of_the_entry_byte_for_byte() -> None:
    """The store hands each change its entry's encoding (the bytes it hashed for the Merkle tree); the log
    record built from them equals the one encoded from the entry, for every kind of change, and reads back."""
    from gossip_agent.core.kvstore import entry_digest
    s = sample_store()
    s.apply_remote(KvStore("node-c").local_put("ns/other", bytes(range(256)) * 250, T))  # a 64 kB value
    changes = s.drain_changes()
    assert all(c.packed is not None for c in changes) and len(changes) >= 9
    for change in [*changes, Change("k", None, "gc")]:
        plain = dataclasses.replace(change, packed=None)
        assert plain == change
        assert encode_change(change) == encode_change(plain)
        assert decode_change(encode_change(change)) == change
        if change.entry is not None:
            assert change.packed is not None and entry_digest(change.entry) == hashlib.sha256(change.packed).digest()


@pytest.mark.parametrize("field", ["versions", "context"])
def test_every_decoder_bounds_a_value_entrys_versions_and_context(field: str) -> None:
    """The readers count versions and context nodes at their headers; a log record, unpacked whole, has them
    checked after (`entry_decoding.check_entry_counts`, which checked_entry no longer repeats for readers)."""
    from gossip_agent.core.entry_decoding import MAX_ENTRY_VERSIONS
    from gossip_agent.core.vector_clock import MAX_CONTEXT_NODES
    if field == "versions":
        plain = [0, "k", ["n", MAX_ENTRY_VERSIONS + 1],
                 [["n", i + 1, T, 0, b"v"] for i in range(MAX_ENTRY_VERSIONS + 1)]]
    else:
        plain = [0, "k", [x for i in range(MAX_CONTEXT_NODES + 1) for x in (f"w{i}", 1)], [["w0", 1, T, 0, b"v"]]]
    bodies = {decode_rumor: msgpack.packb([1, plain]),
              decode_change: msgpack.packb([2, "k", "local", plain]),
              decode_ae_request: msgpack.packb([3, [2, 8], None, [], [], [plain], [], []]),
              decode_ae_response: msgpack.packb([4, [2, 8], None, [], [], [plain], [], False])}
    for decode, body in bodies.items():
        with pytest.raises(StateCodecError, match="limit"):
            decoded = decode(body)
            list(getattr(decoded, "push", ()))  # (a request's pushed entries decode when merged)
