"""Grafts under an overload that makes eager copies later than the learnt wait's cap (core/plumtree.py,
EAGER_STALL_LAZY): a first graft waits while an eager link that still delivers has not got past the payload.

The model is the 50-agent meltdown seen by one member: every payload is announced by a lazy neighbour first and
its eager copy comes DELAY seconds later, longer than the cap (GRAFT_CAP_LAZY lazy intervals). Before the fix
each payload was grafted at the cap: its graft drew it twice and made the announcer's link eager, and the late
eager copies after those repairs pruned the working tree link. Times are explicit; nothing is sent.
"""

from __future__ import annotations

import heapq

import pytest

from gossip_agent.core import graft_timing, plumtree
from gossip_agent.core.effects import Send
from gossip_agent.core.messages import Address, Graft, IHave, Packet, Prune, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import Plumtree, message_id
from tests.core.test_node_tree import tree_node

LAZY, GRAFT = 0.4, 0.1
DELAY = 3.0  # eager copies come this long after the first announcement: above the cap, below the patience
GAP = 0.02  # a payload every GAP seconds (50 writes/s reaching this member)
ANSWER = 0.05  # a graft's answer comes this long after the graft
STEP = 0.01  # the member ticks this often


def tree() -> Plumtree:
    """"a" with eager links to "b" and "c" (both in use) and lazy ones to "d" and "e"."""
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    for name in ("d", "e"):
        t.on_ihave((), name, 0.0)
    assert t.receive(1, "b", 0.0) and t.receive(2, "c", 0.0)  # both links in use
    return t


def addr_of(node: Node, name: str) -> Address:
    return next(m.addr for m in node.members() if m.name == name)


WARM = int(1.5 * DELAY / GAP)  # the first payloads, announced by "e", which never answers a graft


def stream(t: Plumtree, start: float, count: int, *, lost: frozenset[int] = frozenset(),
           stall_after: float = float("inf"), answer: float = ANSWER) -> tuple[dict[int, float], dict[int, float]]:
    """`count` payloads (ids 1000...), one every GAP from `start`; "b" pushes each DELAY after its announcement,
    except those in `lost` and any due after `stall_after` (the link broke). The first WARM are announced by
    "e", which never answers a graft (so the pressure builds up without repairs: the grafts, at the base
    timeout until then, are undone at the late eager copies), the others by "d", which answers a graft ANSWER
    after it. Returns when each payload was first grafted and when it arrived, by id."""
    events: list[tuple[float, int, int, str]] = []  # (time, order, id, what: "ihave", "eager", "answer")
    order = 0

    def at(time: float, ident: int, what: str) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, ident, what))

    for k in range(count):
        ident = 1000 + k
        announced = start + k * GAP
        at(announced, ident, "ihave" if k >= WARM else "warm")
        if ident not in lost and announced + DELAY <= stall_after:
            at(announced + DELAY, ident, "eager")
    grafted: dict[int, float] = {}
    arrived: dict[int, float] = {}
    now = start
    end = start + count * GAP + 2 * DELAY + plumtree.GRAFT_PATIENCE_LAZY * LAZY
    while now <= end:
        while events and events[0][0] <= now:
            time, _, ident, what = heapq.heappop(events)
            if what in ("ihave", "warm"):
                t.on_ihave((ident,), "d" if what == "ihave" else "e", time)
            elif t.receive(ident, "b" if what == "eager" else "d", time):
                arrived[ident] = time
        out = t.tick(now)
        for peer, ids in out.grafts.items():
            for ident in ids:
                grafted.setdefault(ident, now)
                if peer == "d":
                    at(now + answer, ident, "answer")
        now = round(now + STEP, 6)
    return grafted, arrived


