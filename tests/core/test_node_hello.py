"""Hellos (core/hello_queue.py, core/reader_offers.py `_tick_hello`) and one offer at first contact (`_probe_offers`).

A member that enters our table gets one packet holding our highest offer; a member of this release answers
with its own, so both ends know each other's reader level first-hand within a round trip instead of at the
first probe between them (about N probe intervals): until then the broadcast tree's flood fallback sends
every write of ours to it. Probes to a member whose level is unknown carry only the highest offer; an older
agent, which never answers, gets the lower ones (coordinate, rows, digests) from the next probe on."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gossip_agent.core import codec
from gossip_agent.core.broadcast import retransmit_limit
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.hello_queue import HELLO_BURST, HELLO_RATE, HOST_CAP, HOST_WINDOW, HelloQueue, hellos_pay
from gossip_agent.core.hosts import host_key
from gossip_agent.core.messages import (
    Ack,
    Alive,
    Dead,
    Digest,
    DigestSummary,
    NetCoordinate,
    Packet,
    PeerCoordinates,
    Ping,
    ShortIds,
    ShortKind,
)
from gossip_agent.core.node import Node
from gossip_agent.core.readers import ANSWER_WINDOW, DIGESTS, PEER_COORDINATES, SHORT_IDS
from gossip_agent.io.metrics import AgentMetrics, AgentStats
from gossip_agent.sim import Simulation, make_config
from tests.core.test_node import cfg, node_with_peers
from tests.core.test_topology_rows import _sends

HELLO = ShortIds(ShortKind.OFFER)
SLOW_PROBES = {"probe_interval": 10.0}  # the first probe between the two falls seconds after the hellos


def _is_hello(s: Send) -> bool:
    return s.packet.messages == (HELLO,)


class Pair:
    """Two nodes that deliver to each other at once; records every packet between them."""

    def __init__(self, seed: int = 1, **membership: object) -> None:
        self.a = Node(cfg("a", **(membership or SLOW_PROBES)), ("10.0.0.1", 7946), random.Random(seed), 0.0)
        self.b = Node(cfg("b", **(membership or SLOW_PROBES)), ("10.0.0.2", 7946), random.Random(seed + 1), 0.0)
        self.by_addr = {self.a.addr: self.a, self.b.addr: self.b}
        self.sent: list[tuple[float, str, Send]] = []
        self.drop_to: set[str] = set()

    def deliver(self, src: Node, effects: list[Effect], now: float) -> None:
        pending = [(src, e) for e in _sends(effects)]
        for _ in range(1_000):  # bounded: packets that answer each other for ever fail here, not hang
            if not pending:
                return
            origin, send = pending.pop(0)
            self.sent.append((now, origin.name, send))
            dst = self.by_addr.get(send.to)
            if dst is None or dst.name in self.drop_to:
                continue
            pending += [(dst, e) for e in _sends(dst.handle_packet(send.packet, origin.addr, now))]
        raise AssertionError("packets bounce")

    def learn(self, who: Node, of: Node, now: float) -> None:
        """`who` learns `of` (its Alive from its own host), as a join or a rumor would tell it."""
        self.deliver(of, who.handle_packet(Packet(of.name, (Alive(of.name, 1, of.addr),)), of.addr, now), now)

    def run_until(self, t_end: float, *, stop_when_known: bool = True) -> float:
        now = 0.0
        while True:
            node = min((self.a, self.b), key=lambda n: n.next_deadline())
            now = max(now, node.next_deadline())
            if now > t_end:
                return t_end
            self.deliver(node, node.tick(now), now)
            if stop_when_known and self.both_know():
                return now

    def both_know(self) -> bool:
        return self.a.readers.reads("b", SHORT_IDS) and self.b.readers.reads("a", SHORT_IDS)

    def pings(self) -> int:
        return sum(1 for _, _, s in self.sent for m in s.packet.messages if isinstance(m, Ping))


def test_after_a_join_both_ends_know_each_others_level_within_a_round_trip_without_a_probe() -> None:
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    pair.learn(pair.b, pair.a, 0.0)
    assert not pair.both_know()
    known_at = pair.run_until(1.0)
    assert pair.both_know(), pair.sent
    assert known_at <= 0.05  # at the first tick: not at the first probe (seconds later)
    assert pair.pings() == 0
    hellos = [s for _, _, s in pair.sent if _is_hello(s)]
    assert 2 <= len(hellos) <= 4  # hellos and answers: a few packets of one message each
    assert pair.a.stats["hellos"] + pair.b.stats["hellos"] >= 1
    # Both are now left out of each other's flood fallback (first-hand readers)...
    assert "b" in pair.a._digest_readers and "a" in pair.b._digest_readers
    # ...and nobody greets again, nor does an offer go beside the first probe between them.
    pair.sent.clear()
    pair.run_until(25.0, stop_when_known=False)
    assert pair.pings() >= 1 and not [s for _, _, s in pair.sent if _is_hello(s)]
    # (One offer apart remains per direction: our coordinate in the compact form, at the first ack, which the
    # hellos' level does not cover: core/topology_state.py compact_offer_due.)
    apart = [s for _, _, s in pair.sent if len(s.packet.messages) == 1 and not isinstance(
        s.packet.messages[0], Ping | Ack | Digest | DigestSummary)]
    assert all(isinstance(s.packet.messages[0], NetCoordinate) and s.packet.messages[0].compact for s in apart)
    assert len(apart) <= 2


def test_a_member_whose_hello_we_dropped_learns_our_level_when_it_greets_us() -> None:
    """b greets a before a knows b (a drops the hello: not a member yet). When a learns b and greets it, b
    answers although it knows a's level already (a's hello showed it): a knows nothing of b's yet."""
    pair = Pair()
    pair.learn(pair.b, pair.a, 0.0)
    pair.deliver(pair.b, pair.b.tick(0.001), 0.001)  # b's hello: a does not know b, drops it
    assert pair.a.stats["short_ids_unknown_member"] == 1 and not pair.a.readers.reads("b", SHORT_IDS)
    pair.learn(pair.a, pair.b, 0.002)
    pair.deliver(pair.a, pair.a.tick(0.003), 0.003)
    assert pair.both_know() and pair.pings() == 0


