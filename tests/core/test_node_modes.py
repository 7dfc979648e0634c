"""gossip.mode does what its name says: push sends rumors unasked, pull only answers pull requests (and backs
off while idle), push-pull does both. Simulated time only: every test drives the core with explicit `now`."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace

import pytest

from gossip_agent.core.config import AgentConfig, BroadcastPath, GossipMode
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import (
    Ack,
    Alive,
    Dead,
    IHave,
    Message,
    Packet,
    Ping,
    PullRequest,
    ShortIds,
    ShortKind,
    StateRumor,
    Suspect,
)
from gossip_agent.core.node import BUSY_ROUNDS, Node
from gossip_agent.core.pulling import MAX_ANSWER_PACKETS
from gossip_agent.sim import LinkProfile, PayloadLog, Simulation, make_config

RUMOR_TYPES = (Alive, Suspect, Dead, StateRumor)


def mode_config(mode: GossipMode, broadcast: BroadcastPath = "flood") -> AgentConfig:
    base = AgentConfig.preset_config("lan", name="a")
    return replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                   gossip=replace(base.gossip, mode=mode, immediate_forward=True, broadcast=broadcast))


class _Accept:
    """A state delegate to which every payload is new."""

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True


def node_with_peers(mode: GossipMode, peers: int = 5, broadcast: BroadcastPath = "flood") -> Node:
    """Node "a" in `mode` that already knows `peers` alive members p2, p3, ... and has sent everything about
    them (its queue is empty), so later sends show only what the test caused."""
    node = Node(mode_config(mode, broadcast), ("h", 1), random.Random(7), 0.0, _Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
    drain(node, 0.0)
    return node


def drain(node: Node, now: float) -> None:
    """Empty `node`'s rumor queue: every peer pulls from it until it has everything."""
    for _ in range(8):
        for m in node.members():
            if m.name != node.name:
                node.handle_packet(Packet(m.name, (PullRequest(m.name, m.addr),)), m.addr, now)
    assert node.queue_depth() == 0


def is_pull(m: Message) -> bool:
    """A pull request: the old kind, or a short one (type 19) to a member that reads it."""
    return isinstance(m, PullRequest) or (isinstance(m, ShortIds) and m.kind == ShortKind.PULL)


def _rumors(msgs: tuple[Message, ...]) -> list[Message]:
    """The rumors in a packet, less Lifeguard's buddy system (a probe of a suspect tells the suspect itself,
    so it can refute: part of the probe, in every mode)."""
    target = next((m.target for m in msgs if isinstance(m, Ping)), None)
    return [m for m in msgs if isinstance(m, RUMOR_TYPES) and not (isinstance(m, Suspect) and m.name == target)]


def rumor_sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and _rumors(e.packet.messages)]


def run(node: Node, until: float) -> list[tuple[float, Send]]:
    """Tick `node` at each of its deadlines up to `until`; every Send with its time. Its peers ack its pings
    at once (so it suspects nobody) and answer nothing else."""
    sends: list[tuple[float, Send]] = []
    t = node.next_deadline()
    while t <= until:
        effects = node.tick(t)
        for e in list(effects):
            if not isinstance(e, Send):
                continue
            ping = next((m for m in e.packet.messages if isinstance(m, Ping)), None)
            if ping is not None:
                effects += node.handle_packet(Packet(ping.target, (Ack(ping.seq),)), e.to, t)
        sends += [(t, e) for e in effects if isinstance(e, Send)]
        t = max(node.next_deadline(), t + 1e-6)
    return sends


def test_pull_mode_never_sends_a_fresh_write_unasked_only_in_an_answer() -> None:
    node = node_with_peers("pull")
    assert rumor_sends(node.broadcast_state(b"write", 1.0)) == []
    sends = run(node, 10.0)
    assert sends, "the node probes and pulls meanwhile"
    assert rumor_sends([s for _, s in sends]) == [], "a rumor left in a probe or gossip packet"
    # Asked, it answers with the write.
    answer = node.handle_packet(Packet("p3", (PullRequest("p3", ("h", 3)),)), ("h", 3), 10.0)
    [reply] = rumor_sends(answer)
    assert reply.to == ("h", 3) and StateRumor(b"write") in reply.packet.messages


