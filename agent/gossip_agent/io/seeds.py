"""Seed addresses: "host:port" entries where a host may be a DNS name with many A records (a headless
Service lists every ready pod). Names are re-resolved on every join attempt, so seeds that appear later (pods
still starting) are found on a retry. Resolution failures are not errors: a seed that does not resolve yet
simply contributes no address this round.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Any

from gossip_agent.core.hosts import canonical_ip
from gossip_agent.core.messages import Address

log = logging.getLogger(__name__)
# At most this many addresses per seed name per round (a headless Service of a big cluster is truncated:
# any few live members are enough to join).
MAX_ADDRESSES_PER_SEED = 16


def parse_seed(seed: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError naming the seed otherwise."""
    host, sep, port = seed.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"seed {seed!r} is not 'host:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def address_info(host: str, port: int | None, *, family: int = 0, type: int = 0, proto: int = 0,
                       flags: int = 0) -> list[tuple[Any, ...]]:
    """`loop.getaddrinfo(host, port, ...)`, answered on the loop when `host` is an IP literal.

    WHY. asyncio runs every getaddrinfo on the loop's default executor, whose first call starts a worker thread
    that stays for the process's life: with its malloc arena and the modules it imports, ~0.3 MiB resident per
    agent, for the bind address (`0.0.0.0`, a pod IP), which needs no lookup. A literal with AI_NUMERICHOST
    never blocks, and gives the same addresses. It is passed as ASCII bytes: a str host is encoded with the
    idna codec, an import (encodings.idna, stringprep) only names need. A name still goes to the executor.
    """
    if host.isascii() and canonical_ip(host) is not None:
        return socket.getaddrinfo(host.encode("ascii"), port, family, type, proto, flags | socket.AI_NUMERICHOST)
    return await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=type, proto=proto,
                                                        flags=flags)


async def resolve_seeds(seeds: Iterable[str], *, timeout: float = 5.0) -> list[Address]:
    """Every address of every seed (deduplicated, order kept), resolving names concurrently."""
    loop = asyncio.get_running_loop()

    async def one(seed: str) -> list[Address]:
        host, port = parse_seed(seed)
        literal = canonical_ip(host)
        if literal is not None:
            return [(literal, port)]
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP), timeout)
        except (OSError, TimeoutError) as exc:
            log.info("seed %s does not resolve yet: %s", seed, exc)
            return []
        addrs: list[Address] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            literal = canonical_ip(str(sockaddr[0]))
            if literal is not None:
                addrs.append((literal, port))
        return list(dict.fromkeys(addrs))[:MAX_ADDRESSES_PER_SEED]

    results = await asyncio.gather(*(one(s) for s in seeds))
    return list(dict.fromkeys(a for addrs in results for a in addrs))


async def resolve_advertise_address(host: str, *, timeout: float = 5.0) -> str:
    """The IP to advertise for `host` (advertiseAddress, or the bind address): members gossip IP literals only
    (core/hosts.py), so a name is resolved once, here, at startup, off the event loop's blocking path. An IPv4
    address is preferred (what `default_advertise_address` finds too). ValueError, saying what to set, if it
    resolves to nothing."""
    literal = canonical_ip(host)
    if literal is not None:
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP), timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"advertise address {host!r} does not resolve ({exc or type(exc).__name__}): peers "
                         "reach members by IP only; set advertiseAddress (GOSSIP_ADVERTISE_ADDRESS) to this "
                         "agent's IP (in Kubernetes, the pod IP)") from exc
    found = [lit for info in infos if (lit := canonical_ip(str(info[4][0]))) is not None]
    if not found:
        raise ValueError(f"advertise address {host!r} resolves to no IP address: set advertiseAddress "
                         "(GOSSIP_ADVERTISE_ADDRESS) to this agent's IP")
    return next((a for a in found if ":" not in a), found[0])


def default_advertise_address(bind_address: str, seeds: Iterable[str] = ()) -> str:
    """The address others should use for us when none is configured: the bind address unless it is a
    wildcard; else the local address the kernel would use to reach the first seed literal (or a private
    address), found by connecting a UDP socket (no packet is sent)."""
    if bind_address not in ("0.0.0.0", "::", ""):
        return bind_address
    target = "10.255.255.255"
    for seed in seeds:
        try:
            host = parse_seed(seed)[0]
        except ValueError:
            continue
        if canonical_ip(host) and ":" not in host:
            target = host
            break
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
