"""Real agent processes on loopback: join, kill -9 detection, graceful leave, restart, garbage, encryption,
and `gossipctl up`. Timings come from the config (FAST_SPEC), and every wait is bounded by what the config
implies, generously: these are correctness checks, not performance assertions.
"""

from __future__ import annotations

import base64
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gossip_agent.cli.client import ClientError, parse_metrics
from gossip_agent.cli.cluster import (
    AgentProcess,
    LocalCluster,
    Manifest,
    agent_configs,
    free_port_block,
    port_is_free,
)
from gossip_agent.core.config import from_mapping
from tests.hostile.peer_support import patient, wait_ready

T = TypeVar("T")

# Short timings for loopback tests (memberlist's local preset, faster): detection in seconds, not tens.
FAST_SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 2, "reapAfter": "120s", "streamTimeout": "1s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
}


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


N = 7
REPO = Path(__file__).resolve().parents[2]


def states(agent: AgentProcess) -> dict[str, tuple[str, int]] | None:
    """`agent`'s view, None if it does not answer (it is down). Also read once, outside the waits, so with a busy
    machine's timeout (`patient`): agent.client's 1 s makes an agent that answers in 2 s look down."""
    try:
        return {m["name"]: (m["state"], m["incarnation"]) for m in patient(agent).members()}
    except ClientError:
        return None


def detection_bound(spec: dict[str, Any], n: int) -> float:
    """Worst case the config implies for all members to mark a crashed one dead: every member may need a
    full probe round (n probes, each stretched by the maximum Lifeguard awareness multiplier) to reach it,
    then the longest suspicion timeout (no confirmations), then gossip — with a push-pull as the backstop."""
    cfg = from_mapping({**spec, "name": "x"})
    m, g = cfg.membership, cfg.gossip
    probe_round = n * m.probe_interval * m.awareness_max_multiplier
    suspicion_max = m.suspicion_max_timeout_mult * m.suspicion_mult * max(1.0, math.log10(n)) * m.probe_interval
    return probe_round + suspicion_max + g.push_pull_interval + 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base = free_port_block(N + 1)
    manifest = Manifest("t", N, FAST_SPEC)
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as c:
        for cfg in agent_configs(manifest, base_port=base):
            c.start(cfg)
        yield c


def all_alive(agents: list[AgentProcess], names: set[str]) -> bool:
    for a in agents:
        s = states(a)
        if s is None or {n for n, (st, _) in s.items() if st == "alive"} != names:
            return False
    return True


def test_agents_join_and_all_see_all(cluster: LocalCluster) -> None:
    names = {a.name for a in cluster.agents}
    started = time.monotonic()
    wait_for(lambda: all_alive(cluster.agents, names), 30.0, f"all {N} agents to see {N} alive")
    print(f"{N} agents converged {time.monotonic() - started:.2f}s after the check started")
    for a in cluster.agents:
        wait_ready(a)  # (waited for: a busy machine's loop lag alone fails /readyz for 10 s)


def test_garbage_udp_is_dropped_counted_and_harmless(cluster: LocalCluster) -> None:
    target = cluster.agents[1]
    garbage = [b"", b"\x07not a packet", b"\x01" + os.urandom(300), b"\xe1" + os.urandom(80),
               b"\x01\x92\xa1x\x91\x92\x63\x01", b"\x01" + b"\x91" * 2000]
    reasons = ("auth", "bad_version", "unknown_type")

    def counted() -> dict[str, float] | None:
        m = parse_metrics(patient(target).metrics())
        d = {k: v for k, v in m.items() if k.startswith("gossip_packets_dropped_total")}
        done = all(d.get(f'gossip_packets_dropped_total{{reason="{r}"}}', 0) >= 20 for r in reasons)
        return d if done else None

    # The kernel drops datagrams when the agent's receive buffer is full (a busy machine, a burst of 2 kB
    # packets), so garbage goes in paced rounds until every kind has been counted 20 times: bounded rounds.
    d: dict[str, float] | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for rounds in range(1, 201):
            for data in garbage:
                s.sendto(data, ("127.0.0.1", target.port))
            time.sleep(0.01)
            if rounds >= 20 and rounds % 10 == 0 and (d := counted()):
                break
    d = d or wait_for(counted, 30.0, "each kind of garbage to be counted as dropped 20 times")
    for r in reasons:
        assert d[f'gossip_packets_dropped_total{{reason="{r}"}}'] >= 20
    assert target.running()
    wait_ready(target)  # (a busy machine's loop lag alone fails /readyz for 10 s; a closed endpoint never heals)
    names = {a.name for a in cluster.agents}
    wait_for(lambda: all_alive([target], names), 30.0, "the target to still see everyone alive")


