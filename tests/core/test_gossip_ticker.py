"""The gossip ticker keeps its beat through a quiet spell: without immediate forwarding, the first rumor after
idle waits for the next beat, as every later one does (the deadline, unwatched while the queue was empty, went
stale and made that rumor leave at once: a 1,000-member simulation spread it to half the members in 16 ms
instead of ~1 interval)."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.digests import ROOT_PREFIX_BYTES
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Alive, Digest, Packet, Ping, StateRumor
from gossip_agent.core.node import Node


class Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: Digest, now: float) -> None:
        pass


def test_first_rumor_after_idle_waits_for_the_next_beat_without_immediate_forwarding() -> None:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, gossip=replace(base.gossip, immediate_forward=False, broadcast="flood"))
    node = Node(cfg, ("h", 1), random.Random(1), 0.0, Accept())
    for i in range(2, 12):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
        node.handle_packet(Packet(f"p{i}", (Digest(f"p{i}", 1, bytes(ROOT_PREFIX_BYTES), 0, 0),)), ("h", i), 0.0)
    interval = cfg.gossip.interval
    t = 0.0
    while t < 30.0:  # long enough for the join's rumors to drain: then the queue is empty, the node idle
        t += 0.01
        node.tick(t)
    assert node.queue_depth() == 0
    now = t + 7.37 * interval  # a while into the quiet spell, off the beat; the node ticks when it asks to,
    while True:                # as the drivers do (io/runtime.py, sim/): an idle node does not ask for gossip
        t = max(t, node.next_deadline())
        if t >= now:
            t = now
            break
        node.tick(t)
    out = node.handle_packet(Packet("p2", (StateRumor(b"fresh"),)), ("h", 2), now)
    out += node.tick(now)

    def gossip_with_it(effects: list[Effect]) -> list[Send]:  # gossip packets (not probes) carrying it
        return [e for e in effects if isinstance(e, Send) and StateRumor(b"fresh") in e.packet.messages
                and not any(isinstance(m, Ping | Ack) for m in e.packet.messages)]

    assert gossip_with_it(out) == [], "the stale gossip deadline made the rumor leave at once"
    later: list[Effect] = []
    while t < now + interval + 0.02:
        t += 0.005
        later += node.tick(t)
    assert gossip_with_it(later), "it leaves at the next beat"
