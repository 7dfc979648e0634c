"""Hostile review of s24 (OWN_REFRESH 60 -> 300 s, OWN_MOVE x2, OWN_MOVE_FLOOR): a prober that restarted
without ever being suspected (same address, higher incarnation: a fast crash-restart between probes) lost
our coordinate, but `offer_again` runs only for a member back from suspicion/death or at a new address, so
`_own_sent` still says it holds ours; on a settled cluster our coordinate only wobbles, and every ack to it is
held back for up to OWN_REFRESH (now 300 s, was 60 s). Its RTT samples to us meanwhile find no coordinate
(`rtt_without_coordinate`), unless a join table or a row happens to bring ours second-hand. Fixed: a newer
incarnation of a member puts ours on the next ack to it (`TopologyState.resend_own`)."""

from __future__ import annotations

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Alive, NetCoordinate, Packet, Ping
from gossip_agent.core.vivaldi import Coordinate
from tests.core.test_node import cfg, node_with_peers


def _c(x: float) -> NetCoordinate:
    return NetCoordinate((x,) + (0.0,) * 7, 0.0001, 0.05, 0.0)


def _sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def test_a_prober_restarted_without_suspicion_gets_our_coordinate_on_the_next_ack() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    a.topology.client.coordinate = Coordinate((0.001,) + (0.0,) * 7, 0.0001, 0.05, 0.0)
    a.handle_packet(Packet("p2", (_c(0.021),)), ("h", 2), 0.5)

    def ack_carries_ours(at: float) -> bool:
        [ack] = _acks(a.handle_packet(Packet("p2", (Ping(7, "a", "p2", ("h", 2)),)), ("h", 2), at))
        return any(isinstance(m, NetCoordinate) for m in ack.packet.messages)

    assert ack_carries_ours(1.0)
    # p2 crashes and restarts at once, same address, never suspected: its Alive with a new incarnation, then
    # its (fresh, origin-near) coordinate in a packet of its own: it does not know we read them any more.
    a.handle_packet(Packet("p2", (Alive("p2", 2, ("h", 2)),)), ("h", 2), 5.0)
    a.handle_packet(Packet("p2", (_c(0.0),)), ("h", 2), 5.5)
    carried = [t for t in range(6, 66, 1) if ack_carries_ours(float(t))]
    assert carried, "the restarted prober never got our coordinate on an ack for 60 s (OWN_REFRESH = 300 s)"
    assert carried[0] == 6  # the next ack
    assert carried == [6]  # and then held back again while ours only wobbles


def _acks(effects: list[Effect]) -> list[Send]:
    """The sends that hold an ack (a reader of the older coordinate form also gets ours in the compact form
    once, in a packet of its own)."""
    return [s for s in _sends(effects) if any(isinstance(m, Ack) for m in s.packet.messages)]
