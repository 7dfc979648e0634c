"""Pull mode asks every member in turn (core/pull_targets.py), and first an asker whose request named payloads
we lack (Node._pull_hint). Simulated time: the core is driven with explicit `now`."""

from __future__ import annotations

import itertools
import random

from gossip_agent.core.config import GossipMode
from gossip_agent.core.digests import root_prefix
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Digest, DigestSummary, Packet, Ping, ShortIds, ShortKind
from gossip_agent.core.pull_targets import PullOrder
from gossip_agent.core.readers import COMPACT, SHORT_IDS

from .test_node_modes import is_pull, node_with_peers, run


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def test_every_eligible_name_once_a_cycle_in_a_fresh_order_each_cycle() -> None:
    order, rng = PullOrder(), random.Random(1)
    names = [f"m{i}" for i in range(7)]
    cycles = [[order.next(names, rng, lambda n: True) for _ in names] for _ in range(3)]
    assert all(sorted(c) == names for c in cycles)  # type: ignore[type-var]
    assert len({tuple(c) for c in cycles}) > 1
    gone = {"m1", "m2"}
    picks = [order.next(names, rng, lambda n: n not in gone) for _ in range(10)]
    assert not gone & set(picks)  # type: ignore[arg-type]
    assert order.next(names, rng, lambda n: False) is None


def test_a_request_naming_what_we_lack_makes_its_asker_our_next_target_soon() -> None:
    """After a quiet spell members ask rarely, and the first write spread only as fast as they happened to ask
    its writer (simulator, 8 members: the first writes after idle were the p99, 0.6-0.8 s). The writer asks at
    the full pace naming its write; whoever it asks asks it back next, within a request interval."""
    node = node_with_peers("pull")
    for m in node.members():
        node.readers.show(m.name, SHORT_IDS)
    g = node.config.gossip
    t = 0.0
    while t < 20.0:  # idle: requests back off to one a probe interval / fanout
        t = node._next_gossip
        node.tick(t)
    p5 = node.member("p5")
    assert p5 is not None
    t += 0.01
    node.handle_packet(Packet("p5", (ShortIds(ShortKind.PULL, (12345,)),)), p5.addr, t)
    assert node._next_gossip <= t + g.interval / g.fanout + 1e-9
    out = sends(node.tick(node._next_gossip))
    assert [s.to for s in out if any(is_pull(m) for m in s.packet.messages)] == [p5.addr]


def test_a_request_naming_only_what_we_hold_changes_nothing() -> None:
    node = node_with_peers("pull")
    for m in node.members():
        node.readers.show(m.name, SHORT_IDS)
    t = 0.0
    while t < 20.0:
        t = node._next_gossip
        node.tick(t)
    due = node._next_gossip
    p5 = node.member("p5")
    assert p5 is not None
    node.handle_packet(Packet("p5", (ShortIds(ShortKind.PULL, ()),)), p5.addr, t + 0.01)
    assert node._next_gossip == due


def test_probes_and_their_acks_ask_too_in_pull_mode_only() -> None:
    """Idle, pull mode's own rounds back off to one request a probe interval; the ping of each probe and the
    ack to each ping ask too (a few bytes instead of a packet each: 8 agents idle sent 5 packets/s each, now 3)."""
    modes: tuple[GossipMode, ...] = ("pull", "push-pull", "push")
    for mode in modes:
        node = node_with_peers(mode)
        for m in node.members():
            node.readers.show(m.name, COMPACT)  # members of this release
        out: list[Send] = []
        t = 0.0
        while t < 5.0:
            t = node.next_deadline()
            out += sends(node.tick(t))
        pings = [s for s in out if any(isinstance(m, Ping) for m in s.packet.messages)]
        p3 = node.member("p3")
        assert pings and p3 is not None
        acks = sends(node.handle_packet(Packet("p3", (Ping(7, node.name, "p3", p3.addr),)), p3.addr, t))
        asked = [any(is_pull(m) for m in s.packet.messages) for s in pings + acks]
        assert all(asked) if mode == "pull" else not any(asked), mode


class _Digests:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: Digest, now: float) -> None:
        pass


def test_pull_mode_asks_for_digest_reconciliation_once_a_round_not_on_every_request() -> None:
    """A pull round is `fanout` requests, one gossip call each: only the round's first carries our summary when
    one is due, as one packet a round does in the push modes (each request carried one: 3x the summaries, and
    the answers they draw, of push at 8 agents and 10 writes/s)."""
    node = node_with_peers("pull")
    node.delegate = _Digests()
    f = node.config.gossip.fanout
    assert f > 1
    for m in node.members():
        if m.name != node.name:
            node.readers.show(m.name, COMPACT)  # members of this release
            # Each peer's row: it reads digests, and our table changed (summaries are due once rows are pushed).
            node.handle_packet(Packet(m.name, (Digest(m.name, 1, root_prefix("ab" * 32), 1, 1),)), m.addr, 0.0)
    rounds = [s for _, s in run(node, 10.0) if not any(isinstance(m, Ping | Ack) for m in s.packet.messages)
              and any(is_pull(m) for m in s.packet.messages)]
    carrying = [i for i, s in enumerate(rounds) if any(isinstance(m, DigestSummary) for m in s.packet.messages)]
    assert carrying, "summaries are due: some request carries one"
    assert all(b - a >= f for a, b in itertools.pairwise(carrying)), carrying
