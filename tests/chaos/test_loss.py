"""Random packet loss with real agents in network namespaces: 10% of incoming packets dropped on every host
(nftables `numgen random` or iptables `statistic`; TESTBED.md: no netem here) for a bounded period.

What must hold (SWIM + Lifeguard with memberlist's LAN settings: indirect probes, TCP fallback, suspicion
that a live member refutes):
- no false positives: no agent ever marks a live agent dead — checked by polling every view throughout, by
  the agents' logs ("member X dead"), and by the `gossip_deaths` counter;
- rumors still reach everyone: a new member joining and a member leaving gracefully during the loss are seen
  by every agent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.netns import (
    AgentNet,
    agent_config,
    make_net,
    spread_bound,
    startup_bound,
)

pytestmark = pytest.mark.netns

# memberlist's LAN failure detection (1 s probes, 3 indirect checks, suspicion mult 4); faster push-pull.
SPEC: dict[str, Any] = {
    "preset": "lan",
    "membership": {"probeInterval": "1s", "probeTimeout": "500ms", "indirectChecks": 3, "suspicionMult": 4,
                   "suspicionMaxTimeoutMult": 6, "reapAfter": "300s", "streamTimeout": "2s"},
    "gossip": {"interval": "200ms", "pushPullInterval": "10s"},
}
N = 8  # 7 from the start, 1 joins during the loss
# Overridable for exploration (e.g. GOSSIP_CHAOS_LOSS_PERCENT=25); the suite runs issue 2's 10% for 60 s.
LOSS_PERCENT = int(os.environ.get("GOSSIP_CHAOS_LOSS_PERCENT", "10"))
LOSS_SECONDS = float(os.environ.get("GOSSIP_CHAOS_LOSS_SECONDS", "60"))


@pytest.fixture
def net(tmp_path: Path) -> Iterator[AgentNet]:
    yield from make_net(N, SPEC, tmp_path)


def test_ten_percent_loss_no_false_positives_and_rumors_spread(net: AgentNet) -> None:
    bed = net.bed
    cfg = agent_config(SPEC)
    seeds = [bed.hosts[0], bed.hosts[1]]
    agents = [net.start(h, seeds=seeds) for h in bed.hosts[:-1]]
    net.wait(lambda: net.sees(agents, {a.name: ["alive"] for a in agents}), startup_bound(cfg, N),
             f"{len(agents)} agents to see each other alive")

    bed.loss(LOSS_PERCENT)
    start = time.monotonic()
    live = list(agents)
    false_dead: list[str] = []
    suspect_sightings = 0

    def poll() -> None:
        nonlocal suspect_sightings
        names = {a.name for a in live}
        for a in live:
            view = net.members(a) or {}
            for name, state in view.items():
                if name in names and state == "dead":
                    false_dead.append(f"{a.name} saw {name} dead at t+{time.monotonic() - start:.1f}s")
                suspect_sightings += state == "suspect"

    def sees_all(expected: dict[str, list[str]]) -> bool:
        poll()
        return net.sees(live, expected)

    # A new member joins through the lossy network: everyone must learn of it.
    joiner = net.start(bed.hosts[-1], seeds=seeds)
    live.append(joiner)
    join_bound = startup_bound(cfg, 1) + spread_bound(cfg, N)
    net.wait(lambda: sees_all({a.name: ["alive"] for a in live}), join_bound,
             f"every agent to see the joiner {joiner.name} alive under {LOSS_PERCENT}% loss",
             interval=0.5)
    joined_at = time.monotonic() - start

    # A member leaves gracefully: the `left` rumor must reach everyone (as left, not as a failure).
    leaver = agents[-2]
    live.remove(leaver)
    assert net.leave(leaver) == 0, f"{leaver.name} did not exit cleanly\n{leaver.proc.log_tail()}"
    net.wait(lambda: sees_all({leaver.name: ["left"]}), spread_bound(cfg, N),
             f"every agent to see {leaver.name} left under {LOSS_PERCENT}% loss",
             interval=0.5)
    left_at = time.monotonic() - start

    while time.monotonic() - start < LOSS_SECONDS:
        poll()
        time.sleep(1.0)
    dropped = {h.ns: bed.dropped_by_loss(h) for h in bed.hosts}
    bed.clear_loss()

    expected = {**{a.name: ["alive"] for a in live}, leaver.name: ["left"]}
    net.wait(lambda: net.sees(live, expected), spread_bound(cfg, N),
             "a consistent view after the loss ends")
    metrics = {a.name: net.metrics(a) or {} for a in live}
    deaths = {name: m.get("gossip_deaths_total", -1.0) for name, m in metrics.items()}
    logged_dead = {a.name: net.dead_reports(a) for a in live}
    suspicions = sum(m.get("gossip_suspicions_total", 0.0) for m in metrics.values())
    refutations = sum(m.get("gossip_refutations_total", 0.0) for m in metrics.values())

    assert not false_dead, f"live agents were seen dead: {false_dead}\n{net.diagnostics()}"
    assert not any(logged_dead.values()), f"agents logged deaths: {logged_dead}\n{net.diagnostics()}"
    assert all(v == 0 for v in deaths.values()), f"gossip_deaths_total: {deaths}"
    for a in live:
        assert a.proc.alive(), f"{a.name} exited\n{a.proc.log_tail()}"
    if bed.backend == "nft":  # the fault really happened (every live host receives hundreds of packets)
        assert all(dropped[a.host.ns] for a in live), f"the loss rule dropped nothing somewhere: {dropped}"
    print(f"{LOSS_PERCENT}% loss for {LOSS_SECONDS:.0f}s: joiner seen by all at t+{joined_at:.1f}s, leave at "
          f"t+{left_at:.1f}s; packets dropped per host {sorted(v or 0 for v in dropped.values())}; "
          f"suspicions {suspicions:.0f}, refutations {refutations:.0f}, suspect sightings {suspect_sightings}, "
          "false deaths 0")
