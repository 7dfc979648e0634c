"""Every number has a range, checked where it enters (issue 10, item 1 and the incarnation overflow).

The invariant behind all of these: whatever a client or a peer sends, everything the store holds (and so
every log record and rumor it produces) decodes again. Before the fix, one causal context with an HLC of
2^63-1, ~1,030 counter increments of 2^53, or an incarnation of 2^64-1 broke that for good.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core import codec, crdt, hlc
from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.crdt import MAX_COUNTER_DELTA, GCounter, ORSet, PNCounter
from gossip_agent.core.entry_decoding import EntryOverLimit
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import (
    MAX_COUNTER,
    CausalContext,
    Change,
    Entry,
    InvalidEntry,
    KvStore,
    OutOfRange,
    ValueEntry,
    Version,
    _max_int,
    entry_to_plain,
)
from gossip_agent.core.messages import Alive, Packet, Suspect
from gossip_agent.core.node import Node
from gossip_agent.core.state_codec import decode_change, decode_rumor, encode_change, encode_rumor
from gossip_agent.core.vector_clock import MAX_ACCEPTED_COUNTER, VersionVector

NOW = 1_700_000_000_000
DRIFT = StateConfig().max_clock_drift_ms
# The boundaries the issue names, and their neighbours.
BOUNDARIES = [2**53 - 1, 2**53, 2**53 + 1, 2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64]
edge_ints = st.sampled_from(BOUNDARIES) | st.integers(0, 2**64)


def _round_trips(store: KvStore, key: str) -> None:
    """What the store holds under `key` encodes to a log record that decodes to the same entry, and to a rumor
    that its peers decode to the same entry, or (a counter above MAX_ACCEPTED_COUNTER, which only a write after
    a peer's forgery makes) skip and count, as `counter_too_large`."""
    entry = store.entry(key)
    assert entry is not None
    assert decode_change(encode_change(Change(key, entry, "local"))).entry == entry
    if _largest_counter(entry) <= MAX_ACCEPTED_COUNTER:
        assert decode_rumor(encode_rumor(entry)) == entry
    else:
        with pytest.raises(EntryOverLimit, match="counter") as over:
            decode_rumor(encode_rumor(entry))
        assert over.value.reason == "counter_too_large"


def _largest_counter(entry: Entry) -> int:
    plain = entry_to_plain(entry)
    flat = plain[2] + [n for version in plain[3] for n in version[1:2]] if isinstance(entry, ValueEntry) else plain[3]
    return _max_int(flat)


# -- HLC ------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(wall=edge_ints, logical=st.integers(0, 2**32 - 1))
def test_a_context_from_the_future_is_refused_and_changes_nothing(wall: int, logical: int) -> None:
    store = KvStore("n1")
    store.local_put("k", b"v0", NOW)
    before_clock, before = store.clock, store.entry("k")
    context = CausalContext(VersionVector(), Hlc(wall, logical, "x"))
    if wall - NOW > DRIFT:
        with pytest.raises(OutOfRange, match="maxClockDriftMs"):
            store.local_put("k", b"v1", NOW, context)
        assert store.clock == before_clock and store.entry("k") == before
        assert store.refused["clock_drift"] == 1
    else:
        store.local_put("k", b"v1", NOW, context)
    _round_trips(store, "k")
    # And the next writes still replicate: their rumors decode.
    store.local_put("k", b"v2", NOW + 1)
    _round_trips(store, "k")


def test_the_issue_attack_hlc_2_63_minus_1_is_a_400_not_a_silent_stop() -> None:
    store = KvStore("n1")
    with pytest.raises(OutOfRange):
        store.local_put("k", b"x", NOW, CausalContext(VersionVector(), Hlc(2**63 - 1, 2**32 - 1, "evil")))
    for i in range(3):
        store.local_put("k", b"y%d" % i, NOW + i)
        _round_trips(store, "k")


@given(wall=st.integers(0, 2**62), logical=st.integers(hlc.MAX_LOGICAL - 3, hlc.MAX_LOGICAL))
def test_logical_counter_carries_instead_of_overflowing(wall: int, logical: int) -> None:
    last = Hlc(wall, logical, "a")
    ts = last
    for _ in range(5):
        nxt = hlc.tick(ts, 0)
        assert nxt > ts and nxt.logical <= hlc.MAX_LOGICAL
        ts = nxt
    upd = hlc.update(Hlc(0, 0, "b"), last, wall)
    assert upd > last and upd.logical <= hlc.MAX_LOGICAL
    assert hlc.from_plain(hlc.to_plain(upd)) == upd


@pytest.mark.parametrize("logical", [2**32, 2**53, 2**63 - 1])
def test_decoders_refuse_a_logical_counter_past_its_range(logical: int) -> None:
    with pytest.raises(ValueError, match="logical"):
        hlc.from_plain([NOW, logical, "x"])


@settings(max_examples=100, deadline=None)
@given(wall=edge_ints.filter(lambda w: w < 2**63))
def test_remote_entries_from_the_future_are_counted_drops(wall: int) -> None:
    store = KvStore("n1")
    writer = KvStore("n2")
    entry = writer.local_put("k", b"v", NOW)
    forged = ValueEntry("k", (Version(("n2", 1), Hlc(wall, 0, "n2"), b"v"),), entry.context)
    if wall - NOW > DRIFT:
        with pytest.raises(InvalidEntry, match="ahead"):
            store.apply_remote(forged, NOW)
        assert store.entry("k") is None and store.refused["clock_drift"] == 1
        # Once our clock has caught up, the same (honest but skewed) entry is accepted.
        if wall < 2**62:
            assert store.apply_remote(forged, wall)
    else:
        assert store.apply_remote(forged, NOW)
        _round_trips(store, "k")


# -- counters and dots ----------------------------------------------------------------------------------
def test_pn_counter_steps_above_the_delta_bound_are_refused_and_change_nothing() -> None:
    """The issue's ~1,030 increments of 2^53 overflowed int64; then 1,023 of them used up a replica's room
    for good (F7): a step is now at most MAX_COUNTER_DELTA either way."""
    store = KvStore("n1", StateConfig(max_value_bytes=1 << 20))
    store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.increment(n, MAX_COUNTER_DELTA), NOW)
    store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.increment(n, -MAX_COUNTER_DELTA), NOW + 1)
    before = store.entry("crdt/counters/c")
    for step in (MAX_COUNTER_DELTA + 1, -MAX_COUNTER_DELTA - 1, 2**53, -(2**53)):
        with pytest.raises(OutOfRange, match=f"at most {MAX_COUNTER_DELTA}"):
            store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _, step=step: c.increment(n, step), NOW + 2)
    assert store.entry("crdt/counters/c") == before and store.refused["crdt_invalid"] == 4
    _round_trips(store, "crdt/counters/c")


