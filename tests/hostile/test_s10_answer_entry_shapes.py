"""The asker decodes an anti-entropy answer's entries exactly as the responder decodes pushed ones.

The answer's counts were bounded (session 9), but each entry was unpacked with only "one array per 2 bytes"
for the whole field: one entry whose key held 4M empty arrays (a 4 MiB answer) built 133 MiB and took ~2 s in
one merge step before "key must be a string" (a 16 MiB answer: ~4x that). Now (core/ae_codec.AnswerEntries)
each entry is found by msgpack's skip and built in its shape (`_decode_entry`, shared with rumors, replicate
and pushes), a CRDT state over `max_value_bytes` is skipped unbuilt, and a step stops at
`MERGE_CHUNK_BYTES` of entries, as a push's does.
"""

from __future__ import annotations

import msgpack

from gossip_agent.core import hlc
from gossip_agent.core.ae_codec import decode_ae_response, open_ae_response
from gossip_agent.core.anti_entropy import MERGE_CHUNK, MERGE_CHUNK_BYTES
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore, entry_to_plain
from tests.hostile.core_support import MIB as _MIB
from tests.hostile.core_support import NESTED_1MIB, array_header, peak_memory_refusing
from tests.hostile.test_ae_answer_bounds import T0, _answer


def test_an_entry_of_nested_arrays_is_refused_as_built() -> None:
    data = _answer(entries=b"\x91\x94\x00" + NESTED_1MIB + b"\x90\x90")
    peak = peak_memory_refusing(decode_ae_response, data)
    assert peak < 3 * len(data), f"{peak / _MIB:.0f} MiB built for a {len(data) / _MIB:.1f} MiB answer"  # was 33x


def test_a_step_takes_at_most_a_chunk_of_bytes_and_an_oversized_crdt_is_skipped_unbuilt() -> None:
    peer = KvStore("peer@1", StateConfig())
    plain = entry_to_plain(peer.local_put("e", bytes(1000), T0))
    big = 90_000  # an OR-set of 90k elements (~1.1 MiB): over config.CRDT_STATE_CEILING (1 MiB)
    items = [[f"x{i}", ["peer@1", i + 1]] for i in range(big)]
    crdt = [1, "set", hlc.to_plain(hlc.ZERO), ["orset", [["peer@1", big], items]]]
    entries = [crdt] + [[plain[0], f"e{i}", *plain[2:]] for i in range(MERGE_CHUNK)]
    data = _answer(entries=array_header(len(entries))
                   + b"".join(msgpack.packb(e, use_bin_type=True) for e in entries))
    _, source = open_ae_response(data)
    first = source.take(MERGE_CHUNK)
    assert source.refused == {"state_too_large": 1} and first  # the CRDT: skipped from its wire size, unbuilt
    assert len(first) <= MERGE_CHUNK_BYTES // 1000 + 1  # bounded by bytes (~1 KiB each), not 64 entries
    taken = len(first)
    while source.remaining:
        taken += len(source.take(MERGE_CHUNK))
    assert taken == MERGE_CHUNK
