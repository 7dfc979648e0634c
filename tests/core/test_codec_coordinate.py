"""The coordinate message (type 14) on the wire: compact, exact in shape, hostile shapes dropped with a reason,
hostile numbers passed to the core (which refuses them, counted, keeping the ping or ack beside them)."""

from __future__ import annotations

import math
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip_agent.core import codec
from gossip_agent.core.codec import DecodeError
from gossip_agent.core.messages import Ack, NetCoordinate, Packet

floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.lists(floats32, min_size=8, max_size=8), floats32, floats32, floats32)
def test_a_coordinate_round_trips_exactly_in_float32(vec: list[float], height: float, error: float,
                                                      adjustment: float) -> None:
    m = NetCoordinate(tuple(vec), height, error, adjustment)
    p = codec.decode_packet(codec.encode_packet(Packet("a", (Ack(1, 2), m))))
    assert p.messages == (Ack(1, 2), m)


def test_a_coordinate_is_small_and_its_type_is_14() -> None:
    m = NetCoordinate((0.001,) * 8, 0.0001, 0.5, -0.0002)
    assert codec.message_type(m) == 14 and codec.message_label(m) == "coordinate"
    assert codec.message_size(m) <= 48


def _packet_with(fields: list[object]) -> bytes:
    return bytes((codec.VERSION,)) + msgpack.packb(["a", [[14, *fields]]], use_bin_type=True)


@pytest.mark.parametrize("fields", [
    [b"\0" * 43], [b"\0" * 45], [b""], [b"\0" * 4000], ["x" * 44], [[0.0] * 11], [None], [b"\0" * 44, 1], [],
])
def test_a_coordinate_of_the_wrong_shape_drops_the_packet_as_malformed(fields: list[object]) -> None:
    with pytest.raises(DecodeError) as exc:
        codec.decode_packet(_packet_with(fields))
    assert exc.value.reason == "malformed"


def test_nan_and_huge_numbers_decode_and_are_left_to_the_core() -> None:
    body = struct.pack("<11f", math.nan, *([0.0] * 7), math.inf, 3.0e38, -1.0)
    [m] = codec.decode_packet(_packet_with([body])).messages
    assert isinstance(m, NetCoordinate) and math.isnan(m.vec[0]) and math.isinf(m.height)


@given(st.binary(min_size=44, max_size=44))
def test_any_44_bytes_decode_to_a_coordinate_and_nothing_raises(body: bytes) -> None:
    [m] = codec.decode_packet(_packet_with([body])).messages
    assert isinstance(m, NetCoordinate) and len(m.vec) == 8
