"""Review of s18-tree (EAGER_STALL_LAZY hold, fetches): deterministic pure-core reproductions.

One member "a": eager links "b" (the tree parent, pushes every payload DELAY after its announcement) and "c"
(idle); lazy "d" announces every payload at once and answers a graft ANSWER later, but only while the payload
is still in its cache (CACHE_SECONDS after the announcement: d got it then); lazy "e" announces the first WARM
payloads and never answers (graft pressure builds without repairs, as in test_s18_tree_graft_hold.py).
Written against the public Plumtree API only, so it runs on 6fc987e too (PYTHONPATH=<old export>/agent).
All five failed on 62216d5 (s18-tree); s18-treefix fixed them (samples per held-for link, the hold bounded by
the announcers' cache, gap fetches counted without a window, the newest progress kept, critical copies left out)
and added the tests after the marker below (those read `Plumtree._patience`).
"""

from __future__ import annotations

import heapq
import statistics

from gossip_agent.core import plumtree
from gossip_agent.core.plumtree import Plumtree


def tree(lazy: float, graft: float) -> Plumtree:
    t = Plumtree("a", eager_target=2, lazy_interval=lazy, graft_timeout=graft)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    for name in ("d", "e"):
        t.on_ihave((), name, 0.0)
    assert t.receive(1, "b", 0.0) and t.receive(2, "c", 0.0)
    return t


def stream(t: Plumtree, *, count: int, gap: float, delay: float, warm: int, lost: frozenset[int] = frozenset(),
           answer: float = 0.05, step: float = 0.01, cache: float = plumtree.CACHE_SECONDS,
           side: tuple[int, float, float] = (0, 0.0, 0.0)) -> dict[int, tuple[float, float, str]]:
    """Payload 1000+k announced at 1.0 + k*gap. Returns id -> (announced, arrived, first sender)."""
    events: list[tuple[float, int, int, str]] = []
    order = 0

    def at(time: float, ident: int, what: str) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, ident, what))

    announced = {}
    for k in range(count):
        ident = 1000 + k
        announced[ident] = 1.0 + k * gap
        at(announced[ident], ident, "e" if k < warm else "d")
        if ident not in lost:
            at(announced[ident] + delay, ident, "b")
    for k in range(side[0]):  # a writer whose payloads "b" never brings (a gap in the tree): "d" announces them
        announced[5000 + k] = side[2] + k * side[1]
        at(announced[5000 + k], 5000 + k, "d")
    got: dict[int, tuple[float, float, str]] = {}
    now, end = 1.0, 1.0 + count * gap + 3 * delay + 15.0
    while now <= end:
        while events and events[0][0] <= now:
            time, _, ident, what = heapq.heappop(events)
            if what == "d" and "d" in t.eager:  # an eager link at our end is one at d's too: it pushes
                at(time + 0.01, ident, "push")
            elif what in ("e", "d"):
                t.on_ihave((ident,), what, time)
            else:
                sender = "b" if what == "b" else "d"  # (answer or push)
                if t.receive(ident, sender, time):
                    got[ident] = (announced[ident], time, "d" if what == "push" else sender)
        out = t.tick(now)
        for peer, ids in out.grafts.items():
            for ident in ids:
                if peer == "d" and now - announced[ident] <= cache:
                    at(now + answer, ident, "answer")
        now = round(now + step, 6)
    return got


