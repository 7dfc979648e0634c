"""Wire type 19 (`ShortIds`) from a spoofed source (core/reader_offers.py `_on_short_ids`).

Type 19 carries a reader level (core/readers.py SHORT_IDS, the highest), tree announcements and grafts by short
id, and pull requests that name what the asker holds. Without encryption anyone can send a packet naming a
member as its sender, so what it shows or asks counts only from the member's table host (as for types 9-18):

- a spoofed OFFER raised an older agent to the highest level: every packet we sent it from then on could carry
  digests, coordinates and short ids, which it drops whole (acks too: soon a suspicion);
- a spoofed short GRAFT pushed up to MAX_GRAFT_ANSWER cached payloads at the named member (~100x the graft's
  bytes), the long GRAFT's check passed over;
- a spoofed short pull request naming the short ids of our queued state rumors counted them as sent to the
  member it names: it never got them from us (nor, asked the same way, from anyone), until anti-entropy.
"""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import message_id, short_id
from gossip_agent.core.readers import SHORT_IDS
from tests.hostile.core_support import SPOOFER, lan_node


def _node(mode: str = "push", broadcast: str = "flood") -> Node:
    return lan_node(mode=mode, broadcast=broadcast)


def _addr(node: Node, name: str) -> tuple[str, int]:
    member = node.table.get(name)
    assert member is not None
    return member.addr


def _state_to(effects: list[Effect], addr: tuple[str, int]) -> list[StateRumor]:
    return [m for e in effects if isinstance(e, Send) and e.to == addr
            for m in e.packet.messages if isinstance(m, StateRumor)]


def test_a_spoofed_offer_does_not_raise_the_level_nor_draw_offers() -> None:
    node = _node("push-pull")
    for k in range(3):
        out = node.handle_packet(Packet("p2", (ShortIds(ShortKind.OFFER),) * 50), SPOOFER, 1.0 + k / 100)
        assert node.readers.level("p2") == 0
        assert not [e for e in out if isinstance(e, Send)], out  # no offers back (50 a packet before)
    out = node.handle_packet(Packet("p2", (ShortIds(ShortKind.OFFER),)), ("10.0.0.2", 40000), 1.1)
    assert node.readers.reads("p2", SHORT_IDS)
    assert len([e for e in out if isinstance(e, Send)]) == 1  # our offer back, once


def test_a_spoofed_short_graft_pushes_nothing_at_the_member_it_names() -> None:
    node = _node(broadcast="tree")
    for i in range(2, 10):
        node.handle_packet(Packet(f"p{i}", (Prune(), ShortIds(ShortKind.OFFER))), _addr(node, f"p{i}"), 0.0)
    node.tick(0.01)
    victim = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager)
    payloads = [b"v" * 1000 + b"%d" % k for k in range(20)]
    for p in payloads:
        node.broadcast_state(p, 0.1)
    graft = Packet(victim, (ShortIds(ShortKind.GRAFT, tuple(short_id(message_id(p)) for p in payloads[:16])),))
    out = node.handle_packet(graft, SPOOFER, 0.2)
    assert not _state_to(out, _addr(node, victim))
    assert node.stats["tree_graft_answers"] == 0
    out = node.handle_packet(graft, _addr(node, victim), 0.21)  # the member itself: answered
    sent = sum(len(codec.encode_packet(e.packet)) for e in out if isinstance(e, Send))
    assert len(_state_to(out, _addr(node, victim))) == 16 and sent > 16 * 1000


def _pull_node_with_writes() -> tuple[Node, str, list[bytes]]:
    """A pull-mode agent holding five writes, and a member (p2) that has shown it reads short ids."""
    node = _node("pull")
    victim = "p2"
    node.handle_packet(Packet(victim, (ShortIds(ShortKind.OFFER),)), _addr(node, victim), 0.05)
    payloads = [b"w" * 100 + b"%d" % k for k in range(5)]
    for p in payloads:
        node.broadcast_state(p, 0.1)
    return node, victim, payloads


def test_a_spoofed_short_pull_request_does_not_suppress_what_the_member_is_owed() -> None:
    node, victim, payloads = _pull_node_with_writes()
    forged = ShortIds(ShortKind.PULL, tuple(short_id(message_id(p)) for p in payloads))
    got: set[bytes] = set()
    for k in range(3):  # its answers go to the victim's table address: fine
        got |= {r.payload for r in _state_to(node.handle_packet(Packet(victim, (forged,)), SPOOFER, 0.2 + k / 100),
                                             _addr(node, victim))}
    honest = node.handle_packet(Packet(victim, (ShortIds(ShortKind.PULL),)), _addr(node, victim), 0.3)
    got |= {r.payload for r in _state_to(honest, _addr(node, victim))}
    # Everything reached the victim (in the forged requests' answers or in its own), none was counted as held.
    assert got == set(payloads)


def test_the_member_itself_naming_what_it_holds_is_believed() -> None:
    node, victim, payloads = _pull_node_with_writes()
    held = ShortIds(ShortKind.PULL, tuple(short_id(message_id(p)) for p in payloads[:3]))
    out = node.handle_packet(Packet(victim, (held,)), _addr(node, victim), 0.2)
    assert {r.payload for r in _state_to(out, _addr(node, victim))} == set(payloads[3:])
