"""Hostile-input review: watch slots from many source addresses.

Failed before its fix: the per-client caps (8 membership watches, 16 key watches per address) stopped one
address, but a client with 8 addresses (any pod-network peer with a few pods, or 127.0.0.2-9 on loopback) took
all 64 membership-watch slots, and with tokens configured it needed only the read scope; legitimate watchers
(the operator, `gossipctl monitor`) got 503 for as long as the attacker held the connections. Now the slots are
shared by `WatchSlots` (io/http_limits.py): per address, per token, a reserve for write tokens, and fair-share
eviction of the busiest client's oldest watch. The unit tests pin each rule; the agent tests pin the wiring.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gossip_agent.cli.client import parse_metrics
from gossip_agent.io import events_http, http_limits
from gossip_agent.io.auth import OPEN, Caller, generate_token
from gossip_agent.io.http_limits import WatchRefused, WatchSlot, WatchSlots
from tests.hostile.agent_support import running

READ_A, READ_B, READ_C, WRITE = Caller("a" * 16), Caller("b" * 16), Caller("c" * 16), Caller("w" * 16, write=True)


class Evictions:
    """on_evict callbacks that record which watch was ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def __call__(self, name: str) -> object:
        return lambda: self.ended.append(name)


def _refused(slots: WatchSlots, address: str, caller: Caller = OPEN) -> WatchRefused:
    with pytest.raises(WatchRefused) as info:
        slots.acquire(address, caller)
    return info.value


# -- the rules, one by one (pure bookkeeping) -----------------------------------------------------------------

def test_one_address_is_capped() -> None:
    slots = WatchSlots(total=64, per_address=8)
    for _ in range(8):
        slots.acquire("10.0.0.1")
    refused = _refused(slots, "10.0.0.1")
    assert (refused.status, refused.reason) == (429, "watch_address")
    assert "per client address" in str(refused)
    slots.acquire("10.0.0.2")  # another address is unaffected


def test_when_full_the_busiest_clients_oldest_watch_gives_way() -> None:
    slots, log = WatchSlots(total=64, per_address=8), Evictions()
    for a in range(8):  # 8 addresses x 8 watches: every slot taken
        for i in range(8):
            slots.acquire(f"10.0.0.{a}", on_evict=log(f"{a}/{i}"))
    assert len(slots) == 64
    newcomer = slots.acquire("10.0.1.1")
    assert log.ended == ["0/0"]  # all hold 8: the oldest watch of them all
    assert len(slots) == 64 and slots.held_by("10.0.0.0") == 7 and slots.evictions == 1
    # The evicted client coming back does not evict in turn (7 + 1 is not fewer than 8 - 1: no ping-pong) ...
    assert _refused(slots, "10.0.0.0").reason == "watch_full"
    # ... while a client holding two fewer than the busiest does: the busiest now is 10.0.0.1 (8, oldest).
    slots.acquire("10.0.1.1")
    assert log.ended == ["0/0", "1/0"]
    slots.release(newcomer)
    slots.acquire("10.0.0.1")  # a freed slot is taken without evicting anyone
    assert slots.evictions == 2


def test_no_eviction_when_every_client_holds_its_fair_share() -> None:
    slots, log = WatchSlots(total=4, per_address=8), Evictions()
    for a in range(4):
        slots.acquire(f"10.0.0.{a}", on_evict=log(str(a)))
    refused = _refused(slots, "10.0.0.9")
    assert (refused.status, refused.reason, log.ended) == (503, "watch_full", [])


def test_one_token_from_many_addresses_is_capped() -> None:
    slots = WatchSlots(total=64, per_address=8)
    assert slots.per_token == 16
    for a in range(2):
        for _ in range(8):
            slots.acquire(f"10.0.0.{a}", READ_A)
    refused = _refused(slots, "10.0.0.7", READ_A)
    assert (refused.status, refused.reason) == (429, "watch_token")
    slots.acquire("10.0.0.7", READ_B)  # another token, same address: fine
    assert WatchSlots(total=16, per_address=8).per_token == 8  # never below the per-address cap


def test_read_tokens_leave_the_reserve_to_write_tokens() -> None:
    slots = WatchSlots(total=16, per_address=1)  # one watch per address: fair share never evicts
    assert (slots.write_reserve, slots.per_token) == (2, 4)
    readers = [Caller(f"{n:016x}") for n in range(14)]
    for n, reader in enumerate(readers):
        slots.acquire(f"10.0.0.{n}", reader)
    refused = _refused(slots, "10.0.1.1", Caller("f" * 16))
    assert refused.status == 503 and "kept for write-scope tokens" in str(refused)
    slots.acquire("10.0.2.1", WRITE)
    slots.acquire("10.0.2.2", WRITE)
    assert len(slots) == 16


def test_a_read_token_never_evicts_a_write_watch() -> None:
    slots, log = WatchSlots(total=16, per_address=16), Evictions()
    for i in range(14):
        slots.acquire("10.0.9.9", WRITE, on_evict=log(f"w{i}"))  # within the per-address cap of 16
    slots.acquire("10.0.0.1", READ_A, on_evict=log("a0"))
    slots.acquire("10.0.0.2", READ_B, on_evict=log("b0"))
    # Full; the write token is by far the busiest, but a read newcomer may only compete with read watches
    # (each holding 1: no eviction).
    assert _refused(slots, "10.0.0.3", READ_C).reason == "watch_full" and log.ended == []


