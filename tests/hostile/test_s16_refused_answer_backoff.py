"""Session 16, with real agents: an anti-entropy answer the initiator refuses is no progress, so repair backs off.

The repair planner doubles its gap after a session that changed nothing (0.5 s up to 30 s) and resets it on any
change. An agent holding a version of a key its peers refuse (here a timestamp 2 h ahead of their clocks:
`clock_drift`; likewise a counter over the peer bound, a key or kind they never hold) made every peer that holds
the key too push its own state, get the merge back, refuse it, and count the push as taken: progress, the gap
reset, a session every ~0.5 s per peer for good. Measured on 5 agents: ~8 sessions/s and ~3.3 kB/s of answers
before, 0.25 sessions/s and ~0.1 kB/s after (see the report of session 16). Now the refused answer entries
count against what was pushed (`SessionStats.refused`), and the gap grows.

The assertion is on session counts over a generous window, not on timing: a busy machine only makes fewer.
"""

from __future__ import annotations

import asyncio

from gossip_agent.core.config import from_mapping
from gossip_agent.core.kvstore import entry_from_plain
from gossip_agent.core.messages import MemberState
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService
from tests.hostile.agent_support import until

FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}
WINDOW = 20.0  # seconds; before the fix, 3 agents ran ~4 repair sessions/s (~80 in it), after a few


async def test_a_key_every_peer_refuses_does_not_keep_anti_entropy_running() -> None:
    svcs: list[StateService] = []
    agents: list[Agent] = []
    seeds: list[str] = []
    try:
        for i in range(3):
            svc = StateService(from_mapping({**FAST, "name": f"r{i}", "seeds": seeds}))
            agent = Agent(svc.config, extensions=[svc])
            await agent.start()
            seeds = seeds or [f"127.0.0.1:{agent.port}"]
            svcs.append(svc)
            agents.append(agent)
        await until(lambda: all(len([m for m in a.members() if m.state == MemberState.ALIVE]) == 3 for a in agents))
        now = svcs[0].now_ms()
        future = entry_from_plain([0, "shared", ["zz", 1], [["zz", 1, now + 7_200_000, 0, b"future"]]])
        assert svcs[0].store.apply_remote(future)  # (as an agent with a clock 2 h ahead wrote it)
        for svc in svcs:
            svc.put("shared", b"mine", None)
        # Both peers refuse r0's merge of the key: wait until they have, more than once each.
        await until(lambda: all(s.store.refused.get("clock_drift", 0) >= 3 for s in svcs[1:]))
        await asyncio.sleep(5.0)  # (the gaps grow: 0.5 + 1 + 2 + 4 s)
        before = sum(s.stats.ae["sessions"] for s in svcs)
        await asyncio.sleep(WINDOW)
        sessions = sum(s.stats.ae["sessions"] for s in svcs) - before
        # After the fix each agent's gap is 8 s or more in the window: a few sessions each (~2-6 in all).
        assert sessions <= 15, f"{sessions} anti-entropy sessions in {WINDOW:.0f} s: repair does not back off"
        assert svcs[1].store.entry("shared") != svcs[0].store.entry("shared")  # (the disagreement stays)
    finally:
        for agent in reversed(agents):
            await agent.stop()
