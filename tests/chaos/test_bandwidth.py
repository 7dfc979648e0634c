"""Bandwidth limits with real agents in network namespaces: every link shaped by a tc tbf qdisc (both
directions), one of them much slower than the rest. The cluster must still converge, take in a joiner,
detect a crash, and mark no live member dead. Gossip traffic is small (packets up to the MTU, a push-pull of
a few members is about a kilobyte), so a slow link should delay nothing that matters; the test guards
against bursts (a join's push-pulls, immediate forwarding) that would overflow a narrow queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.netns import (
    AgentNet,
    agent_config,
    detection_bound,
    make_net,
    spread_bound,
    startup_bound,
)

pytestmark = pytest.mark.netns

SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "indirectChecks": 2, "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 3, "reapAfter": "300s", "streamTimeout": "2s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
}
N = 6  # 5 from the start, 1 joins later
RATE = "512kbit"
SLOW_RATE = "48kbit"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[AgentNet]:
    yield from make_net(N, SPEC, tmp_path)


def test_shaped_links_converge_and_detect_without_false_positives(net: AgentNet) -> None:
    bed = net.bed
    cfg = agent_config(SPEC)
    slow = bed.hosts[1]
    for h in bed.hosts:
        bed.bandwidth(h, SLOW_RATE if h is slow else RATE, burst="4kb", latency="300ms")
    seeds = [bed.hosts[0], slow]
    agents = [net.start(h, seeds=seeds) for h in bed.hosts[:-1]]
    started = time.monotonic()
    net.wait(lambda: net.sees(agents, {a.name: ["alive"] for a in agents}), startup_bound(cfg, N),
             f"{len(agents)} agents on shaped links to see each other alive")
    converged = time.monotonic() - started

    joiner = net.start(bed.hosts[-1], seeds=[slow])  # joins through the slow link only
    live = [*agents, joiner]
    t = time.monotonic()
    net.wait(lambda: net.sees(live, {a.name: ["alive"] for a in live}),
             startup_bound(cfg, 1) + spread_bound(cfg, N),
             f"every agent to see the joiner {joiner.name}")
    joined = time.monotonic() - t

    victim = agents[3]
    net.crash(victim)
    live.remove(victim)
    t = time.monotonic()
    net.wait(lambda: net.sees(live, {victim.name: ["dead"], **{a.name: ["alive"] for a in live}}),
             detection_bound(cfg, N), f"every agent to mark the crashed {victim.name} dead")
    detected = time.monotonic() - t

    false_dead = {a.name: [n for n in net.dead_reports(a) if n != victim.name] for a in live}
    assert not any(false_dead.values()), f"live agents marked dead: {false_dead}\n{net.diagnostics()}"
    for a in live:
        assert a.proc.alive(), f"{a.name} exited\n{a.proc.log_tail()}"
    print(f"links {RATE} (one {SLOW_RATE}): converged in {converged:.1f}s, joiner seen in {joined:.1f}s, "
          f"crash detected in {detected:.1f}s")