def test_a_member_back_from_death_is_greeted_again() -> None:
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    pair.learn(pair.b, pair.a, 0.0)
    pair.run_until(1.0)
    assert pair.both_know()
    pair.a.handle_packet(Packet("b", (Dead("b", 1, "b"),)), pair.b.addr, 1.0)
    pair.a.handle_packet(Packet("b", (Alive("b", 2, pair.b.addr),)), pair.b.addr, 1.1)  # restarted
    assert not pair.a.readers.reads("b", SHORT_IDS)
    effects = pair.a.tick(1.2)
    assert [s for s in _sends(effects) if _is_hello(s) and s.to == pair.b.addr]


def test_a_member_that_reset_us_alone_gets_our_answer_within_the_answer_window() -> None:
    """a resets b (b suspected, refuted, dead and back: at a only); b did not reset a and answered a before.
    a's next hello or probe offer an answer window later still gets b's answer: a learns b's level again."""
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    pair.learn(pair.b, pair.a, 0.0)
    pair.run_until(1.0)
    assert pair.both_know()
    answers = pair.b.stats["short_id_answers"]
    pair.a.handle_packet(Packet("b", (Dead("b", 1, "b"),)), pair.b.addr, 1.0)
    pair.a.handle_packet(Packet("b", (Alive("b", 2, pair.b.addr),)), pair.b.addr, 1.1)
    assert not pair.a.readers.reads("b", SHORT_IDS) and pair.b.readers.reads("a", SHORT_IDS)
    pair.deliver(pair.a, pair.a.tick(1.2), 1.2)  # a's hello: b answered a within the window, silent
    now = 1.1 + ANSWER_WINDOW
    offer = Send(pair.b.addr, Packet("a", (HELLO,)))  # a's next hello or probe offer to b
    pair.deliver(pair.a, [offer], now)
    assert pair.b.stats["short_id_answers"] == answers + 1
    assert pair.a.readers.reads("b", SHORT_IDS)


