"""The delivery path's fast paths give exactly what the general code gives (no timings here: correctness).

Every delivered write runs packet decoding, rumor decoding, the store's merge and a Merkle update; those got
fast paths for the common case (one msgpack call, single-version entries, leaf-only dirty marking). Each
test below checks a fast path against the general definition it shortcuts.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import pytest

from gossip_agent.core import codec, hlc
from gossip_agent.core.codec import DecodeError
from gossip_agent.core.config import StateConfig
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    InvalidEntry,
    KvStore,
    ValueEntry,
    Version,
    entry_from_plain,
    entry_to_plain,
)
from gossip_agent.core.merkle import MerkleTree
from gossip_agent.core.messages import Packet, Ping, StateRumor
from gossip_agent.core.vector_clock import VersionVector

T = 1_700_000_000_000


def _reason(data: bytes) -> str | None:
    try:
        codec.decode_packet(data)
    except DecodeError as exc:
        return exc.reason
    return None


def test_packet_refusals_have_the_streaming_decoders_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-call decode refuses whatever the streaming Unpacker refuses, with the same reason: every
    truncation of a real packet, trailing bytes, garbage bytes."""
    ping = Ping(7, "a", "b", ("10.0.0.9", 9))
    good = codec.encode_packet(Packet("agent-1", (StateRumor(b"\x92\x01\xc0" * 50), ping)))
    rng = random.Random(5)
    inputs = [good[:n] for n in range(len(good))] + [good + b"\x00", good + good[1:]]
    inputs += [bytes([1]) + rng.randbytes(rng.randrange(1, 40)) for _ in range(300)]
    fast = [_reason(data) for data in inputs]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("forced: streaming path only")

    monkeypatch.setattr(codec.msgpack, "unpackb", refuse)
    assert fast == [_reason(data) for data in inputs]
    assert _reason(good) is None and fast[len(good)] == "malformed"  # trailing bytes


def test_packets_decode_the_same_by_either_path(monkeypatch: pytest.MonkeyPatch) -> None:
    packet = Packet("agent-1", (StateRumor(b"payload", True), StateRumor(b"x"), Ping(1, "t", "s", ("10.0.0.1", 7))))
    data = codec.encode_packet(packet)
    fast = codec.decode_packet(data)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise msgpack.ExtraData(None, b"")

    monkeypatch.setattr(codec.msgpack, "unpackb", refuse)
    assert fast == codec.decode_packet(data) == packet


def _version(node: str, n: int, wall: int, value: bytes | None) -> Version:
    return Version((node, n), Hlc(wall, 0, node), value)


@pytest.mark.parametrize("versions", [
    (),
    (_version("a", 1, T, b"v"),),
    (_version("a", 1, T, None),),
    (_version("a", 1, T, None), _version("b", 1, T + 5, b"w")),
    (_version("a", 2, T + 9, b"v"), _version("b", 1, T + 5, None)),
    (_version("a", 1, T, None), _version("b", 3, T, None)),
])
def test_entry_properties_match_their_definitions(versions: tuple[Version, ...]) -> None:
    entry = ValueEntry("k", versions, VersionVector({"a": 3, "b": 3}))
    assert entry.live == tuple(v for v in versions if v.value is not None)
    assert entry.is_tombstone == all(v.value is None for v in versions)
    assert entry.timestamp == max((v.timestamp for v in versions), default=hlc.ZERO)


def test_a_version_far_ahead_is_refused_wherever_it_sits() -> None:
    store = KvStore("me", StateConfig(conflict_policy="siblings"))
    ahead = T + 10 * 60_000
    for versions in ((_version("a", 1, ahead, b"x"), _version("b", 1, T, b"y")),
                     (_version("a", 1, T, b"x"), _version("b", 1, ahead, b"y"))):
        with pytest.raises(InvalidEntry):
            store.apply_remote(ValueEntry("k", versions, VersionVector({"a": 1, "b": 1})), T)
    store.apply_remote(ValueEntry("k", (_version("a", 1, T + 1000, b"x"),), VersionVector({"a": 1})), T)
    assert store.get("k") is not None


def test_entries_decode_sorted_by_dot_and_round_trip() -> None:
    entry = ValueEntry("k", (_version("a", 2, T, b"1"), _version("b", 1, T + 1, b"2"), _version("c", 7, T, None)),
                       VersionVector({"a": 2, "b": 1, "c": 7}))
    plain = entry_to_plain(entry)
    shuffled = [*plain[:3], list(reversed(plain[3]))]
    assert entry_from_plain(shuffled) == entry_from_plain(plain) == entry


@pytest.mark.parametrize("parts", [(True, 0, "n"), (0, False, "n"), (-1, 0, "n"), (1 << 63, 0, "n"),
                                   (0, hlc.MAX_LOGICAL + 1, "n"), (0, 0, 5), (0.5, 0, "n")])
