"""Forged acks cannot keep a dead member alive (core/probe_seq.py, core/probing.py `_on_ack`).

An ack names only the sequence number of the ping it answers. Numbered 1, 2, 3... and with every ack of a packet
looked at, one forged datagram from anywhere (plaintext mode: nothing authenticates it) holding acks for the
first few hundred numbers answered any probe of ours: a dead member was never suspected while the forgeries
kept coming. Now the numbers are unguessable (a keyed hash of a counter, the key from the node's Rng), one ack
a packet counts, and an ack counts only from the member probed or a helper asked (a relay's only from the
member it pinged). An attacker who sees our pings can still answer them: only a keyring stops that.
"""

from __future__ import annotations

import random

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, MemberState, Nack, Packet, Ping, PingReq
from gossip_agent.core.node import Node
from tests.core.test_node import cfg
from tests.hostile.core_support import SPOOFER, lan_node


def _first_probe(node: Node) -> tuple[float, Ping]:
    t = 0.0
    for _ in range(400):
        t += 0.01
        for e in node.tick(t):
            if isinstance(e, Send) and isinstance(e.packet.messages[0], Ping):
                return t, e.packet.messages[0]
    raise AssertionError("no probe within 4 s")


def _run_out_probe(node: Node, t: float, seq: int) -> None:
    """Tick until the probe numbered `seq` is over (nobody answers: the target is dead)."""
    for _ in range(300):
        if node._probe is None or node._probe.seq != seq:
            return
        t += 0.01
        node.tick(t)
    raise AssertionError("the probe did not end")


def test_forged_acks_with_guessed_numbers_do_not_save_a_dead_member() -> None:
    node = lan_node(mode="push", broadcast="flood")
    t, ping = _first_probe(node)
    target = ping.target
    # The old numbering: the nth ping of a node was number n. 300 guesses, one datagram each (and, as one packet
    # used to, all in one datagram too), naming the target as their sender.
    for s in range(300):
        node.handle_packet(Packet(target, (Ack(s),)), SPOOFER, t + 0.001)
    node.handle_packet(Packet(target, tuple(Ack(s) for s in range(300))), SPOOFER, t + 0.002)
    _run_out_probe(node, t, ping.seq)
    assert node.stats["probe_failures"] == 1
    assert node.member_state(target) == MemberState.SUSPECT
    assert node.stats["acks_over_limit"] == 299


def test_the_right_number_counts_only_from_the_member_probed() -> None:
    node = lan_node(mode="push", broadcast="flood")
    t, ping = _first_probe(node)
    other = next(f"p{i}" for i in range(2, 10) if f"p{i}" != ping.target)
    node.handle_packet(Packet(other, (Ack(ping.seq),)), SPOOFER, t + 0.001)
    assert node.stats["acks_unmatched"] == 1
    node.handle_packet(Packet(ping.target, (Ack(ping.seq),)), SPOOFER, t + 0.002)  # (its host: not checked)
    assert node._probe is None and node.stats["probe_failures"] == 0


def test_sequence_numbers_differ_between_nodes_and_do_not_count_up() -> None:
    seqs = []
    for seed in (1, 2):
        node = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(seed), 0.0)
        seqs.append([node._next_seq() for _ in range(50)])
    assert seqs[0] != seqs[1]
    steps = {(b - a) & 0xFFFFFFFF for a, b in zip(seqs[0], seqs[0][1:], strict=False)}
    assert len(steps) > 40  # no fixed increment to extrapolate


def _relay(node: Node) -> tuple[int, str, str]:
    """p3 asks us to ping p4: (our relay ping's number, the asker, the target)."""
    asker, target = node.table.get("p3"), node.table.get("p4")
    assert asker is not None and target is not None
    out = node.handle_packet(Packet("p3", (PingReq(77, "p4", target.addr, "p3", asker.addr),)), asker.addr, 0.5)
    ping = next(m for e in out if isinstance(e, Send) for m in e.packet.messages if isinstance(m, Ping))
    return ping.seq, "p3", "p4"


def _acks_to(effects: list[Effect], node: Node, name: str) -> int:
    addr = node.table.get(name).addr  # type: ignore[union-attr]
    return sum(isinstance(m, Ack) for e in effects if isinstance(e, Send) and e.to == addr
               for m in e.packet.messages)


def test_a_relay_passes_on_only_the_pinged_members_ack() -> None:
    node = lan_node(mode="push", broadcast="flood")
    seq, asker, target = _relay(node)
    assert _acks_to(node.handle_packet(Packet("p5", (Ack(seq),)), SPOOFER, 0.51), node, asker) == 0
    assert _acks_to(node.handle_packet(Packet(target, (Ack(seq),)), ("10.0.0.4", 7946), 0.52), node, asker) == 1


def test_nacks_count_once_per_helper_asked() -> None:
    node = lan_node(mode="push", broadcast="flood")
    t, ping = _first_probe(node)
    t += 0.6  # past the probe timeout: ping-reqs go to helpers
    out = node.tick(t)
    asked = [n.name for n in node.members() if any(e.to == n.addr for e in out if isinstance(e, Send)
                                                   and any(isinstance(m, PingReq) for m in e.packet.messages))]
    assert asked
    probe = node._probe
    assert probe is not None
    for _ in range(5):
        node.handle_packet(Packet(asked[0], (Nack(ping.seq),)), SPOOFER, t + 0.01)
    node.handle_packet(Packet("nobody", (Nack(ping.seq),)), SPOOFER, t + 0.01)
    assert probe.nacks == 1