def test_answers_to_offers_do_not_bounce() -> None:
    """An answer is an offer too: each end answers a peer at most once an answer window, so an offer draws
    at most two packets back (the answer, and the answer to that answer), even once the window has passed."""
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    pair.learn(pair.b, pair.a, 0.0)
    pair.run_until(1.0)
    assert pair.both_know()
    for now in (2.0, 3.0 * ANSWER_WINDOW):
        pair.sent.clear()
        pair.deliver(pair.a, [Send(pair.b.addr, Packet("a", (HELLO,)))], now)
        assert len(pair.sent) <= 3, pair.sent


def test_no_hello_to_a_member_that_showed_its_level_first() -> None:
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    out = pair.a.handle_packet(Packet("b", (HELLO,)), pair.b.addr, 0.0)  # b greeted us first: answered
    assert [s for s in _sends(out) if _is_hello(s)]
    assert not [s for s in _sends(pair.a.tick(0.01)) if _is_hello(s)]
    assert pair.a.stats["hellos"] == 0


def _slow(**gossip: object) -> AgentConfig:
    """Node "a"'s config: probes seconds apart (hellos go first), `gossip` settings replaced."""
    config = cfg("a", **SLOW_PROBES)
    return replace(config, gossip=replace(config.gossip, **gossip))


def test_hellos_are_paced_and_charged_to_the_send_budget() -> None:
    n = 200
    node = node_with_peers(_slow(max_bytes_per_second=100_000), n, 5, own_hosts=True)  # a newcomer
    charged: list[int] = []
    charge = node._charge
    node._charge = lambda size: (charged.append(size), charge(size))[1]  # type: ignore[method-assign]
    times: list[float] = []
    now = 0.0
    while now < 1.0:
        times += [now] * sum(1 for s in _sends(node.tick(now)) if _is_hello(s))
        now = max(now + 0.001, min(node.next_deadline(), now + 0.05))
    assert times and len(times) <= HELLO_BURST + HELLO_RATE * 1.0 + 1
    assert sum(1 for t in times if t == 0.0) <= HELLO_BURST  # not 200 packets at once
    for start in times:
        assert sum(1 for t in times if start <= t <= start + 0.2) <= HELLO_BURST + HELLO_RATE * 0.2 + 1e-9
    assert len(node._hellos) <= node.config.membership.max_members and len(node._hellos) == n - len(times)
    assert charged.count(codec.message_size(HELLO)) >= len(times)  # each hello's packet charged to the send budget
    assert node.stats["hellos_held"] == 0  # one member a host: no host cap in the way


def test_greetings_stop_where_the_flood_fallback_costs_less_than_they_would() -> None:
    """O(N^2) greetings pay only while the flood fallback (retransmit limit copies per write) is a large share of
    the floor (core/hello_queue.py SCALE): 201 members greet, 301 learn levels from probes, queued names leave."""
    assert hellos_pay(201, retransmit_limit(4, 201)) and not hellos_pay(301, retransmit_limit(4, 301))
    assert hellos_pay(301, retransmit_limit(8, 301))  # more retransmits: the fallback costs more, greetings pay
    for n, greets in ((200, True), (300, False)):
        node = node_with_peers(_slow(), n, 5, own_hosts=True)
        sent = sum(1 for s in _sends(node.tick(2.0)) if _is_hello(s))
        assert (sent > 0) is greets, (n, sent)
        if not greets:
            assert node.stats["hellos"] == 0 and len(node._hellos) == 0  # skipped at no cost
    more_retransmits = node_with_peers(_slow(retransmit_mult=8), 300, 5, own_hosts=True)
    assert sum(1 for s in _sends(more_retransmits.tick(2.0)) if _is_hello(s)) > 0


def test_a_forged_hello_shows_nothing_and_draws_no_answer() -> None:
    pair = Pair()
    pair.learn(pair.a, pair.b, 0.0)
    stranger = pair.a.handle_packet(Packet("nobody", (HELLO,)), ("10.9.9.9", 7946), 0.0)
    forged = pair.a.handle_packet(Packet("b", (HELLO,)), ("10.9.9.9", 7946), 0.0)  # b's name, another host
    assert not _sends(stranger) and not _sends(forged)
    assert pair.a.readers.level("b") == 0 and pair.a.readers.level("nobody") == 0
    assert "b" not in pair.a._digest_readers
    # b's own hello still counts (and is answered) afterwards.
    assert _sends(pair.a.handle_packet(Packet("b", (HELLO,)), pair.b.addr, 0.1))
    assert pair.a.readers.reads("b", SHORT_IDS)


