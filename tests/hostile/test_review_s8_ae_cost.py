"""Review (session 8): what an anti-entropy request costs its responder before any bound is checked.

The responder now refuses more than `Limits.max_push` pushed entries by reading the push array's header
before decoding (core/ae_codec.ae_request_push_count): 50k tiny entries held its event loop ~1 s. The
peek itself holds up (first test). But entries are not what costs: decoded objects are, and a request's
body (up to 4 MiB on the agent's HTTP app, no authentication in plaintext mode) can hold millions of them
inside bounds that count only arrays' lengths and entries:

- one pushed entry with hundreds of thousands of versions (siblings): one entry passes the push bound,
  and building its versions cost ~3.3 s of CPU for 8 MiB (~1.3 s for 4 MiB) on the event loop;
- nested empty arrays (`want: [[[], [], ...15], ...]`, one byte per list): a 2 MiB body grew the process by
  ~146 MiB and took ~0.55 s to decode before `want`'s type check refused it; 4 MiB is ~290 MiB per request.

Both are measured here without timing: by what the decoder accepts, and by tracemalloc's peak.
"""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core.ae_codec import ae_request_push_count, decode_ae_request
from gossip_agent.core.codec_limits import StateCodecError
from tests.hostile.core_support import ae_request_raw, array_header, peak_memory_refusing

_SHAPE = msgpack.packb([4, 4])


def test_the_push_count_peek_reads_every_header_form_and_fails_cleanly_on_truncation() -> None:
    """Held up: fix, 16- and 32-bit array headers give the same count as the full decode; maps, nil, ext,
    wrong tags and every truncation raise StateCodecError only."""
    entry = msgpack.packb([0, "k", [], [["n", 1, 1, 0, b"v"]]], use_bin_type=True)
    for header in (b"\x93", b"\xdc\x00\x03", b"\xdd\x00\x00\x00\x03"):
        data = ae_request_raw(header + entry * 3)
        assert ae_request_push_count(data) == 3 == len(decode_ae_request(data).push)
        for cut in range(len(data)):
            with pytest.raises(StateCodecError):
                ae_request_push_count(data[:cut]) if cut < len(data) - len(entry) * 3 - 2 \
                    else decode_ae_request(data[:cut])
    for push in (b"\x82\xa1a\x01\xa1b\x02", b"\xc0", b"\xd4\x01\x00", b"\xc1", b"\xdd\xff\xff\xff\xff"):
        with pytest.raises(StateCodecError):
            ae_request_push_count(ae_request_raw(push)) if push != b"\xdd\xff\xff\xff\xff" \
                else decode_ae_request(ae_request_raw(push))
    for top in (b"\x88", b"\x97", b"\x99", b"\xc0", b""):
        with pytest.raises(StateCodecError):
            ae_request_push_count(top + b"\x03" + _SHAPE)
    with pytest.raises(StateCodecError):
        ae_request_push_count(b"\x98\x03" + b"\x91" * 100_000 + b"\xc0")  # nesting past msgpack's stack


def test_one_pushed_entry_with_a_hundred_thousand_versions_is_refused_before_they_are_built() -> None:
    versions = b"".join(msgpack.packb(["n", i + 1, 1, 0, None]) for i in range(100_000))
    entry = b"\x94\x00\xa1k\x90" + array_header(100_000) + versions
    data = ae_request_raw(b"\x91" + entry)
    assert len(data) < 1 << 20  # well inside the agent's 4 MiB request body
    assert ae_request_push_count(data) == 1  # the push bound passes it
    with pytest.raises(StateCodecError):
        decode_ae_request(data)


def test_a_request_of_nested_empty_arrays_costs_memory_in_proportion_to_its_body() -> None:
    n = 32 * 1024  # 512 KiB of body: 32k arrays of 15 empty arrays each
    data = ae_request_raw(b"\x90", want=array_header(n) + (b"\x9f" + b"\x90" * 15) * n)
    peak = peak_memory_refusing(decode_ae_request, data)
    assert peak < 16 * len(data), f"peak {peak / len(data):.0f} bytes of memory per byte of body"


def test_honest_requests_with_the_densest_arrays_still_decode() -> None:
    """The push's array budget (one array per 2 bytes) must never refuse an honest push: the densest one is
    an OR-set of one-letter elements, each [element, [[node, n]]] (3 arrays in ~7 bytes), from a one-letter
    node; every other field full of what it may hold."""
    from gossip_agent.core import hlc
    from gossip_agent.core.ae_codec import encode_ae
    from gossip_agent.core.anti_entropy import AeRequest
    from gossip_agent.core.crdt import ORSet
    from gossip_agent.core.kvstore import CrdtEntry

    orset = ORSet()
    for i in range(3000):
        orset = orset.add("n", chr(0x21 + i % 90) + chr(0x21 + i // 90))
    entries = tuple(CrdtEntry(f"crdt/sets/set{j}", orset, hlc.ZERO) for j in range(3))
    request = AeRequest((4, 4), b"\x00" * 32, descend=((1, 2), (3, 4)), listing=((1, 1),), push=entries,
                        want=(b"\x01" * 8,) * 100, want_nodes=((2, 3),))
    assert decode_ae_request(encode_ae(request)) == request


def test_nested_arrays_inside_the_push_cost_memory_in_proportion_to_the_body() -> None:
    """The push field may nest (entries, versions, CRDT items) but builds at most one array per 2 bytes of
    it: a push of nested empty arrays (one byte each) is refused half-way, not after it is all built."""
    n = 32 * 1024
    data = ae_request_raw(b"\x91" + b"\x94\x00\xa1k\x90" + array_header(n) + (b"\x9f" + b"\x90" * 15) * n)
    peak = peak_memory_refusing(decode_ae_request, data)
    assert peak < 48 * len(data), f"peak {peak / len(data):.0f} bytes of memory per byte of body"
