"""Review s9b (LOW, fixed): announcements of made-up ids turned on the graft pressure, so one neighbour could
raise our graft wait for every honest payload (core/plumtree.py, core/graft_timing.py).

The learnt graft wait applies under "graft pressure": grafts and late eager copies above a fifth of recent
payloads (at least 50). Every graft counted when it was sent, whether or not its payload ever came. A
neighbour (from its own host: announcements from elsewhere are dropped) that announces ids nobody holds is
grafted once per id, and 20 such ids within a couple of seconds were pressure enough: with four ordinary
late copies of 1 s (a lost link up the tree), our wait before grafting any honest missing payload went from
0.1 s to 1.0 s (with late samples at the cap, to the cap: 5 lazy intervals), renewed for as long as the
announcements go on. Now a graft counts when its payload arrives (`Plumtree._settle`): made-up ids draw
one graft each, as before, and no pressure. Fails without the fix (timeout 1.0 s).
"""

from __future__ import annotations

from tests.core.test_plumtree_grafts import GRAFT, late_eager, tree


def test_announcements_of_ids_nobody_holds_do_not_raise_the_graft_wait() -> None:
    t = tree()
    at = late_eager(t, 1, 1.0, 4, 1.0)  # four payloads whose eager copy came 1 s late
    assert not t.timing.pressure(at) and t.timing.timeout(at) == GRAFT
    for k in range(20):
        t.on_ihave((900_000 + k,), "d", at)  # made up: nobody holds them
    out = t.tick(at + GRAFT + 0.01)
    assert sum(len(ids) for ids in out.grafts.values()) == 20  # (each is still grafted once)
    now = at + GRAFT + 0.02
    assert not t.timing.pressure(now)
    assert t.timing.timeout(now) == GRAFT


def test_grafts_whose_payloads_come_still_count_as_pressure() -> None:
    """The fix keeps what the pressure is for: grafts that were answered (overload) still turn it on."""
    t = tree()
    at = late_eager(t, 1, 1.0, 4, 1.0)
    for k in range(20):
        t.on_ihave((800_000 + k,), "d", at)
    t.tick(at + GRAFT + 0.01)
    for k in range(20):
        assert t.receive(800_000 + k, "d", at + GRAFT + 0.02)  # the grafts' answers
    now = at + GRAFT + 0.03
    assert t.timing.pressure(now) and t.timing.timeout(now) > GRAFT
