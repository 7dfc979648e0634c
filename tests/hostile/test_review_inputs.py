"""Hostile-input review of the merged hardening (issue 10): breaks found by attacking real agents on loopback.

Each test failed before its fix:
- `GET /v1/kv?limit=²`: `str.isdigit()` accepts Unicode digits that `int()` refuses, a 500;
- JSON strings holding a lone UTF-16 surrogate (`"\\ud800"`) on `/v1/kv`, sets and both register routes: a
  500 from deep in the store (msgpack / UTF-8 encoding), not a 400 at the edge;
- one forged UDP Alive whose metadata says `state.keys: "²"` (or 5,000 digits): every state housekeeping tick
  raised (no tombstone acknowledgement, no GC, no interval fsync; a traceback logged 10 times a second),
  and the anti-entropy task died for good when it picked that member, while `/readyz` stayed 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import aiohttp
import pytest

from gossip_agent.core.codec import DecodeError, decode_packet, encode_packet
from gossip_agent.core.config import ConfigError, from_mapping
from gossip_agent.core.convergence import parse_state_meta
from gossip_agent.core.messages import Alive, Packet
from gossip_agent.core.replica import parse_write_concern
from tests.hostile.agent_support import BASE, running, url

JSON = {"Content-Type": "application/json"}




@pytest.mark.parametrize("raw", ["\u00b2", "\u0661", "9" * 5000])
def test_published_state_with_non_ascii_or_huge_digits_is_ignored(raw: str) -> None:
    root = "ab" * 32
    assert parse_state_meta({"state.root": root, "state.keys": raw, "state.hlc": "1"}) is None
    assert parse_state_meta({"state.root": root, "state.keys": "1", "state.hlc": raw}) is None
    assert parse_state_meta({"state.root": root, "state.keys": "12", "state.hlc": "34"}) is not None


def test_write_concern_with_unicode_digits_is_a_clear_error() -> None:
    for raw in ("\u00b2", "\u0662"):
        with pytest.raises(ValueError, match="w must be an integer"):
            parse_write_concern(raw)


async def test_unicode_digits_in_query_numbers_are_400() -> None:
    async with running("digits") as agent, aiohttp.ClientSession() as s:
        for query in ("limit=%C2%B2", "limit=%D9%A1", "limit=" + "9" * 5000):
            async with s.get(url(agent, f"/v1/kv?{query}")) as r:
                assert r.status == 400, (query, r.status)
        async with s.put(url(agent, "/v1/kv/k?w=%C2%B2"), data=b"v") as r:
            assert r.status == 400
            assert "w must be an integer" in (await r.json())["error"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/v1/kv/k", b'{"value": "\\ud800"}'),
    ("PUT", "/v1/kv/k", b'{"value": "ok", "\\udfff": 1}'),
    ("POST", "/v1/crdt/sets/s", b'{"add": ["x\\ud800"]}'),
    ("PUT", "/v1/crdt/registers/lww/r", b'{"value": "\\udfff"}'),
    ("PUT", "/v1/crdt/registers/mv/r", b'{"value": "\\udbff"}'),
])
async def test_lone_surrogates_in_json_are_400_and_store_nothing(method: str, path: str, body: bytes) -> None:
    async with running("victim") as agent, aiohttp.ClientSession() as s:
        async with s.request(method, url(agent, path), data=body, headers=JSON) as r:
            assert r.status == 400, (path, r.status, await r.text())
            assert "surrogate" in (await r.json())["error"]
        async with s.get(url(agent, "/v1/kv?limit=1000")) as r:
            assert (await r.json())["entries"] == []
        valid = b'{"add": ["\\ud83d\\ude00"]}' if "sets" in path else b'{"value": "caf\\u00e9 \\ud83d\\ude00"}'
        async with s.request(method, url(agent, path), data=valid, headers=JSON) as r:
            assert r.status == 200, await r.text()  # a valid surrogate pair is fine


async def test_forged_state_metadata_does_not_stop_housekeeping_or_anti_entropy(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    async with running("victim") as agent:
        meta = {"state.root": "ab" * 32, "state.keys": "\u00b2", "state.hlc": "1"}
        packet = encode_packet(Packet("evil", (Alive("evil", 1, ("127.0.0.1", 9), meta),)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(packet, ("127.0.0.1", agent.port))
        for _ in range(100):
            if any(m.name == "evil" for m in agent.members()):
                break
            await asyncio.sleep(0.05)
        assert any(m.name == "evil" for m in agent.members())
        svc = next(e for e in agent.extensions if hasattr(e, "tick"))
        svc.tick()  # raised ValueError before the fix
        await asyncio.sleep(1.0)
        tasks = {t.get_name(): t for t in asyncio.all_tasks()}
        if "anti-entropy" in tasks:
            assert not tasks["anti-entropy"].done()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not any("housekeeping failed" in e or "failed" in e for e in errors), errors


async def test_an_unexpected_error_costs_one_anti_entropy_round_not_all_of_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth for the break above: the anti-entropy loop outlives any one round's failure."""
    async with running("resilient") as agent:
        packet = encode_packet(Packet("peer", (Alive("peer", 1, ("127.0.0.1", 9), {}),)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(packet, ("127.0.0.1", agent.port))
        for _ in range(100):
            if agent.live_members():
                break
            await asyncio.sleep(0.05)
        svc = next(e for e in agent.extensions if hasattr(e, "sync_with"))
        calls = 0

        async def broken(addr: object) -> bool:
            nonlocal calls
            calls += 1
            raise RuntimeError("unforeseen")

        monkeypatch.setattr(svc, "sync_with", broken)
        for expected in (1, 2):
            svc.kick_anti_entropy()
            for _ in range(100):
                if calls >= expected:
                    break
                await asyncio.sleep(0.02)
            assert calls >= expected, "the anti-entropy task died after one failed round"


ESCAPES = "x\x1b[2J\x1b]0;pwned\x07\nfake-line"


def test_member_names_with_control_characters_are_dropped_at_decode() -> None:
    """A forged Alive's name reached `gossipctl members` raw: it cleared the terminal and forged lines."""
    for name in (ESCAPES, "a\x00b", "tab\tname", "del\x7f", "c1\x9b31m"):
        with pytest.raises(DecodeError):
            decode_packet(encode_packet(Packet(name, (Alive(name, 1, ("127.0.0.1", 9), {}),))))
        with pytest.raises(DecodeError):
            decode_packet(encode_packet(Packet("ok", (Alive(name, 1, ("127.0.0.1", 9), {}),))))
        with pytest.raises(ConfigError, match="control characters"):
            from_mapping({**BASE, "name": name})
    fine = "caf\u00e9-\u30ce\u30fc\u30c9-0"
    assert decode_packet(encode_packet(Packet(fine, (Alive(fine, 1, ("127.0.0.1", 9), {}),)))).sender == fine


async def test_a_forged_member_with_escapes_in_its_name_never_joins() -> None:
    async with running("victim") as agent:
        packet = encode_packet(Packet("ok", (Alive(ESCAPES, 1, ("127.0.0.1", 9), {}),
                                             Alive("plain", 1, ("127.0.0.1", 9), {}))))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(packet, ("127.0.0.1", agent.port))
        await asyncio.sleep(0.5)
        assert [m.name for m in agent.members()] == ["victim"]  # the whole packet is dropped, counted


async def test_listings_with_values_are_paged_by_bytes_and_lose_no_key() -> None:
    """1,000 values of 64 KiB were one ~87 MB JSON listing built on the loop (4 concurrent: a 3.7 s stall)."""
    async with running("lister") as agent, aiohttp.ClientSession() as s:
        value = bytes(range(256)) * (60 * 1024 // 256)  # binary: base64 in JSON
        for i in range(60):
            async with s.put(url(agent, f"/v1/kv/big/{i:03d}"), data=value) as r:
                assert r.status == 200
        seen: list[str] = []
        after = ""
        for _ in range(60):
            async with s.get(url(agent, "/v1/kv"), params={"values": "true", "limit": "1000",
                                                           "after": after}) as r:
                assert r.status == 200
                raw = await r.read()
                page = json.loads(raw)
            assert len(raw) < 2 * 1024 * 1024, len(raw)  # about 1 MiB and one entry at most
            seen += [e["key"] for e in page["entries"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == [f"big/{i:03d}" for i in range(60)]
