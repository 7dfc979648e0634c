"""Review (session 9): what a push inside every bound still costs the responder in one event-loop turn.

The responder refuses more than 512 pushed entries (from the array header), entries of more than 4,096
versions (MAX_ENTRY_VERSIONS), and pushes with more than one array per 2 bytes. Inside all three: 512 entries
of 900 minimal versions each (`["n", i, 1, 0, nil]`, 9 bytes) is a 3.8 MiB request body (the agent takes
4 MiB). `decode_ae_request` builds every entry (`_entries` -> `entry_from_plain`) before `PushMerge` starts
its chunks of 64: measured 137 MiB traced and 6.2 s of CPU (load 8-17) in ONE synchronous call on the event
loop, so probes stall and the responder is suspected. Against a real agent (in-process, load ~25): one such
POST was answered 400 (its tree shape was wrong: checked only after decoding) 8.6 s later, and /readyz then
said "event loop stalled 8.4s": one request every 10 s (LAG_WINDOW) keeps an agent unready. Unauthenticated
in plaintext mode; with a keyring, any member. The same holds for millions of 2-character strings (not
counted by the array hooks): 60 MiB for a 3 MiB push.

Fixed: `decode_ae_request` keeps the push as the bytes of each entry (split by msgpack skip, versions
counted at their header; core/ae_entries.py `PushedEntries`), and `PushMerge.step` decodes and merges a
chunk of at most `MERGE_CHUNK_BYTES` (16 KiB) of them per loop turn, so what one turn builds stays small
whatever the request holds.
"""

from __future__ import annotations

import struct
import tracemalloc

import msgpack
import pytest

from gossip_agent.core.ae_codec import decode_ae_request
from tests.hostile.core_support import ae_request_raw, peak_memory

_MIB = 1 << 20


def _push_of_many_versions(entries: int = 512, versions: int = 100) -> bytes:
    body = b"".join(msgpack.packb(["n", i + 1, 1, 0, None]) for i in range(versions))
    one = b"\xdc" + struct.pack(">H", versions) + body
    return b"\xdc" + struct.pack(">H", entries) + b"".join(
        b"\x94\x00" + msgpack.packb(f"k{e}") + b"\x90" + one for e in range(entries))


def test_a_push_inside_every_bound_is_not_built_in_one_go() -> None:
    data = ae_request_raw(_push_of_many_versions())  # 0.4 MiB here (the 3.8 MiB of the docstring: 900 versions)
    assert len(data) < 4 * _MIB  # inside the agent's request body limit
    peak = peak_memory(lambda: decode_ae_request(data))  # accepted: nothing refuses it
    assert peak < 4 * len(data), f"{peak / _MIB:.0f} MiB built at once for a {len(data) / _MIB:.1f} MiB request"


def test_each_merge_step_builds_a_bounded_chunk_and_a_bad_entry_refuses_the_request() -> None:
    """The merge decodes a chunk bounded by wire bytes (anti_entropy.MERGE_CHUNK_BYTES), not 64 entries: one
    step of the push above builds what ~32 KiB of it holds. An entry that does not decode is found when it is
    merged: the request is then refused (what came before it stays merged, each merge being a join)."""
    from gossip_agent.core.anti_entropy import MERGE_CHUNK_BYTES, AntiEntropyError, PushMerge, respond
    from gossip_agent.core.kvstore import KvStore

    store = KvStore("me")
    shape = [store.merkle.bits, store.merkle.depth]
    data = b"\x98\x03" + msgpack.packb(shape) + b"\xc0\x90\x90" + _push_of_many_versions() + b"\x90\x90"
    merge = PushMerge(store, decode_ae_request(data))
    steps = 0
    tracemalloc.start()
    try:
        while not merge.done:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            merge.step(1_000)
            steps += 1
            built = tracemalloc.get_traced_memory()[1] - before
            assert built < 64 * MERGE_CHUNK_BYTES, f"one step built {built / _MIB:.1f} MiB"
    finally:
        tracemalloc.stop()
    assert steps >= len(data) // MERGE_CHUNK_BYTES  # bounded by bytes: ~800 bytes an entry, not 64 entries
    assert merge.refused is None

    from gossip_agent.core.kvstore import entry_to_plain
    ok = entry_to_plain(KvStore("n").local_put("ok", b"v", 1_000))
    bad = msgpack.packb(ok) + msgpack.packb([0, "bad", ok[2], [["n", 1, 1, 0, 7]]])  # a value is bytes
    request = decode_ae_request(b"\x98\x03" + msgpack.packb(shape) + b"\xc0\x90\x90\x92" + bad + b"\x90\x90")
    fresh = KvStore("me")
    with pytest.raises(AntiEntropyError, match="pushed entry 1"):
        respond(fresh, request, 1_000)
    assert fresh.entry("ok") is not None and fresh.entry("bad") is None


def test_a_crdt_state_over_the_ceiling_is_skipped_before_it_is_built() -> None:
    """The store refuses a CRDT state above config.CRDT_STATE_CEILING (1 MiB) once built; its wire size says so
    first. One OR-set of 300k two-letter elements (3.6 MiB) took seconds and ~175 MiB to build in one merge
    step."""
    from gossip_agent.core import hlc
    from gossip_agent.core.anti_entropy import PushMerge
    from gossip_agent.core.kvstore import KvStore

    n = 300_000
    elements = [[f"{chr(33 + i % 90)}{chr(33 + i // 90 % 90)}{chr(33 + i // 8100)}", ["n", i + 1]] for i in range(n)]
    store = KvStore("me")
    data = msgpack.packb([3, [store.merkle.bits, store.merkle.depth], None, [], [],
                          [[1, "set", hlc.to_plain(hlc.ZERO), ["orset", [["n", n], elements]]]], [], []])
    merge = PushMerge(store, decode_ae_request(data))
    peak = peak_memory(lambda: merge.step(1_000))
    assert merge.done and merge.refused is None and store.entry("set") is None
    assert peak < 2 * len(data), f"{peak / _MIB:.0f} MiB built for a {len(data) / _MIB:.1f} MiB entry"
