"""Review (session 9): a 4 KB push-pull body stalls an agent for seconds.

/v1/internal/pushpull takes a zlib-compressed body (`PUSH_PULL_ZLIB`) and inflates it up to 4 MiB, then
decodes it in one `unpackb` with no array hook (core/codec.py `_unpack`); the member-count bound
(`too_many_members`) and the row checks come after everything is built. 4 MiB of nested empty arrays
compresses to ~4 KB: under SMALL_BODY, so not even the large-body budget applies. Against a real agent
(in-process, plaintext mode, load ~45) one 4,123-byte POST was answered 400 after 9.2 s, and /readyz said
"event loop stalled 9.0s" (one such request every 10 s keeps an agent unready and its probes late; each
builds ~258 MiB). With a keyring the body is authenticated before it is inflated: then only members can.
The joiner's side (io/peer_client.py) decodes a peer's answer the same way.

Fixed: `decode_push_pull` reads the top and members array headers with a msgpack Unpacker (refusing past
`max_members` before a row is built), and builds each row alone (one array of 6 and one metadata map;
a second container is refused as it is built, and a row must start with the 6-item header).
"""

from __future__ import annotations

import struct
import zlib

from gossip_agent.core import codec
from tests.hostile.core_support import peak_memory_refusing

_MIB = 1 << 20


def test_a_small_compressed_push_pull_body_does_not_build_millions_of_arrays() -> None:
    quarter = _MIB // 4
    plain = b"\x93\xa1x\xc2" + b"\x94" + (b"\xdd" + struct.pack(">I", quarter) + b"\x90" * quarter) * 4
    body = bytes((codec.PUSH_PULL_ZLIB,)) + zlib.compress(plain, 9)
    assert len(body) < 2048  # a 1 MiB inflated body
    peak = peak_memory_refusing(lambda data: codec.decode_push_pull(data, 4 * _MIB, max_members=1000), body,
                                error=codec.DecodeError)
    assert peak < 4 * len(plain), f"{peak / _MIB:.0f} MiB built from a {len(body)}-byte body"