def test_pull_mode_never_sends_a_membership_change_unasked() -> None:
    node = node_with_peers("pull")
    # A new member, heard of: fresh, but not forwarded; our own metadata change: not pushed either.
    assert rumor_sends(node.handle_packet(Packet("p2", (Alive("new", 1, ("h", 99)),)), ("h", 2), 1.0)) == []
    assert rumor_sends(node.update_meta({"zone": "b"}, 1.0)) == []
    assert rumor_sends([s for _, s in run(node, 10.0)]) == []
    answer = node.handle_packet(Packet("p4", (PullRequest("p4", ("h", 4)),)), ("h", 4), 10.0)
    # What it says about them may have moved on meanwhile (nobody answers its probes here), but it is said.
    sent = {m.name for e in rumor_sends(answer) for m in e.packet.messages
            if isinstance(m, (Alive, Suspect, Dead))}
    assert {"new", "a"} <= sent


def gaps_of(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def pull_times(sends: list[tuple[float, Send]]) -> list[float]:
    """When a gossip round's own pull requests left (not those riding on a probe's ping or ack)."""
    return sorted({t for t, s in sends if any(is_pull(m) for m in s.packet.messages)
                   and not any(isinstance(m, Ping | Ack) for m in s.packet.messages)})


def test_idle_pulls_back_off_to_the_probe_interval_and_news_resets_them() -> None:
    """A pull round is `fanout` requests, one peer at a time, spread over the round (each names what the
    answers before it brought). News keeps the full pace for BUSY_ROUNDS rounds after it arrived (not while
    our queue holds it: what we hold for others is no reason to ask), then it backs off. (The requests that
    ride on probes and acks are not counted here: `pull_times` sees packets without a Ping or Ack.)"""
    node = node_with_peers("pull")
    g, m = node.config.gossip, node.config.membership
    f = g.fanout

    def check(times: list[float]) -> None:
        gaps = gaps_of(times)
        k = BUSY_ROUNDS * f  # requests at the full pace after the news (the first one's own gap included)
        assert gaps[:k] == pytest.approx([g.interval / f] * k, abs=1e-5)
        # Doubling from the gossip interval, then capped at the probe interval.
        # (idle, a round's own requests back off to one a probe interval: probes and their acks ask too)
        expected, gap = [], g.interval / f
        while gap < m.probe_interval:
            gap = min(2 * gap, m.probe_interval)
            expected.append(gap)
        assert gaps[k:k + len(expected)] == pytest.approx(expected, abs=1e-5)
        assert set(gaps[k + len(expected):]) == {round(m.probe_interval, 6)}

    times = pull_times(run(node, 20.0))
    check(times)  # (the peers' Alives, at 0, were news)
    # An answer carrying news: the next pull comes one gossip interval (over fanout) later, and stays at that
    # pace for a while, even though our queue still holds the news for our peers; then the pulls back off.
    t = times[-1] + 0.1
    node.handle_packet(Packet("p2", (StateRumor(b"news"),)), ("h", 2), t)
    assert node.queue_depth()
    after = pull_times(run(node, t + 10.0))
    assert after[0] == pytest.approx(t + g.interval / f)
    check(after)


def test_push_pull_idle_sends_no_pull_requests() -> None:
    """push-pull asks only in packets that push rumors: idle, it is as quiet as push."""
    node = node_with_peers("push-pull")
    assert pull_times(run(node, 10.0)) == []


@pytest.mark.parametrize("broadcast", ["flood", "tree"])
@pytest.mark.parametrize("mode", ["push", "push-pull"])
def test_push_modes_forward_fresh_rumors_at_once(mode: GossipMode, broadcast: BroadcastPath) -> None:
    """Flood: to fanout random peers; tree: to the fanout eager neighbours it picked (at its first tick). (Ten
    peers: push-pull asks only in a round that pushes, and with five the round after the forward could pick only
    peers that already held the rumor, depending on the seeded stream.)"""
    node = node_with_peers(mode, peers=10, broadcast=broadcast)
    node.tick(0.5)
    if broadcast == "tree":
        assert len(node.tree.eager) == node.config.gossip.fanout
        for m in node.members():  # every peer reads tree messages (they sent us one)
            if m.name != node.name:
                node.handle_packet(Packet(m.name, (IHave(()),)), m.addr, 0.5)
    sends = rumor_sends(node.broadcast_state(b"write", 1.0))
    assert len(sends) == node.config.gossip.fanout
    assert all(StateRumor(b"write") in s.packet.messages for s in sends)
    # (1.1: after gossip.coalesceDelay, the tree's pushes to the same neighbours no longer wait, core/coalesce.py)
    heard = rumor_sends(node.handle_packet(Packet("p2", (StateRumor(b"heard"),)), ("h", 2), 1.1))
    assert heard and all(s.to != ("h", 2) for s in heard), "forwarded, not back to its source"
    # The pull request rides along only in push-pull (in gossip rounds, which run while rumors are queued:
    # the tree queues none of its state rumors, it repairs them by grafts).
    assert any(is_pull(m) for _, s in run(node, 1.3) for m in s.packet.messages) == (
        mode == "push-pull" and broadcast == "flood")


@pytest.mark.parametrize("seed", [1, 2])
def test_pull_mode_cluster_converges_a_write_without_pushing_it(seed: int) -> None:
    latency = 0.001  # fixed, no jitter: an answer leaves exactly one latency after its request was sent
    sim = Simulation(8, seed=seed, config=make_config("lan", gossip={"mode": "pull"}),
                     link=LinkProfile(latency=latency, jitter=0.0), delegate_factory=lambda i: PayloadLog())
    sim.start_all(seeds=3, spread=2.0)
    assert sim.run_until_condition(sim.converged, timeout=60.0, check_every=0.25) is not None
    unasked: list[str] = []
    # (asker, answerer) node indexes -> when the asker's pull requests to the answerer were sent.
    asked: dict[tuple[int, int], list[float]] = {}
    packets: Counter[tuple[int, int, float]] = Counter()  # answer packets per (answerer, asker, request time)

    def watch(now: float, i: int, send: Send) -> None:
        msgs = send.packet.messages
        if any(is_pull(m) for m in msgs):
            asked.setdefault((i, sim.index[send.to]), []).append(now)
        if _rumors(msgs):
            sent = asked.get((sim.index[send.to], i), [])
            answering = [t for t in sent if abs(now - latency - t) < 1e-9]
            if answering:  # (an answer may take several packets, all at once: core/pulling.py)
                packets[(i, sim.index[send.to], answering[0])] += 1
            else:
                unasked.append(f"{sim.names[i]} -> {send.to} at {now:.3f}: {msgs}")

    sim.on_send.append(watch)
    sim.run_for(10.0)  # idle: pulls back off
    unasked.clear()  # answers to requests sent before we watched
    logs = [d for d in sim.delegates if isinstance(d, PayloadLog)]
    logs[0].on_state_rumor(b"w", sim.now)
    sim.broadcast(0, b"w")
    done = sim.run_until_condition(lambda: all(b"w" in d.first_seen for d in logs), timeout=30.0,
                                   check_every=0.05)
    assert done is not None, "the write did not reach every member by pulls"
    assert unasked == []
    assert max(packets.values()) <= MAX_ANSWER_PACKETS


def test_a_pull_request_is_answered_at_the_askers_known_address_never_at_the_address_it_names() -> None:
    """A forged request naming a third party's address must not make us send it an answer (reflection)."""
    node = node_with_peers("pull")
    node.broadcast_state(b"write", 1.0)
    victim = ("victim", 9)
    answer = node.handle_packet(Packet("p3", (PullRequest("p3", victim),)), ("elsewhere", 1), 2.0)
    [reply] = rumor_sends(answer)
    assert reply.to == ("h", 3)
    # A name we do not know gets nothing, and that is counted.
    assert node.handle_packet(Packet("stranger", (PullRequest("stranger", victim),)), victim, 2.0) == []
    assert node.stats["pull_unknown_sender"] == 1
