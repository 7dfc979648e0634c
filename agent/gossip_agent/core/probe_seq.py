"""Probe sequence numbers an off-path attacker cannot guess.

WHY. An ack names only the sequence number of the ping it answers. Numbered 1, 2, 3... (as they were), a
spoofer who never saw our pings could send one datagram holding acks for the next few hundred numbers, naming
the member we probe (in plaintext mode nothing authenticates a packet): our probe of a dead member then
"succeeded", and a dead member stayed alive for as long as the forgeries kept coming. Now each number is the
first 4 bytes of a keyed BLAKE2b hash of a counter, the key drawn once from the node's Rng at start (the core
reads no OS randomness itself; the agent's Rng is seeded from the OS): a blind guess hits an outstanding probe
with probability about 1 in 2^32 per ack, and one ack a packet is looked at (core/node.py). The wire field
stays a 32-bit integer, so older agents echo these numbers as they did the old ones.

What this does not stop: an attacker who sees our pings (on the path, or on the same L2 segment) reads the
number and answers in time. Only a keyring (io/security.py: authenticated packets) stops that.

One draw from the Rng at construction, none per probe: the simulator's seeded runs keep their random stream
(a draw per probe would shift every later peer choice). Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib

from gossip_agent.core.rng import Rng

_KEY_BITS = 128


class ProbeSeqs:
    """`next()`: a fresh, unpredictable 32-bit sequence number (never 0: a zero seq stands out in captures and
    some tests' fixtures, and costs nothing to avoid)."""

    __slots__ = ("_counter", "_key")

    def __init__(self, rng: Rng) -> None:
        self._key = rng.getrandbits(_KEY_BITS).to_bytes(_KEY_BITS // 8, "big")
        self._counter = 0

    def next(self) -> int:
        while True:
            self._counter += 1
            seq = int.from_bytes(hashlib.blake2b(self._counter.to_bytes(8, "big"), digest_size=4,
                                                 key=self._key).digest(), "big")
            if seq:
                return seq
