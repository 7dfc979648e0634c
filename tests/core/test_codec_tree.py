"""Wire codec of the broadcast tree's messages (types 10-12: IHave, Graft, Prune): round trips, sizes, and
hostile input refused with DecodeError before anything is built (counts and lengths checked)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip_agent.core import codec
from gossip_agent.core.messages import Graft, IHave, Packet, Prune, ShortIds, StateRumor
from gossip_agent.core.plumtree import ID_BYTES, MAX_IDS_PER_MESSAGE, SHORT_ID_BYTES

ids = st.lists(st.integers(0, (1 << 64) - 1), max_size=MAX_IDS_PER_MESSAGE).map(tuple)
tree_messages = st.one_of(st.builds(IHave, ids), st.builds(Graft, ids), st.just(Prune()),
                          st.builds(StateRumor, st.binary(max_size=100)))


def raw(*message: object) -> bytes:
    return bytes((codec.VERSION,)) + msgpack.packb(["x", [list(message)]], use_bin_type=True)


@given(st.lists(tree_messages, max_size=8).map(tuple))
def test_tree_messages_round_trip_with_exact_sizes(msgs: tuple[object, ...]) -> None:
    packet = Packet("agent-1", msgs)  # type: ignore[arg-type]
    data = codec.encode_packet(packet)
    assert codec.decode_packet(data) == packet
    assert len(data) <= codec.packet_overhead("agent-1") + sum(map(codec.message_size, msgs))  # type: ignore[arg-type]


def test_types_labels_and_sizes() -> None:
    assert [codec.message_type(m) for m in (IHave(()), Graft(()), Prune())] == [10, 11, 12]
    assert [codec.message_label(m) for m in (IHave(()), Graft(()), Prune())] == ["ihave", "graft", "prune"]
    assert codec.message_size(Prune()) == 2
    assert codec.message_size(Graft(())) == 4  # a link request
    assert codec.message_size(IHave((1, 2, 3))) == 4 + 3 * ID_BYTES  # 8 B an id


def test_the_largest_id_list_fits_and_one_more_is_refused() -> None:
    full = IHave(tuple(range(MAX_IDS_PER_MESSAGE)))
    assert codec.decode_packet(codec.encode_packet(Packet("x", (full,)))).messages == (full,)
    with pytest.raises(codec.DecodeError, match="more than"):
        codec.decode_packet(raw(10, bytes(ID_BYTES * (MAX_IDS_PER_MESSAGE + 1))))


@pytest.mark.parametrize("message", [
    (10, bytes(7)),                 # not a multiple of the id size
    (11, bytes(9)),
    (10, "x" * 8),                  # ids are bytes, not text
    (11, [1, 2]),                   # nor a list
    (10, None),
    (10,),                          # arity
    (11, b"", b""),
    (12, b""),                      # a prune carries nothing
    (10, bytes(ID_BYTES * 100_000)),  # huge: refused by count, not built
])
def test_hostile_tree_messages_are_refused(message: tuple[object, ...]) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode_packet(raw(*message))


@given(st.lists(tree_messages, min_size=1, max_size=4).map(tuple), st.data())
def test_mutated_tree_packets_raise_only_decode_error(msgs: tuple[object, ...], data: st.DataObject) -> None:
    encoded = bytearray(codec.encode_packet(Packet("a", msgs)))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(codec.DecodeError):
        codec.decode_packet(bytes(encoded))


short_ids = st.lists(st.integers(0, (1 << 32) - 1), max_size=MAX_IDS_PER_MESSAGE).map(tuple)


@given(ids, short_ids, st.integers(0, 255))
def test_ids_are_big_endian_words_back_to_back(tree_ids: tuple[int, ...], short: tuple[int, ...], kind: int) -> None:
    """The layout the codec packs ids in (one struct call for all of them) is each id's big-endian bytes in
    order, as older agents write and read them; a round trip gives the same ids."""
    msgs = (IHave(tree_ids), Graft(tree_ids), ShortIds(kind, short))
    wire = msgpack.unpackb(codec.encode_packet(Packet("x", msgs))[1:], raw=False)[1]
    assert wire[0][1] == wire[1][1] == b"".join(i.to_bytes(ID_BYTES, "big") for i in tree_ids)
    assert wire[2][2] == b"".join(i.to_bytes(SHORT_ID_BYTES, "big") for i in short)
    assert codec.decode_packet(codec.encode_packet(Packet("x", msgs))).messages == msgs


@pytest.mark.parametrize("bad", [-1, 1 << 32])
def test_a_short_id_out_of_range_is_an_overflow(bad: int) -> None:
    with pytest.raises(OverflowError):
        codec.encode_packet(Packet("x", (ShortIds(1, (5, bad)),)))


def test_a_tree_id_out_of_range_is_an_overflow() -> None:
    with pytest.raises(OverflowError):
        codec.encode_packet(Packet("x", (IHave((1 << 64,)),)))
