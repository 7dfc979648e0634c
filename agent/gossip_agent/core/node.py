"""The SWIM node: membership, probing, suspicion and dissemination as one pure state machine.

Drivers (the asyncio runtime, the simulator, tests) feed it packets and the current time and perform the
effects it returns. It never reads a clock: `tick(now)` runs whatever is due, `next_deadline()` says when to
call it next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Effect
from gossip_agent.core.messages import Address, MemberSnapshot, MemberState, Packet, PushPullState
from gossip_agent.core.rng import Rng


class StateDelegate(Protocol):
    """The replicated state layer, as the membership core sees it."""

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        """Apply a state rumor; True if it was new here (then it is re-broadcast and forwarded)."""
        ...


class Node:
    """One member's view of the cluster. Not thread-safe; one driver owns it."""

    name: str
    addr: Address
    incarnation: int

    def __init__(self, config: AgentConfig, addr: Address, rng: Rng, now: float,
                 delegate: StateDelegate | None = None) -> None:
        raise NotImplementedError

    # -- driver entry points ---------------------------------------------------------------------------
    def join(self, seeds: Sequence[Address], now: float) -> list[Effect]:
        """Contact seeds (push-pull with join=True). Call again with re-resolved seeds to retry."""
        raise NotImplementedError

    def handle_packet(self, packet: Packet, src: Address, now: float) -> list[Effect]:
        raise NotImplementedError

    def tick(self, now: float) -> list[Effect]:
        """Run everything due at `now`: probes, probe timeouts, gossip, push-pull, suspicion expiry, reaping."""
        raise NotImplementedError

    def next_deadline(self) -> float:
        """The earliest time at which `tick` has something to do."""
        raise NotImplementedError

    def push_pull_state(self, join: bool) -> PushPullState:
        raise NotImplementedError

    def merge_push_pull(self, remote: PushPullState, now: float) -> list[Effect]:
        raise NotImplementedError

    def sync_failed(self, to: Address, now: float) -> list[Effect]:
        raise NotImplementedError

    def tcp_probe_ok(self, seq: int, now: float) -> list[Effect]:
        raise NotImplementedError

    def leave(self, now: float) -> list[Effect]:
        """Broadcast our graceful leave; the driver keeps ticking briefly so it spreads, then stops."""
        raise NotImplementedError

    def broadcast_state(self, payload: bytes, now: float) -> list[Effect]:
        """Queue a state rumor (piggybacked, bounded retransmits) and forward it at once if configured."""
        raise NotImplementedError

    def update_meta(self, meta: Mapping[str, str], now: float) -> list[Effect]:
        """Change our metadata: bumps our incarnation and broadcasts a fresh Alive."""
        raise NotImplementedError

    # -- views -----------------------------------------------------------------------------------------
    def members(self) -> list[MemberSnapshot]:
        raise NotImplementedError

    def counts(self) -> dict[MemberState, int]:
        raise NotImplementedError

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; probes slow down by a factor (1 + score)."""
        raise NotImplementedError

    @property
    def joined(self) -> bool:
        """True once another member is known alive (or no seeds were given)."""
        raise NotImplementedError
