"""Review (session 8): `?priority=critical` is rationed at the HTTP API only (io/critical_limit.py: 50 writes a
second per agent by default, half of it per client), but a member relays every critical rumor that reaches it
as critical, whoever wrote it. A peer (any host that joins a plaintext cluster, or one faulty member) that
sends its writes as critical rumors straight over UDP makes every member put each one ahead of every queue
and spend the send budget's critical reserve on it: the flood the API's limit exists to stop, one hop later.
Measured here at one receiver: 300 critical writes from one peer in 0.3 s, all relayed as critical.
Now each member relays as critical at most twice the agent rate a second per member it first got them from
(a burst of one second's worth, core/critical_relay.py); the rest go on as normal rumors (tests/core/
test_critical_relay.py: nothing lost, honest rates never downgraded).
"""

from __future__ import annotations

from gossip_agent.core.effects import Send
from gossip_agent.core.messages import Packet, StateRumor
from tests.hostile.core_support import lan_node

AGENT_RATE = 50  # state.criticalWritesPerSecond's default: what one agent's own clients may make critical


def test_a_peer_s_flood_of_critical_rumors_is_not_all_relayed_as_critical() -> None:
    node = lan_node(tree_readers=True, peers=8)
    node.tick(0.05)
    relayed: set[bytes] = set()
    for i in range(300):
        now = 1.0 + i * 0.001
        effects = node.handle_packet(Packet("p2", (StateRumor(b"w%d" % i, critical=True),)), ("10.0.0.2", 7946), now)
        effects += node.tick(now)
        for e in effects:
            if isinstance(e, Send):
                relayed.update(m.payload for m in e.packet.messages if isinstance(m, StateRumor) and m.critical)
    assert len(relayed) <= 2 * AGENT_RATE, f"{len(relayed)} of 300 relayed as critical within 0.3 s"
