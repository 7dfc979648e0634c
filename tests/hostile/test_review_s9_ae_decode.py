"""Review (session 9): the anti-entropy request decoder's flat fields and its push-count peek.

Session 8 made the request decoder build at most one array per flat field and bounded the push. Two ways
past it remained, both before any protocol bound (anti_entropy.check_request) is checked, on the event loop,
from an unauthenticated peer in plaintext mode (the agent's HTTP app takes bodies of up to 4 MiB):

- the push-count peek (`ae_request_push_count`, run first on every request) decoded the format TAG in full
  with no hook and no length bound: a tag that is one array of 4M empty arrays built ~263 MiB and took
  seconds of CPU before "not an anti-entropy request";
- flat node fields (descend, listing, want_nodes) and `want` were built to any length the body allowed
  (1M items each) and only then compared with `Limits.max_nodes` (4,096) / `max_want` (8,192): a 3 MiB body
  built ~125 MiB (pairs made into tuples) and took ~2 s.

Measured without timing: by tracemalloc's peak while the decoder refuses.
"""

from __future__ import annotations

import msgpack
import pytest

from gossip_agent.core.ae_codec import ae_request_push_count, decode_ae_request, encode_ae
from gossip_agent.core.anti_entropy import AeRequest, Limits
from tests.hostile.core_support import array_header, peak_memory_refusing

_SHAPE = msgpack.packb([4, 4])
_MIB = 1 << 20


def test_the_push_count_peek_does_not_build_a_tag_of_nested_arrays() -> None:
    n = 1 << 20
    data = b"\x98" + array_header(n) + b"\x90" * n + _SHAPE + b"\xc0\x90\x90\x90\x90\x90"
    peak = peak_memory_refusing(ae_request_push_count, data)
    assert peak < 4 * _MIB, f"the peek built {peak / _MIB:.0f} MiB for a {len(data) / _MIB:.0f} MiB body"


@pytest.mark.parametrize("field", ["descend", "listing", "want_nodes", "want"])
def test_flat_fields_longer_than_the_protocol_allows_are_refused_before_they_are_built(field: str) -> None:
    n = 300_000 if field == "want" else 1 << 20  # bodies of 3 MiB and 1 MiB
    item = b"\xc4\x08" + b"k" * 8 if field == "want" else b"\x00"
    long = array_header(n) + item * n
    fields = {"descend": b"\x90", "listing": b"\x90", "want": b"\x90", "want_nodes": b"\x90", field: long}
    data = (b"\x98\x03" + _SHAPE + b"\xc0" + fields["descend"] + fields["listing"] + b"\x90" + fields["want"]
            + fields["want_nodes"])
    peak = peak_memory_refusing(decode_ae_request, data)
    assert peak < len(data) + 4 * _MIB, f"{field}: {peak / _MIB:.0f} MiB built for {len(data) / _MIB:.1f} MiB"


def test_the_largest_honest_request_still_decodes() -> None:
    limits = Limits()
    nodes = tuple((4, i) for i in range(limits.max_nodes))
    for request in (AeRequest((4, 4), None, nodes, (), (), (), ()),
                    AeRequest((4, 4), None, (), nodes, (), (), ()),
                    AeRequest((4, 4), None, (), (), (), (), nodes),
                    AeRequest((4, 4), None, (), (), (), tuple(i.to_bytes(8, "big") for i in range(limits.max_want)),
                              ())):
        assert decode_ae_request(encode_ae(request)) == request
