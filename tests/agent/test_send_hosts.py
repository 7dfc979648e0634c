"""Sends go only to IP literals (core/hosts.py): a name in an address never reaches a sendto, whose socket
call would resolve it with a BLOCKING getaddrinfo on the event loop (a forger's wildcard DNS name, one per fake
member, could stall the agent)."""

from __future__ import annotations

import socket

import pytest

from gossip_agent.core import codec
from gossip_agent.core.messages import Alive, Packet
from gossip_agent.io.transport import SendResult, open_udp


@pytest.mark.parametrize("host", ["localhost", "agent-0.agents.ns.svc", "x.invalid", "127.1", "2130706433",
                                  "::ffff:127.0.0.1", "::1%1"])
async def test_a_name_or_other_spelling_is_refused_before_any_resolution(host: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[bytes] = []
    endpoint = await open_udp("127.0.0.1", 0, lambda data, src: received.append(data))

    def no_resolution(*args: object, **kwargs: object) -> object:
        raise AssertionError("a send resolved a name")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolution)
    try:
        assert endpoint.sendto(b"x", (host, endpoint.local_address[1])) is SendResult.BAD_ADDRESS
        assert endpoint.sendto(b"x", (host, endpoint.local_address[1])) is SendResult.BAD_ADDRESS  # (not cached)
        assert not endpoint.closed
    finally:
        endpoint.close()
    assert received == []


@pytest.mark.parametrize("host", ["localhost", "wild-123.attacker.example", "127.1"])
def test_a_gossiped_member_at_a_name_is_a_counted_bad_host(host: str) -> None:
    """The decoder refuses it (`bad_host`, a counted drop): it never enters a table, so nothing is sent
    there."""
    data = codec.encode_packet(Packet("evil", (Alive("fake", 1, (host, 7946)),)))
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_packet(data)
    assert err.value.reason == "bad_host"
