"""The anti-entropy asker against hostile answers (io/state_service.py `_take_answer`,
core/ae_codec.open_ae_response, core/anti_entropy.AnswerMerge and `check_answer`).

The responder was bounded before: pushes counted from their array header, merged 64 at a time, decoded
field by field. The asker decoded and merged a whole answer (up to 16 MiB) in one go, so a buggy or hostile
peer it chose as a partner could:
- send more entries than it could honestly hold (read from the header, refused before any is decoded), or
  just very many (an honest-shaped answer of 60k tiny entries was decoded and merged in one loop turn);
- nest empty arrays in a field meant to be flat (~64 bytes of memory per byte of body once built);
- put 100k versions in one entry (built before the per-entry bound was checked);
- answer what it was not asked: children of other nodes (drawing pushes of our subtrees), collected keys we
  never pushed (collecting our tombstones early).
Each is now a counted drop (`gossip_packets_dropped_total{reason="antientropy_answer"}`) that changes nothing
here, or (the big honest answer) merged `MERGE_CHUNK` entries per loop turn. Measured without timing: by what the
store holds, by tracemalloc's peak, and by how many entries land between two turns of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

import msgpack
import pytest
from aiohttp import web

from gossip_agent.core.ae_codec import decode_ae_request, decode_ae_response
from gossip_agent.core.anti_entropy import MERGE_CHUNK, AeRequest, Session
from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore, entry_to_plain
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, FRAME, StateService
from tests.hostile.agent_support import serving, with_state
from tests.hostile.core_support import array_header, peak_memory_refusing

T0 = 1_700_000_000_000
SHAPE = [4, 4]  # the default tree (bits, depth)


def _answer(*, children: bytes = b"\x90", listings: bytes = b"\x90", entries: bytes = b"\x90",
            collected: bytes = b"\x90", root: bytes = b"\xc0") -> bytes:
    """An anti-entropy answer (format tag 4, 8 fields) with these raw fields."""
    return b"\x98\x04" + bytes(msgpack.packb(SHAPE)) + root + children + listings + entries + collected + b"\xc2"


def _tiny_entries(n: int, prefix: str = "e") -> bytes:
    """`n` valid entries of a one-byte value, written by another replica (one write, under `n` keys)."""
    plain = entry_to_plain(KvStore("peer@1", StateConfig()).local_put("e", b"v", T0))
    return array_header(n) + b"".join(msgpack.packb([plain[0], f"{prefix}{i}", *plain[2:]], use_bin_type=True)
                                for i in range(n))


@contextlib.asynccontextmanager
async def _peer(answer: Callable[[int], bytes]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A fake peer on 127.0.0.1 answering its n-th anti-entropy request with `answer(n)`; yields its port
    and the request bodies it got."""
    got: list[bytes] = []

    async def serve(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(body=FRAME + answer(len(got) - 1), content_type="application/octet-stream")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post(AE_PATH, serve)
    async with serving(app) as port:
        yield port, got


@contextlib.asynccontextmanager
async def _asker(keys: int = 0) -> AsyncIterator[tuple[Agent, StateService]]:
    async with with_state({"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "name": "asker"}) as (agent, svc):
        for i in range(keys):
            svc.put(f"mine{i}", b"x", None)
        yield agent, svc


def _dropped(agent: Agent) -> int:
    return agent.stats.dropped["antientropy_answer"]


async def test_an_entry_count_the_body_cannot_hold_is_a_counted_drop() -> None:
    """4 billion entries announced in a few bytes: refused from the header."""
    async with _asker() as (agent, svc), _peer(lambda n: _answer(entries=b"\xdd\xff\xff\xff\xff\x90")) as (port, _):
        assert not await svc.sync_with(("127.0.0.1", port))
        assert _dropped(agent) == 1


async def test_more_entries_than_an_answer_may_carry_are_refused_before_any_is_merged() -> None:
    """70k honest-looking tiny entries (~1.7 MB, within the byte cap): past `max_answer_entries`, refused
    before a single one is decoded; the store holds none of them."""
    body = _answer(entries=_tiny_entries(70_000))
    async with _asker() as (agent, svc), _peer(lambda n: body) as (port, _):
        assert not await svc.sync_with(("127.0.0.1", port))
        assert _dropped(agent) == 1
        assert svc.store.stats().keys == 0


async def test_a_large_answer_is_merged_a_chunk_per_loop_turn() -> None:
    """5,000 entries (within every bound) all merge, but never more than MERGE_CHUNK between two turns of
    the event loop (they were all decoded and merged in one)."""
    n = 5_000
    body = _answer(entries=_tiny_entries(n))
    async with _asker() as (_agent, svc), _peer(lambda i: body) as (port, _):
        seen: list[int] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                seen.append(svc.store.stats().keys)
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            await svc.sync_with(("127.0.0.1", port))
        finally:
            done.set()
            await task
        assert svc.store.stats().keys == n
        seen.append(n)
        steps = [b - a for a, b in itertools.pairwise(seen)]
        assert max(steps) <= MERGE_CHUNK, max(steps)


async def test_children_of_nodes_not_asked_are_a_counted_drop_and_draw_no_push() -> None:
    """The first request sends our root only: an answer with the children of 16 other nodes (each claiming
    no keys, which made us push everything under them) is refused; nothing more is sent."""
    child = b"".join(msgpack.packb([1, i, bytes(32 * 16), bytes(16)], use_bin_type=True) for i in range(16))
    async with _asker(keys=50) as (agent, svc), _peer(lambda n: _answer(children=array_header(16) + child,
                                                                         root=msgpack.packb(bytes(32)))) as (port, got):
        assert not await svc.sync_with(("127.0.0.1", port))
        assert _dropped(agent) == 1
        assert len(got) == 1  # no second request: nothing pushed


async def test_collected_keys_never_pushed_are_a_counted_drop_and_collect_nothing() -> None:
    """'Collected' means: the key you pushed has a collected tombstone here. For keys we never pushed (our
    tombstones) it is refused: our tombstone stays until the cluster has it."""
    async with _asker() as (agent, svc), _peer(lambda n: _answer(collected=msgpack.packb(["gone"]))) as (port, _):
        svc.put("gone", b"x", None)
        svc.delete("gone", None)
        tombstones = svc.store.stats().tombstones
        assert not await svc.sync_with(("127.0.0.1", port))
        assert _dropped(agent) == 1
        assert svc.store.stats().tombstones == tombstones == 1


@pytest.mark.parametrize("field", ["children", "listings", "collected", "entries"])
def test_nested_empty_arrays_in_any_field_cost_memory_in_proportion_to_nothing(field: str) -> None:
    """1 MiB of empty arrays (one byte each) in a field: refused after a bounded number of them is built
    (was ~64 bytes of memory per byte of body, ~64 MiB)."""
    n = 1 << 20
    data = _answer(**{field: array_header(n) + b"\x90" * n})
    assert peak_memory_refusing(decode_ae_response, data) < 4 * len(data)


def test_deep_nesting_fails_cleanly() -> None:
    """Arrays nested a million deep: StateCodecError (no RecursionError, no crash)."""
    depth = 1 << 20
    data = _answer(entries=b"\x91" * depth + b"\x90")
    with pytest.raises(StateCodecError):
        decode_ae_response(data)


def test_an_entry_of_100k_versions_is_refused_before_they_are_built() -> None:
    """One entry of 100k versions (~1.6 MB): refused from its versions' array header (they were all built
    first, ~20 MB, then refused)."""
    versions = 100_000
    entry = (b"\x94\x00" + msgpack.packb("k") + b"\x90" + array_header(versions)
             + msgpack.packb(["p@1", 1, T0, 0, b"v"], use_bin_type=True) * versions)
    data = _answer(entries=array_header(1) + entry)
    # (the body's copies: its field, the unpacker's buffer)
    assert peak_memory_refusing(decode_ae_response, data) < 3 * len(data)


def test_a_pushed_request_still_round_trips_and_honest_answers_decode() -> None:
    """The bounds refuse nothing honest: a session between two stores converges through the codec."""
    ours, theirs = KvStore("a@1", StateConfig()), KvStore("b@2", StateConfig())
    for i in range(300):
        ours.local_put(f"a{i}", b"x" * (i % 50), T0)
        theirs.local_put(f"b{i}", b"y" * (i % 70), T0)
    from gossip_agent.core.ae_codec import encode_ae, open_ae_response  # (new: imported here, so the other
    from gossip_agent.core.anti_entropy import AnswerMerge, respond  # tests run against older code)

    session = Session(ours)
    request: AeRequest | None = session.start()
    while request is not None:
        answer = respond(theirs, decode_ae_request(encode_ae(request)), T0)
        head, entries = open_ae_response(encode_ae(answer), asked=request)
        assert entries.remaining == len(answer.entries)
        merge = AnswerMerge(session, entries)
        while not merge.done:
            merge.step(T0)
        request = session.handle(head, T0, merged=merge)
    assert ours.merkle.root() == theirs.merkle.root()