def _probe_offers(node: Node, target: str, until: float) -> list[list[type]]:
    """Tick `node` until `until`; per probe of `target`, the message types of the packets apart beside it."""
    probes: list[list[type]] = []
    now = 0.0
    while now < until:
        now = node.next_deadline()
        sends = _sends(node.tick(now))
        if any(isinstance(m, Ping) and m.target == target for s in sends for m in s.packet.messages):
            probes.append([type(s.packet.messages[0]) for s in sends if not isinstance(s.packet.messages[0], Ping)])
    return probes


def test_an_older_agent_that_never_answers_gets_the_lower_offers_from_the_next_probe_on() -> None:
    node = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(3), 0.0)
    node.handle_packet(Packet("old", (Alive("old", 1, ("10.0.0.2", 7946)),)), ("10.0.0.2", 7946), 0.0)
    node.publish_root_digest("ab" * 32, 1, 1, now=0.0)
    probes = _probe_offers(node, "old", 4.0)
    assert node.stats["hellos"] == 1  # greeted first (at once): that offer went unanswered
    # Within a probe timeout of the hello a probe adds no offer (an answer may be on its way); from then on
    # the next probe carries every offer, lower ones included, as probes did before hellos.
    late = [p for p in probes if p]
    assert len(probes) - len(late) <= 1 and late
    assert {NetCoordinate, PeerCoordinates, ShortIds, Digest} <= set(late[0])
    assert node.readers.level("old") == 0


def test_first_contact_by_probe_carries_only_the_highest_offer() -> None:
    """A member we could not greet (the queue held others) is first reached by a probe: one offer beside it,
    which a member of this release answers; the lower offers follow only if it goes unanswered."""
    node = Node(cfg("a"), ("10.0.0.1", 7946), random.Random(3), 0.0)
    node.handle_packet(Packet("peer", (Alive("peer", 1, ("10.0.0.2", 7946)),)), ("10.0.0.2", 7946), 0.0)
    node._hellos.discard("peer")  # (as if its turn had not come)
    node.publish_root_digest("ab" * 32, 1, 1, now=0.0)
    probes = _probe_offers(node, "peer", 1.5)
    assert probes[0] == [ShortIds]  # no coordinate, rows nor digest packets at first contact
    assert any(NetCoordinate in p and PeerCoordinates in p for p in probes[1:])  # unanswered: all offers
    assert node.stats["coordinate_offers"] >= 1 and node.stats["digest_offers"] >= 1


def test_without_short_ids_the_hello_is_the_rows_offer() -> None:
    """push mode on the flood path uses no short ids: its highest offer is an empty rows message (type 18)."""
    base = cfg("a", **SLOW_PROBES)
    flood = replace(base, gossip=replace(base.gossip, broadcast="flood", mode="push"))
    a = Node(flood, ("10.0.0.1", 7946), random.Random(1), 0.0)
    b = Node(replace(flood, name="b"), ("10.0.0.2", 7946), random.Random(2), 0.0)
    a.handle_packet(Packet("b", (Alive("b", 1, b.addr),)), b.addr, 0.0)
    b.handle_packet(Packet("a", (Alive("a", 1, a.addr),)), a.addr, 0.0)
    [hello] = [s for s in _sends(a.tick(0.001)) if s.to == b.addr]
    assert hello.packet.messages == (PeerCoordinates(()),)
    b.handle_packet(hello.packet, a.addr, 0.002)
    assert b.readers.level("a") == PEER_COORDINATES and b.readers.reads("a", DIGESTS)


