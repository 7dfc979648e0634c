"""Convergence digests spend fewer rows on duplicates (core/digests.py): a push heard back from another peer
counts as one of ours, and an answer to our summary is not answered with the rows it just carried."""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.digests import FRESH_SENDS, DigestTable, Merge
from gossip_agent.core.effects import Send
from gossip_agent.core.messages import Digest, DigestSummary, Packet
from tests.core.test_node import cfg, node_with_peers

ROOT = b"\xab" * 8
OTHER = b"\xcd" * 8


def _pushes(t: DigestTable, row: str) -> int:
    """Packets to fresh peers that carry `row` until it has no pushes left."""
    return sum(any(d.name == row for d in t.select(1000, codec.message_size, to=f"q{i}")) for i in range(20))


def test_a_duplicate_from_another_peer_counts_as_one_of_our_pushes_once_per_peer() -> None:
    plain = DigestTable("me", 100)
    plain.merge(Digest("x", 5, ROOT, 1, 1), sender="s")
    assert _pushes(plain, "x") == FRESH_SENDS

    t = DigestTable("me", 100)
    assert t.merge(Digest("x", 5, ROOT, 1, 1), sender="s") is Merge.NEW
    assert t.merge(Digest("x", 5, ROOT, 1, 1), sender="s2") is Merge.SAME
    assert t.merge(Digest("x", 5, ROOT, 1, 1), sender="s2") is Merge.SAME  # the same peer again: no more
    assert t.duplicates_heard == 1
    assert _pushes(t, "x") == FRESH_SENDS - 1
    assert not t.has_fresh()


def test_duplicates_never_take_a_push_from_a_newer_version() -> None:
    t = DigestTable("me", 100)
    t.merge(Digest("x", 5, ROOT, 1, 1), sender="s")
    t.merge(Digest("x", 4, OTHER, 1, 1), sender="s2")  # older: the sender is behind, not a duplicate
    assert t.duplicates_heard == 0
    assert _pushes(t, "x") == FRESH_SENDS


def test_rows_an_answer_carried_are_not_sent_back_to_it() -> None:
    """We hold x@2, y@1, z@1; p2 answers our summary with its x@3 and its summary (x@3, y@1; one bucket).
    The bucket differs (p2 lacks z): we owe p2 the bucket's rows but x, which p2 just showed it holds."""
    a = node_with_peers(cfg("a"), 4, seed=5)  # p2..p5
    x, y, z = "p3", "p4", "p5"
    for d in (Digest(x, 2, ROOT, 1, 1), Digest(y, 1, ROOT, 1, 1), Digest(z, 1, ROOT, 1, 1)):
        assert a.root_digests.merge(d) is Merge.NEW
    while a.root_digests.has_fresh():  # the epidemic's pushes are done (to peers that are not p2)
        a.root_digests.select(1000, codec.message_size, to="elsewhere")
    theirs = DigestTable("p2", 100)
    for d in (Digest(x, 3, OTHER, 1, 1), Digest(y, 1, ROOT, 1, 1)):
        theirs.merge(d)
    answer = theirs.summary(False, 1)
    out = a.handle_packet(Packet("p2", (Digest(x, 3, OTHER, 1, 1), answer)), ("h", 2), 1.0)
    assert a.root_digests.get(x) == Digest(x, 3, OTHER, 1, 1)
    sent = [m for e in out if isinstance(e, Send) and e.to == ("h", 2) for m in e.packet.messages
            if isinstance(m, Digest)]
    assert {d.name for d in sent} == {y, z}, sent
    assert not any(isinstance(m, DigestSummary) for e in out if isinstance(e, Send) for m in e.packet.messages
                   if e.to == ("h", 2))  # an answer is not answered with another summary
