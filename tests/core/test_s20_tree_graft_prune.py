"""A GRAFT and a PRUNE due to the same peer at one tick leave the link the same at both ends (core/plumtree.py
`tick`, `add_neighbour`; the Node packs a peer's GRAFTs before its PRUNE: core/tree_dissemination.py).

A prune is queued when a duplicate comes over a link, and sent at the next tick; a graft when its timer fires at a
tick. When both are due at one tick (an agent behind runs its packets and then its overdue timers; or the Node
picks as a new neighbour the lazy peer just pruned), the peer got GRAFT then PRUNE and made the link lazy while
our end had made it eager: a one-sided link (we push every payload to a member that only announces to us, and
its copies back are duplicates) until a prune from one end or the other. The graft came later, so it wins, as if
the two had left at their own times: the pending PRUNE is withdrawn. A fetch (EAGER_STALL_LAZY: a GRAFT with a
PRUNE, the link kept lazy at our end) is no such case and still goes as one: tests/core/test_s18_tree_graft_hold.py,
tests/core/test_s19_tree_fetch_packing.py. Explicit times; the Node test drives the Node by packets."""

from __future__ import annotations

from gossip_agent.core import graft_timing
from gossip_agent.core.digests import DIGEST_ALLOWANCE
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Graft, IHave, Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.plumtree import Plumtree, TreeOut, message_id, short_id
from tests.core.test_node_tree import tree_node
from tests.core.test_s18_tree_graft_hold import addr_of
from tests.core.test_s19_plumtree_critical import GRAFT, LAZY, tree
from tests.core.test_s19_tree_fetch_packing import MISSING, filling

X = 500  # a payload "d" announces to "a", which "a" lacks


def told(out: TreeOut, me: str, to: Plumtree) -> None:
    """What `to` makes of the tick's control messages from `me`, in the order the Node packs them for it
    (tree_dissemination `_tick_tree`): announcements, GRAFTs, then a PRUNE (a prune's, or a fetch's)."""
    peer = to.me
    if peer in out.ihaves:
        to.on_ihave(tuple(out.ihaves[peer]), me, 0.0)
    if peer in out.grafts:
        to.on_graft(tuple(out.grafts[peer]), me)
    if peer in out.prunes or peer in out.fetches:
        to.on_prune(me)


