"""Node: the critical class (queue order, twice the fanout, type 13 only to members that read new types) and
the outgoing byte budget (respected over a window while probes still go; critical before normal; deferrals
and drops counted)."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig, BroadcastPath
from gossip_agent.core.digests import ROOT_PREFIX_BYTES
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Alive, Digest, Graft, Packet, Ping, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import message_id
from gossip_agent.core.send_budget import SendBudget


class Accept:
    """A state layer that takes every rumor as new."""

    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: Digest, now: float) -> None:
        pass


def config(*, rate: int = 0, burst: int = 0, immediate_forward: bool = True, fanout: int = 3,
           retransmit_mult: int = 4, broadcast: BroadcastPath = "flood") -> AgentConfig:
    """The flood path unless told: these tests count queue sends (the tree path has its own tests below)."""
    base = AgentConfig.preset_config("lan", name="a")
    return replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                   gossip=replace(base.gossip, max_bytes_per_second=rate, max_burst_bytes=burst,
                                  immediate_forward=immediate_forward, fanout=fanout,
                                  retransmit_mult=retransmit_mult, broadcast=broadcast))


def node_with_peers(cfg: AgentConfig, peers: int, *, readers: int = 0, seed: int = 1) -> Node:
    """Node "a" knowing alive members p2, p3, ...; the first `readers` of them have sent a digest (so they
    read new message types)."""
    node = Node(cfg, ("h", 1), random.Random(seed), 0.0, Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
    for i in range(2, 2 + readers):
        node.handle_packet(Packet(f"p{i}", (Digest(f"p{i}", 1, bytes(ROOT_PREFIX_BYTES), 0, 0),)), ("h", i), 0.0)
    # Forget the join announcements and what they cost: the tests below look at what they queue themselves.
    while node.queue_depth():
        node.queue.take(10**6, 1)
    node.queue.sent_bytes.update(dict.fromkeys(node.queue.sent_bytes, 0))
    node.stats.clear()
    node.send_budget = SendBudget(node.send_budget.rate, node.send_budget.burst, 0.0)  # full again
    return node


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def state_rumors(send: Send) -> list[StateRumor]:
    return [m for m in send.packet.messages if isinstance(m, StateRumor)]


def test_critical_write_is_forwarded_to_twice_the_fanout() -> None:
    node = node_with_peers(config(fanout=3), 12)
    normal = sends(node.broadcast_state(b"n" * 100, 1.0))
    critical = sends(node.broadcast_state(b"c" * 100, 2.0, critical=True))
    assert len(normal) == 3
    assert len(critical) == 6
    assert all(StateRumor(b"c" * 100) in state_rumors(s) for s in critical)


def test_relayed_critical_rumor_keeps_its_class_and_wide_forward() -> None:
    node = node_with_peers(config(fanout=2), 10)
    out = sends(node.handle_packet(Packet("p2", (StateRumor(b"x" * 50, critical=True),)), ("h", 2), 1.0))
    assert len(out) == 4  # 2 x fanout, never back to p2
    assert all(s.to != ("h", 2) for s in out)
    assert node.queue.pending("critical") == 1 and node.queue.pending("normal") == 0


def test_type_13_only_to_members_known_to_read_new_types() -> None:
    node = node_with_peers(config(fanout=8, retransmit_mult=8), 8, readers=4)
    out = sends(node.broadcast_state(b"c", 1.0, critical=True))
    assert len(out) == 8
    for s in out:
        [rumor] = state_rumors(s)
        reader = s.to[1] <= 5  # p2..p5 sent digests
        assert rumor.critical is reader
        decoded = codec.decode_packet(codec.encode_packet(s.packet))
        assert any(m == StateRumor(b"c", critical=reader) for m in decoded.messages)


def test_critical_rumors_jump_the_queue() -> None:
    node = node_with_peers(config(immediate_forward=False), 4)
    for i in range(5):
        node.broadcast_state(bytes([i]) * 600, 0.1)
    node.broadcast_state(b"C" * 600, 0.1, critical=True)
    first = node.queue.take(700, 5, to="p2")
    assert first == [StateRumor(b"C" * 600, critical=True)]


def _drive(node: Node, until: float, *, write_every: float = 0.0, critical_every: int = 0,
           size: int = 400) -> dict[str, int]:
    """Run `node` to virtual time `until`: every peer acks every ping at once; a write every `write_every`
    seconds (each `critical_every`-th critical). Returns counts and the bytes of every packet sent."""
    counts = {"bytes": 0, "pings": 0, "rumor_packets": 0}
    next_write, writes = 0.0, 0
    now = 0.0
    while now < until:
        now = min(node.next_deadline(), next_write if write_every else until, until)
        effects: list[Effect] = []
        if write_every and now >= next_write:
            writes += 1
            crit = bool(critical_every) and writes % critical_every == 0
            effects += node.broadcast_state(b"%08d" % writes + bytes(size - 8), now, key=f"k{writes}",
                                            critical=crit)
            next_write = now + write_every
        effects += node.tick(now)
        while effects:
            effect = effects.pop(0)
            if not isinstance(effect, Send):
                continue
            counts["bytes"] += len(codec.encode_packet(effect.packet))
            if any(isinstance(m, StateRumor) for m in effect.packet.messages):
                counts["rumor_packets"] += 1
            for m in effect.packet.messages:
                if isinstance(m, Ping):
                    counts["pings"] += 1
                    effects += node.handle_packet(Packet(m.target, (Ack(m.seq),)), effect.to, now)
    return counts


def test_budget_is_respected_over_a_window_and_probes_still_go() -> None:
    rate, window = 4000, 20.0
    limited = node_with_peers(config(rate=rate, burst=4000), 8)
    free = node_with_peers(config(), 8)
    # 20 writes/s of 400 B for 20 s: 8 KB/s of fresh rumors (each sent to several peers), over the budget.
    got = _drive(limited, window, write_every=0.05)
    unlimited = _drive(free, window, write_every=0.05)
    # Never more than the burst plus what the window earned (the codec's bytes are below the charged
    # upper bound: the header estimate includes the encryption envelope's reserve).
    assert got["bytes"] <= 4000 + rate * window
    assert got["bytes"] >= 0.6 * rate * window  # and the budget is used, not wasted
    assert unlimited["bytes"] > 3 * got["bytes"]
    # Failure detection does not starve: one probe a second, as without a budget.
    assert got["pings"] >= window - 2 and abs(got["pings"] - unlimited["pings"]) <= 2
    assert limited.stats["probe_failures"] == 0
    assert limited.stats["budget_deferred_normal"] > 0
    assert free.stats.get("budget_deferred_normal", 0) == 0


def test_under_budget_critical_goes_before_normal_and_deferrals_and_drops_are_counted() -> None:
    node = node_with_peers(config(rate=2000, burst=2000, immediate_forward=False), 6)
    node.queue.max_items = 50
    _drive(node, 5.0, write_every=0.02, critical_every=10)  # 50 writes/s, every 10th critical
    sent = node.queue.sent_bytes
    # Critical writes are a tenth of the writes but went out in full; normal ones mostly waited.
    assert node.stats["rumor_bytes_critical"] == sent["critical"] > 0
    assert sent["critical"] >= sent["normal"]
    assert node.stats["budget_deferred_normal"] > 0
    assert node.stats["rumors_dropped_normal"] > 0  # the queue (50 here) overflowed: evicted, counted
    assert node.stats["rumors_dropped_critical"] == 0


def test_tree_path_critical_rumor_goes_on_to_its_eager_neighbours_as_critical() -> None:
    """Its writer sent it to every member of this small cluster (core/critical.py, where larger clusters are
    tested): a relay pushes it along the tree, the repair of a lost direct copy, with its class."""
    node = node_with_peers(config(fanout=2, broadcast="tree"), 10, readers=10)
    node.tick(0.5)  # the tree picks its neighbours
    eager = set(node.tree.eager)
    assert eager
    out = sends(node.handle_packet(Packet("p2", (StateRumor(b"y" * 50, critical=True),)), ("h", 2), 1.0))
    to = [s.to for s in out if state_rumors(s)]
    assert len(to) == len(set(to)) == len(eager - {"p2"})
    assert ("h", 2) not in to
    assert all(r.critical for s in out for r in state_rumors(s))


def test_tree_path_pushes_of_normal_writes_wait_for_the_budget_critical_ones_spend_the_reserve() -> None:
    node = node_with_peers(config(fanout=3, broadcast="tree", rate=2_000, burst=4_000), 10, readers=10)
    node.tick(0.5)
    pushed = 0
    for i in range(20):
        pushed += sum(1 for s in sends(node.broadcast_state(bytes([i]) * 900, 1.0)) if state_rumors(s))
    assert pushed <= 4, "the budget let every normal push go"
    assert node.stats["tree_pushes_deferred"] > 0 and node.stats["budget_deferred_normal"] > 0
    # Normal pushes left a quarter of the burst: a critical write still reaches its neighbours at once.
    critical = sends(node.broadcast_state(b"C" * 200, 1.0, critical=True))
    assert sum(1 for s in critical if state_rumors(s)) >= 3


def test_tree_path_budget_holds_over_a_window_with_grafts_and_coalesced_pushes() -> None:
    """Every payload the tree sends passes the budget: deferred pushes grafted back by neighbours, and pushes
    that waited in the coalescer, cannot carry the agent past gossip.maxBytesPerSecond (they did: the
    budget only checked a push when it was queued, and answered grafts in full)."""
    rate = 4_000
    node = node_with_peers(config(fanout=3, broadcast="tree", rate=rate, burst=1_400), 10, readers=10)
    node.tick(0.5)
    start_tokens = node.send_budget.tokens
    sent = 0
    t = 1.0
    for i in range(200):  # 20 s of 10 writes/s of 500 B, and every neighbour asks for all of them back
        t = 1.0 + i * 0.1
        payload = i.to_bytes(2, "big") * 250
        effects = node.broadcast_state(payload, t)
        for peer in ("p2", "p3", "p4"):
            effects += node.handle_packet(Packet(peer, (Graft((message_id(payload),)),)), ("h", int(peer[1:])), t)
        effects += node.tick(t + 0.05)
        sent += sum(codec.message_size(r) for s in sends(effects) for r in state_rumors(s))
    window = t - 1.0
    assert sent <= rate * window + start_tokens + 2_000, (sent, rate * window)
    assert node.stats["budget_deferred_normal"] > 0  # held back, and counted where the metrics look
