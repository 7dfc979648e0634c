"""Convergence digests in the membership core: no incarnation bump, piggybacked only to members that read
them (an older agent drops a whole packet with a message type it does not know), learned by every member."""

from __future__ import annotations

from gossip_agent.core.digests import MAX_DIGEST_MESSAGES, MAX_SEQ, root_prefix
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Digest, DigestSummary, Packet, Ping
from tests.core.test_node import Cluster, cfg, node_with_peers, probe_with_lower_offers

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
    # The digest offer goes beside the first or second probe of p2 (after our unanswered hello).
    effects = probe_with_lower_offers(a, lambda _: a.stats["digest_offers"] > 0)
    sends = [e for e in effects if isinstance(e, Send)]
    kinds = [{type(m) for m in s.packet.messages} for s in sends]
    assert {Digest, DigestSummary} in kinds  # offered in a packet of its own, which an older agent drops alone
    assert all(not k & {Digest, DigestSummary} or k <= {Digest, DigestSummary} for k in kinds)
    # Once p2 sent a digest it reads them: ours ride on the probe itself.
    a.handle_packet(Packet("p2", (Digest("p2", 1, root_prefix(ROOT), 1, 1),)), ("h", 2), a.next_deadline())
    a.publish_root_digest("cd" * 32, 2, 2)
    offers = a.stats["digest_offers"]
    effects = []
    sent: list[Send] = []
    while not any(isinstance(e, Send) and isinstance(e.packet.messages[0], Ping) for e in effects):
        effects = a.tick(a.next_deadline())
        sent += [e for e in effects if isinstance(e, Send)]
    assert any(isinstance(m, Digest) and m.name == "a" and m.root == root_prefix("cd" * 32)
               for s in sent for m in s.packet.messages)  # pushed with the gossip packets of the next rounds
    assert a.stats["digest_offers"] == offers  # no packet apart any more


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


WALL_MS = 1_764_470_000_000


def _published(n: int, *, join_for: float, settle: float) -> Cluster:
    """`n` members joined (run `join_for` virtual seconds), each then publishing ROOT, run `settle` more."""
    c = Cluster(n)
    c.join_all()
    c.advance(join_for)
    for i, node in enumerate(c.nodes.values()):
        node.publish_root_digest(ROOT, 1, 1, seq_floor=WALL_MS + i, now=c.now)
    c.advance(c.now + settle)
    return c


def _converged(c: Cluster) -> bool:
    return all(n.root_digests.get(o.name) == o.root_digests.get(o.name) for n in c.nodes.values()
               for o in c.nodes.values())


def test_a_member_that_missed_a_root_learns_it_from_the_summary_on_a_probe() -> None:
    c = _published(6, join_for=3.0, settle=5.0)
    assert _converged(c)
    repairs = sum(n.stats["digest_repairs"] for n in c.nodes.values())
    c.down.add("n5")  # n5 misses every push of n0's new root...
    c.node("n0").publish_root_digest("cd" * 32, 2, 2, seq_floor=WALL_MS + 100, now=c.now)
    c.advance(c.now + 1.0)
    assert c.node("n5").root_digests.get("n0") != c.node("n0").root_digests.get("n0")
    c.down.discard("n5")  # ...and is caught up by summaries on the next probes, no pushes left
    assert not any(n.root_digests.has_fresh() for n in c.nodes.values())
    c.advance(c.now + 3.0)
    assert _converged(c)
    assert sum(n.stats["digest_repairs"] for n in c.nodes.values()) - repairs <= 6


def test_a_joiner_gets_the_whole_table_with_its_join() -> None:
    c = Cluster(5)
    joiner = c.node("n4")
    c.down.add("n4")
    c.join_all()
    c.advance(2.0)
    for i, n in enumerate(c.nodes.values()):
        if n is not joiner:
            n.publish_root_digest(ROOT, 1, 1, seq_floor=WALL_MS + i, now=c.now)
    c.advance(c.now + 3.0)
    c.down.discard("n4")
    seed = next(iter(c.nodes))
    c.run_effects(joiner, joiner.join([seed], c.now))  # no tick: the rows came with the push-pull
    assert {d.name for d in joiner.root_digests.rows()} == {"n0", "n1", "n2", "n3"}
    sent = sum(n.stats["digest_tables_sent"] for n in c.nodes.values())
    assert sent >= 1
    for _ in range(20):  # a join push-pull replayed: the table goes no more than once per TABLE_MIN_GAP
        c.run_effects(joiner, joiner.join([seed], c.now))
    assert sum(n.stats["digest_tables_sent"] for n in c.nodes.values()) == sent


def test_a_forged_row_with_a_huge_sequence_number_does_not_freeze_a_member_s_root() -> None:
    c = _published(3, join_for=2.0, settle=2.0)
    a = c.node("n0")
    forged = Digest("n1", MAX_SEQ, root_prefix("ee" * 32), 0, 0)
    c.run_effects(c.node("n2"), a.handle_packet(Packet("n2", (forged,)), ("10.0.0.3", 7946), c.now))
    assert a.stats["digests_refused"] == 1
    c.node("n1").publish_root_digest("cd" * 32, 2, 2, seq_floor=WALL_MS + 3000, now=c.now)
    c.advance(c.now + 3.0)
    row = a.root_digests.get("n1")
    assert row is not None and row.root == root_prefix("cd" * 32)


