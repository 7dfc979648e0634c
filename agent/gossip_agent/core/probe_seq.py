"""Probe sequence numbers an off-path attacker cannot guess.

WHY. An ack names only the sequence number of the ping it answers. Numbered 1, 2, 3... (as they were), a
spoofer who never saw our pings could send one datagram holding acks for the next few hundred numbers, naming
the member we probe (in plaintext mode nothing authenticates a packet): our probe of a dead member then
"succeeded", and a dead member stayed alive for as long as the forgeries kept coming. Now each number is the
first 4 bytes of a keyed BLAKE2b hash of a counter: a blind guess hits an outstanding probe with probability
about 1 in 2^32 per ack, and one ack a packet is looked at (core/node.py). The wire field stays a 32-bit
integer, so older agents echo these numbers as they did the old ones.

THE KEY is injected (the core reads no OS randomness itself). The real agent passes KEY_BYTES from the OS's
cryptographic source (io/runtime.py, `os.urandom`): its Rng is a `random.Random`, a Mersenne Twister whose
state an observer can rebuild from enough of its outputs (peer choices, jitter), so a key drawn from it was
only as secret as those. The simulator passes none, and the key is drawn from its seeded Rng (`key_from`), so
its runs stay reproducible.

What this does not stop: an attacker who sees our pings (on the path, or on the same L2 segment) reads the
number and answers in time. Only a keyring (io/security.py: authenticated packets) stops that.

One draw from the Rng when the key comes from it, none per probe: the simulator's seeded runs keep their random
stream (a draw per probe would shift every later peer choice). Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib

from gossip_agent.core.rng import Rng

KEY_BYTES = 16
"""The key's size (128 bits; BLAKE2b takes keys of 1 to 64 bytes)."""


def key_from(rng: Rng) -> bytes:
    """A key drawn from `rng` (one draw): for the simulator's seeded, reproducible runs, not the real agent."""
    return rng.getrandbits(KEY_BYTES * 8).to_bytes(KEY_BYTES, "big")


class ProbeSeqs:
    """`next()`: a fresh, unpredictable 32-bit sequence number (never 0: a zero seq stands out in captures and
    some tests' fixtures, and costs nothing to avoid)."""

    __slots__ = ("_counter", "_key")

    def __init__(self, key: bytes) -> None:
        if not KEY_BYTES <= len(key) <= 64:
            raise ValueError(f"a probe key holds {KEY_BYTES} to 64 bytes, got {len(key)}")
        self._key = bytes(key)
        self._counter = 0

    def next(self) -> int:
        while True:
            self._counter += 1
            seq = int.from_bytes(hashlib.blake2b(self._counter.to_bytes(8, "big"), digest_size=4,
                                                 key=self._key).digest(), "big")
            if seq:
                return seq
