"""Convergence digests in the membership core: no incarnation bump, piggybacked only to members that read
them (an older agent drops a whole packet with a message type it does not know), learned by every member."""

from __future__ import annotations

from gossip_agent.core.digests import root_prefix
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Digest, Packet, Ping
from tests.core.test_node import Cluster, cfg, node_with_peers

ROOT = "ab" * 32


class Recorder:
    """A state delegate that remembers the digests the Node hands it."""

    def __init__(self) -> None:
        self.digests: list[Digest] = []

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return False

    def on_root_digest(self, digest: Digest, now: float) -> None:
        self.digests.append(digest)


def test_publishing_a_digest_bumps_no_incarnation_and_every_member_learns_it() -> None:
    recorders = {f"n{i}": Recorder() for i in range(5)}
    c = Cluster(5, delegates=recorders)
    c.join_all()
    c.advance(3.0)
    before = {n.name: n.incarnation for n in c.nodes.values()}
    for n in c.nodes.values():
        n.publish_root_digest(ROOT, 7, 1000, seq_floor=1)
    c.advance(c.now + 10.0)
    assert {n.name: n.incarnation for n in c.nodes.values()} == before
    for n in c.nodes.values():
        for other in c.nodes.values():
            row = n.root_digests.get(other.name)
            assert row is not None and row.root == root_prefix(ROOT) and row.keys == 7
    assert all({d.name for d in r.digests} == set(recorders) - {name} for name, r in recorders.items())
    assert not any("alive" in str(type(m)).lower() for _, s in c.sent[-50:] for m in s.packet.messages)


def test_digests_ride_with_a_ping_only_to_members_that_sent_digests() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)  # p2 has never sent a digest: perhaps an older agent
    a.publish_root_digest(ROOT, 1, 1)
    effects: list[Effect] = []
    while not any(isinstance(e, Send) and isinstance(e.packet.messages[0], Ping) for e in effects):
        effects = a.tick(a.next_deadline())
    sends = [e for e in effects if isinstance(e, Send)]
    kinds = [{type(m) for m in s.packet.messages} for s in sends]
    assert {Digest} in kinds  # offered in a packet of its own, which an older agent drops alone
    assert all(Digest not in k or k == {Digest} for k in kinds)
    # Once p2 sent a digest it reads them: ours ride on the probe itself.
    a.handle_packet(Packet("p2", (Digest("p2", 1, root_prefix(ROOT), 1, 1),)), ("h", 2), a.next_deadline())
    a.publish_root_digest("cd" * 32, 2, 2)
    effects = []
    while not any(isinstance(e, Send) and isinstance(e.packet.messages[0], Ping) for e in effects):
        effects = a.tick(a.next_deadline())
    [ping] = [e for e in effects if isinstance(e, Send) and isinstance(e.packet.messages[0], Ping)]
    assert any(isinstance(m, Digest) and m.name == "a" for m in ping.packet.messages)
    assert not [e for e in effects if isinstance(e, Send) and {type(m) for m in e.packet.messages} == {Digest}]


def test_digests_from_or_about_unknown_members_are_dropped() -> None:
    rec = Recorder()
    c = Cluster(2, delegates={"n0": rec})
    c.join_all()
    c.advance(1.0)
    a = c.node("n0")
    a.handle_packet(Packet("stranger", (Digest("n1", 1, root_prefix(ROOT), 1, 1),)), ("10.9.9.9", 1), c.now)
    a.handle_packet(Packet("n1", (Digest("forged", 1, root_prefix(ROOT), 1, 1),)), ("10.0.0.2", 7946), c.now)
    assert rec.digests == [] and len(a.root_digests) == 0
    assert a.stats["digests_unknown_member"] == 2


def test_a_member_back_from_death_is_offered_digests_apart_again() -> None:
    from gossip_agent.core.messages import Alive, Dead
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.handle_packet(Packet("p2", (Digest("p2", 1, root_prefix(ROOT), 1, 1),)), ("h", 2), 0.0)
    assert "p2" in a._digest_readers
    a.handle_packet(Packet("p2", (Dead("p2", 1, "p2"),)), ("h", 2), 0.1)
    a.handle_packet(Packet("p2", (Alive("p2", 2, ("h", 2)),)), ("h", 2), 0.2)  # restarted, maybe downgraded
    assert "p2" not in a._digest_readers
