"""The hello queue (core/hello_queue.py): whom to greet, first come first served, at a bounded pace, with a
bounded number waiting; names that need no hello any more leave without a token."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from gossip_agent.core.hello_queue import HELLO_BURST, HELLO_RATE, HOST_CAP, HOST_WINDOW, HelloQueue
from gossip_agent.core.hosts import host_key


def _host(name: str) -> str:
    """A host of its own for each name (as pods have): no host cap in the way."""
    return f"10.1.{name}"


def _none(_: str) -> int:
    """Nobody showed himself first-hand anywhere."""
    return 0


def _add(q: HelloQueue, *names: str) -> bool:
    return all([q.add(name, _host(name)) for name in names])


def test_never_more_than_the_burst_plus_the_rate_in_any_interval_and_everyone_greeted_in_order() -> None:
    q = HelloQueue(1000, 0.0)
    names = [f"m{i}" for i in range(999)]  # a newcomer that learnt 999 members in one push-pull
    for name in names:
        assert _add(q, name)
    sent: list[tuple[float, str]] = []
    now = 0.0
    while len(q):
        now = max(now, q.next_deadline())
        sent += [(now, name) for name in q.due(now, lambda _: False, _none)]
        now += 0.0007  # a driver that also wakes for other things
    assert [name for _, name in sent] == names
    times = [t for t, _ in sent]
    for window in (0.0, 0.1, 1.0, 5.0):
        most = max(sum(1 for t in times if start <= t <= start + window) for start in times)
        assert most <= HELLO_BURST + HELLO_RATE * window + 1e-9, (window, most)
    assert times[-1] == pytest.approx((999 - HELLO_BURST) / HELLO_RATE, abs=0.01)  # ~20 s, not one burst


def test_due_at_next_deadline_always_hands_out_one_and_an_empty_queue_sleeps() -> None:
    q = HelloQueue(10, 5.0, rate=4.0, burst=1.0)
    assert q.next_deadline() == math.inf
    _add(q, "a", "b")
    assert q.next_deadline() <= 5.0  # a full bucket: at once
    assert q.due(5.0, lambda _: False, _none) == ["a"]
    at = q.next_deadline()
    assert at == pytest.approx(5.25)
    assert q.due(at - 0.01, lambda _: False, _none) == []
    assert q.due(at, lambda _: False, _none) == ["b"]
    assert q.next_deadline() == math.inf


def test_pending_is_bounded_and_refusals_told() -> None:
    q = HelloQueue(3, 0.0)
    assert _add(q, "a", "b", "c")
    assert _add(q, "a")  # already waiting: keeps its place, no refusal
    assert not _add(q, "d") and not _add(q, "e")
    assert len(q) == 3
    q.discard("b")
    assert _add(q, "d") and "d" in q and "b" not in q


def test_skipped_names_leave_without_a_token() -> None:
    q = HelloQueue(100, 0.0, rate=1.0, burst=2.0)
    for i in range(50):
        _add(q, f"m{i}")
    # Everyone but m48 and m49 showed its level meanwhile: they are skipped for free, the two are greeted now.
    assert q.due(0.0, lambda name: name not in ("m48", "m49"), _none) == ["m48", "m49"]
    assert len(q) == 0


def test_a_bad_clock_earns_nothing() -> None:
    q = HelloQueue(10, 0.0, rate=1.0, burst=1.0)
    _add(q, "a", "b", "c")
    assert q.due(0.0, lambda _: False, _none) == ["a"]
    assert q.due(math.nan, lambda _: False, _none) == []
    assert q.due(-100.0, lambda _: False, _none) == []
    assert q.due(0.5, lambda _: False, _none) == []
    assert q.due(1.0, lambda _: False, _none) == ["b"]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        HelloQueue(-1, 0.0)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, rate=0.0)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, rate=math.inf)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, host_cap=0)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, host_window=math.nan)


def _drive(q: HelloQueue, until: float, vouched: Callable[[str], int] = _none,
           on_greet: Callable[[list[str]], object] = lambda _: None) -> tuple[list[tuple[float, str]], int]:
    """Call `due` at each `next_deadline` up to `until`, as the Node does (`on_greet`: what each call handed
    out): (when, name) greeted, and the number of calls that handed out nothing (a queue that keeps asking to
    be woken for nothing spins its driver)."""
    sent: list[tuple[float, str]] = []
    idle = 0
    now = 0.0
    while len(q):
        now = max(now, q.next_deadline())
        if now > until:
            break
        out = q.due(now, lambda _: False, vouched)
        on_greet(out)
        sent += [(now, name) for name in out]
        idle += not out
    return sent, idle


def test_one_host_gets_at_most_the_host_cap_in_any_window_however_many_names_it_has() -> None:
    """A forger names 500 members at one victim's host: it gets HOST_CAP hellos a HOST_WINDOW (not 50 a
    second), the rest wait parked, each counted once, and the driver is woken only when the window frees room."""
    q = HelloQueue(1000, 0.0)
    names = [f"fake{i}" for i in range(500)]
    for name in names:
        assert q.add(name, "192.0.2.7")  # (one host, whatever the ports)
    sent, idle = _drive(q, 4 * HOST_WINDOW - 0.001)
    times = [t for t, _ in sent]
    assert [name for _, name in sent] == names[:len(sent)]  # in their order
    assert len(sent) == 4 * HOST_CAP
    for start in times:
        assert sum(1 for t in times if start <= t < start + HOST_WINDOW) <= HOST_CAP
    assert q.held_back == 500 - HOST_CAP and len(q) == 500 - len(sent)
    assert idle <= 4  # no spinning: one wake-up a window, at most
    assert q.next_deadline() == pytest.approx(4 * HOST_WINDOW)


def test_a_host_at_its_cap_holds_back_no_other_host() -> None:
    q = HelloQueue(1000, 0.0)
    for i in range(40):
        q.add(f"fake{i}", "192.0.2.7")
        q.add(f"m{i}", _host(f"m{i}"))
    sent, _ = _drive(q, 1.0)
    greeted = [name for _, name in sent]
    assert sum(name.startswith("fake") for name in greeted) == HOST_CAP
    assert [name for name in greeted if name.startswith("m")] == [f"m{i}" for i in range(40)]
    assert len(sent) <= HELLO_BURST + HELLO_RATE * 1.0  # (the pace holds too)


def test_members_that_showed_themselves_make_room_at_their_host_a_local_cluster_is_not_slowed() -> None:
    """Every agent of a local cluster is on 127.0.0.1. Those greeted answer (they show themselves first-hand):
    each adds room, so 200 names there go exactly as fast as 200 names on hosts of their own."""
    names = [f"m{i}" for i in range(200)]
    local = HelloQueue(1000, 0.0)
    apart = HelloQueue(1000, 0.0)
    for name in names:
        local.add(name, "127.0.0.1")
        apart.add(name, _host(name))
    answered: set[str] = set()  # (answers on loopback come back before the next token)

    def vouched(host: str) -> int:
        return len(answered) if host == "127.0.0.1" else 0

    sent, _ = _drive(local, math.inf, vouched, on_greet=answered.update)
    assert sent == _drive(apart, math.inf)[0]
    assert [name for _, name in sent] == names
    assert sent[-1][0] == pytest.approx((200 - HELLO_BURST) / HELLO_RATE, abs=0.01)
    assert local.held_back == 0


def test_a_vouched_for_host_gets_one_more_a_window_for_each_member_that_showed_itself() -> None:
    q = HelloQueue(1000, 0.0)
    for i in range(100):
        q.add(f"m{i}", "10.2.0.1")
    sent, _ = _drive(q, HOST_WINDOW - 0.001, vouched=lambda host: 3)  # three members there answered our probes
    assert len(sent) == HOST_CAP + 3


def test_parked_names_still_leave_at_no_cost_and_are_bounded_with_the_rest() -> None:
    q = HelloQueue(5, 0.0, burst=20, host_cap=2)
    for i in range(5):
        assert q.add(f"m{i}", "h")
    assert q.due(0.0, lambda _: False, _none) == ["m0", "m1"] and q.held_back == 3  # m2..m4 parked
    assert q.add("m5", "h") and q.held_back == 4  # parked at once, behind its host's names
    assert q.add("m6", "elsewhere") and not q.add("m7", "elsewhere")  # parked names count against max_pending
    assert q.add("m3", "h") and q.held_back == 4 and len(q) == 5  # already waiting: keeps its place
    q.discard("m4")
    assert "m4" not in q and len(q) == 4
    assert q.add("m3", "other")  # moved: counted against its new host, whose turn it is
    assert q.due(0.0, lambda _: False, _none) == ["m6", "m3"]
    # Members that died (or showed their level) meanwhile leave the parking at no cost, even while it is full.
    assert "m2" in q and q.due(0.1, lambda _: True, _none) == [] and len(q) == 0
    assert q.next_deadline() == math.inf


def test_a_bad_clock_neither_frees_a_host_nor_fills_it() -> None:
    q = HelloQueue(100, 0.0, host_cap=1)
    for n in ("a", "b", "c"):
        q.add(n, "h")
    assert q.due(0.0, lambda _: False, _none) == ["a"]
    for bad in (math.nan, -100.0, math.inf):
        assert q.due(bad, lambda _: False, _none) == []
    assert q.next_deadline() == pytest.approx(HOST_WINDOW)
    assert q.due(HOST_WINDOW, lambda _: False, _none) == ["b"]


def test_ipv4_neighbours_are_hosts_of_their_own_so_a_nodes_pods_are_not_held_back() -> None:
    """IPv4 is not grouped by network (ONE HOST): 49 pods of one node's /24, none of them shown yet, are greeted
    exactly as 49 hosts apart are; an IPv6 /64 is one host (HOST_CAP a window)."""
    names = [f"pod{i}" for i in range(1, 50)]
    node, apart, v6 = HelloQueue(1000, 0.0), HelloQueue(1000, 0.0), HelloQueue(1000, 0.0)
    for i, name in enumerate(names, 1):
        node.add(name, host_key(f"10.244.0.{i}"))
        apart.add(name, _host(name))
        v6.add(name, host_key(f"2001:db8::{i:x}"))
    sent, _ = _drive(node, math.inf)
    assert sent == _drive(apart, math.inf)[0] and node.held_back == 0
    assert len(_drive(v6, HOST_WINDOW - 0.001)[0]) == HOST_CAP


def test_a_real_name_behind_forged_ones_at_its_host_goes_within_a_window_once_they_are_dead() -> None:
    """The BOUND at a shared host: behind F forged names a real one waits about F * HOST_WINDOW / HOST_CAP, or
    until the forged ones are dead (then they all leave at once, at no cost, and it goes within a window)."""
    forged = [f"fake{i}" for i in range(40)]

    def greet_real(dies_at: float) -> tuple[float, int]:
        q = HelloQueue(1000, 0.0)
        for name in [*forged, "real"]:
            q.add(name, "127.0.0.1")
        now, fakes, dead = 0.0, 0, [False]
        while "real" in q:
            now = max(now, q.next_deadline())
            dead[0] = now >= dies_at  # (the forged names' probes went unanswered: no longer live)
            out = q.due(now, lambda name: dead[0] and name.startswith("fake"), _none)
            fakes += sum(name.startswith("fake") for name in out)
            if "real" in out:
                return now, fakes
        raise AssertionError("the real name left without a hello")

    at, fakes = greet_real(math.inf)
    assert fakes == len(forged) and at == pytest.approx(len(forged) * HOST_WINDOW / HOST_CAP)
    at, fakes = greet_real(3.0)
    assert fakes == HOST_CAP and 3.0 < at <= 3.0 + HOST_WINDOW
