"""Review (session 9): a write-concern push (/v1/internal/replicate) decoded its body with no array hook.

The anti-entropy request decoder bounds what a body builds (one array per 2 bytes in a push), but a state
rumor payload (`decode_rumor`, used by /v1/internal/replicate with bodies up to 4 MiB, unauthenticated in
plaintext mode) was one `unpackb`: a 4 MiB body of nested empty arrays built ~258 MiB and took 4.75 s of CPU
(load 30) on the event loop before "expected [tag, key, ...]". Now built with the push's bound (at most one
array or map per 2 bytes, refused as built): 129 MiB at most for 4 MiB. Measured by tracemalloc's peak.
(Session 10: each field is now built in the entry's fixed shape, about the input's size at most:
test_s10_replicate_shapes.py.)
"""

from __future__ import annotations

import struct

from gossip_agent.core import hlc
from gossip_agent.core.crdt import ORSet
from gossip_agent.core.kvstore import CrdtEntry, entry_from_plain
from gossip_agent.core.replica import decode_payload
from gossip_agent.core.state_codec import encode_rumor
from tests.hostile.core_support import peak_memory_refusing

_MIB = 1 << 20


def test_a_replicated_payload_of_nested_arrays_builds_at_most_one_array_per_two_bytes() -> None:
    n = 1 << 18
    data = b"\x92\x01\x94" + (b"\xdd" + struct.pack(">I", n) + b"\x90" * n) * 4  # 1 MiB
    peak = peak_memory_refusing(decode_payload, data)
    assert peak < 40 * len(data), f"{peak / _MIB:.0f} MiB built for {len(data) / _MIB:.1f} MiB"  # was ~64x


def test_honest_dense_payloads_still_decode() -> None:
    orset = ORSet()
    for i in range(3000):
        orset = orset.add("n", chr(0x21 + i % 90) + chr(0x21 + i // 90))
    entry = CrdtEntry("crdt/sets/set", orset, hlc.ZERO)
    assert decode_payload(encode_rumor(entry)) == entry
    vv: list[object] = []
    versions = []
    for i in range(4096):
        vv += [f"n{i}", 1]
        versions.append([f"n{i}", 1, 1, 0, b""])
    value = entry_from_plain([0, "k", vv, versions])
    assert decode_payload(encode_rumor(value)) == value
