"""Pull mode answers a request with everything queued the asker lacks, up to MAX_ANSWER_PACKETS packets.

One packet per answer capped a member's intake at about `fanout / interval` packets a second (15 one-KiB writes/s
on LAN timings): at 100 writes/s pull mode fell ~9 s behind in the simulator. These tests drive the core with
explicit times; the last one is the simulator's 100 writes/s run."""

from __future__ import annotations

import dataclasses
import random
import statistics
from typing import Any

from gossip_agent.core.broadcast import BroadcastQueue
from gossip_agent.core.config import GossipConfig, setting_of
from gossip_agent.core.effects import Send
from gossip_agent.core.messages import (
    Address,
    Dead,
    Message,
    Packet,
    Ping,
    PullRequest,
    ShortIds,
    ShortKind,
    StateRumor,
)
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE, message_id, short_id
from gossip_agent.core.pulling import MAX_ANSWER_PACKETS
from gossip_agent.sim.cluster import make_config
from gossip_agent.sim.network import LinkProfile
from gossip_agent.sim.state import StateSimulation
from tests.core.test_node_modes import node_with_peers

P3: Address = ("h", 3)


def _payload(i: int) -> bytes:
    return bytes([i % 251]) * 1000  # one to a packet: two do not fit gossip.mtu


def _answer(node: Node, asker: str, addr: Address, now: float, held: tuple[int, ...] = (), *,
            long_form: bool = False, src: Address | None = None, on_ping: bool = False) -> list[Send]:
    """What `node` sends for one pull request from `asker` (table address `addr`): by default a short request
    naming `held`, from the asker's own host; `long_form`: the old kind, which names nothing; `src`: the packet
    came from elsewhere; `on_ping`: the request rides on a probe's ping."""
    request: Message = PullRequest(asker, addr) if long_form else ShortIds(ShortKind.PULL, held)
    msgs: tuple[Message, ...] = (Ping(99, node.name, asker, addr), request) if on_ping else (request,)
    effects = node.handle_packet(Packet(asker, msgs), src or addr, now)
    return [e for e in effects if isinstance(e, Send) and _states([e])]


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
    assert _answer(node, "p3", P3, 2.1) == []


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
    writes = [_payload(i) for i in range(6)]
    for i, w in enumerate(writes):
        node.broadcast_state(w, 1.0 + i * 0.001)
    held = tuple(short_id(message_id(w)) for w in writes[:3])
    sends = _answer(node, "p3", P3, 2.0, held=held)
    assert sorted(_states(sends)) == sorted(writes[3:])


def _queued(node: Node, count: int) -> list[bytes]:
    writes = [_payload(i) for i in range(count)]
    for i, w in enumerate(writes):
        node.broadcast_state(w, 1.0 + i * 0.001)
    return writes


def test_requests_that_did_not_name_what_the_asker_holds_get_one_packet() -> None:
    """A long-form request names nothing, a probe's names at most 16 ids, one at the cap may have left ids out,
    and one not from the asker's host is not believed: more packets would mostly carry copies it holds."""
    cases: dict[str, dict[str, object]] = {
        "long form": {"long_form": True},
        "on a probe": {"on_ping": True},
        "not from its host": {"src": ("elsewhere", 3)},
        "at the id cap": {"held": tuple(range(1, MAX_IDS_PER_MESSAGE + 1))},
    }
    for why, kwargs in cases.items():
        node = node_with_peers("pull")
        _queued(node, 5)
        assert len(_answer(node, "p3", P3, 2.0, **kwargs)) == 1, why  # type: ignore[arg-type]


def test_a_member_we_hold_dead_gets_one_packet_and_no_write_is_retired_by_its_requests() -> None:
    """Sends to a dead member record no `sent_to` (core/broadcast.py), so a loop would repeat one rumor and spend
    its transmits: a forged request naming a dead member retired a write after two requests."""
    node = node_with_peers("pull")
    node.handle_packet(Packet("p2", (Dead("p6", 1, "p2"),)), ("h", 2), 1.0)
    [write] = _queued(node, 1)
    for k in range(12):
        sends = _answer(node, "p6", ("h", 6), 2.0 + k * 0.01)
        assert len(sends) <= 1
    for name, port in (("p2", 2), ("p3", 3), ("p4", 4), ("p5", 5)):
        assert _states(_answer(node, name, ("h", port), 3.0)) == [write], f"{name} never got the write"


def test_a_request_in_our_own_name_is_not_answered() -> None:
    """Answering it marked rumors as sent to us, and the last live peer went without them."""
    node = node_with_peers("pull")
    writes = _queued(node, 3)
    assert _answer(node, node.name, ("h", 1), 2.0, long_form=True) == []
    assert node.stats["pull_unknown_sender"] == 1
    for name, port in (("p2", 2), ("p3", 3), ("p4", 4), ("p5", 5), ("p6", 6)):
        assert sorted(_states(_answer(node, name, ("h", port), 3.0))) == sorted(writes), name


