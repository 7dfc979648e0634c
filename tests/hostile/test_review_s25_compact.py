"""Review of the compact forms (s25: reader level COMPACT, types 20-22) as a hostile peer or network would use
them. See tests/hostile/test_reflection.py for the amplification ratio's definition (encoded bytes out to the
victim / encoded bytes of the forged packet)."""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import UNKNOWN_ADDR, Address, Packet, Ping
from tests.hostile.core_support import lan_node

VICTIM: Address = ("192.0.2.66", 53)
COMPACT_PING = Ping(7, "a", "", UNKNOWN_ADDR, True)


def _bytes_to(effects: list[Effect], to: Address) -> int:
    return sum(len(codec.encode_packet(e.packet)) for e in effects if isinstance(e, Send) and e.to == to)


def test_a_compact_ping_with_a_spoofed_source_is_no_amplifier() -> None:
    """A compact ping names no address: its ack went to the datagram's source. With the source spoofed as a
    victim's and a short (or empty) sender name, the bare ack was larger than the ping: up to 1.44x at the
    victim, where a forged whole ping draws at most 1.0x (test_reflection.py)."""
    node = lan_node(peers=4)
    for sender in ("", "x", "nobody", "p2"):  # unknown names, and a member's named from another host
        forged = Packet(sender, (COMPACT_PING,))
        size_in = len(codec.encode_packet(forged))
        size_out = _bytes_to(node.handle_packet(forged, VICTIM, 1.0), VICTIM)
        assert size_out <= size_in, f"sender {sender!r}: {size_in} B in, {size_out} B out at the victim"
