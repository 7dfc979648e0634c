"""The probe-number key comes from the OS's cryptographic source in the real agent, not from its Rng
(core/probe_seq.py). The agent's Rng is a Mersenne Twister: an observer of enough of its outputs (peer choices,
jitter) can rebuild its state, and with it a key drawn from it. The simulator still draws the key from its
seeded Rng, so its runs stay reproducible; the core only ever gets the key injected."""

from __future__ import annotations

import random

import pytest

from gossip_agent.core.config import from_mapping
from gossip_agent.core.node import Node
from gossip_agent.core.probe_seq import KEY_BYTES, ProbeSeqs
from gossip_agent.io.runtime import Agent
from tests.core.test_node import cfg


def _seqs(node: Node) -> list[int]:
    return [node._next_seq() for _ in range(8)]


def test_an_injected_key_decides_the_numbers_whatever_the_rng() -> None:
    addr = ("10.0.0.1", 7946)
    a = Node(cfg("a"), addr, random.Random(1), 0.0, probe_key=b"k" * KEY_BYTES)
    b = Node(cfg("a"), addr, random.Random(2), 0.0, probe_key=b"k" * KEY_BYTES)
    c = Node(cfg("a"), addr, random.Random(1), 0.0, probe_key=b"j" * KEY_BYTES)
    assert _seqs(a) == _seqs(b) != _seqs(c)


def test_without_a_key_the_seeded_rng_gives_the_same_numbers_again() -> None:
    """The simulator's way: reproducible runs."""
    addr = ("10.0.0.1", 7946)
    assert _seqs(Node(cfg("a"), addr, random.Random(5), 0.0)) == _seqs(Node(cfg("a"), addr, random.Random(5), 0.0))


@pytest.mark.parametrize("size", [0, KEY_BYTES - 1, 65])
def test_a_key_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError):
        ProbeSeqs(b"k" * size)


async def test_two_real_agents_with_the_same_seeded_rng_number_their_probes_differently() -> None:
    seqs = []
    for _ in range(2):
        agent = Agent(from_mapping({"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "name": "a"}),
                      rng=random.Random(1))
        await agent.start()
        try:
            seqs.append(_seqs(agent.node))
        finally:
            await agent.stop()
    assert seqs[0] != seqs[1]