def test_hlc_parts_are_checked_as_the_plain_form_is(parts: tuple[Any, Any, Any]) -> None:
    with pytest.raises(ValueError):
        hlc.from_parts(*parts)
    with pytest.raises(ValueError):
        hlc.from_plain(list(parts))
    assert hlc.from_parts(5, 1, "n") == hlc.from_plain([5, 1, "n"]) == Hlc(5, 1, "n")


def _rebuilt(items: dict[str, bytes], shape: tuple[int, int]) -> MerkleTree:
    tree = MerkleTree(*shape)
    for key, digest in items.items():
        tree.update(key, digest)
    return tree


@pytest.mark.parametrize("shape", [(8, 2), (4, 4), (10, 1), (2, 2)])
def test_incremental_tree_equals_a_rebuilt_one_node_for_node(shape: tuple[int, int]) -> None:
    rng = random.Random(shape[0] * 10 + shape[1])
    tree = MerkleTree(*shape)
    items: dict[str, bytes] = {}
    for step in range(3000):
        key = f"k{rng.randrange(400)}"
        if rng.random() < 0.3:
            tree.update(key, None)  # removing an absent key is a no-op
            items.pop(key, None)
        else:
            items[key] = hashlib.sha256(bytes([rng.randrange(4)])).digest()
            tree.update(key, items[key])
        if step % 97 == 0:
            fresh = _rebuilt(items, shape)
            assert tree.root() == fresh.root() and len(tree) == len(items)
            level = rng.randrange(shape[0])
            index = rng.randrange(1 << (shape[1] * level))
            assert tree.children(level, index) == fresh.children(level, index)
            assert tree.count(level + 1, index) == fresh.count(level + 1, index)
    fresh = _rebuilt(items, shape)
    tree.root()
    fresh.root()
    assert tree._hashes == fresh._hashes and tree._counts == fresh._counts and tree._sums == fresh._sums


def test_removing_an_absent_key_changes_nothing() -> None:
    tree = _rebuilt({"a": bytes(32), "b": bytes(range(32))}, (1, 1))  # two leaves, so "c" shares one
    root = tree.root()
    tree.update("c", None)
    tree.update("zzz", None)
    assert tree.root() == root and len(tree) == 2 and tree.digest_of("c") is None


@pytest.mark.parametrize("critical", [False, True])
def test_state_rumor_size_by_arithmetic_is_the_packed_size(critical: bool) -> None:
    """`message_size` of a state rumor is computed without packing its payload; it must equal the bytes the
    rumor really adds to a packet at every msgpack bin header boundary (8, 16, 32-bit lengths)."""
    for n in (0, 1, 0xFF, 0x100, 0x101, 1024, 0xFFFF, 0x10000, 70000):
        rumor = StateRumor(b"\x01" * n, critical)
        packed = len(msgpack.packb(codec._message_tuple(rumor), use_bin_type=True))
        assert codec.message_size(rumor) == packed, n
        # and inside a whole packet: one more message adds exactly that many bytes (array header permitting)
        one = codec.encode_packet(Packet("a", (Ping(1, "b", "a", ("h", 1)),)))
        two = codec.encode_packet(Packet("a", (Ping(1, "b", "a", ("h", 1)), rumor)))
        assert len(two) - len(one) == packed


def test_a_crdt_state_is_converted_and_packed_once_per_merge_or_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new CRDT key from a peer was converted (crdt.to_plain) and packed twice, for the ceiling check and for
    the Merkle digest (~90 % of merging a new OR-set key was conversion; a local operation likewise): the state's
    size is read off the entry's encoding, which the digest and the log record then reuse."""
    from gossip_agent.core import crdt, packing
    from gossip_agent.core.crdt import ORSet
    from gossip_agent.core.kvstore import entry_digest
    writer = KvStore("w")
    writer.update_crdt("crdt/sets/s", ORSet, lambda s, n, _: s.update(n, add=["a", "b"]), T)
    entry = writer.entry("crdt/sets/s")
    assert entry is not None
    calls = []
    real = crdt.to_plain

    def counting(value: Any) -> Any:
        calls.append(value)
        return real(value)
    monkeypatch.setattr(crdt, "to_plain", counting)
    reader = KvStore("r")
    assert reader.apply_remote(entry, T) and len(calls) == 1
    reader.update_crdt("crdt/sets/s", ORSet, lambda s, n, _: s.add(n, "c"), T + 1)
    assert len(calls) == 2
    merged = writer.apply_remote(reader.entry("crdt/sets/s"), T + 1)  # type: ignore[arg-type]
    assert merged and len(calls) == 4  # (the peer's state checked, then the merge: each once)
    monkeypatch.undo()
    for store in (reader, writer):  # (the bytes kept are the entry's canonical encoding)
        held = store.entry("crdt/sets/s")
        assert held is not None and store.drain_changes()[-1].packed == packing.pack(entry_to_plain(held))
        assert store.merkle.digest_of("crdt/sets/s") == entry_digest(held)
