"""Review s9b (checked, no finding): the per-thread reused msgpack Packer (core/packing.py) leaks nothing from
one pack into the next when a pack fails half way (an unpackable object deep in a map, an integer too large),
and packs that follow are byte for byte `msgpack.packb`'s. msgpack resets its buffer on an exception; this
test holds that true for the version we pin, since a stale buffer would prepend one pack's bytes to another's
(a value of one key inside another key's encoding)."""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core.packing import KEEP_BUFFER_BYTES, pack


@pytest.mark.parametrize("bad", [{"k": [1, 2, object()]}, [b"x" * 1000, 2**70], {"a": {"b": {1.5: set()}}}])
def test_a_failed_pack_leaves_nothing_in_the_next_one(bad: object) -> None:
    before = pack(["warm"])  # this thread's packer exists
    with pytest.raises((TypeError, OverflowError, ValueError)):
        pack(bad)
    for data in (["next", 1], {"k": b"v"}, "x"):
        assert pack(data) == msgpack.packb(data, use_bin_type=True)
    assert before == msgpack.packb(["warm"], use_bin_type=True)


def test_a_large_pack_then_a_small_one() -> None:
    big = [b"z" * 1024] * (KEEP_BUFFER_BYTES // 1024 + 8)
    assert pack(big) == msgpack.packb(big, use_bin_type=True)
    assert pack([7]) == b"\x91\x07"
