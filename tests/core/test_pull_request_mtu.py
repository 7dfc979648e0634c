"""A pull request naming what the asker holds stays within gossip.mtu (core/flooding.py `_gossip`).

A short pull request (wire type 19) names up to 128 short ids of the state payloads received lately: 512
bytes. With a small mtu (its minimum is 576) and a name of a few dozen bytes, the request with its digests
came to 668 bytes: larger than the largest packet the operator allowed. It now names the newest ids that fit
beside the digest allowance.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Send
from gossip_agent.core.messages import Alive, Packet, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node


class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: object, now: float) -> None:
        pass


@pytest.mark.parametrize(("mtu", "name_len"), [(576, 20), (576, 60), (1400, 128)])
def test_every_pull_request_fits_the_mtu(mtu: int, name_len: int) -> None:
    base = AgentConfig.preset_config("lan", name="a" * name_len)
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, mode="pull", mtu=mtu))
    node = Node(cfg, ("10.0.0.1", 7946), random.Random(3), 0.0, _Accept())
    for i in range(2, 10):
        addr = (f"10.0.0.{i}", 7946)
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, addr), ShortIds(ShortKind.OFFER))), addr, 0.0)
    node.publish_root_digest("ab" * 32, 10, 1_700_000_000_000, now=0.0)
    for k in range(200):  # more received payloads than a request may name
        node.handle_packet(Packet("p2", (StateRumor(b"x%d" % k),)), ("10.0.0.2", 7946), 0.01 + k / 10_000)
    sizes, named = [], 0
    t = 0.05
    for _ in range(200):
        t += 0.01
        for e in node.tick(t):
            if isinstance(e, Send):
                pulls = [m for m in e.packet.messages if isinstance(m, ShortIds) and m.kind == ShortKind.PULL]
                if pulls:
                    sizes.append(len(codec.encode_packet(e.packet)))
                    named = max(named, len(pulls[0].ids))
    assert sizes and max(sizes) <= mtu, (max(sizes), mtu)
    if name_len <= 20:
        assert named > 0  # still names what it holds, when the packet has room (a long name may leave none)
    if mtu == 1400:
        assert named == 128  # the default mtu: every id it may name
