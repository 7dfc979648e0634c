"""Wire codec: round trips for every message type, exact sizes, and garbage that only ever raises DecodeError."""

from __future__ import annotations

import contextlib
import dataclasses
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core import codec
from gossip_agent.core.codec import DecodeError
from gossip_agent.core.hosts import canonical_ip
from gossip_agent.core.messages import (
    UNKNOWN_ADDR,
    Ack,
    Alive,
    Dead,
    Digest,
    DigestSummary,
    Graft,
    IHave,
    MemberSnapshot,
    MemberState,
    Message,
    Nack,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    PingReq,
    Prune,
    PullRequest,
    PushPullState,
    ShortIds,
    StateRumor,
    Suspect,
)

# Names are identifiers without control characters (the decoder drops those: terminal injection).
names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
# Hosts are IP literals in canonical form (core/hosts.py `wire_host`; anything else is `bad_host`).
hosts = st.ip_addresses().map(lambda ip: canonical_ip(str(ip)) or "")
ports = st.integers(0, 65535)
addrs = st.tuples(hosts, ports)
seqs = st.integers(0, 2**32 - 1)
incs = st.integers(0, 2**63 - 1)  # codec.MAX_INCARNATION; above it is a counted drop (tests/core/test_ranges.py)
metas = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)

messages = st.one_of(
    st.builds(Ping, seqs, names, names, addrs),
    st.builds(Ack, seqs),
    st.builds(Nack, seqs),
    st.builds(PingReq, seqs, names, addrs, names, addrs, st.booleans()),
    st.builds(Alive, names, incs, addrs, metas),
    st.builds(Suspect, names, incs, names),
    st.builds(Dead, names, incs, names),
    st.builds(StateRumor, st.binary(max_size=300), st.booleans()),
    st.builds(PullRequest, names, addrs),
)
packets = st.builds(Packet, names, st.lists(messages, max_size=20).map(tuple))
snapshots = st.builds(MemberSnapshot, names, addrs, incs, st.sampled_from(list(MemberState)), metas)
push_pulls = st.builds(PushPullState, names, st.lists(snapshots, max_size=20).map(tuple), st.booleans())


@given(packets)
def test_packet_round_trip_and_size_bound(p: Packet) -> None:
    data = codec.encode_packet(p)
    assert data[0] == codec.VERSION
    assert codec.decode_packet(data) == p
    body = sum(codec.message_size(m) for m in p.messages)
    # The overhead is an upper bound that keeps room for the security envelope; at most 2 bytes of slack
    # (a short message array's header is 1 byte, not 3) besides the reserve.
    bound = codec.packet_overhead(p.sender) - codec.ENVELOPE_RESERVE + body
    assert bound - 2 <= len(data) <= bound


@given(messages)
def test_message_size_is_exact_inside_a_compound(m: object) -> None:
    one = Packet("n", (Ack(1),))
    two = Packet("n", (Ack(1), m))  # type: ignore[arg-type]
    assert len(codec.encode_packet(two)) - len(codec.encode_packet(one)) == codec.message_size(m)  # type: ignore[arg-type]


@given(push_pulls)
def test_push_pull_round_trip(s: PushPullState) -> None:
    data = codec.encode_push_pull(s)
    assert codec.decode_push_pull(data, max_bytes=1 << 20) == s


def test_large_push_pull_is_compressed_and_inflation_is_capped() -> None:
    rows = tuple(MemberSnapshot(f"demo-{i}", ("10.0.0.1", 7946 + i), 3, MemberState.ALIVE,
                                {"state.root": "ab" * 32, "state.keys": "12", "state.hlc": "1732460000123"})
                 for i in range(50))
    s = PushPullState("demo-0", rows)
    data = codec.encode_push_pull(s)
    assert data[0] == codec.PUSH_PULL_ZLIB
    plain = len(codec._packer.pack((s.sender, s.join, [])))
    assert len(data) * 3 < plain + 50 * 120  # at least 3x smaller than the plain body
    assert codec.decode_push_pull(data, max_bytes=1 << 20) == s
    with pytest.raises(DecodeError) as err:  # within the wire cap, but it inflates past it
        codec.decode_push_pull(data, max_bytes=len(data) + 10)
    assert err.value.reason == "oversized"
    bomb = bytes((codec.PUSH_PULL_ZLIB,)) + zlib.compress(b"\x00" * 10_000_000)
    with pytest.raises(DecodeError) as err:
        codec.decode_push_pull(bomb, max_bytes=1 << 20)
    assert err.value.reason == "oversized"


def test_push_pull_oversized_is_rejected_before_parsing() -> None:
    s = PushPullState("a", tuple(MemberSnapshot(f"m{i}", ("10.0.0.1", 7946), i, MemberState.ALIVE) for i in range(50)))
    data = codec.encode_push_pull(s)
    with pytest.raises(DecodeError) as err:
        codec.decode_push_pull(data, max_bytes=len(data) - 1)
    assert err.value.reason == "oversized"


