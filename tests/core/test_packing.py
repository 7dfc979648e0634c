"""The state layer's shared Packer gives msgpack.packb's bytes, per thread, and keeps no large buffer."""

from __future__ import annotations

import threading

import msgpack
import pytest

from gossip_agent.core import packing


def test_same_bytes_as_packb_and_clean_after_a_failed_pack() -> None:
    samples = [0, -1, 2**63 - 1, "ünï", b"\x00\xff" * 300, [1, [2, {"a": b"b"}]], {"k": None, "n": 1.5}, [], {}]
    for data in samples:
        assert packing.pack(data) == msgpack.packb(data, use_bin_type=True)
    with pytest.raises(TypeError):
        packing.pack([1, object()])
    assert packing.pack([1, 2]) == msgpack.packb([1, 2], use_bin_type=True)  # nothing left over from the failure


def test_a_large_pack_drops_its_packer_and_threads_have_their_own() -> None:
    packing.pack(1)
    first = packing._local.packer
    big = b"x" * (packing.KEEP_BUFFER_BYTES + 1)
    assert packing.pack(big) == msgpack.packb(big, use_bin_type=True)
    assert packing._local.packer is None  # its grown buffer is not kept
    assert packing.pack(1) == b"\x01" and packing._local.packer is not first
    seen: list[object] = []

    def other() -> None:
        packing.pack(2)
        seen.append(packing._local.packer)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen and seen[0] is not packing._local.packer
