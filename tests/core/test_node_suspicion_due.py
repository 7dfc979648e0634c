"""The Node keeps the soonest suspicion deadline (core/membership_rumors.py `_suspicions_changed`) instead of
working out Lifeguard's timeout of every suspicion at each `next_deadline`, which the driver calls after every
packet. Simulated time: the core is driven with explicit `now`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from gossip_agent.core.messages import Alive, MemberState, Packet, Suspect
from gossip_agent.core.node import Node
from gossip_agent.core.suspicion import Suspicion
from tests.core.test_node import cfg, node_with_peers

PEERS = 40


def accuse(node: Node, name: str, accuser: str, now: float) -> None:
    member = node.table.get(name)
    assert member is not None
    src = node.table.get(accuser)
    assert src is not None
    node.handle_packet(Packet(accuser, (Suspect(name, member.incarnation, accuser),)), src.addr, now)


def soonest(node: Node) -> float:
    return min((s.deadline() for s in node._suspicions.values()), default=math.inf)


@pytest.fixture
def deadline_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    original = Suspicion.deadline

    def counted(self: Suspicion) -> float:
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(Suspicion, "deadline", counted)
    yield calls


def test_next_deadline_works_out_no_suspicion_timeout(deadline_calls: list[int]) -> None:
    """30 members suspected at once (a zone lost): before, every call worked out all 30 timeouts."""
    node = node_with_peers(cfg("a"), PEERS, seed=1)
    for i in range(2, 32):
        accuse(node, f"p{i}", f"p{PEERS + 1}", 0.5)
    assert sum(m.state == MemberState.SUSPECT for m in node.table) == 30
    limit = soonest(node)
    deadline_calls[0] = 0
    for _ in range(100):
        assert node.next_deadline() <= limit
    assert deadline_calls[0] == 0


def test_the_soonest_deadline_follows_confirmations_refutations_and_expiry() -> None:
    node = node_with_peers(cfg("a"), PEERS, seed=1)
    accuse(node, "p3", "p40", 0.0)
    accuse(node, "p2", "p40", 1.0)  # later, so p3's ends first...
    assert node._suspicions_due == soonest(node) == node._suspicions["p3"].deadline()
    for accuser in ("p37", "p38", "p39"):  # ...until independent confirmations shrink p2's timeout
        accuse(node, "p2", accuser, 1.1)
        assert node._suspicions_due == soonest(node)
    assert node._suspicions["p2"].deadline() < node._suspicions["p3"].deadline()
    assert node._suspicions_due == node._suspicions["p2"].deadline()
    # p2 refutes: the soonest is p3's again.
    node.handle_packet(Packet("p2", (Alive("p2", 2, ("h", 2)),)), ("h", 2), 1.2)
    assert node.member_state("p2") == MemberState.ALIVE
    assert node._suspicions_due == node._suspicions["p3"].deadline()
    # p3's timeout runs out: a tick just before it leaves it suspect, a tick at it declares it dead.
    due = node._suspicions_due
    node.tick(due - 1e-6)
    assert node.member_state("p3") == MemberState.SUSPECT
    node.tick(due)
    assert node.member_state("p3") == MemberState.DEAD
    assert node._suspicions_due == math.inf