def test_a_forged_counter_state_at_the_peer_bound_leaves_room_for_a_billion_largest_steps() -> None:
    """F1: a peer's PN-counter state naming this replica at 2^63-1 made every later increment fail. The most
    a peer can name now is MAX_ACCEPTED_COUNTER, and the replica keeps (MAX_COUNTER - that) / MAX_COUNTER_DELTA
    steps of the largest size."""
    forged = PNCounter(GCounter(VersionVector({"n1": MAX_ACCEPTED_COUNTER})),
                       GCounter(VersionVector({"n1": MAX_ACCEPTED_COUNTER})))
    assert crdt.from_plain(crdt.to_plain(forged)) == forged  # the bound itself is accepted
    too_far = PNCounter(GCounter(VersionVector({"n1": MAX_ACCEPTED_COUNTER + 1})))
    with pytest.raises(ValueError, match="counters are 1.."):
        crdt.from_plain(crdt.to_plain(too_far))
    assert (MAX_COUNTER - MAX_ACCEPTED_COUNTER) // MAX_COUNTER_DELTA > 10**9
    store = KvStore("n1", StateConfig(max_value_bytes=1 << 20))
    store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.merge(forged), NOW)
    for i, step in enumerate((1, -1, MAX_COUNTER_DELTA, -MAX_COUNTER_DELTA)):
        store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _, step=step: c.increment(n, step), NOW + 1 + i)
    _round_trips(store, "crdt/counters/c")
    # The overflow point itself is still refused, with the state unchanged.
    top = PNCounter(GCounter(VersionVector({"n1": MAX_COUNTER - 1})))
    store.update_crdt("crdt/counters/t", PNCounter, lambda c, n, _: c.merge(top), NOW)
    with pytest.raises(OutOfRange, match="counter|above"):
        store.update_crdt("crdt/counters/t", PNCounter, lambda c, n, _: c.increment(n, 2), NOW + 1)
    assert store.refused["counter_overflow"] == 1
    _round_trips(store, "crdt/counters/t")


@settings(max_examples=200, deadline=None)
@given(start=edge_ints.filter(lambda v: 0 < v < 2**63),
       amount=st.sampled_from([1, 2**31, MAX_COUNTER_DELTA]) | st.integers(1, MAX_COUNTER_DELTA))
def test_any_accepted_counter_state_decodes(start: int, amount: int) -> None:
    store = KvStore("n1", StateConfig(max_value_bytes=1 << 20))
    store.update_crdt("crdt/counters/c", PNCounter,
                      lambda c, n, _: c.merge(PNCounter(GCounter(VersionVector({n: start})))), NOW)
    try:
        store.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.increment(n, amount), NOW + 1)
        assert start + amount <= MAX_COUNTER
    except OutOfRange:
        assert start + amount > MAX_COUNTER
        value = store.get_crdt("crdt/counters/c")
        assert isinstance(value, PNCounter) and value.value() == start  # unchanged
    _round_trips(store, "crdt/counters/c")


