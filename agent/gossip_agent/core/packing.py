"""msgpack packing of the state layer's canonical encodings without a new Packer per call.

`msgpack.packb` builds a Packer for every call, and a Packer allocates its whole buffer up front (256 KiB in
msgpack 1.1): inside an agent, among other allocations, that cost a small pack 3-6 µs more than reusing one
Packer, and every delivered write packs at least twice (its entry's Merkle digest, its watch line's context).
One Packer per thread (snapshots are packed on a worker thread; a Packer is not thread-safe) gives the same
bytes. A pack that grew the buffer past `KEEP_BUFFER_BYTES` (a snapshot, an anti-entropy answer) drops that
Packer, so no thread keeps a large buffer for good.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

KEEP_BUFFER_BYTES = 64 * 1024
# A Packer's first buffer. msgpack's default, 256 KiB, is resident from the first pack on: the codec's Packer and one
# here cost an idle agent ~0.3 MiB of RSS for packets of a few hundred bytes. The buffer grows as a pack needs
# (doubling, kept for the next pack), so the bytes are the same and a large pack pays a few reallocs once.
START_BUFFER_BYTES = 4 * 1024
_local = threading.local()


def pack(data: Any) -> bytes:
    """`msgpack.packb(data, use_bin_type=True)`, byte for byte."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, buf_size=START_BUFFER_BYTES)
    out: bytes = packer.pack(data)
    if len(out) > KEEP_BUFFER_BYTES:
        _local.packer = None
    return out