def test_a_parent_that_delays_every_payload_between_cap_and_patience_keeps_its_link_for_good() -> None:
    """LAN timings (lazy 0.4 s, graft 0.1 s). Once under graft pressure, a parent "b" that pushes every payload
    3 s late (above the 2 s cap, below the 4 s patience; slow or hostile) is never grafted around nor pruned:
    its own late copies keep the pressure on, the hold keeps the first graft back until "b" brings the payload.
    "d" could give each one in 0.05 s. Before s18 (6fc987e): grafts at the cap repair them and LATE_STREAK_PRUNE
    prunes "b" after 8 (s9b's "neighbour holding every payload back a few seconds")."""
    t = tree(0.4, 0.1)
    warm, count = 225, 225 + 1200  # 30 s of 40 payloads/s after the warm-up
    got = stream(t, count=count, gap=0.025, delay=3.0, warm=warm)
    tail = [got[1000 + k] for k in range(count - 400, count)]  # the last 10 s
    lat = statistics.median(arr - ann for ann, arr, _ in tail)
    via_b = sum(s == "b" for _, _, s in tail)
    print(f"\nb eager={'b' in t.eager} last-10s median latency={lat:.2f}s via b={via_b}/400")
    assert "b" not in t.eager and lat < 1.0, f"b kept, every payload {lat:.2f} s late ({via_b}/400 via b)"


def test_after_the_hold_a_graft_can_come_too_late_for_the_announcers_cache() -> None:
    """LAN timings; the announcer holds a payload 2.6 s (MAX_CACHED_BYTES = 2 MiB is 2.6 s of 100 writes/s of
    8 KiB; by age alone CACHE_SECONDS = 5 s). The tree parent is 3 s behind (overload, the case s18 is for) and
    loses one payload: the hold keeps its graft back until "b" has delivered something announced after it (~3 s),
    past the announcer's cache: the payload is left to anti-entropy (a 10 s round). 6fc987e grafts it at the
    2 s cap. Likewise with the WAN preset by age alone: lazy 1.0 s, patience 10 s > CACHE_SECONDS 5 s."""
    t = tree(0.4, 0.1)
    warm, count = 225, 225 + 300
    lost = 1000 + warm + 150
    got = stream(t, count=count, gap=0.025, delay=3.0, warm=warm, lost=frozenset({lost}), cache=2.6)
    print(f"\nlost payload arrived: {got.get(lost)}")
    assert lost in got, "never repaired by the tree: left to anti-entropy"


def test_a_link_progress_goes_back_when_it_delivers_an_older_payload_after_a_newer_one() -> None:
    """`_eager_progress` keeps the last first copy's announcement, not the newest ("how far it has got"): "b"
    brings a fresh payload (past X), then an older one (announced before X): X is held again."""
    t = tree(0.4, 0.1)
    for _ in range(64):
        t.timing.late_eager(0.1, 9.0)  # graft pressure, learnt wait = base
    t.on_ihave((600,), "d", 9.95)  # announced before X
    t.on_ihave((500,), "d", 10.0)  # X
    assert t.receive(700, "b", 10.02)  # fresh (announced to nobody): b has got past X
    assert t.receive(600, "b", 10.03)  # an older one, reordered behind it
    out = t.tick(10.1)
    assert out.grafts.get("d") == [500], f"X held although b delivered a payload newer than X: {out}"


def test_a_slow_writer_behind_a_gap_in_the_tree_is_fetched_forever_never_linked() -> None:
    """The tree parent "b" is 1.5 s behind (overload, under the 2 s cap) and brings one writer's payloads; another
    writer's (1 a second) never come over "b" (a gap: they reach us only through lazy "d"). Each of those is held
    until "b" got past it, then fetched (GRAFT+PRUNE: "d" stays lazy); FETCH_REPAIRS = 3 within FETCH_WINDOW_LAZY
    (2 s) is never reached at 1 a second, so the gap is never linked: every such payload ~1.5 s late for as long
    as the overload lasts. 6fc987e: the first graft made "d" eager and the rest came at once."""
    t = tree(0.4, 0.1)
    warm, count = 225, 225 + 1200
    got = stream(t, count=count, gap=0.025, delay=1.5, warm=warm, side=(20, 1.0, 12.0))  # from 12 s: under pressure
    tail = [got[5000 + k] for k in range(10, 20) if 5000 + k in got]
    lat = statistics.median(arr - ann for ann, arr, _ in tail)
    print(f"\ngap writer: last 10 median latency={lat:.2f}s, via {[s for _, _, s in tail]}")
    assert lat < 0.5