def test_push_pull_with_too_many_rows_is_refused_before_any_row_is_built() -> None:
    rows = tuple(MemberSnapshot(f"m{i}", ("10.0.0.1", 7946), i, MemberState.ALIVE) for i in range(50))
    data = codec.encode_push_pull(PushPullState("a", rows))
    assert len(codec.decode_push_pull(data, 1 << 20, max_members=50).members) == 50
    with pytest.raises(DecodeError) as err:
        codec.decode_push_pull(data, 1 << 20, max_members=49)
    assert err.value.reason == "too_many_members"
    # Rows that would not even decode are never looked at: the count is checked first.
    bad = bytes((codec.PUSH_PULL_VERSION,)) + msgpack.packb(["a", False, [[None] * 6] * 50])
    with pytest.raises(DecodeError) as err:
        codec.decode_push_pull(bad, 1 << 20)
    assert err.value.reason == "malformed"
    with pytest.raises(DecodeError) as err:
        codec.decode_push_pull(bad, 1 << 20, max_members=10)
    assert err.value.reason == "too_many_members"


def test_compact_ping() -> None:
    p = Packet("demo-0", (Ping(7, "demo-1", "demo-0", ("10.0.0.5", 7946)),))
    assert len(codec.encode_packet(p)) < 50


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    for candidate in (data, bytes((codec.VERSION,)) + data):
        try:
            codec.decode_packet(candidate)
        except DecodeError as exc:
            assert exc.reason in {"truncated", "bad_version", "unknown_type", "malformed", "oversized"}
        with contextlib.suppress(DecodeError):
            codec.decode_push_pull(candidate, max_bytes=1000)


@settings(max_examples=300)
@given(packets, st.data())
def test_mutated_packets_raise_only_decode_error(p: Packet, data: st.DataObject) -> None:
    raw = bytearray(codec.encode_packet(p))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded = codec.decode_packet(candidate)
        except DecodeError:
            continue
        # Whatever decodes must re-encode: the decoder only builds well-typed messages.
        codec.encode_packet(decoded)


@settings(max_examples=200)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
))
def test_well_formed_msgpack_of_wrong_shape_is_malformed(obj: object) -> None:
    data = bytes((codec.VERSION,)) + msgpack.packb(obj, use_bin_type=True)
    for decode in (codec.decode_packet, lambda d: codec.decode_push_pull(d, 10_000)):
        with contextlib.suppress(DecodeError):
            decode(data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "truncated"),
    (b"\x02\x92\xa1a\x90", "bad_version"),
    (b"\x01", "truncated"),
    (b"\x01\x92\xa1a", "truncated"),
    (b"\x01\x92\xa1a\x91\x92\x63\x01", "unknown_type"),
    (b"\x01\x92\xa1a\x91\x92\x01\xa1x", "malformed"),
    (b"\x01\x92\xa1a\x90\x00", "malformed"),
    (b"\x01" + b"\x91" * 100_000, "oversized"),
])
def test_decode_error_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        codec.decode_packet(data)
    assert err.value.reason == reason


def test_deep_nesting_is_malformed_not_recursion_error() -> None:
    data = b"\x01" + b"\x91" * 60_000 + b"\xc0"
    with pytest.raises(DecodeError):
        codec.decode_packet(data)


def test_huge_declared_lengths_do_not_allocate() -> None:
    # A str32 claiming 4 GiB, an array32 claiming 4 G items: rejected from the header, not allocated.
    for data in (b"\x01\x92\xdb\xff\xff\xff\xff", b"\x01\x92\xa1a\xdd\xff\xff\xff\xff"):
        with pytest.raises(DecodeError):
            codec.decode_packet(data)


def test_message_type_labels() -> None:
    assert codec.message_type(Ping(1, "a", "b", ("h", 1))) is codec.MessageType.PING
    assert codec.message_type(StateRumor(b"")) is codec.MessageType.STATE


# -- convergence digests ------------------------------------------------------------------------------------

def test_digest_round_trips_and_is_small() -> None:
    from gossip_agent.core.messages import Digest, DigestSummary
    d = Digest("agent-7", 1_764_470_000_000, bytes(range(8)), 12_345, 1_764_470_000_123)
    summary = DigestSummary(bytes(range(26)), True)
    packet = Packet("agent-1", (d, summary))
    assert codec.decode_packet(codec.encode_packet(packet)) == packet
    assert codec.message_size(d) <= 38
    ahead = Digest("agent-7", 1_000, bytes(8), 1, 5_000)  # an HLC ahead of the publisher's wall clock
    assert codec.decode_packet(codec.encode_packet(Packet("a", (ahead,)))).messages == (ahead,)
    assert codec.message_size(summary) <= 26 + 5
    assert codec.message_label(d) == codec.message_label(summary) == "digest"


