"""Session 16: answer entries the initiator refuses are counted (`SessionStats.refused`), so the state node can
tell a session that converged nothing from one that repaired (the real-agent check of the backoff:
tests/hostile/test_s16_refused_answer_backoff.py)."""

from __future__ import annotations

from gossip_agent.core.ae_codec import encode_ae, open_ae_response
from gossip_agent.core.anti_entropy import AeResponse, AnswerMerge, Session, respond
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore, entry_from_plain
from gossip_agent.core.state_node import AE_LIMITS

T0 = 1_700_000_000_000


def test_a_pushed_key_whose_merge_comes_back_refused_is_no_progress() -> None:
    ahead, me = KvStore("ahead@1", StateConfig()), KvStore("me@1", StateConfig())
    me.local_put("shared", b"mine", T0)
    future = entry_from_plain([0, "shared", ["zz", 1], [["zz", 1, T0 + 7_200_000, 0, b"future"]]])
    assert ahead.apply_remote(future)  # (its clock runs 2 h ahead of ours)
    ahead.apply_remote(me.entry("shared"))  # type: ignore[arg-type]
    session = Session(me, AE_LIMITS)
    request = session.start()
    while request is not None:
        request = session.handle(respond(ahead, request, T0), T0)
    s = session.stats
    assert s.repaired == 0 and s.refused >= 1 and me.refused == {"clock_drift": s.refused}
    assert s.pushed - s.push_refused <= s.refused  # (what state_node counts as no progress)


def test_answer_entries_the_decoder_skips_are_counted_refused() -> None:
    peer = KvStore("peer@1", StateConfig())
    wrong_kind = entry_from_plain([0, "crdt/counters/plain", ["zz", 1], [["zz", 1, T0, 0, b"v"]]])
    entries = (peer.local_put("ok", b"v", T0), peer.local_put("bad\x1bkey", b"v", T0), wrong_kind)
    _, source = open_ae_response(encode_ae(AeResponse((4, 4), entries=entries)))
    me = KvStore("me@1", StateConfig())
    merge = AnswerMerge(Session(me, AE_LIMITS), source)
    while not merge.done:
        merge.step(T0)
    assert merge.session.stats.refused == 2 and merge.session.stats.repaired == 1
    assert source.refused == {"invalid_key": 1, "wrong_kind": 1}
