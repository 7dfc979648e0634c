"""Fuzzing of the UDP codec and the membership core with structured, boundary-valued inputs (issue 10).

Random bytes mostly die in msgpack; what breaks agents is well-formed packets with bad values (a host of
64 x 'é', an incarnation of 2^64-1). So the inputs here are msgpack arrays shaped like real messages whose
fields are drawn from boundary values: integers at 0, 2^8, 2^16, 2^32, 2^53, 2^63, 2^64 and their neighbours,
strings that are empty, huge, non-ASCII, NUL-bearing, and valid hosts. Properties:
- `decode_packet` raises `DecodeError` and nothing else;
- whatever it accepts re-encodes to a packet that decodes to the same thing;
- a Node fed the packet never raises, and every packet it then sends encodes and decodes (the 'é' host
  crashed the agent at send time, not at decode time).
Two sizes of each test: `quick` in the default run (3,000 packets, 1,800 push-pull states: ~4.5 and ~3.5 s of
CPU, within the default group's 8 s per test) and `full` in the slow group, which CI runs (`FUZZ_EXAMPLES`, default
25,000 packets, ~27 s of CPU; the push-pull test 3/5 as many, ~23 s, as each costs more). A CI run thus fuzzes
the UDP side with 44,800 hypothesis inputs, plus the 220,000 of bench/fuzz_udp.py's generator in
test_fuzz_volume.py. For a 10M-input run use `bench/fuzz_udp.py` (see bench/README.md).
"""

from __future__ import annotations

import os
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Send
from gossip_agent.core.node import Node

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25000"))
QUICK_EXAMPLES = 3000
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
# (examples of the packet test; the push-pull test runs 3/5 as many.) Measured 2026-11-30 at load ~20: full
# ~28 s and ~24 s of CPU, quick (4,000 then) ~6 s and ~4.5 s.
SIZES = [pytest.param(QUICK_EXAMPLES, id="quick"),
         pytest.param(EXAMPLES, id="full", marks=pytest.mark.slow(quiet_seconds=30))]

_EDGES = [0, 1, 2**7, 2**8 - 1, 2**8, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 2**32, 2**53 - 1, 2**53, 2**53 + 1,
          2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1, -1, -(2**31), -(2**63)]
ints = st.sampled_from(_EDGES) | st.integers(-(2**63), 2**64 - 1)
texts = st.sampled_from(["", "a", "é" * 64, "a" * 253, "a" * 254, "x" * 300, "host\x00", "-bad", "::1",
                         "127.0.0.1", "fe80::1%eth0", "exa mple", "a..b", "ünïcode.example", "\ud7ff", "."]) \
    | st.text(max_size=40)
hosts = st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "agent-0.agents.default.svc", "localhost"]) | texts
scalars = ints | texts | st.booleans() | st.none() | st.binary(max_size=16) | st.floats(allow_nan=True)
metas = st.dictionaries(texts, texts | ints, max_size=3) | scalars


def _msg(kind: int, *fields: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(st.just(kind), *fields).map(list)


_TYPED = st.one_of(
    _msg(0, ints, texts, texts, hosts, ints),                                  # ping
    _msg(1, ints, ints),                                                       # ack
    _msg(2, ints),                                                             # nack
    _msg(3, ints, texts, hosts, ints, texts, hosts, ints, st.booleans() | scalars),  # ping-req
    _msg(4, texts, ints, hosts, ints, metas),                                  # alive
    _msg(5, texts, ints, texts),                                               # suspect
    _msg(6, texts, ints, texts),                                               # dead
    _msg(7, st.binary(max_size=64) | scalars),                                 # state rumor
    _msg(8, texts, hosts, ints),                                               # pull
)
# Wrong arities and types too: a message with a field dropped or added, or an unknown type.
_MANGLED = st.tuples(ints, st.lists(scalars, max_size=9)).map(lambda t: [t[0], *t[1]])
messages = _TYPED | _MANGLED
packets = st.tuples(texts | scalars, st.lists(messages, max_size=6) | scalars).map(list)


def _bytes(obj: Any) -> bytes | None:
    try:
        return bytes((codec.VERSION,)) + msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None  # not representable in msgpack: not something a peer can send


_CLOCK = [1.0]


def _fresh_node() -> Node:
    return Node(AgentConfig.preset_config("lan", name="fuzz-target"), ("127.0.0.1", 7946), random.Random(7),
                _CLOCK[0])


_NODE = _fresh_node()


def _node() -> Node:
    """The fuzzed Node, replaced every 2,000 inputs: a table filling up with fuzzed members makes each tick
    slower, and the CPU budget per test is what bounds the number of inputs."""
    global _NODE
    _CLOCK[0] += 0.05
    if int(_CLOCK[0] * 20) % 2000 == 0:
        _NODE = _fresh_node()
    return _NODE


def _check_packet(obj: Any) -> None:
    data = _bytes(obj)
    if data is None:
        return
    try:
        packet = codec.decode_packet(data)
    except codec.DecodeError:
        return
    assert codec.decode_packet(codec.encode_packet(packet)) == packet
    node = _node()
    effects = node.handle_packet(packet, ("127.0.0.1", 1), _CLOCK[0]) + node.tick(_CLOCK[0])
    for effect in effects:
        if isinstance(effect, Send):
            assert codec.valid_host(effect.to[0]), effect.to
            assert codec.decode_packet(codec.encode_packet(effect.packet)) == effect.packet


def _check_push_pull(obj: Any) -> None:
    try:
        body = msgpack.packb(list(obj), use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        state = codec.decode_push_pull(bytes((codec.PUSH_PULL_VERSION,)) + body, 1 << 20)
    except codec.DecodeError:
        return
    assert codec.decode_push_pull(codec.encode_push_pull(state), 1 << 20) == state
    node = _node()
    effects = node.merge_push_pull(state, _CLOCK[0]) + node.tick(_CLOCK[0])
    for effect in effects:
        if isinstance(effect, Send):
            assert codec.decode_packet(codec.encode_packet(effect.packet)) == effect.packet


push_pull_states = st.tuples(texts | scalars, st.booleans() | scalars,
                             st.lists(st.tuples(texts, hosts, ints, ints, ints, metas).map(list), max_size=5)
                             | scalars)


@pytest.mark.parametrize("examples", SIZES)
def test_structured_packets_decode_or_fail_cleanly_and_never_break_the_node(examples: int) -> None:
    settings(FUZZ, max_examples=examples)(given(obj=packets)(_check_packet))()


@pytest.mark.parametrize("examples", SIZES)
def test_structured_push_pull_states_decode_or_fail_cleanly(examples: int) -> None:
    settings(FUZZ, max_examples=max(1, examples * 3 // 5))(given(obj=push_pull_states)(_check_push_pull))()
