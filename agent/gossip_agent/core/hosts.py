"""Hosts in member addresses: the one spelling the wire accepts, and the key a per-host cap counts by.

WHY. The socket layer reads one IP in many spellings: `127.1`, `2130706433`, `0x7f000001` and `0177.0.0.1`
(inet_aton) all reach 127.0.0.1, as do `localhost`, `::ffff:127.0.0.1` on a dual-stack socket, and `::1`,
`0::1` or `::1%77` one IPv6 address. A cap keyed by the raw string (core/hello_queue.py ONE HOST) gave each
spelling its own room, and a hostname in a gossiped address made the UDP send resolve it -- a BLOCKING
getaddrinfo on the event loop, for a name a forger chose (a wildcard DNS name: one per fake member).

So a gossiped member address carries an IP literal in its canonical form (`wire_host`: what `str` of Python's
`ipaddress` gives back; no scope id, no IPv4-mapped IPv6, no hostname); anything else is malformed at decode
(core/codec.py). Agents advertise an IP (in Kubernetes, the pod IP; memberlist too carries IPs only); a
configured hostname (seeds, advertiseAddress) is resolved by the shell before use (io/seeds.py,
io/runtime.py). And the caps count by `host_key`, which folds every spelling of one host into one key and an
IPv6 /64 (one subnet, usually one machine or one tenant's prefix) into one.
Pure: parsing only.
"""

from __future__ import annotations

import ipaddress

IPV6_CAP_PREFIX = 64
"""An IPv6 host is capped with every address of its /64: a single machine or tenant often holds a whole /64
(SLAAC, privacy addresses, a delegated prefix), so a forger could otherwise name 2^64 'hosts' that all reach
one network."""


def canonical_ip(host: str) -> str | None:
    """`host`'s IP address in canonical form (scope id dropped, an IPv4-mapped IPv6 address as its IPv4), or
    None when it is no IP literal (a hostname, or an inet_aton-only spelling such as `127.1`)."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


WIRE_HOSTS_KEPT = 8192
"""Hosts `wire_host` remembers as valid: the members' addresses, which every ping, ack and alive repeats and
every send names (io/transport.py checks each destination here); above membership.maxMembers' default (5,000),
so a full table never empties it, and at most ~0.5 MB.
Parsing one with `ipaddress` costs ~19 us on a loaded machine, a set lookup well under one. Bounded: a peer
naming ever new (valid) addresses only empties the set again, costing the parses it would cost anyway, never
memory."""
_wire_hosts: set[str] = set()


def wire_host(host: object) -> bool:
    """Whether `host` may stand in a gossiped member address: an IP literal spelt exactly as `canonical_ip`
    spells it (`10.0.0.1`, `2001:db8::1`; not `10.0.0.01`, `::ffff:10.0.0.1`, `::1%1`, `2001:DB8::1` or a
    name). One spelling per address, and nothing the socket layer would have to resolve. Hosts found valid
    are remembered (WIRE_HOSTS_KEPT); refusals are not, so the answer never depends on what came before."""
    if type(host) is not str:
        return False
    if host in _wire_hosts:
        return True
    valid = host.isascii() and "%" not in host and canonical_ip(host) == host
    if valid:
        if len(_wire_hosts) >= WIRE_HOSTS_KEPT:
            _wire_hosts.clear()
        _wire_hosts.add(host)
    return valid


def host_key(host: str) -> str:
    """What a per-host cap counts `host` as: its canonical IPv4 address, its IPv6 /64 network
    (IPV6_CAP_PREFIX), or, for a name (only from configuration: the wire carries IPs), the name in lower case
    without its trailing dot."""
    ip = canonical_ip(host)
    if ip is None:
        return host.lower().rstrip(".")
    if ":" in ip:
        return str(ipaddress.IPv6Network((ip, IPV6_CAP_PREFIX), strict=False))
    return ip


def same_host(a: str, b: str) -> bool:
    """Two hosts are the same address: equal canonical IPs (an IPv4-mapped IPv6 one equals its IPv4; a scope
    id is ignored), else equal names, case-insensitively."""
    ia, ib = canonical_ip(a), canonical_ip(b)
    if ia is None or ib is None:
        return ia is None and ib is None and a.lower().rstrip(".") == b.lower().rstrip(".")
    return ia == ib
