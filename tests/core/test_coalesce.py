"""Coalescing of normal tree pushes (core/coalesce.py, gossip.coalesceDelay): a write alone leaves at once,
writes that follow it to the same neighbour within the delay share one packet, a batch never outgrows a packet,
and critical writes never wait. The pure core with explicit times, then the Node with explicit times."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from gossip_agent.core.coalesce import Coalescer
from gossip_agent.core.config import AgentConfig, ConfigError
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Alive, Packet, Prune, StateRumor
from gossip_agent.core.node import Node

D = 0.01


def test_a_write_after_a_quiet_spell_leaves_at_once() -> None:
    c: Coalescer[str] = Coalescer(D, 1000)
    assert c.add("b", "w1", 100, 1.0) == ["w1"]
    assert c.add("c", "w1", 100, 1.0) == ["w1"]  # per neighbour
    assert c.add("b", "w2", 100, 1.0 + D) == ["w2"]  # a full delay after the last packet: at once again
    assert len(c) == 0 and c.next_deadline() == math.inf


def test_writes_that_follow_within_the_delay_wait_and_leave_together() -> None:
    c: Coalescer[str] = Coalescer(D, 1000)
    assert c.add("b", "w1", 100, 1.0) == ["w1"]
    assert c.add("b", "w2", 100, 1.002) == []
    assert c.add("b", "w3", 100, 1.009) == []  # a later write never extends the wait
    assert c.next_deadline() == pytest.approx(1.0 + D)
    assert c.due(1.0 + D - 1e-6) == {}
    assert c.due(1.0 + D) == {"b": ["w2", "w3"]}
    assert c.add("b", "w4", 100, 1.0 + D + 0.001) == []  # the batch counts as a packet: the next waits for it
    assert c.due(1.0 + 2 * D) == {"b": ["w4"]}


def test_a_batch_never_outgrows_a_packet() -> None:
    c: Coalescer[str] = Coalescer(D, 250)
    c.add("b", "w1", 100, 1.0)
    assert c.add("b", "w2", 100, 1.001) == []
    assert c.add("b", "w3", 100, 1.002) == []
    assert c.add("b", "w4", 100, 1.003) == ["w2", "w3"]  # would overflow: the batch goes now, w4 starts the next
    assert c.next_deadline() == pytest.approx(1.003 + D)
    assert c.due(1.003 + D) == {"b": ["w4"]}


def test_take_sent_and_drop() -> None:
    c: Coalescer[str] = Coalescer(D, 1000)
    c.add("b", "w1", 100, 1.0)
    c.add("b", "w2", 100, 1.001)
    assert c.take("b") == ["w2"] and c.take("b") == []  # rides on a critical push
    c.sent("c", 2.0)  # a critical push to "c": its next normal push waits for it
    assert c.add("c", "w3", 100, 2.001) == [] and c.next_deadline() == pytest.approx(2.0 + D)
    assert c.drop("c") == 1 and c.next_deadline() == math.inf
    assert c.add("c", "w4", 100, 2.002) == ["w4"]  # forgotten with its batch


def test_send_times_are_forgotten_after_the_delay() -> None:
    """Memory is bounded by the neighbours written to within one delay."""
    c: Coalescer[str] = Coalescer(D, 1000)
    for i in range(100):
        c.add(f"p{i}", "w", 10, 1.0)
    assert len(c._last) == 100
    c.due(1.0 + D)
    assert c._last == {}


def test_no_delay_sends_everything_at_once_and_bad_arguments_are_refused() -> None:
    c: Coalescer[str] = Coalescer(0.0, 1000)
    assert c.add("b", "w1", 100, 1.0) == ["w1"] and c.add("b", "w2", 100, 1.0) == ["w2"]
    for delay, size in ((-1.0, 10), (math.inf, 10), (math.nan, 10), (D, 0)):
        with pytest.raises(ValueError):
            Coalescer(delay, size)


def test_the_setting_is_bounded() -> None:
    base = AgentConfig.preset_config("lan", name="a")
    assert base.gossip.coalesce_delay == 0.012
    for bad in (-0.001, 1.5):
        with pytest.raises(ConfigError):
            AgentConfig.preset_config("lan", name="a", gossip=replace(base.gossip, coalesce_delay=bad))


# -- the Node -------------------------------------------------------------------------------------------------
class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True


def tree_node(delay: float = D, peers: int = 6) -> Node:
    """Node "a" knowing alive p2..p(peers+1), all known to read tree messages, its eager links chosen."""
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, broadcast="tree", coalesce_delay=delay))
    node = Node(cfg, ("h", 1), random.Random(3), 0.0, _Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
        node.handle_packet(Packet(f"p{i}", (Prune(),)), ("h", i), 0.0)  # shows it reads tree messages
    node.tick(0.01)
    assert node.tree.eager
    return node


def pushes(node: Node, effects: list[Effect]) -> dict[str, list[bytes]]:
    """State payloads sent, per member name."""
    names = {m.addr: m.name for m in node.members()}
    out: dict[str, list[bytes]] = {}
    for e in effects:
        if isinstance(e, Send):
            for m in e.packet.messages:
                if isinstance(m, StateRumor):
                    out.setdefault(names[e.to], []).append(m.payload)
    return out


def push_packets(effects: list[Effect]) -> int:
    return sum(1 for e in effects if isinstance(e, Send) and any(isinstance(m, StateRumor) for m in e.packet.messages))


def test_node_normal_writes_in_a_burst_share_one_packet_per_neighbour() -> None:
    node = tree_node()
    eager = set(node.tree.eager)
    first = node.broadcast_state(b"w1", 1.0)
    assert set(pushes(node, first)) == eager  # alone: at once
    assert pushes(node, node.broadcast_state(b"w2", 1.001)) == {}
    assert pushes(node, node.broadcast_state(b"w3", 1.002)) == {}
    assert node.next_deadline() <= 1.0 + D
    out = node.tick(1.0 + D)
    assert pushes(node, out) == {name: [b"w2", b"w3"] for name in eager}
    assert push_packets(out) == len(eager)  # one packet per neighbour for both writes
    assert node.stats["tree_coalesced_pushes"] == 2 * len(eager)


def test_node_a_critical_write_never_waits_and_takes_the_waiting_ones_along() -> None:
    """Without a byte budget nothing queues, so only this makes critical writes faster than normal ones."""
    node = tree_node()
    eager = set(node.tree.eager)
    node.broadcast_state(b"w1", 1.0)
    node.broadcast_state(b"w2", 1.001)
    out = pushes(node, node.broadcast_state(b"c", 1.002, critical=True))
    for name in eager:
        assert out[name] == [b"c", b"w2"]  # at once, with the normal write that waited for this neighbour
    assert pushes(node, node.tick(1.0 + D)) == {}  # nothing left waiting


def test_node_relayed_writes_coalesce_too_and_no_delay_means_at_once() -> None:
    node = tree_node()
    sender = next(iter(node.tree.eager))
    others = node.tree.eager - {sender}
    node.handle_packet(Packet(sender, (StateRumor(b"r1"),)), ("h", 0), 1.0)
    out = node.handle_packet(Packet(sender, (StateRumor(b"r2"),)), ("h", 0), 1.001)
    assert pushes(node, out) == {}
    assert pushes(node, node.tick(1.0 + D)) == {name: [b"r2"] for name in others}

    node = tree_node(delay=0.0)
    node.broadcast_state(b"w1", 1.0)
    assert set(pushes(node, node.broadcast_state(b"w2", 1.001))) == node.tree.eager