def other_end() -> Plumtree:
    """"d": eager links to "x" and to "a" (told "a" by a link request)."""
    d = Plumtree("d", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    assert d.add_neighbour("x") and d.add_neighbour("a")
    return d


def test_a_graft_timer_after_a_duplicate_over_the_announcer_s_link_leaves_it_eager_at_both_ends() -> None:
    a, d = tree(), other_end()  # "a": eager "b", "c"; lazy "d"
    a.on_ihave((X,), "d", 1.0)  # "d" announced X while the link was lazy
    assert d.tick(1.01).grafts["a"] == []
    a.on_graft((), "d")  # "d"'s link request: eager at both ends now (not proven at "a")
    assert "d" in a.eager and "a" in d.eager
    assert a.receive(2, "c", 1.02) and not a.receive(2, "d", 1.03)  # "d"'s push crossed ours: a duplicate
    out = a.tick(1.0 + GRAFT)  # X's graft timer fires, and the prune goes out, at the same tick
    assert out.grafts == {"d": [X]} and not out.fetches
    told(out, "a", d)
    assert ("d" in a.eager) == ("a" in d.eager), "one end eager, the other lazy"
    assert "d" in a.eager and "d" not in out.prunes  # the graft came later: it wins


def test_picking_a_lazy_peer_just_pruned_as_a_new_neighbour_leaves_the_link_eager_at_both_ends() -> None:
    a, d = tree(), other_end()  # "d" pushes to "a": its link request is lost, say
    assert a.receive(2, "c", 1.0) and not a.receive(2, "d", 1.01)  # a duplicate from lazy "d": pruned
    a.remove("b")  # "b" died: "a" wants a neighbour, and the Node picks "d"
    assert a.wanted() == 1 and a.add_neighbour("d")
    out = a.tick(1.02)
    assert out.grafts == {"d": []}
    told(out, "a", d)
    assert "d" in a.eager and "a" in d.eager and "d" not in out.prunes


def test_a_fetch_to_a_peer_with_a_prune_pending_still_leaves_the_link_lazy_at_both_ends() -> None:
    """Under graft pressure, with an eager link delivering, a graft only fetches (EAGER_STALL_LAZY): the link
    stays lazy at our end, so the pending PRUNE goes, after the GRAFT, and the announcer's end is lazy too."""
    a, d = tree(), other_end()  # "d" pushes to "a": its link request is lost, say
    for _ in range(graft_timing.WINDOW):  # graft pressure; the learnt wait stays the base graft timeout
        a.timing.late_eager(GRAFT, 1.0)
    a.on_ihave((X,), "d", 1.0)
    assert a.receive(2, "c", 1.02) and not a.receive(2, "d", 1.03)  # a duplicate from lazy "d": pruned
    assert a.receive(3, "b", 1.05)  # the eager link delivers, and has got past X: no hold
    out = a.tick(1.0 + GRAFT)
    assert out.grafts == {"d": [X]} and out.fetches == {"d"} and "d" in out.prunes
    told(out, "a", d)
    assert "d" in a.lazy and "a" in d.lazy


def test_the_node_sends_no_prune_after_a_graft_that_makes_the_link_eager() -> None:
    node = tree_node(readers=6)
    node.tick(0.01)
    t = node.tree
    eager = sorted(t.eager)[0]
    peer = next(m.name for m in node.members() if m.name not in t.eager and m.name != "a")
    x = message_id(b"x")
    node.handle_packet(Packet(peer, (IHave((x,)),)), addr_of(node, peer), 1.0)
    due = t.next_deadline()  # X's graft timer
    node.handle_packet(Packet(peer, (Graft(()),)), addr_of(node, peer), 1.01)  # its link request
    node.handle_packet(Packet(eager, (StateRumor(b"y"),)), addr_of(node, eager), 1.02)
    node.handle_packet(Packet(peer, (StateRumor(b"y"),)), addr_of(node, peer), 1.03)  # a duplicate: a prune
    # Busy: the Node's next tick comes only once X's timer is due too.
    to_peer = [s.packet.messages for s in node.tick(due) if isinstance(s, Send) and s.to == addr_of(node, peer)]
    assert to_peer == [(Graft((x,)),)] and peer in t.eager
    assert not any(isinstance(m, Prune) for msgs in to_peer for m in msgs)


def test_a_fetch_to_a_peer_with_a_prune_pending_keeps_its_graft_and_prune_in_one_packet() -> None:
    """The fetch's PRUNE is then also the prune's: it still goes in the GRAFT's packet when announcements to the
    same peer fill the packet before it (split, a lost second packet left the link eager at the peer's end
    only: tests/core/test_s19_tree_fetch_packing.py)."""
    node = tree_node(readers=6)
    node.tick(0.01)
    t = node.tree
    for _ in range(graft_timing.WINDOW):  # graft pressure; the learnt wait stays the base graft timeout
        t.timing.late_eager(t.graft_timeout, 1.0)
    eager = sorted(t.eager)[0]
    peer = next(m.name for m in node.members() if m.name not in t.eager and m.name != "a")
    node.handle_packet(Packet(peer, (ShortIds(ShortKind.IHAVE, (short_id(MISSING),)),)), addr_of(node, peer), 1.0)
    node.handle_packet(Packet(eager, (StateRumor(b"dup"),)), addr_of(node, eager), 1.01)
    node.handle_packet(Packet(peer, (StateRumor(b"dup"),)), addr_of(node, peer), 1.02)  # "peer" pushes: pruned
    n = filling(node._budget(DIGEST_ALLOWANCE))
    for k in range(n):  # (payloads nobody announced: the eager link has got past MISSING, no hold)
        node.handle_packet(Packet(eager, (StateRumor(b"w%d" % k),)), addr_of(node, eager), 1.0 + t.graft_timeout)
    out: list[Effect] = []
    node._tick_tree(1.0 + t.graft_timeout + 0.01, out, flush=True)
    packets = [e.packet.messages for e in out if isinstance(e, Send) and e.to == addr_of(node, peer)]
    fetch = (ShortIds(ShortKind.GRAFT, (short_id(MISSING),)), Prune())
    assert [p for p in packets if fetch[0] in p] == [p for p in packets if Prune() in p], \
        f"GRAFT and PRUNE of one fetch in different packets: {[[type(m).__name__ for m in p] for p in packets]}"
    assert packets[-1][-2:] == fetch and peer in t.lazy