def test_a_young_cluster_stops_taking_the_flood_fallback_once_greeted() -> None:
    """20 members started within 2 s; writes from 5 s on. Before hellos nearly every write took the flood
    fallback (members had probed few of the others); now none does."""
    n = 20
    sim = Simulation(n, seed=3, config=make_config("lan"))
    sim.start_all(spread=2.0)
    sim.run_until(5.0)
    assert sim.converged()
    before = sum(sim.node(i).stats["tree_flood_fallback"] for i in range(n))
    rng = random.Random(1)
    for w in range(50):
        sim.broadcast(rng.randrange(n), b"w%d" % w * 50)
        sim.run_for(0.05)
    sim.run_for(2.0)
    fallbacks = sum(sim.node(i).stats["tree_flood_fallback"] for i in range(n)) - before
    assert fallbacks <= 2, fallbacks  # (main: 50 of 50)
    knowing = sum(1 for a in range(n) for b in range(n)
                  if a != b and sim.node(a).readers.reads(sim.names[b], SHORT_IDS))
    assert knowing == n * (n - 1)


def test_many_members_forged_at_one_host_get_at_most_the_host_cap_of_hellos() -> None:
    """A forger names 100 members at one victim's host (other ports; their Alives show no reader level): the
    host gets at most HOST_CAP hellos a HOST_WINDOW from us, not 50 a second; the rest are held back, counted
    (`hellos_held`, exported as gossip_node_events_total{event="hellos_held"})."""
    n = 100
    node = node_with_peers(cfg("a", probe_interval=60.0), n, 5)  # p2.. all on host "h"; no probe meanwhile
    times: list[float] = []
    now = 0.0
    while now < 3 * HOST_WINDOW:
        times += [now] * sum(1 for s in _sends(node.tick(now)) if _is_hello(s) and s.to[0] == "h")
        now = max(now + 0.001, node.next_deadline())
    assert HOST_CAP <= len(times) <= 3 * HOST_CAP
    for start in times:
        assert sum(1 for t in times if start <= t < start + HOST_WINDOW) <= HOST_CAP
    assert node.stats["hellos"] == len(times) and node.stats["hellos_held"] == n - HOST_CAP
    assert b'gossip_node_events_total{event="hellos_held"} 90.0' in AgentMetrics(node, AgentStats()).render()


class OneHost:
    """Newcomer "a" and `n` agents all on 127.0.0.1 (a local cluster, a bench) that deliver to each other at
    once; a learns them all at once (a push-pull), each learns a but leaves the greeting to a (as if a's hellos
    went first): what they know of a, and a of them, comes from a's hellos and their answers."""

    def __init__(self, n: int, host_cap: int) -> None:
        def node(name: str, port: int) -> Node:
            return Node(cfg(name, **SLOW_PROBES), ("127.0.0.1", port), random.Random(port), 0.0)
        self.a = node("a", 7000)
        self.a._hellos = HelloQueue(self.a.config.membership.max_members, 0.0, host_cap=host_cap)
        self.nodes = [self.a] + [node(f"p{i}", 7001 + i) for i in range(n)]
        self.by_addr = {x.addr: x for x in self.nodes}
        for other in self.nodes[1:]:
            other._hellos = HelloQueue(0, 0.0)  # (greets nobody)
            self.a.handle_packet(Packet(other.name, (Alive(other.name, 1, other.addr),)), other.addr, 0.0)
            other.handle_packet(Packet("a", (Alive("a", 1, self.a.addr),)), self.a.addr, 0.0)

    def deliver(self, effects: list[Effect], src: Node, now: float) -> None:
        pending = [(src, s) for s in _sends(effects)]
        while pending:
            origin, send = pending.pop()
            dst = self.by_addr.get(send.to)
            if dst is not None:
                pending += [(dst, s) for s in _sends(dst.handle_packet(send.packet, origin.addr, now))]

    def all_know_a(self) -> float:
        """Run until a and every other agent know each other's level; when that was."""
        now = 0.0
        while not all(self.a.readers.reads(x.name, SHORT_IDS) and x.readers.reads("a", SHORT_IDS)
                      for x in self.nodes[1:]):
            node = min(self.nodes, key=lambda x: x.next_deadline())
            now = max(now, node.next_deadline())
            assert now < 10.0
            self.deliver(node.tick(now), node, now)
        return now


