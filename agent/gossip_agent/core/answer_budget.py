"""How many bytes of answers to peers (a value fetch, an anti-entropy round) an agent holds at once.

Why: the HTTP layer budgets large responses per client address, but not peers' answers (members often share
an address: a local cluster, pods on the host network). A member (or many connections of one) that asked for a
large value over and over and never read made the agent render and hold every answer until its write timed out:
with a 3 MiB value, 24 non-reading fetches held +79 MB of RSS, 96 fetches +296 MB, 96 anti-entropy rounds
+299 MB. Now an answer is sent only while the answers in flight total at most `AGENT_ANSWER_BYTES`, and those
for one remote address at most `ADDRESS_ANSWER_BYTES`; past either the peer gets "retry later" (503), which
honest peers wait out and retry (io/state_service.py).

Rules (the driver calls `take` before it renders an answer, and `give_back` once the answer was written or the
connection dropped, never merely when the handler returns: the unsent bytes are what is held):
- an address holding nothing may take more than its share, if the agent total allows: one big value (up to
  16 MiB, `config.VALUE_BYTES_CEILING`) must stay fetchable whatever the share;
- an agent holding nothing takes any answer, however large (an entry with many siblings may be larger than
  the total; it would otherwise never be answered);
- an estimate taken before rendering is settled to the real size once known (`settle`), under the same rules,
  so a guess never lets more through than the bounds.

Pure bookkeeping: no I/O, no clock; the driver owns the timeouts that bound how long an answer is held.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

AGENT_ANSWER_BYTES = 32 * 1024 * 1024
"""All peers' answers being written at once. Ten answers of a 3 MiB value; about 2x the largest anti-entropy
answer (16 MiB), so one honest session is never starved by one big answer."""
ADDRESS_ANSWER_BYTES = 8 * 1024 * 1024
"""Answers being written to one remote address: a quarter of the total, so one non-reading address cannot take
it all (its first answer may still be larger: see the module docstring)."""

REFUSED_BUDGET = "budget"
"""The agent's total has no room (label of gossip_peer_answers_refused_total)."""
REFUSED_ADDRESS = "address"
"""The asking address's share has no room."""


@dataclass(eq=False, slots=True)
class HeldAnswer:
    """One answer's bytes in the budget, until `AnswerBudget.give_back` (compared by identity)."""

    address: str
    size: int
    returned: bool = False


class AnswerBudget:
    """Bytes of peers' answers in flight, in all and per remote address (rules in the module docstring)."""

    def __init__(self, total: int = AGENT_ANSWER_BYTES, per_address: int = ADDRESS_ANSWER_BYTES) -> None:
        if total <= 0 or per_address <= 0:
            raise ValueError(f"answer budget: total and per-address bytes must be positive, got {total} and "
                             f"{per_address}")
        self.total = total
        self.per_address = per_address
        self.used = 0
        self.in_flight = 0
        self.by_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter({REFUSED_BUDGET: 0, REFUSED_ADDRESS: 0})

    def count_refusal(self, reason: str) -> None:
        """A refusal the driver decided by `refusal` (before a request's body is read, say)."""
        self.refused[reason] += 1

    def refusal(self, address: str, size: int, *, besides: int = 0) -> str | None:
        """Why an answer of `size` bytes to `address` may not go now (REFUSED_*), or None if it may.
        `besides`: bytes of `address` already counted that the answer replaces (`settle`). Counts nothing."""
        if size < 0:
            raise ValueError(f"answer size must be >= 0, got {size}")
        used = self.used - besides
        held = self.by_address[address] - besides
        if used <= 0:
            return None  # the agent holds nothing: any single answer goes
        if held > 0 and held + size > self.per_address:
            return REFUSED_ADDRESS
        if used + size > self.total:
            return REFUSED_BUDGET
        return None

    def room(self, address: str, *, besides: int = 0) -> int:
        """About how many bytes an answer to `address` may take now (to shape an answer that can be cut, an
        anti-entropy round; 0: none). `besides`: as for `refusal` (the estimate the answer is held under)."""
        used = self.used - besides
        if used <= 0:
            return self.total
        left = self.total - used
        held = self.by_address[address] - besides
        if held > 0:
            left = min(left, self.per_address - held)
        return max(0, left)

    def take(self, address: str, size: int) -> HeldAnswer | str:
        """Hold `size` bytes for an answer to `address`; or, when it may not go now, the reason (REFUSED_*,
        counted)."""
        reason = self.refusal(address, size)
        if reason is not None:
            self.refused[reason] += 1
            return reason
        self.used += size
        self.by_address[address] += size
        self.in_flight += 1
        return HeldAnswer(address, size)

    def settle(self, held: HeldAnswer, size: int) -> str | None:
        """The answer held under an estimate is `size` bytes: hold that instead (None) if the rules allow it;
        else the reason (REFUSED_*, counted), `held` unchanged (the caller gives it back and answers 503)."""
        if held.returned:
            raise ValueError("answer budget: settling an answer already given back")
        reason = self.refusal(held.address, size, besides=held.size)
        if reason is not None:
            self.refused[reason] += 1
            return reason
        self.used += size - held.size
        self.by_address[held.address] += size - held.size
        held.size = size
        return None

    def give_back(self, held: HeldAnswer) -> None:
        """The answer was written, or will never be (idempotent)."""
        if held.returned:
            return
        held.returned = True
        self.used -= held.size
        self.in_flight -= 1
        self.by_address[held.address] -= held.size
        if self.by_address[held.address] <= 0:
            del self.by_address[held.address]
