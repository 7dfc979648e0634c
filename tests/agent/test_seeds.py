"""Seed parsing and resolution (names with many addresses, literals, names that do not resolve yet)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gossip_agent.io.seeds import (
    address_info,
    default_advertise_address,
    parse_seed,
    resolve_advertise_address,
    resolve_seeds,
)


def test_parse_seed() -> None:
    assert parse_seed("10.0.0.1:7946") == ("10.0.0.1", 7946)
    assert parse_seed("demo-0.demo-peers.ns.svc:7946") == ("demo-0.demo-peers.ns.svc", 7946)
    assert parse_seed("[::1]:7946") == ("::1", 7946)
    for bad in ("nohost", ":7946", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="host:port"):
            parse_seed(bad)


async def test_resolve_literals_names_and_dedup() -> None:
    addrs = await resolve_seeds(["127.0.0.1:7000", "localhost:7000", "127.0.0.1:7001", "127.0.0.1:7000"])
    assert addrs[0] == ("127.0.0.1", 7000)
    assert ("127.0.0.1", 7001) in addrs
    assert len(addrs) == len(set(addrs))


async def test_unresolvable_name_contributes_nothing() -> None:
    assert await resolve_seeds(["no-such-host.invalid:7946"], timeout=3.0) == []


def test_default_advertise_address() -> None:
    assert default_advertise_address("127.0.0.1") == "127.0.0.1"
    assert default_advertise_address("0.0.0.0", ["127.0.0.1:7946"]) == "127.0.0.1"


async def test_seeds_resolve_to_the_one_spelling_the_wire_carries() -> None:
    """Sends go only to IP literals in canonical form (core/hosts.py): a seed literal is spelt so."""
    addrs = await resolve_seeds(["[::ffff:127.0.0.1]:7000", "[0::1]:7001", "[::1%1]:7002"])
    assert addrs == [("127.0.0.1", 7000), ("::1", 7001), ("::1", 7002)]


async def test_an_advertised_name_is_resolved_once_at_startup_to_an_ip() -> None:
    """Members gossip IP literals only: a name (advertiseAddress, or a bind address such as 'localhost') is
    resolved before the Node exists, and one that does not resolve is refused saying what to set."""
    assert await resolve_advertise_address("127.0.0.1") == "127.0.0.1"
    assert await resolve_advertise_address("::FFFF:7f00:1") == "127.0.0.1"
    assert await resolve_advertise_address("localhost") in ("127.0.0.1", "::1")
    with pytest.raises(ValueError, match="advertiseAddress"):
        await resolve_advertise_address("no-such-host.invalid", timeout=3.0)


@pytest.mark.parametrize(("host", "hints"), [
    ("127.0.0.1", {"type": socket.SOCK_STREAM, "flags": socket.AI_PASSIVE}),
    ("0.0.0.0", {"type": socket.SOCK_STREAM, "flags": socket.AI_PASSIVE}),
    ("127.0.0.1", {"family": socket.AF_INET, "type": socket.SOCK_DGRAM, "proto": socket.IPPROTO_UDP}),
    ("::1", {"family": socket.AF_INET6, "type": socket.SOCK_DGRAM, "proto": socket.IPPROTO_UDP}),
    ("localhost", {"type": socket.SOCK_DGRAM, "proto": socket.IPPROTO_UDP}),
])
async def test_address_info_is_the_loops_getaddrinfo(host: str, hints: dict[str, int]) -> None:
    """The same addresses as `loop.getaddrinfo`; a literal's without the executor (tests/agent/test_idle_imports.py
    checks its thread and codec are not even imported), a name's through it."""
    loop = asyncio.get_running_loop()
    try:
        expected = await loop.getaddrinfo(host, 7946, **hints)
    except socket.gaierror:
        pytest.skip(f"{host} does not resolve here")
    assert await address_info(host, 7946, **hints) == expected
