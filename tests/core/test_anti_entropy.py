"""Anti-entropy: replicas end equal, only differences travel, bytes grow with d·log n and not n."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core.ae_codec import decode_ae_request, decode_ae_response, encode_ae, encoded_size
from gossip_agent.core.anti_entropy import (
    AeRequest,
    AeResponse,
    AntiEntropyError,
    Limits,
    Session,
    exchange,
    respond,
)
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.merkle import diff

T = 1_700_000_000_000
CONFIG = StateConfig(conflict_policies={"carts/": "siblings"})


def pair(n: int, seed: int = 1, **shape: int) -> tuple[KvStore, KvStore]:
    rng = random.Random(seed)
    a, b = KvStore("a", CONFIG, **shape), KvStore("b", CONFIG, **shape)
    for i in range(n):
        b.apply_remote(a.local_put(f"k{i:06d}", rng.randbytes(16), T))
    a.drain_changes()
    b.drain_changes()
    return a, b


def assert_equal(a: KvStore, b: KvStore) -> None:
    assert a.root_hex() == b.root_hex()
    assert a.all_keys() == b.all_keys()
    for key in a.all_keys():
        assert a.entry(key) == b.entry(key)


def test_equal_replicas_need_one_round_trip() -> None:
    a, b = pair(200)
    report = exchange(a, b, T, size_of=encoded_size)
    assert report.in_sync and report.rounds == 1 and report.pushed == report.pulled == 0
    assert report.bytes_total < 100


def test_differences_both_ways_are_repaired_in_one_session() -> None:
    a, b = pair(500)
    a.local_put("k000001", b"new-on-a", T + 1)
    b.local_put("k000002", b"new-on-b", T + 1)
    a.local_put("only-a", b"x", T + 1)
    b.local_put("only-b", b"y", T + 1)
    a.local_delete("k000003", T + 1)
    a.local_put("carts/1", b"apple", T + 1)
    b.local_put("carts/1", b"pear", T + 1)
    expected = diff(a.merkle, b.merkle)
    assert expected == {"k000001", "k000002", "only-a", "only-b", "k000003", "carts/1"}
    report = exchange(a, b, T + 2, size_of=encoded_size)
    assert_equal(a, b)
    assert b.get("k000003").deleted  # type: ignore[union-attr]
    assert set(b.get("carts/1").values) == {b"apple", b"pear"}  # type: ignore[union-attr]
    assert report.pushed == 5 and report.pulled == 3  # pulls: only-b, k000002 (newer there), carts/1 merge
    assert not report.truncated


def test_an_empty_replica_fetches_whole_subtrees() -> None:
    a, _ = pair(3000)
    empty = KvStore("c", CONFIG)
    report = exchange(empty, a, T, size_of=encoded_size)
    assert_equal(empty, a)
    assert report.pulled == 3000 and report.rounds <= 3
    again = KvStore("d", CONFIG)
    report = exchange(a, again, T)
    assert_equal(a, again)
    assert report.pushed == 3000


def _bytes_for(n: int, d: int, seed: int = 3) -> tuple[int, int, float]:
    a, b = pair(n, seed)
    rng = random.Random(seed)
    for i in rng.sample(range(n), d):
        (a if i % 2 else b).local_put(f"k{i:06d}", b"changed", T + 1)
    report = exchange(a, b, T + 2, size_of=encoded_size)
    assert_equal(a, b)
    entry = 60
    bound = 2 * (d * entry + 2 * 32 * d * math.log2(n / d))
    return report.bytes_total, report.rounds, bound


def test_bytes_grow_with_d_log_n_not_n() -> None:
    small, _, _ = _bytes_for(2_000, 5)
    large, rounds, bound = _bytes_for(32_000, 5)
    assert large < small * 1.8  # 16x the keys: a few more levels, not 16x the bytes
    assert large <= bound and rounds < 20
    few, _, _ = _bytes_for(16_000, 4)
    many, _, _ = _bytes_for(16_000, 64)
    assert many < few * 16 * 1.1  # about linear in d (less: the top levels are shared)


@pytest.mark.parametrize("shape", [{"merkle_bits": 4, "merkle_depth": 4}, {"merkle_bits": 1, "merkle_depth": 12}])
def test_other_tree_shapes_work(shape: dict[str, int]) -> None:
    a, b = pair(1000, **shape)
    a.local_put("k000010", b"x", T + 1)
    b.local_put("new", b"y", T + 1)
    exchange(a, b, T + 2)
    assert_equal(a, b)


def test_shape_mismatch_is_an_error() -> None:
    a = KvStore("a", merkle_depth=4)
    b = KvStore("b", merkle_depth=5)
    with pytest.raises(AntiEntropyError):
        exchange(a, b, T)
    s = Session(a)
    with pytest.raises(AntiEntropyError):
        s.handle(AeResponse((2, 5)), T)


def test_malformed_requests_are_refused() -> None:
    b = KvStore("b")
    shape = (b.merkle.bits, b.merkle.depth)
    for request in (AeRequest(shape, descend=((8, 0),)), AeRequest(shape, listing=((1, 4),)),
                    AeRequest(shape, want=(b"short",)), AeRequest(shape, descend=((0, 0),) * 5000)):
        with pytest.raises(AntiEntropyError):
            respond(b, request, T)


def test_caps_truncate_and_later_sessions_finish_the_job() -> None:
    a, _ = pair(2000)
    empty = KvStore("c", CONFIG)
    limits = Limits(max_entry_bytes=5_000, max_nodes=16)
    sessions = 0
    while empty.root_hex() != a.root_hex():
        report = exchange(empty, a, T, limits=limits)
        sessions += 1
        assert sessions < 100
    assert sessions > 1 and report.pulled > 0
    assert_equal(empty, a)


def test_collected_tombstones_are_dropped_by_the_peer_too() -> None:
    a, b = pair(50)
    a.local_delete("k000007", T + 1)
    exchange(a, b, T + 2)
    a.acknowledge_tombstones(T + 3)
    b.acknowledge_tombstones(T + 3)
    assert a.collect_garbage(T + 3) == 1  # a collects, b has not yet
    exchange(b, a, T + 4)                 # b pushes its tombstone, a says "collected"
    assert b.was_collected("k000007")
    assert_equal(a, b)


def test_the_wire_format_carries_a_whole_session() -> None:
    a, b = pair(800)
    for i in range(0, 800, 97):
        a.local_put(f"k{i:06d}", b"a", T + 1)
        b.local_put(f"z{i}", b"b", T + 1)
    session = Session(a)
    request: AeRequest | None = session.start()
    while request is not None:
        wire_request = decode_ae_request(encode_ae(request))
        assert wire_request == request
        response = respond(b, wire_request, T + 2)
        wire_response = decode_ae_response(encode_ae(response))
        assert wire_response == response
        request = session.handle(wire_response, T + 2)
    assert_equal(a, b)


ops = st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["put", "del"]), st.integers(0, 40)), max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops, st.integers(0, 1000))
def test_any_divergence_is_repaired(script: list[tuple[str, str, int]], base: int) -> None:
    a, b = pair(base % 200 + 1, seed=base)
    for i, (side, op, k) in enumerate(script):
        s = a if side == "a" else b
        key = f"carts/{k}" if k % 3 == 0 else f"k{k:06d}"
        if op == "put":
            s.local_put(key, b"%d" % i, T + i)
        else:
            s.local_delete(key, T + i)
    expected = diff(a.merkle, b.merkle)
    report = exchange(a, b, T + 100, size_of=encoded_size)
    assert_equal(a, b)
    assert report.pushed <= len(expected) and report.rounds < 20
