"""Fetches that no eager copy follows are gaps in the tree (core/plumtree.py FETCH_GAPS): FETCH_GAPS of them within
FETCH_GAP_SECONDS make the next graft link. A fetch turns out a gap CACHE_SECONDS after its answer; that has to be
seen when the next graft is decided, not only when some later graft's payload arrives: for a writer whose payloads
only ever come by fetch, the next payload to arrive by graft is its own next one, so each gap was counted one of
its payloads late, two gaps were always two of its write intervals before the decision, and a writer behind a gap
writing every 10 to 20 s was fetched for good. Pure core, explicit times."""

from __future__ import annotations

from gossip_agent.core.plumtree import CACHE_SECONDS, FETCH_GAP_SECONDS, FETCH_GAPS, Plumtree

LAZY, GRAFT = 0.4, 0.1
STEP = 0.05  # "a" ticks this often; eager "b" brings a fresh payload as often (the tree works)
ANSWER = 0.05  # a graft's answer comes this long after the graft


def grafts_of_a_slow_writer_behind_a_gap(every: float, count: int) -> list[str]:
    """Under graft pressure, with eager "b" delivering, a writer whose payloads "b" never brings writes one every
    `every` seconds; lazy "d" announces each and answers grafts. How each of its payloads was grafted, in order:
    "fetch" (GRAFT+PRUNE, "d" stays lazy) or "link" ("d" made eager); it stops at the first link."""
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    t.on_ihave((), "d", 0.0)
    assert t.receive(1, "b", 0.0) and t.receive(2, "c", 0.0)
    how: list[str] = []
    answers: dict[int, float] = {}
    fresh = 10_000
    step = 0
    while len(how) < count and "link" not in how:
        step += 1
        now = round(step * STEP, 6)
        fresh += 1
        assert t.receive(fresh, "b", now)  # a payload nobody announced yet: "b" is not behind
        t.timing.late_eager(GRAFT, now)  # graft pressure (eager copies come late), the learnt wait the base
        k, phase = divmod(round(now / STEP), round(every / STEP))
        if phase == 0:
            t.on_ihave((5000 + k,), "d", now)
        for ident, at in list(answers.items()):
            if at <= now:
                del answers[ident]
                assert t.receive(ident, "d", now)  # the answer; no eager copy of it ever follows
        out = t.tick(now)
        for ident in out.grafts.get("d", []):
            how.append("fetch" if "d" in out.fetches else "link")
            answers[ident] = round(now + ANSWER, 6)
    return how


def test_a_writer_behind_a_gap_writing_every_twelve_seconds_is_linked_at_its_third_payload() -> None:
    every = 12.0  # longer than CACHE_SECONDS (each fetch a gap before the next), two of them within the window
    assert CACHE_SECONDS < every <= FETCH_GAP_SECONDS and FETCH_GAPS == 2
    assert grafts_of_a_slow_writer_behind_a_gap(every, 6) == ["fetch", "fetch", "link"]


def test_a_writer_behind_a_gap_writing_every_seven_seconds_is_linked_at_its_third_payload() -> None:
    assert grafts_of_a_slow_writer_behind_a_gap(7.0, 6) == ["fetch", "fetch", "link"]
