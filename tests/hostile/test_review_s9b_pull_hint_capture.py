"""Review s9b (MEDIUM; fixed: a hinted asker is asked next at most once per cycle of PullOrder): one member
that names a made-up id in a pull request before each of our rounds becomes
every one of our pull targets (core/pulling.py `_pull_hint`, pull mode), and keeps us at the full pace.

A pull request naming a short id we do not hold makes its asker our next target ("it has news for us") and
puts us at the full pace for BUSY_ROUNDS rounds. Nothing checks that the asker had news: an id is 4 bytes
anyone can make up, and a member that sends one fresh made-up id per request, once before each of our rounds,
is asked every time. Pull mode gets news by asking (answers go to askers), so the honest members are never
asked, and what they hold reaches us by anti-entropy, or when the liar forwards it. The
hint is believed only from the member's own host (`shows`), so it takes a member (a compromised or buggy
one; or any host in a plaintext cluster that shares a member's address).

Reproduction below: idle node "a" with five members; "p5" sends one made-up id before each of a's rounds for
60 rounds; a's pull requests went 60 to p5, 1 to the four others together.

Proposed fix (in Node; left to the pull owner, as it changes how fast a busy honest writer is asked): the
hinted asker is asked next at most once per cycle of `PullOrder` (or per request interval per asker), and a
hint whose ids never turned up in the answer it drew is not believed from that asker for a while; the full
pace too only while hints bring payloads.
"""

from __future__ import annotations

from collections import Counter

from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, ShortIds, ShortKind
from gossip_agent.core.readers import SHORT_IDS
from tests.core.test_node_modes import is_pull, node_with_peers


def _sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def test_made_up_ids_in_pull_requests_do_not_make_their_asker_our_only_target() -> None:
    node = node_with_peers("pull")
    for m in node.members():
        node.readers.show(m.name, SHORT_IDS)
    t = 0.0
    while t < 20.0:  # idle
        t = node._next_gossip
        node.tick(t)
    p5 = node.member("p5")
    assert p5 is not None
    names = {m.addr: m.name for m in node.members()}
    asked: Counter[str] = Counter()
    for k in range(60):
        due = node._next_gossip
        node.handle_packet(Packet("p5", (ShortIds(ShortKind.PULL, (0x7000_0000 + k,)),)), p5.addr, t + 0.001)
        t = min(due, node._next_gossip)
        for s in _sends(node.tick(t)):
            if any(is_pull(m) for m in s.packet.messages):
                asked[names.get(s.to, "?")] += 1
    assert asked["p5"] >= 10  # hints are still followed (once per cycle), and p5's own turns
    honest = sum(n for name, n in asked.items() if name != "p5")
    assert honest >= asked["p5"] // 2, f"pull requests by target: {dict(asked)}"
