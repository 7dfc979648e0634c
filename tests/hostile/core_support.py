"""What the pure-core hostile tests share: a source address no member has, a delegate that takes every write,
an agent core ("a") with live peers p2.. that read the message types under attack, and the peak memory a
decoder builds while it refuses an input (and the msgpack array headers such inputs are built from); the raw
anti-entropy requests and causal-context tokens such inputs are wrapped in."""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import replace

import msgpack
import pytest

from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.messages import Alive, Packet, Prune
from gossip_agent.core.node import Node
from gossip_agent.core.state_codec import CONTEXT

# A documentation address (RFC 5737): no member's table address, so whatever names a member from here is spoofed.
SPOOFER = ("198.51.100.7", 7946)


class AcceptAll:
    """A delegate that applies every state rumor (the attacks target the core, not the store)."""

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: object, now: float) -> None:
        pass


def lan_node(*, mode: str | None = None, broadcast: str = "tree", peers: int = 8, tree_readers: bool = False,
             meta: Mapping[str, str] | None = None) -> Node:
    """Agent "a" at 10.0.0.1 (LAN preset, no TCP fallback probes; gossip.mode `mode` if given), with `peers`
    live members p2, p3, ... at 10.0.0.2, ... (metadata `meta`); `tree_readers`: each has shown it reads tree
    messages (a PRUNE from it)."""
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, mode=mode or base.gossip.mode, broadcast=broadcast))
    node = Node(cfg, ("10.0.0.1", 7946), random.Random(3), 0.0, AcceptAll())
    for i in range(2, 2 + peers):
        addr = (f"10.0.0.{i}", 7946)
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, addr, dict(meta or {})),)), addr, 0.0)
        if tree_readers:
            node.handle_packet(Packet(f"p{i}", (Prune(),)), addr, 0.0)
    return node


def peak_memory(build: Callable[[], object]) -> int:
    """Peak bytes traced while `build()` runs: the most it holds at once (timing-free, unlike a CPU figure)."""
    tracemalloc.start()
    try:
        build()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_memory_refusing(decode: Callable[[bytes], object], data: bytes, *,
                         error: type[Exception] = StateCodecError, match: str | None = None) -> int:
    """Peak bytes traced while `decode` refuses `data` with `error` (it must refuse; its message matching
    `match` if given): what a hostile body makes the agent build before it is turned away."""
    def refuse() -> None:
        with pytest.raises(error, match=match):
            decode(data)
    return peak_memory(refuse)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` items, in its shortest form (what a hostile body puts before
    items it never sends, or before millions of tiny ones)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


MIB = 1 << 20

NESTED_1MIB = b"\x94" + (array_header((1 << 18) - 64) + b"\x90" * ((1 << 18) - 64)) * 4
"""~1 MiB of msgpack that builds ~1M empty arrays (an array of 4 arrays of 262,080 empty arrays each): what a
hostile body puts where a scalar belongs."""


def ae_request_raw(push: bytes, want: bytes = b"\x90") -> bytes:
    """An anti-entropy request (format tag 3, 8 fields, shape (4, 4)) with these raw push and want fields."""
    return b"\x98\x03" + msgpack.packb([4, 4]) + b"\xc0\x90\x90" + push + want + b"\x90"


def forged_context(writers: list[str], counter: int) -> bytes:
    """The ctx_forge.py token: every writer at `counter`, a zero HLC."""
    return msgpack.packb([CONTEXT, [x for w in sorted(writers) for x in (w, counter)], [0, 0, ""]])
