"""Fresh cuts announce quickly (core/plumtree.py CUT_WATCH_LAZY): a link cut lately, by our PRUNE or the other
end's, gets the announcements of payloads delivered from the first one after the cut on, for CUT_WATCH_LAZY lazy
intervals, within CUT_FLUSH_LAZY lazy intervals and from either end (no HOLD); other lazy links, and cuts watched
that long, keep the lazy flush."""

from __future__ import annotations

import math

import pytest

from gossip_agent.core import plumtree
from gossip_agent.core.messages import Graft, IHave, Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import Plumtree, message_id, short_id
from tests.core.test_node_tree import tree_node

LAZY, GRAFT = 0.4, 0.1
QUICK = plumtree.CUT_FLUSH_LAZY * LAZY


def second_end() -> Plumtree:
    """Member "z" (the second end of every lazy link: names sort before it) with eager links to b, c and d, and
    a lazy one to e."""
    t = Plumtree("z", eager_target=3, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "c", "d"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    t.on_ihave((), "e", 0.0)
    return t


def cut_by_duplicate(t: Plumtree, now: float) -> None:
    """b delivers a payload first, then c (never a first copy: an unproven link) brings it again: c is cut."""
    assert t.receive(900, "b", now)
    t.deliver(900, b"p", "b", now)
    assert not t.receive(900, "c", now)
    assert "c" in t.lazy
    assert t.tick(now).prunes == {"c"}


def announced(t: Plumtree, until: float) -> dict[tuple[str, int], float]:
    """Tick at every deadline up to `until`: (peer, id) -> when its announcement went."""
    sent: dict[tuple[str, int], float] = {}
    for _ in range(1000):
        at = t.next_deadline()
        if at > until:
            break
        for peer, ids in t.tick(at).ihaves.items():
            for ident in ids:
                assert (peer, ident) not in sent, "announced twice"
                sent[peer, ident] = at
    return sent


def test_our_prune_makes_the_cut_link_announce_quickly_and_without_a_hold() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    assert t.receive(1, "b", 1.01)
    assert t.deliver(1, b"one", "b", 1.01) == ["d"]
    sent = announced(t, 3.0)
    assert sent["c", 1] == pytest.approx(1.01 + QUICK)
    assert sent["e", 1] >= 1.01 + plumtree.HOLD * LAZY  # e is an old lazy link: the lazy flush, after its hold


def test_the_other_ends_prune_makes_the_link_announce_quickly_too() -> None:
    t = second_end()
    t.on_prune("d")
    assert "d" in t.lazy
    assert t.receive(1, "b", 1.02)
    assert t.deliver(1, b"one", "b", 1.02) == ["c"]
    assert announced(t, 3.0)["d", 1] == pytest.approx(1.02 + QUICK)


def test_a_cut_watched_for_its_while_announces_like_any_lazy_link() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    assert t.receive(1, "b", 1.01)
    t.deliver(1, b"one", "b", 1.01)  # the watch begins
    later = 1.01 + plumtree.CUT_WATCH_LAZY * LAZY + 0.01
    assert t.receive(2, "b", later)
    t.deliver(2, b"two", "b", later)
    sent = announced(t, 4.0)
    assert sent["c", 1] == pytest.approx(1.01 + QUICK)
    assert sent["c", 2] >= later + plumtree.HOLD * LAZY  # held like any: z is the second end of c's link


def test_a_cut_no_payload_crossed_since_announces_quickly_however_long_ago() -> None:
    """A burst of writes from many members cuts the tree into parts after its last payload, and the parts stay
    apart through idle time: the next payload, however much later, is announced quickly over those cuts."""
    t = second_end()
    cut_by_duplicate(t, 1.0)
    announced(t, 60.0)  # 900 to e, at its lazy flush
    assert t.receive(1, "b", 60.0)
    t.deliver(1, b"one", "b", 60.0)
    assert announced(t, 65.0)["c", 1] == pytest.approx(60.0 + QUICK)


def test_an_id_due_at_a_quick_and_a_lazy_flush_at_once_is_announced_once() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    assert t.receive(1, "b", 1.0 + LAZY - QUICK / 2)  # its quick flush comes after the lazy one of 900
    t.deliver(1, b"one", "b", 1.0 + LAZY - QUICK / 2)
    out = t.tick(1.0 + LAZY + QUICK)  # both due at this one tick (an agent behind runs its timers late)
    assert out.ihaves["c"] == [1]
    sent = announced(t, 4.0)  # (announced() fails on a second announcement of an id to a peer)
    assert ("c", 1) not in sent and ("e", 900) in sent and ("e", 1) in sent


def test_forgetting_a_member_forgets_its_cut() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    t.remove("c")
    assert t.receive(1, "b", 1.01)
    t.deliver(1, b"one", "b", 1.01)
    assert all(peer == "e" for peer, _ in announced(t, 4.0))


# -- at the Node: a fetch's PRUNE cuts no tree link ----------------------------------------------------------


def announcer_with_payload() -> tuple[Node, str, dict[str, tuple[str, int]]]:
    """Node "a" (a tree node of test_node_tree) holding payload b"x", and a lazy neighbour of it that lacks it."""
    node = tree_node(readers=6)
    node.tick(0.01)
    addr = {m.name: m.addr for m in node.members()}
    eager = sorted(node.tree.eager)[0]
    lazy = next(name for name in sorted(addr) if name not in node.tree.eager and name != "a")
    node.handle_packet(Packet(lazy, (IHave(()),)), addr[lazy], 0.5)  # a lazy neighbour now
    node.handle_packet(Packet(eager, (StateRumor(b"x"),)), addr[eager], 1.0)
    return node, lazy, addr


@pytest.mark.parametrize("graft", [Graft((message_id(b"x"),)),
                                   ShortIds(ShortKind.GRAFT, (short_id(message_id(b"x")),))])
def test_a_fetch_graft_and_prune_in_one_packet_leave_no_fresh_cut(graft: Graft | ShortIds) -> None:
    node, lazy, addr = announcer_with_payload()
    node.handle_packet(Packet(lazy, (graft, Prune())), addr[lazy], 1.1)
    assert lazy in node.tree.lazy and lazy not in node.tree._cut_at


def test_a_prune_of_a_tree_link_leaves_a_fresh_cut() -> None:
    node, lazy, addr = announcer_with_payload()
    node.handle_packet(Packet(lazy, (Graft((message_id(b"x"),)),)), addr[lazy], 1.1)  # a graft that links
    assert lazy in node.tree.eager
    node.handle_packet(Packet(lazy, (Prune(),)), addr[lazy], 1.2)  # later, on its own: the link is cut
    assert lazy in node.tree.lazy and lazy in node.tree._cut_at


# -- a watch's end (review) ----------------------------------------------------------------------------------


def test_the_watch_ends_when_the_other_end_announces_a_payload_we_took_since_it_began() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    assert t.receive(1, "b", 1.01)
    t.deliver(1, b"one", "b", 1.01)  # the watch begins
    t.on_ihave((900,), "c", 1.02)  # taken before the watch began: proves nothing
    assert "c" in t._cut_at
    t.on_ihave((1,), "c", 1.03)  # c got payload 1 without the link: no split between us
    assert "c" not in t._cut_at
    assert t.receive(2, "b", 1.1)
    t.deliver(2, b"two", "b", 1.1)
    assert announced(t, 4.0)["c", 2] >= 1.1 + plumtree.HOLD * LAZY  # held like any lazy link's


def test_a_link_made_eager_again_is_no_cut_any_more() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    t.on_graft((), "c")  # c links to us again (a graft of its own)
    assert "c" in t.eager and "c" not in t._cut_at
    t.on_prune("c", cut=False)  # then only a fetch's PRUNE: lazy again, no watch
    assert t.receive(1, "b", 2.0)
    t.deliver(1, b"one", "b", 2.0)
    assert announced(t, 5.0)["c", 1] >= 2.0 + plumtree.HOLD * LAZY


def test_a_critical_payload_neither_starts_a_watch_nor_is_announced_quickly() -> None:
    t = second_end()
    cut_by_duplicate(t, 1.0)
    assert t.receive(1, "b", 60.0, critical=True)
    t.deliver(1, b"one", "b", 60.0, critical=True)  # its writer sent it to every member itself
    assert t._cut_at["c"] == math.inf  # still waiting for a payload the tree carries
    assert t.receive(2, "b", 60.5)
    t.deliver(2, b"two", "b", 60.5)
    sent = announced(t, 65.0)
    assert sent["c", 2] == pytest.approx(60.5 + QUICK) and sent["c", 1] >= 60.0 + plumtree.HOLD * LAZY
