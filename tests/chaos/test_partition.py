"""Issue 2: a network partition between two halves of a cluster, with real agents in network namespaces.

Six agents (3 | 3) join and converge; nftables/iptables rules then cut all traffic between the halves, and
each side must mark the other dead while keeping its own side alive; once healed they must merge again
(every agent sees all six alive). The merge depends on the runtime's reconnect: members declared dead are
retried with a push-pull every `reconnectInterval` (Serf's reconnect), since a dead member is never probed.

Waits are bounded by what the config implies (conftest's bounds), with slack: correctness, not speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.netns import BUSY_MACHINE_SLACK, AgentNet, agent_config, detection_bound, make_net, startup_bound

pytestmark = pytest.mark.netns

# memberlist's local preset, faster still: detection in seconds. Reaping is pushed past the test so "dead"
# stays visible, and reconnects are frequent so the healed halves find each other quickly.
SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "indirectChecks": 2, "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 2, "reapAfter": "300s", "streamTimeout": "1s",
                   "reconnectInterval": "2s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
}
N = 6


def merge_bound(spec: dict[str, Any], n: int) -> float:
    """After healing: a few reconnect rounds (a member learns its peers came back only when it syncs with one
    of them, and refutations travel one more round), then gossip and a push-pull, plus slack."""
    cfg = agent_config(spec)
    return 4 * cfg.membership.reconnect_interval + 2 * cfg.gossip.push_pull_interval + BUSY_MACHINE_SLACK


@pytest.fixture
def net(tmp_path: Path) -> Iterator[AgentNet]:
    yield from make_net(N, SPEC, tmp_path)


def test_partition_marks_other_side_dead_and_heal_remerges(net: AgentNet) -> None:
    bed = net.bed
    cfg = agent_config(SPEC)
    side_a, side_b = bed.hosts[:3], bed.hosts[3:]
    seeds = [bed.hosts[0], bed.hosts[3]]
    agents = [net.start(h, seeds=seeds) for h in bed.hosts]
    agents_a, agents_b = agents[:3], agents[3:]
    names_a, names_b = [a.name for a in agents_a], [a.name for a in agents_b]
    everyone_alive = {a.name: ["alive"] for a in agents}

    started = time.monotonic()
    net.wait(lambda: net.sees(agents, everyone_alive), startup_bound(cfg, N),
             f"all {N} agents to see each other alive")
    converged = time.monotonic() - started

    bed.partition(side_a, side_b)
    cut = time.monotonic()
    bound = detection_bound(cfg, N)
    a_view = {**{n: ["alive"] for n in names_a}, **{n: ["dead"] for n in names_b}}
    b_view = {**{n: ["dead"] for n in names_a}, **{n: ["alive"] for n in names_b}}
    net.wait(lambda: net.sees(agents_a, a_view) and net.sees(agents_b, b_view), bound,
             "each side to mark the other dead and keep its own side alive")
    detected = time.monotonic() - cut
    for a in agents:
        assert a.proc.alive(), f"{a.name} exited during the partition\n{net.diagnostics()}"

    bed.heal()
    healed = time.monotonic()
    net.wait(lambda: net.sees(agents, everyone_alive), merge_bound(SPEC, N),
             f"all {N} agents to see all {N} alive again after healing")
    merged = time.monotonic() - healed
    print(f"converged in {converged:.1f}s, partition detected in {detected:.1f}s (bound {bound:.0f}s), "
          f"re-merged in {merged:.1f}s (bound {merge_bound(SPEC, N):.0f}s)")


@pytest.fixture
def small_net(tmp_path: Path) -> Iterator[AgentNet]:
    yield from make_net(4, SPEC, tmp_path)


def test_isolated_member_marks_all_dead_and_rejoins_after_link_up(small_net: AgentNet) -> None:
    """A 1 | 3 split by taking one host's link down: the lone member sees everyone else dead (so it is no longer
    joined, and its join loop goes back to the seeds), the rest see it dead; link up merges them again."""
    net, bed = small_net, small_net.bed
    cfg = agent_config(SPEC)
    n = len(bed.hosts)
    agents = [net.start(h, seeds=[bed.hosts[0], bed.hosts[1]]) for h in bed.hosts]
    everyone_alive = {a.name: ["alive"] for a in agents}
    net.wait(lambda: net.sees(agents, everyone_alive), startup_bound(cfg, n),
             f"all {n} agents to see each other alive")

    lone, rest = agents[0], agents[1:]  # the lone one is a seed of the others
    bed.link_down(lone.host)
    net.wait(lambda: net.sees([lone], {a.name: ["dead"] for a in rest})
             and net.sees(rest, {lone.name: ["dead"], **{a.name: ["alive"] for a in rest}}),
             detection_bound(cfg, n), "the lone member and the rest to mark each other dead")

    bed.link_up(lone.host)
    net.wait(lambda: net.sees(agents, everyone_alive), merge_bound(SPEC, n),
             f"all {n} agents to see all alive again after link up")