@pytest.fixture(autouse=True)
def _no_samples(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hold itself, without its samples (HOLD_SAMPLE_EVERY): with "d" answering in ANSWER, a twentieth of
    DELAY, the samples would show "b" slow and end the hold for it (test_s18_tree_review.py); the overload of a
    whole cluster, where answers are as late as "b", is test_samples_keep_the_hold_when_fetches_are_as_late."""
    if "samples" not in request.node.name:
        monkeypatch.setattr(plumtree, "HOLD_SAMPLE_EVERY", 1 << 30)


def test_samples_keep_the_hold_when_fetches_are_as_late_as_the_eager_link() -> None:
    """An overload of the whole cluster: the announcer answers a graft as late as "b" brings the payload (it
    is behind too). One held payload in HOLD_SAMPLE_EVERY is grafted as a sample, "b"'s copy comes first, and
    the hold stays: the rest are not grafted, and "b" stays the tree link."""
    t = tree()
    grafted, arrived = stream(t, 1.0, WARM + 300, answer=DELAY)
    ours = [ident for ident in grafted if ident >= 1000 + WARM]
    assert 0 < len(ours) <= 300 // plumtree.HOLD_SAMPLE_EVERY + 1
    assert len(arrived) == WARM + 300 and "b" in t.eager and "d" in t.lazy


def test_payloads_on_their_way_over_a_working_eager_link_are_not_grafted() -> None:
    """Without the hold every payload of the stream was grafted (at the cap, 2 s after its announcement, a
    second before its eager copy), and the late copies after those repairs pruned "b", the working tree link."""
    t = tree()
    grafted, arrived = stream(t, 1.0, WARM + 300)
    assert t.timing.pressure(1.0 + WARM * GAP) and t.timing.timeout(1.0 + WARM * GAP) == \
        plumtree.GRAFT_CAP_LAZY * LAZY  # the copies were late all along: pressure, the case at hand
    assert [ident for ident in grafted if ident >= 1000 + WARM] == []
    assert len(arrived) == WARM + 300
    assert "b" in t.eager  # the working tree link is kept


def test_a_lost_eager_copy_is_grafted_once_the_eager_link_delivers_newer_payloads() -> None:
    """The hold waits only while the link may still bring the payload: once "b" delivers a payload announced
    after the lost one (a link delivers in its sender's order), the lost one is grafted at the next look."""
    t = tree()
    lost = 1000 + WARM + 100
    grafted, arrived = stream(t, 1.0, WARM + 300, lost=frozenset({lost}))
    announced = 1.0 + (lost - 1000) * GAP
    assert [ident for ident in grafted if ident >= 1000 + WARM] == [lost]
    assert announced + DELAY <= grafted[lost] <= announced + DELAY + GAP + GRAFT + STEP
    assert arrived[lost] == grafted[lost] + ANSWER and len(arrived) == WARM + 300


def test_grafts_resume_when_the_eager_link_stops_delivering() -> None:
    """A broken eager link brings nothing more: after EAGER_STALL_LAZY its missing payloads are grafted, as they
    were at the learnt wait (and within GRAFT_PATIENCE_LAZY of their announcement in any case)."""
    t = tree()
    stall = 1.0 + (WARM + 99.5) * GAP + DELAY  # "b" delivers the first WARM + 100 payloads, then nothing
    grafted, arrived = stream(t, 1.0, WARM + 300, stall_after=stall)
    assert len(arrived) == WARM + 300
    assert {ident for ident in grafted if ident >= 1000 + WARM} == set(range(1000 + WARM + 100, 1000 + WARM + 300))
    for ident, when in grafted.items():
        if ident < 1000 + WARM + 100:
            continue
        announced = 1.0 + (ident - 1000) * GAP
        assert when <= max(announced + plumtree.GRAFT_CAP_LAZY * LAZY,
                           stall + plumtree.EAGER_STALL_LAZY * LAZY) + GRAFT + STEP


# -- grafts that only fetch -------------------------------------------------------------------------------------
def test_under_pressure_with_a_working_eager_link_a_graft_fetches_and_leaves_the_link_lazy() -> None:
    """Before, every graft made the announcer's link eager at both ends: the announcer pushed every later payload
    to us until our PRUNE came, seconds under overload, all duplicates. With an eager link delivering, the
    graft repairs one payload, not the tree: it goes with a PRUNE and the link stays lazy."""
    t = tree()
    lost = 1000 + WARM + 100
    fetched: list[tuple[set[str], bool]] = []  # per graft to "d" of the stream: (fetches, "d" eager after it)
    orig = t.tick

    def tick(now: float, *, flush: bool = False) -> plumtree.TreeOut:
        out = orig(now, flush=flush)
        if out.grafts.get("d") and now > 1.0 + WARM * GAP:
            fetched.append((set(out.fetches), "d" in t.eager))
        return out

    t.tick = tick  # type: ignore[method-assign]
    _, arrived = stream(t, 1.0, WARM + 300, lost=frozenset({lost}))
    assert fetched == [({"d"}, False)]
    assert lost in arrived and "d" in t.lazy and "b" in t.eager


def test_without_pressure_a_graft_makes_the_link_eager_as_before() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    out = t.tick(1.0 + GRAFT)
    assert out.grafts == {"d": [7]} and out.fetches == set() and "d" in t.eager


def test_a_graft_and_a_prune_in_one_packet_answer_the_payload_and_leave_the_announcer_lazy() -> None:
    """What the announcer (of any release that reads PRUNE) makes of a fetch: the answer, and no eager link."""
    t = tree()
    assert t.receive(77, "b", 1.0)
    t.deliver(77, b"payload", "b", 1.0)
    assert t.on_graft((77,), "d").payloads == [(b"payload", False)]
    t.on_prune("d")
    assert "d" in t.lazy and "d" not in t.eager


def test_the_node_sends_a_fetch_as_a_graft_and_a_prune_in_one_packet() -> None:
    node = tree_node(readers=6)
    node.tick(0.01)
    tree_ = node.tree
    for _ in range(graft_timing.WINDOW):  # graft pressure: eager copies ~0.5 s late
        tree_.timing.late_eager(0.5, 1.0)
    eager = sorted(tree_.eager)[0]
    lazy = next(m.name for m in node.members() if m.name not in tree_.eager and m.name != "a")
    missing = message_id(b"missing")
    node.handle_packet(Packet(lazy, (IHave((missing,)),)), addr_of(node, lazy), 1.0)
    node.handle_packet(Packet(eager, (StateRumor(b"newer"),)), addr_of(node, eager), 1.5)  # the link works
    out = [s for s in node.tick(tree_.next_deadline()) if isinstance(s, Send)]
    to_lazy = [s.packet.messages for s in out if s.to == addr_of(node, lazy)]
    assert to_lazy == [(Graft((missing,)), Prune())]
    assert lazy not in tree_.eager and node.stats["tree_grafts_fetch"] == 1


def test_once_fetches_keep_repairing_payloads_the_next_graft_links() -> None:
    """Fetches that keep repairing payloads (their answers come first, no eager copy follows) mean the tree has
    a gap: some writers' payloads do not reach us eagerly. Fetching each anew would cost more than a link, so
    after FETCH_REPAIRS of them the next graft makes the link eager, as Plumtree's graft does."""
    t = tree()
    first = 1000 + WARM + 20
    lost = frozenset(first + 10 * k for k in range(plumtree.FETCH_REPAIRS + 1))  # within FETCH_WINDOW_LAZY
    seen: list[tuple[set[str], bool]] = []
    orig = t.tick

    def tick(now: float, *, flush: bool = False) -> plumtree.TreeOut:
        out = orig(now, flush=flush)
        if out.grafts.get("d") and now > 1.0 + WARM * GAP:
            seen.append((set(out.fetches), "d" in t.eager))
        return out

    t.tick = tick  # type: ignore[method-assign]
    _, arrived = stream(t, 1.0, WARM + 300, lost=lost)
    assert seen == [({"d"}, False)] * plumtree.FETCH_REPAIRS + [(set(), True)]
    assert lost <= set(arrived)
