"""Lowered state.maxKeyBytes / maxValueBytes (hostile review F3): the configured limits refuse local writes only.

An entry written under an earlier, larger limit must still replicate to a replica that starts empty with the
lowered one, and an entry over the decoder's ceilings must cost only itself, never the anti-entropy answer or
push carrying it (that failed every session with the peer: the new replica never converged).
"""

from __future__ import annotations

import random

from gossip_agent.core.ae_codec import decode_ae_request, decode_ae_response, encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeRequest, AeResponse, PushMerge, Session, respond
from gossip_agent.core.codec_limits import CodecLimits
from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.crdt import ORSet
from gossip_agent.core.kvstore import CrdtEntry, KvStore, ValueEntry
from gossip_agent.core.state_codec import encode_rumor
from gossip_agent.core.state_node import StateNode

T = 1_700_000_000_000
LONG_KEY = "lim/" + "k" * 200  # 204 bytes, as in the review's repro
EARLIER = StateConfig(max_key_bytes=4096, max_value_bytes=64 * 1024)
LOWERED = StateConfig(max_key_bytes=128, max_value_bytes=1024)
TIGHT = CodecLimits(max_key_bytes=128, max_value_bytes=1024)  # a decoder with ceilings below the entries


def _entries() -> tuple[ValueEntry, ValueEntry, ValueEntry]:
    writer = KvStore("w", EARLIER)
    return (writer.local_put("ok/a", b"1", T), writer.local_put(LONG_KEY, b"v", T),
            writer.local_put("ok/b", b"x" * 2000, T))


def test_an_answer_holding_one_entry_over_the_ceilings_applies_the_others() -> None:
    first, long_key, big_value = _entries()
    answer = encode_ae(AeResponse((2, 8), entries=(first, long_key, big_value, first)))
    _, entries = open_ae_response(answer, TIGHT)
    assert list(entries.take(10)) == [first, first]
    assert entries.refused == {"key_too_long": 1, "value_too_large": 1}
    assert entries.remaining == 0


def test_a_push_holding_one_entry_over_the_ceilings_merges_the_others() -> None:
    first, long_key, big_value = _entries()
    responder = KvStore("r", LOWERED)
    push = encode_ae(AeRequest((responder.merkle.bits, responder.merkle.depth), push=(long_key, first, big_value)))
    merge = PushMerge(responder, decode_ae_request(push, TIGHT))
    while not merge.done:
        merge.step(T)
    assert merge.refused is None and merge.over_limit == {"key_too_long": 1, "value_too_large": 1}
    assert responder.all_keys() == ["ok/a"]


def _session_over_the_wire(initiator: KvStore, initiator_limits: CodecLimits, responder: KvStore,
                           responder_limits: CodecLimits) -> None:
    """One anti-entropy session, every message encoded and decoded with the receiver's limits (as agents do)."""
    session = Session(initiator)
    request: AeRequest | None = session.start()
    while request is not None:
        answer = respond(responder, decode_ae_request(encode_ae(request), responder_limits), T)
        request = session.handle(decode_ae_response(encode_ae(answer), initiator_limits), T)


def test_a_replica_started_empty_with_lowered_limits_converges_with_one_holding_older_entries() -> None:
    old = KvStore("old", EARLIER, merkle_depth=4)
    old.local_put(LONG_KEY, b"v", T)
    old.local_put("ok/big", b"x" * 2000, T)
    for i in range(40):
        old.local_put(f"ok/key-{i}", f"v{i}".encode(), T)
    old_limits = new_limits = CodecLimits()  # (the fixed ceilings, whatever each agent's config)
    pulled = KvStore("pulls", LOWERED, merkle_depth=4)  # the new replica starts the sessions
    pushed = KvStore("pushed", LOWERED, merkle_depth=4)  # the old one starts them
    for _ in range(3):
        _session_over_the_wire(pulled, new_limits, old, old_limits)
        _session_over_the_wire(old, old_limits, pushed, new_limits)
    for new in (pulled, pushed):
        assert new.root_hex() == old.root_hex()
        assert new.get(LONG_KEY) == old.get(LONG_KEY) and len(new) == 42
        assert new.refused == {}
    # The lowered replica deletes the key it holds; the deletion reaches the old one.
    tombstone = pulled.local_delete(LONG_KEY, T + 1)
    assert tombstone is not None
    _session_over_the_wire(pulled, new_limits, old, old_limits)
    assert old.root_hex() == pulled.root_hex() and old.entry(LONG_KEY).is_tombstone  # type: ignore[union-attr]


def _crdt_over(limits: CodecLimits) -> CrdtEntry:
    writer = KvStore("w", EARLIER)
    writer.update_crdt("crdt/sets/set", ORSet, lambda s, n, _: s.update(n, add=[f"e{i:04d}" for i in range(200)]), T)
    entry = writer.entry("crdt/sets/set")
    assert isinstance(entry, CrdtEntry) and len(encode_rumor(entry)) > limits.max_crdt_bytes
    return entry


def test_a_crdt_state_over_the_ceiling_is_a_counted_skip_on_every_path() -> None:
    """A decoder skips a CRDT state over its ceiling unbuilt; that skip was counted nowhere by reason (an
    answer's `skipped`, a push's bare InvalidEntry, a rumor's StateCodecError). Now each is EntryOverLimit
    (`state_too_large`), counted in gossip_state_refused_total as the store counts its own refusals."""
    limits = CodecLimits(max_crdt_bytes=1024)
    first, _, _ = _entries()
    big = _crdt_over(limits)
    _, entries = open_ae_response(encode_ae(AeResponse((2, 8), entries=(first, big, first))), limits)
    assert list(entries.take(10)) == [first, first] and entries.refused == {"state_too_large": 1}
    responder = KvStore("r", LOWERED)
    push = encode_ae(AeRequest((responder.merkle.bits, responder.merkle.depth), push=(big, first)))
    merge = PushMerge(responder, decode_ae_request(push, limits))
    while not merge.done:
        merge.step(T)
    assert merge.over_limit == {"state_too_large": 1} and responder.all_keys() == ["ok/a"]
    config = AgentConfig.preset_config("lan", name="n")
    node = StateNode(config, KvStore("n@1", config.state), random.Random(1), 0.0, addr=("10.0.0.1", 7000),
                     inline_limit=1200, limits=limits)
    new, _ = node.on_rumor(encode_rumor(big), 0.0, T / 1000)
    assert not new and node.stats.rumors["dropped"] == 1
    assert node.store.refused == {"state_too_large": 1}
