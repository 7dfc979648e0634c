"""Hosts in member addresses (core/hosts.py): one spelling on the wire, one key per host for the caps."""

from __future__ import annotations

import pytest

from gossip_agent.core import hosts
from gossip_agent.core.hosts import canonical_ip, host_key, same_host, wire_host

# Spellings of 127.0.0.1 that a socket reaches (inet_aton, names, IPv4-mapped IPv6): /tmp/rev-guard/spell.py.
LOOPBACK_V4 = ["127.0.0.1", "::ffff:127.0.0.1", "::FFFF:7f00:1", "0:0:0:0:0:ffff:7f00:0001", "::ffff:127.0.0.1%3"]
LOOPBACK_V6 = ["::1", "0::1", "::0001", "0:0:0:0:0:0:0:1", "::1%5", "::1%lo"]
NOT_IP = ["127.1", "127.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.01", "localhost", "LocalHost.",
          "agent-0.agents.ns.svc", ""]


@pytest.mark.parametrize("host", LOOPBACK_V4)
def test_every_ip_spelling_of_an_ipv4_address_has_its_one_key(host: str) -> None:
    assert canonical_ip(host) == host_key(host) == "127.0.0.1"
    assert same_host(host, "127.0.0.1")
    assert wire_host(host) == (host == "127.0.0.1")


@pytest.mark.parametrize("host", LOOPBACK_V6)
def test_every_spelling_of_an_ipv6_address_has_its_one_key(host: str) -> None:
    assert canonical_ip(host) == "::1" and host_key(host) == "::/64"
    assert same_host(host, "::1")
    assert wire_host(host) == (host == "::1")


def test_an_ipv6_slash_64_is_one_host_for_the_caps_but_not_one_address() -> None:
    keys = {host_key(f"2001:db8:0:7::{i:x}") for i in range(1, 300)}
    assert keys == {"2001:db8:0:7::/64"}
    assert host_key("2001:db8:0:8::1") != host_key("2001:db8:0:7::1")
    assert not same_host("2001:db8:0:7::1", "2001:db8:0:7::2")


@pytest.mark.parametrize("host", NOT_IP)
def test_what_only_inet_aton_or_dns_reads_is_no_ip_and_never_on_the_wire(host: str) -> None:
    """The socket layer would reach 127.0.0.1 for most of these (a blocking getaddrinfo for the names): the
    wire refuses them all (core/codec.py `valid_host`), so no gossiped address is one."""
    assert canonical_ip(host) is None and not wire_host(host)


def test_names_from_configuration_key_case_insensitively() -> None:
    assert host_key("LocalHost.") == host_key("localhost") == "localhost"
    assert same_host("Node-0.example.", "node-0.example") and not same_host("localhost", "127.0.0.1")


def test_wire_host_takes_only_ascii_strings() -> None:
    assert not wire_host(b"127.0.0.1") and not wire_host(None) and not wire_host("\uff11\uff12\uff17.0.0.1")


def test_remembered_wire_hosts_give_the_same_answers_and_stay_bounded() -> None:
    """The memo of valid hosts changes no answer (asked twice, in any order, after any other host) and holds at
    most WIRE_HOSTS_KEPT hosts however many distinct valid addresses a peer names."""
    hosts._wire_hosts.clear()
    for host in ["127.0.0.1", "::1", *LOOPBACK_V6, *NOT_IP, "10.0.0.1", "10.0.0.01", "2001:DB8::1"]:
        first = wire_host(host)
        assert wire_host(host) == first == (canonical_ip(host) == host and "%" not in host)
    for i in range(3 * hosts.WIRE_HOSTS_KEPT):
        assert wire_host(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert len(hosts._wire_hosts) <= hosts.WIRE_HOSTS_KEPT
    assert not wire_host("10.0.0.01") and wire_host("10.0.0.1")