def test_a_write_token_gets_in_when_read_tokens_hold_everything() -> None:
    slots, log = WatchSlots(total=16, per_address=4), Evictions()
    for n, reader in enumerate((READ_A, READ_B, READ_C)):  # 12 of 14 read slots
        for i in range(4):
            slots.acquire(f"10.0.{n}.{i}", reader, on_evict=log(f"{n}/{i}"))
    slots.acquire("10.0.3.1", Caller("d" * 16))
    slots.acquire("10.0.3.2", Caller("d" * 16))  # the read share (14) is full
    slots.acquire("10.0.9.1", WRITE)
    slots.acquire("10.0.9.2", WRITE)  # the reserve (2)
    assert len(slots) == 16 and log.ended == []
    slots.acquire("10.0.9.3", WRITE)  # full: the busiest holder (READ_A, 4, oldest) gives way
    assert log.ended == ["0/0"]


def test_release_is_idempotent_and_restores_the_counts() -> None:
    slots = WatchSlots(total=2, per_address=1)
    slot = slots.acquire("10.0.0.1", READ_A)
    slots.release(slot)
    slots.release(slot)
    assert len(slots) == 0 and slots.held_by("10.0.0.1") == 0
    assert isinstance(slots.acquire("10.0.0.1", READ_A), WatchSlot)


# -- wired into the agent ---------------------------------------------------------------------------------------

def _watch(port: int, source: str, token: str | None = None) -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(f"GET {events_http.PATH} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    s.settimeout(5)
    return s, int(s.recv(64).split()[1])


def _read_until(s: socket.socket, needle: bytes, limit: int = 1 << 20) -> bool:
    data = b""
    try:
        while needle not in data and len(data) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return needle in data


async def test_many_source_addresses_cannot_take_every_membership_watch_slot() -> None:
    async with running("w", state=False) as agent:
        held = []
        try:
            for a in range(2, 2 + events_http.MAX_WATCHERS // events_http.MAX_PER_CLIENT):
                for _ in range(events_http.MAX_PER_CLIENT):
                    held.append(await asyncio.to_thread(_watch, agent.port, f"127.0.0.{a}"))
            assert all(status == 200 for _, status in held)
            mine, status = await asyncio.to_thread(_watch, agent.port, "127.0.0.1")
            held.append((mine, status))
            assert status == 200, "a legitimate watcher was refused: every slot is held by one attacker"
            # The oldest stream of the busiest client was ended, and told why.
            assert await asyncio.to_thread(_read_until, held[0][0], b'"evicted":true')
            metrics = parse_metrics(agent.render_metrics().decode())
            assert metrics['gossip_watch_evicted_total{stream="members"}'] == 1
            assert len(agent.member_watch) == events_http.MAX_WATCHERS
        finally:
            for s, _ in held:
                s.close()


async def test_a_read_token_is_capped_across_addresses_and_the_write_token_still_watches(tmp_path: Path) -> None:
    read, write = generate_token(), generate_token()
    path = tmp_path / "tokens"
    path.write_text(f"read:{read}\nwrite:{write}\n")
    async with running("t", state=False, apiTokensFile=str(path)) as agent:
        per_token = agent.member_watch.slots.per_token
        held = []
        try:
            for n in range(per_token):
                held.append(await asyncio.to_thread(
                    _watch, agent.port, f"127.0.0.{2 + n // events_http.MAX_PER_CLIENT}", read))
            assert all(status == 200 for _, status in held)
            extra = await asyncio.to_thread(_watch, agent.port, "127.0.1.1", read)
            held.append(extra)
            assert extra[1] == 429
            operator = await asyncio.to_thread(_watch, agent.port, "127.0.1.2", write)
            held.append(operator)
            assert operator[1] == 200
            metrics = parse_metrics(agent.render_metrics().decode())
            assert metrics['gossip_http_refused_total{reason="watch_token"}'] == 1
        finally:
            for s, _ in held:
                s.close()


async def test_key_watches_share_slots_the_same_way() -> None:
    """`GET /v1/watch` uses the same policy: when full, a newcomer holding fewer gets the busiest's oldest."""
    async with running("kv") as agent:
        from gossip_agent.io.state_service import StateService

        api = next(e for e in agent.extensions if isinstance(e, StateService)).api
        api.watch_slots.total = 2 * http_limits.MAX_WATCHES_PER_CLIENT
        held = []

        def watch(source: str) -> tuple[socket.socket, int]:
            s = socket.socket()
            s.bind((source, 0))
            s.connect(("127.0.0.1", agent.port))
            s.sendall(b"GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            return s, int(s.recv(64).split()[1])

        try:
            for source in ("127.0.0.2", "127.0.0.3"):
                for _ in range(http_limits.MAX_WATCHES_PER_CLIENT):
                    held.append(await asyncio.to_thread(watch, source))
            assert all(status == 200 for _, status in held)
            held.append(await asyncio.to_thread(watch, "127.0.0.1"))
            assert held[-1][1] == 200
            assert await asyncio.to_thread(_read_until, held[0][0], b'"evicted": true')
            metrics = parse_metrics(agent.render_metrics().decode())
            assert metrics['gossip_watch_evicted_total{stream="kv"}'] == 1
        finally:
            for s, _ in held:
                s.close()