def test_later_packets_of_an_answer_keep_the_pull_limit() -> None:
    """Every peer asks once and gets every write: the answer's later packets must count transmits against pull
    mode's limit (`_answer_limit`), not the push one (4 at this size), or the fifth asker misses writes."""
    node = node_with_peers("pull")
    writes = _queued(node, 3)
    for name, port in (("p2", 2), ("p3", 3), ("p4", 4), ("p5", 5), ("p6", 6)):
        assert sorted(_states(_answer(node, name, ("h", port), 2.0))) == sorted(writes), name


def test_the_documented_bound_is_the_one_in_force() -> None:
    """gossip.mode's description (the CRD and docs are generated from it) states the bound: it is this one."""
    mode = next(f for f in dataclasses.fields(GossipConfig) if f.name == "mode")
    assert f"up to {MAX_ANSWER_PACKETS} packets" in setting_of(mode).why


def test_push_pull_answers_with_one_packet_its_pushes_carry_the_rest() -> None:
    node = node_with_peers("push-pull")
    for i in range(5):
        node.broadcast_state(_payload(i), 1.0 + i * 0.001)
    assert len(_answer(node, "p3", P3, 1.01)) <= 1


def test_pull_mode_keeps_up_with_100_writes_a_second() -> None:
    """Simulator, 10 members in pull mode, 200 one-KiB writes at 100/s through random members: every write
    reaches every member, the median within half a second (one packet per answer: 8-10 s at 300 writes,
    measured; 0.34-0.35 s now, seeds 1-3)."""
    n = 10
    s = StateSimulation(n, seed=1, config=make_config("lan", gossip={"mode": "pull"}),
                        link=LinkProfile(latency=0.0001, jitter=0.0001))
    # Joined as agents join: first contact is where members learn who reads short pull requests.
    s.sim.start_all(seeds=3, spread=2.0)
    assert s.sim.run_until_condition(s.sim.converged, timeout=60.0, check_every=0.5) is not None
    s.sim.run_for(3.0)
    reached: dict[str, dict[int, float]] = {}  # key -> member -> when it first applied it
    for i in range(n):
        store = s.stores[i]
        put = store._put

        def noted(*args: object, _put: object = put, _i: int = i, **kwargs: object) -> object:
            key = args[0] if args else kwargs.get("key")
            if isinstance(key, str):
                reached.setdefault(key, {}).setdefault(_i, s.sim.now)
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
    assert all(len(reached.get(key, {})) == n for key in sent), "a write missed a member"
    t100 = [max(reached[key].values()) - t0 for key, t0 in sent.items()]
    assert statistics.median(t100) < 0.5, f"t100 median {statistics.median(t100):.2f} s"


def test_a_shuffled_take_keeps_critical_first_and_skips_what_the_asker_has() -> None:
    """`take(shuffle=)` (a whole pull answer): the packet is filled in the order the shuffle leaves the
    candidates, critical ones still first; rumors from or already sent to the asker, and those it named, are
    not among them."""
    q = BroadcastQueue(retransmit_mult=4)
    for i in range(6):
        q.enqueue(StateRumor(bytes([i]) * 10), 12, key=f"n{i}", sid=100 + i, source="p3" if i == 5 else None)
    q.enqueue(StateRumor(b"c" * 10), 12, key="c", critical=True)
    held = frozenset({100})  # the asker named n0
    reverse: list[list[object]] = []

    def backwards(items: list[Any]) -> None:
        reverse.append(list(items))
        items.reverse()

    taken = q.take(12 * 3, 10, to="p3", held=held, shuffle=backwards)
    assert taken[0] == StateRumor(b"c" * 10), "the critical rumor goes first"
    # Normal candidates were n4..n1 (newest first; n0 named, n5 came from the asker): reversed, n1 and n2 go.
    assert taken[1:] == [StateRumor(bytes([1]) * 10), StateRumor(bytes([2]) * 10)]
    assert [len(group) for group in reverse] == [1, 4]


def test_a_whole_answer_is_a_random_choice_among_what_the_asker_lacks() -> None:
    """Members asked one after another answer before the asker can name what the others sent: in the queue's
    own order (newest first) they all sent the same rumors. A whole answer picks its further packets at random."""
    node = node_with_peers("pull")
    writes = _queued(node, 3 * MAX_ANSWER_PACKETS)
    newest = writes[-MAX_ANSWER_PACKETS:]
    sends = _answer(node, "p3", P3, 2.0)
    got = _states(sends)
    assert len(got) == MAX_ANSWER_PACKETS and sorted(got) != sorted(newest)
    assert _states(sends[:1]) == [writes[-1]], "the first packet takes the queue's order: the newest write"