def test_a_local_cluster_on_one_host_is_greeted_as_fast_as_without_the_host_cap() -> None:
    """Members that answer show themselves first-hand, which makes room at their host: a newcomer to 60 agents
    on 127.0.0.1 knows every level (and they know its) when it would with no cap at all."""
    capped, uncapped = OneHost(60, HOST_CAP), OneHost(60, 10**6)
    assert capped.all_know_a() == uncapped.all_know_a() <= 1.1  # (~60 hellos: 10 at once, then 50 a second)
    assert capped.a.stats["hellos"] == uncapped.a.stats["hellos"] > 5 * HOST_CAP
    assert capped.a.stats["hellos_held"] == 0


def _hellos_by_key(node: Node, key: str, until: float) -> list[float]:
    """When `node` greeted any address whose host key (core/hosts.py) is `key`, ticking until `until`."""
    times: list[float] = []
    now = 0.0
    while now < until:
        times += [now for s in _sends(node.tick(now)) if _is_hello(s) and host_key(s.to[0]) == key]
        now = max(now + 0.001, node.next_deadline())
    return times


def _at_most_the_cap_a_window(times: list[float]) -> bool:
    return all(sum(1 for t in times if start <= t < start + HOST_WINDOW) <= HOST_CAP for start in times)


@pytest.mark.parametrize(("spellings", "key"), [
    # Every IP spelling of one IPv4 address a decoder could let through (core/hosts.py), mixed.
    (["127.0.0.1", "::ffff:127.0.0.1", "::FFFF:7f00:1", "0::ffff:7f00:0001", "::ffff:127.0.0.1%5"], "127.0.0.1"),
    # One IPv6 address and its spellings and scope ids.
    (["::1", "0::1", "::0001", "::1%5", "::1%77", "0:0:0:0:0:0:0:1"], "::/64"),
    # Every address of one IPv6 /64 (200 'hosts' a forger could name, all one network).
    ([f"2001:db8::{i:x}" for i in range(1, 201)], "2001:db8::/64"),
])
def test_forged_members_at_any_spelling_of_one_host_share_its_one_cap(spellings: list[str], key: str) -> None:
    """The wire takes only canonical IP literals (tests/core/test_ranges.py: `127.1`, `::1%5`, `localhost`...
    are `bad_host`), and the cap counts by host key besides: 100 forged members at spellings of one host, put
    straight into the table, draw at most HOST_CAP hellos a HOST_WINDOW there (they drew 50 a second, one cap
    per spelling: /tmp/rev-guard/amp.py)."""
    node = Node(cfg("a", probe_interval=60.0), ("10.9.9.9", 1), random.Random(5), 0.0)
    for i in range(100):
        addr = (spellings[i % len(spellings)], 7946 + i)
        node.handle_packet(Packet("seed", (Alive(f"f{i}", 1, addr),)), ("10.9.9.8", 1), 0.0)
    times = _hellos_by_key(node, key, 2 * HOST_WINDOW)
    assert HOST_CAP <= len(times) <= 2 * HOST_CAP and _at_most_the_cap_a_window(times)
    assert node.stats["hellos_held"] == 100 - HOST_CAP


def test_members_that_showed_themselves_make_room_at_their_host_whatever_its_spelling() -> None:
    """`vouched` counts by host key too: members at `::ffff:10.0.0.7` that showed a level make room at
    10.0.0.7 (they used to count for their own spelling only)."""
    node = Node(cfg("a", probe_interval=60.0), ("10.9.9.9", 1), random.Random(5), 0.0)
    for i in range(2 * HOST_CAP):  # real ones, spelt the mapped way, that greeted us first-hand
        addr = ("::ffff:10.0.0.7", 8000 + i)
        node.handle_packet(Packet(f"r{i}", (Alive(f"r{i}", 1, addr),)), addr, 0.0)
        node.handle_packet(Packet(f"r{i}", (HELLO,)), ("10.0.0.7", 8000 + i), 0.0)
    for i in range(100):
        node.handle_packet(Packet("seed", (Alive(f"f{i}", 1, ("10.0.0.7", 7000 + i)),)), ("10.9.9.8", 1), 0.0)
    times = _hellos_by_key(node, "10.0.0.7", HOST_WINDOW - 0.01)
    assert len(times) == 3 * HOST_CAP  # HOST_CAP + the 2 * HOST_CAP that showed themselves