def behind_x() -> Plumtree:
    """Under graft pressure, "d" announced 600 and then X (500); eager "b" has brought 600 first at 10.05: it
    is behind X, so X's graft is held."""
    t = tree(0.4, 0.1)
    for _ in range(64):
        t.timing.late_eager(0.1, 9.0)
    t.on_ihave((600,), "d", 9.9)
    t.on_ihave((500,), "d", 10.0)  # X
    assert t.receive(600, "b", 10.05)  # b is behind X
    return t


def test_a_critical_copy_from_an_eager_writer_counts_as_tree_progress() -> None:
    """A critical write goes from its writer to every member at once (core/critical.py), past the pushes its
    tree link still queues; `receive(critical=True)` says such copies tell nothing about the tree, yet its
    first copy moves the link's progress to "fresh" and releases every hold on it: X, which "b" is about to
    bring, is grafted (a needless graft: what the hold is for)."""
    t = behind_x()
    assert t.tick(10.1).grafts == {}  # X held
    assert t.receive(900, "b", 10.15, critical=True)  # b's own critical write, sent to all at once
    out = t.tick(10.2)
    assert out.grafts == {}, f"X grafted at a critical copy: {out.grafts}"


# -- after the review (s18-treefix) ------------------------------------------------------------------------------
def test_a_held_payload_is_counted_once_however_often_it_is_looked_at() -> None:
    """`grafts_held` (tree_grafts_held) counts payloads put off, not the looks again a graft timeout apart."""
    t = behind_x()
    outs = [t.tick(round(10.1 + 0.1 * k, 6)) for k in range(4)]
    assert all(out.grafts == {} for out in outs) and sum(out.grafts_held for out in outs) == 1


def test_the_hold_ends_before_the_announcers_drop_the_payload_with_wan_timings() -> None:
    """WAN timings (lazy 1.0 s, graft 0.5 s): ten lazy intervals are 10 s, twice CACHE_SECONDS. "b" keeps
    delivering payloads announced before X, so without a bound X was held until "b" stalled (~16 s, long after
    "d" dropped it); it is grafted once CACHE_SECONDS less HOLD + 1 lazy intervals have passed."""
    t = tree(1.0, 0.5)
    for _ in range(64):
        t.timing.late_eager(0.5, 9.0)
    for k in range(100):
        t.on_ihave((100 + k,), "d", round(9.0 + 0.01 * k, 6))
    t.on_ihave((500,), "d", 10.0)  # X
    grafted_at = None
    now = 9.0
    while now < 20.0 and grafted_at is None:
        k = round((now - 10.0) / 0.05)
        if 0 <= k < 100 and abs(now - (10.0 + 0.05 * k)) < 1e-9:
            t.receive(100 + k, "b", now)
        if 500 in t.tick(now).grafts.get("d", []):
            grafted_at = now
        now = round(now + 0.01, 6)
    patience = plumtree.CACHE_SECONDS - (plumtree.HOLD + 1.0) * 1.0
    assert grafted_at is not None and grafted_at <= 10.0 + patience + 0.5 + 0.01, grafted_at


def test_the_hold_ends_sooner_while_the_cache_is_held_by_its_byte_bound() -> None:
    """At a high byte rate MAX_CACHED_BYTES holds less than CACHE_SECONDS; our own cache's age span stands for
    the announcers': 32 KiB payloads at 50 a second fill 2 MiB in ~1.3 s."""
    t = tree(0.4, 0.1)
    assert t._patience(10.0) == plumtree.GRAFT_PATIENCE_LAZY * 0.4  # (4 s: below 5 s less 2.25 lazy intervals)
    for k in range(200):
        now = round(6.0 + 0.02 * k, 6)
        assert t.receive(3000 + k, "b", now)
        t.deliver(3000 + k, bytes([k % 256]) * (32 << 10), "b", now)
    span = (plumtree.MAX_CACHED_BYTES // (32 << 10) - 1) * 0.02
    assert abs(t._patience(10.0) - (span - (plumtree.HOLD + 1.0) * 0.4)) < 0.03