def test_kill9_is_detected_by_all_then_restart_rejoins(cluster: LocalCluster) -> None:
    victim = cluster.agents[-1]
    others = [a for a in cluster.running() if a is not victim]
    bound = detection_bound(FAST_SPEC, len(others) + 1)
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    killed = time.monotonic()

    def all_see_dead() -> bool:
        return all((s := states(a)) is not None and s.get(victim.name, ("?", 0))[0] == "dead" for a in others)

    wait_for(all_see_dead, bound, f"every member to mark {victim.name} dead (bound {bound:.0f}s)")
    print(f"kill -9 detected by all {len(others)} members in {time.monotonic() - killed:.2f}s (bound {bound:.0f}s)")
    dead_inc = max(s[victim.name][1] for a in others if (s := states(a)))

    restarted = cluster.start(from_mapping_dict(victim))
    names = {a.name for a in others} | {restarted.name}
    wait_for(lambda: all_alive([*others, restarted], names), 30.0, f"{victim.name} to rejoin as alive")
    incs = {s[victim.name][1] for a in others if (s := states(a))}
    assert min(incs) > dead_inc, "the restarted member refuted its death with a higher incarnation"


def from_mapping_dict(agent: AgentProcess) -> dict[str, Any]:
    import yaml
    return dict(yaml.safe_load(agent.config_path.read_text()))


def test_graceful_leave_shows_left_not_dead(cluster: LocalCluster) -> None:
    leaver = next(a for a in cluster.running() if a.name == f"t-{N - 2}")
    others = [a for a in cluster.running() if a is not leaver]
    # The leave lingers at most ~1 s; the rest of the bound is for a busy test machine (exceeding it kills the
    # process, which then does not exit 0).
    assert cluster.stop(leaver, grace=30.0) == 0, "SIGTERM exits 0 after the leave"

    def all_see_left() -> bool:
        return all((s := states(a)) is not None and s.get(leaver.name, ("?", 0))[0] == "left" for a in others)

    wait_for(all_see_left, 30.0, f"every member to see {leaver.name} as left")
    # And it stays `left`: nobody re-marks a departed member dead.
    time.sleep(2.0)
    assert all((s := states(a)) is not None and s[leaver.name][0] == "left" for a in others)


def _keyring(path: Path, *keys: bytes) -> str:
    path.write_text("".join(base64.b64encode(k).decode() + "\n" for k in keys))
    return str(path)


def test_encrypted_cluster_admits_only_key_holders(tmp_path: Path) -> None:
    k1, k2, k3 = os.urandom(32), os.urandom(16), os.urandom(32)
    base = free_port_block(4)
    seeds = [f"127.0.0.1:{base}"]

    def cfg(i: int, keyring: str) -> dict[str, Any]:
        return {**FAST_SPEC, "name": f"e{i}", "bindAddress": "127.0.0.1", "port": base + i, "seeds": seeds,
                "security": {"keyringFile": keyring}}

    with LocalCluster(tmp_path) as c:
        good = [c.start(cfg(0, _keyring(tmp_path / "k0", k1))),
                c.start(cfg(1, _keyring(tmp_path / "k1", k1, k2))),   # mid-rotation: K2 added as secondary
                c.start(cfg(2, _keyring(tmp_path / "k2", k1)))]
        intruder = c.start(cfg(3, _keyring(tmp_path / "k3", k3)))
        names = {"e0", "e1", "e2"}
        wait_for(lambda: all_alive(good, names), 30.0, "the key holders to see each other")
        time.sleep(1.5)
        for a in good:
            assert "e3" not in (states(a) or {})
        assert {name: st for name, (st, _) in (states(intruder) or {}).items()} == {"e3": "alive"}
        assert not patient(intruder).ready()
        m = parse_metrics(patient(good[0]).metrics())
        assert m.get('gossip_packets_dropped_total{reason="auth"}', 0) >= 1
        # POST /v1/leave: the agent leaves and its process exits 0.
        patient(good[2]).leave()
        assert good[2].wait(30.0) == 0
        wait_for(lambda: (states(good[0]) or {}).get("e2", ("?", 0))[0] == "left", 30.0, "e2 to be seen as left")


def test_gossipctl_up_exit_when_converged(tmp_path: Path) -> None:
    base = free_port_block(5)
    proc = subprocess.run(
        [sys.executable, "-m", "gossip_agent.cli", "up", "-f", str(REPO / "examples" / "gossipcluster.yaml"),
         "--base-port", str(base), "--dir", str(tmp_path / "lc"), "--exit-when-converged", "--timeout", "90"],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converged: all 5 agents see 5 alive" in proc.stdout
    # Every process it started is gone (their ports are free again).
    wait_for(lambda: all(port_is_free(p) for p in range(base, base + 5)), 30.0, "ports to be released")