def test_a_forged_row_within_the_clock_slack_is_outbid_by_its_owner() -> None:
    c = _published(3, join_for=2.0, settle=2.0)
    forged = Digest("n1", WALL_MS + 60_000, root_prefix("ee" * 32), 0, 0)
    for name in ("n0", "n1"):
        node = c.node(name)
        c.run_effects(node, node.handle_packet(Packet("n2", (forged,)), ("10.0.0.3", 7946), c.now))
    c.advance(c.now + 3.0)
    for n in c.nodes.values():
        row = n.root_digests.get("n1")
        assert row is not None and row.root == root_prefix(ROOT) and row.seq > WALL_MS + 60_000


def test_a_packet_of_many_digest_messages_is_cut_at_the_bound() -> None:
    a = node_with_peers(cfg("a"), 3, seed=3)
    rows = tuple(Digest("p3", i + 1, root_prefix(ROOT), 1, 1) for i in range(MAX_DIGEST_MESSAGES + 500))
    a.handle_packet(Packet("p2", rows), ("h", 2), 0.0)
    assert a.stats["digests_over_limit"] == 500
    # Each summary is a pass over the table: one a packet.
    a.handle_packet(Packet("p2", tuple(DigestSummary(bytes(128), True) for _ in range(50))), ("h", 2), 0.0)
    assert a.stats["digests_over_limit"] == 500 + 49


def test_digests_in_a_packet_that_claims_to_come_from_us_are_dropped() -> None:
    # Before: our own name is in our member table, so a forged packet "from us" made us a reader of
    # ourselves and sent repair packets to our own address.
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.publish_root_digest(ROOT, 1, 1, seq_floor=WALL_MS, now=0.0)
    effects = a.handle_packet(Packet("a", (DigestSummary(bytes(2), True),)), ("h", 1), 0.0)
    assert "a" not in a._digest_readers and not effects
    assert a.stats["digests_unknown_member"] == 1


def test_an_idle_agreeing_cluster_sends_no_digests_at_all() -> None:
    c = _published(6, join_for=3.0, settle=10.0)
    assert _converged(c)
    mark = len(c.sent)
    c.advance(c.now + 10.0)
    assert not [m for _, s in c.sent[mark:] for m in s.packet.messages if isinstance(m, Digest | DigestSummary)]
    assert len(c.sent) > mark  # probes went on


def test_a_join_push_pull_sends_the_table_only_to_the_host_the_stream_came_from() -> None:
    # A push-pull is a request anyone can make to a plaintext cluster: a forged join for a made-up name at a
    # victim's address used to make us send our whole digest table there by UDP (a reflector: ~35 B a row,
    # up to membership.maxMembers rows, again every TABLE_MIN_GAP per name) for a request of ~100 bytes.
    from gossip_agent.core.messages import MemberSnapshot, MemberState, PushPullState

    a = node_with_peers(cfg("a"), 3, seed=1)
    a.publish_root_digest(ROOT, 1, 1, seq_floor=WALL_MS, now=0.0)

    def join(name: str, host: str, source: str | None) -> list[Effect]:
        row = MemberSnapshot(name, (host, 7946), 1, MemberState.ALIVE, {})
        return a.merge_push_pull(PushPullState(name, (row,), True), 1.0, source_host=source)

    def tables(effects: list[Effect]) -> list[Send]:
        return [e for e in effects if isinstance(e, Send)
                and all(isinstance(m, Digest | DigestSummary) for m in e.packet.messages)]

    assert not tables(join("forged", "192.0.2.7", "198.51.100.1"))  # stream from elsewhere: no table
    assert a.stats["digest_tables_unverified"] == 1
    [sent] = tables(join("honest", "10.0.0.9", "10.0.0.9"))
    assert sent.to == ("10.0.0.9", 7946)
    assert tables(join("mapped", "10.0.0.8", "::ffff:10.0.0.8"))  # the same host, IPv4-mapped
    assert tables(join("untold", "10.0.0.7", None))  # a driver that cannot tell (the simulator): as before


def test_an_agent_that_never_published_bounds_digest_numbers_by_its_wall_clock() -> None:
    """No publication of its own (no state layer, or not yet): the driver's wall clock bounds peers' rows."""
    c = Cluster(3)
    c.join_all()
    c.advance(2.0)
    a = c.node("n0")
    forged = Digest("n1", MAX_SEQ, root_prefix("ee" * 32), 0, 0)
    a.observe_wall_clock(WALL_MS / 1000, c.now)
    c.run_effects(c.node("n2"), a.handle_packet(Packet("n2", (forged,)), ("10.0.0.3", 7946), c.now))
    assert a.stats["digests_refused"] == 1 and a.root_digests.get("n1") is None
    c.node("n1").publish_root_digest("cd" * 32, 2, 2, seq_floor=WALL_MS + 3000, now=c.now)
    c.advance(c.now + 3.0)
    row = a.root_digests.get("n1")
    assert row is not None and row.root == root_prefix("cd" * 32)
