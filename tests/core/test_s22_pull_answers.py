"""Pull mode answers a request with everything queued the asker lacks, up to MAX_ANSWER_PACKETS packets.

One packet per answer capped a member's intake at about `fanout / interval` packets a second (15 one-KiB writes/s
on LAN timings): at 100 writes/s pull mode fell ~9 s behind in the simulator. These tests drive the core with
explicit times; the last one is the simulator's 100 writes/s run."""

from __future__ import annotations

import dataclasses
import random
import statistics

from gossip_agent.core.config import GossipConfig, setting_of
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Address, Packet, PullRequest, ShortIds, ShortKind, StateRumor
from gossip_agent.core.plumtree import message_id, short_id
from gossip_agent.core.pulling import MAX_ANSWER_PACKETS
from gossip_agent.sim.cluster import make_config
from gossip_agent.sim.network import LinkProfile
from gossip_agent.sim.state import StateSimulation
from tests.core.test_node_modes import node_with_peers

P3: Address = ("h", 3)


def _payload(i: int) -> bytes:
    return bytes([i % 251]) * 1000  # one to a packet: two do not fit gossip.mtu


def _answer(node: object, asker: str, addr: Address, now: float,
            held: tuple[int, ...] | None = None) -> list[Send]:
    request = PullRequest(asker, addr) if held is None else ShortIds(ShortKind.PULL, held)
    effects: list[Effect] = node.handle_packet(Packet(asker, (request,)), addr, now)  # type: ignore[attr-defined]
    return [e for e in effects if isinstance(e, Send)]


def _states(sends: list[Send]) -> list[bytes]:
    return [m.payload for s in sends for m in s.packet.messages if isinstance(m, StateRumor)]


def test_pull_answer_carries_every_queued_write_the_asker_lacks_in_packets_of_its_own() -> None:
    node = node_with_peers("pull")
    writes = [_payload(i) for i in range(5)]
    for i, w in enumerate(writes):
        node.broadcast_state(w, 1.0 + i * 0.001)
    sends = _answer(node, "p3", P3, 2.0)
    assert sorted(_states(sends)) == sorted(writes), "one packet per answer left four writes queued"
    assert len(sends) == 5 and {s.to for s in sends} == {P3}
    # Each went once to the asker: asked again, nothing is sent again.
    assert _states(_answer(node, "p3", P3, 2.1)) == []


def test_pull_answer_is_bounded_and_the_next_request_gets_the_rest() -> None:
    node = node_with_peers("pull")
    writes = [_payload(i) for i in range(MAX_ANSWER_PACKETS + 4)]
    for i, w in enumerate(writes):
        node.broadcast_state(w, 1.0 + i * 0.001)
    first = _answer(node, "p3", P3, 2.0)
    assert len(first) == MAX_ANSWER_PACKETS
    second = _answer(node, "p3", P3, 2.1)
    assert len(second) == 4
    assert sorted(_states(first) + _states(second)) == sorted(writes)


def test_pull_answer_leaves_out_what_the_request_names_in_every_packet() -> None:
    node = node_with_peers("pull")
    # p3 reads short ids once it has sent us one (core/readers.py); its request names three of the six.
    writes = [_payload(i) for i in range(6)]
    for i, w in enumerate(writes):
        node.broadcast_state(w, 1.0 + i * 0.001)
    held = tuple(short_id(message_id(w)) for w in writes[:3])
    sends = _answer(node, "p3", P3, 2.0, held=held)
    assert sorted(_states(sends)) == sorted(writes[3:])


def test_the_documented_bound_is_the_one_in_force() -> None:
    """gossip.mode's description (the CRD and docs are generated from it) states the bound: it is this one."""
    mode = next(f for f in dataclasses.fields(GossipConfig) if f.name == "mode")
    assert f"up to {MAX_ANSWER_PACKETS} packets" in setting_of(mode).why


def test_push_pull_answers_with_one_packet_its_pushes_carry_the_rest() -> None:
    node = node_with_peers("push-pull")
    for i in range(5):
        node.broadcast_state(_payload(i), 1.0 + i * 0.001)
    sends = [s for s in _answer(node, "p3", P3, 1.01) if _states([s])]
    assert len(sends) <= 1


def test_pull_mode_keeps_up_with_100_writes_a_second() -> None:
    """Simulator, 10 members in pull mode, 200 one-KiB writes at 100/s through random members: every write
    reaches every member, the median within half a second (one packet per answer: ~9 s, measured)."""
    n = 10
    s = StateSimulation(n, seed=1, config=make_config("lan", gossip={"mode": "pull"}),
                        link=LinkProfile(latency=0.0001, jitter=0.0001))
    s.start_joined()
    s.sim.run_for(3.0)
    reached: dict[str, list[float]] = {}
    for i in range(n):
        store = s.stores[i]
        put = store._put

        def noted(*args: object, _put: object = put, **kwargs: object) -> object:
            key = args[0] if args else kwargs.get("key")
            if isinstance(key, str):
                reached.setdefault(key, []).append(s.sim.now)
            return _put(*args, **kwargs)  # type: ignore[operator]

        store._put = noted  # type: ignore[method-assign]
    rng = random.Random(1)
    sent: dict[str, float] = {}
    for k in range(200):
        key = f"b/{k}"
        sent[key] = s.sim.now
        s.put(rng.randrange(n), key, bytes(1024))
        s.sim.run_for(0.01)
    s.sim.run_for(10.0)
    assert all(len(reached.get(key, [])) == n for key in sent), "a write missed a member"
    t100 = [max(reached[key]) - t0 for key, t0 in sent.items()]
    assert statistics.median(t100) < 0.5, f"t100 median {statistics.median(t100):.2f} s"