def test_a_context_that_exhausts_our_dots_is_refused() -> None:
    """Only this replica's own state (restored from its records) can hold its counter at the overflow point:
    no decoder of peers' input accepts one there, and a client's context is never stored (session 14)."""
    store = KvStore("n1")
    context = CausalContext(VersionVector({"n1": MAX_COUNTER}), Hlc(NOW, 0, "n1"))
    assert store.local_put("k", b"x", NOW, context).context == VersionVector({"n1": 1})
    top = ValueEntry("k", (Version(("n1", MAX_COUNTER), Hlc(NOW, 1, "n1"), b"x"),), VersionVector({"n1": MAX_COUNTER}))
    store.replay(Change("k", top, "local"))
    with pytest.raises(OutOfRange, match="counter"):
        store.local_put("k", b"y", NOW, context)
    assert store.entry("k") == top
    # An OR-set whose (merged) context holds our dot at the top refuses the next add the same way.
    remote = ORSet({}, VersionVector({"n1": MAX_COUNTER}))
    store.update_crdt("crdt/sets/s", ORSet, lambda s, n, _: s.merge(remote), NOW)
    with pytest.raises(OutOfRange):
        store.update_crdt("crdt/sets/s", ORSet, lambda s, n, _: s.add(n, "e"), NOW + 1)
    _round_trips(store, "crdt/sets/s")


# -- incarnations and hosts (UDP codec) -----------------------------------------------------------------
def _alive_bytes(incarnation: int, host: str = "127.0.0.1") -> bytes:
    body = codec._packer.pack(("evil", [(int(codec.MessageType.ALIVE), "victim", incarnation, host, 7946, {})]))
    return bytes((codec.VERSION,)) + body


@pytest.mark.parametrize("incarnation", [2**63, 2**64 - 1])
def test_incarnations_without_room_are_a_counted_drop(incarnation: int) -> None:
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_packet(_alive_bytes(incarnation))
    assert err.value.reason == "out_of_range"


def test_refuting_the_largest_incarnation_saturates_and_still_encodes() -> None:
    cfg = AgentConfig.preset_config("lan", name="victim")
    node = Node(cfg, ("127.0.0.1", 7946), random.Random(1), 0.0)
    packet = codec.decode_packet(_alive_bytes(codec.MAX_INCARNATION))
    node.handle_packet(packet, ("127.0.0.1", 9999), 1.0)
    node.handle_packet(Packet("evil", (Suspect("victim", codec.MAX_INCARNATION, "evil"),)), ("127.0.0.1", 9999), 2.0)
    assert node.incarnation == codec.MAX_INCARNATION
    encoded = codec.encode_push_pull(node.push_pull_state(False))  # used to raise OverflowError forever
    assert codec.decode_push_pull(encoded, 1 << 20).members[0].incarnation == codec.MAX_INCARNATION
    node.update_meta({"x": "y"}, 3.0)
    assert node.incarnation == codec.MAX_INCARNATION


@pytest.mark.parametrize("host", [
    "é" * 64, "a" * 254, "", "a b", "host\x00", "-bad", "exa mple.com", "1.2.3.4 ",
    # One IP, one spelling (core/hosts.py): names and the other spellings the socket layer would also reach.
    "localhost", "LOCALHOST", "agent-0.agents.ns.svc.cluster.local", "a" * 63, "127.1", "127.0.1", "2130706433",
    "0x7f000001", "0177.0.0.1", "127.0.0.01", "127.0.0.1.", "::ffff:127.0.0.1", "::ffff:7f00:1", "::1%5",
    "::1%lo", "0::1", "::0001", "0:0:0:0:0:0:0:1", "2001:DB8::1", "2001:0db8::1", "fe80::1%eth0"])
def test_hosts_are_validated_on_decode(host: str) -> None:
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_packet(_alive_bytes(1, host))
    assert err.value.reason == "bad_host"


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "::1", "fe80::1", "2001:db8::1", "::"])
def test_valid_hosts_pass(host: str) -> None:
    assert codec.decode_packet(_alive_bytes(1, host)).messages[0] == Alive("victim", 1, (host, 7946), {})


# -- member table cap -----------------------------------------------------------------------------------
def test_member_table_is_capped_with_a_counted_refusal() -> None:
    cfg = AgentConfig.preset_config("lan", name="me")
    cfg = dataclasses.replace(cfg, membership=dataclasses.replace(cfg.membership, max_members=20))
    node = Node(cfg, ("127.0.0.1", 7946), random.Random(1), 0.0)
    alives = tuple(Alive(f"fake{i}", 1, ("10.0.0.1", 1000 + i), {}) for i in range(100))
    node.handle_packet(Packet("evil", alives), ("10.0.0.1", 1), 1.0)
    assert len(node.table) == 20
    assert node.stats["member_cap"] == 81
    # Known members still get updates past the cap.
    node.handle_packet(Packet("evil", (Alive("fake1", 2, ("10.0.0.1", 1001), {"a": "b"}),)), ("10.0.0.1", 1), 2.0)
    m = node.member("fake1")
    assert m is not None and m.incarnation == 2