def test_hostile_digests_are_refused() -> None:
    def raw(fields: list[object]) -> bytes:
        return bytes((codec.VERSION,)) + msgpack.packb(["x", [[9, *fields]]], use_bin_type=True)

    good = ["a", 1, bytes(8), 1, 1]
    assert codec.decode_packet(raw(good)).messages
    assert codec.decode_packet(raw([bytes(128), False])).messages  # a summary of 64 buckets
    for bad in (["a", 1, bytes(7), 1, 1], ["a", 1, bytes(9), 1, 1], ["a", 1, "x" * 8, 1, 1],
                ["a", -1, bytes(8), 1, 1], ["a", 1 << 63, bytes(8), 1, 1], ["a", 1, bytes(8), -1, 1],
                ["a", 1, bytes(8), 1, 1.5], ["a\n", 1, bytes(8), 1, 1], ["a" * 300, 1, bytes(8), 1, 1],
                ["a", 1, bytes(8), 1], ["a", 1, bytes(8), 1, 1, 1],
                # the HLC travels as its lag behind seq: below 0 or past 2^63-1 once added back
                ["a", 1, bytes(8), 1, 2], ["a", 1, bytes(8), 1, -(1 << 63)],
                # summaries: empty, odd, over 64 buckets, not bytes, reply not a bool
                [b"", True], [bytes(3), True], [bytes(130), True], ["ab", True], [bytes(2), 1], [bytes(2)]):
        with pytest.raises(codec.DecodeError):
            codec.decode_packet(raw(bad))


# -- critical state rumors (type 13) --------------------------------------------------------------------

def test_critical_state_rumor_is_type_13_with_the_state_body() -> None:
    plain, critical = StateRumor(b"payload"), StateRumor(b"payload", critical=True)
    assert codec.message_type(critical) is codec.MessageType.STATE_CRITICAL == 13
    assert codec.message_size(critical) == codec.message_size(plain)  # same body, one-byte type either way
    packet = Packet("a", (critical, plain))
    assert codec.decode_packet(codec.encode_packet(packet)) == packet
    assert msgpack.unpackb(codec.encode_packet(Packet("a", (critical,)))[1:])[1][0] == [13, b"payload"]


def test_hostile_critical_state_rumors_are_refused() -> None:
    def raw(message: list[object]) -> bytes:
        return bytes((codec.VERSION,)) + msgpack.packb(["x", [message]], use_bin_type=True)

    assert codec.decode_packet(raw([13, b""])).messages == (StateRumor(b"", critical=True),)
    for bad in ([13], [13, "text"], [13, 5], [13, None], [13, b"x", b"y"], [13, [b"x"]], [13, {"a": 1}]):
        with pytest.raises(DecodeError) as info:
            codec.decode_packet(raw(bad))
        assert info.value.reason == "malformed"


# -- decoding by wire type ----------------------------------------------------------------------------------

def _one_of_each() -> list[Message]:
    """One message of every wire type (both state classes), with values that survive the wire exactly."""
    coordinate = NetCoordinate((0.5,) * codec.COORDINATE_DIMENSIONS, 0.25, 1.5, -0.125)
    return [
        Ping(7, "b", "a", ("10.0.0.1", 7946)), Ack(7, 3), Nack(7),
        PingReq(8, "c", ("10.0.0.3", 7946), "a", ("10.0.0.1", 7946), False),
        Alive("a", 2, ("10.0.0.1", 7946), {"zone": "z1"}), Suspect("b", 3, "a"), Dead("b", 4, "b"),
        StateRumor(b"payload"), StateRumor(b"urgent", True), PullRequest("a", ("10.0.0.1", 7946)),
        Digest("a", 1_000, bytes(range(8)), 5, 900), DigestSummary(bytes(4), False), coordinate,
        PeerCoordinates((("b", coordinate, 1.5),)), IHave((1, 2)), Graft((3,)), Prune(), ShortIds(1, (9, 10)),
        dataclasses.replace(coordinate, compact=True), PeerCoordinates((("b", coordinate, 1.5),), compact=True),
        Ping(8, "b", "", UNKNOWN_ADDR, True),  # (decoded so: the Node fills in the source, core/probing.py)
    ]


def test_every_wire_type_has_a_decoder_and_round_trips() -> None:
    """The decoder table covers every MessageType, and each type decodes back to what was encoded."""
    assert set(codec._DECODERS) == {int(t) for t in codec.MessageType}
    sent = _one_of_each()
    assert {codec.message_type(m) for m in sent} == set(codec.MessageType)
    packet = Packet("a", tuple(sent))
    assert codec.decode_packet(codec.encode_packet(packet)) == packet


@pytest.mark.parametrize("mtype", list(codec.MessageType))
def test_a_wrong_field_count_is_malformed_and_names_the_type(mtype: codec.MessageType) -> None:
    arity = codec._DECODERS[int(mtype)][0]
    for count in (arity - 1, arity + 1):
        if count < 1 or (mtype is codec.MessageType.DIGEST and count == 3):  # (3: a digest's short form)
            continue
        fields = [int(mtype), *([0] * (count - 1))]
        data = bytes((codec.VERSION,)) + msgpack.packb(["x", [fields]], use_bin_type=True)
        with pytest.raises(DecodeError) as err:
            codec.decode_packet(data)
        assert err.value.reason == "malformed"
        assert f"{mtype.name.lower()} has {count} fields" in str(err.value)
