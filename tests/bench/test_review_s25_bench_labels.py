"""Review of s25's compact forms in the bench's byte accounting: bench_load multiplies the agents' message counts
by type (`codec.message_label`: by class, so a compact ping counts as "ping") by each type's mean wire size in the
capture (`type_name`: by wire type). The two must label a message alike, else compact pings were weighed at a
whole ping's size (or at the mean of all messages) and the compact types' own captured bytes were left out."""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack

from gossip_agent.core import codec
from gossip_agent.core.messages import Message, NetCoordinate, Packet, PeerCoordinates, Ping

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402

_C = NetCoordinate((0.001,) * 8, 0.0001, 0.5, 0.0)


def test_the_capture_labels_every_form_as_the_agents_count_it() -> None:
    msgs: list[Message] = [Ping(7, "b", "a", ("10.0.0.1", 7946)), Ping(7, "b", "a", ("10.0.0.1", 7946), True),
                           _C, NetCoordinate(_C.vec, _C.height, _C.error, _C.adjustment, True),
                           PeerCoordinates((("c", _C, 1.0),)), PeerCoordinates((("c", _C, 1.0),), True)]
    for m in msgs:
        [wire] = msgpack.unpackb(codec.encode_packet(Packet("a", (m,)))[1:], raw=True)[1]
        assert bench_load.type_name(wire) == codec.message_label(m), m
