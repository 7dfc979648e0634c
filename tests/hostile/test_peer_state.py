"""Attacks on the replicated state through peers and clients, on real agents (issue 10, items 1, 2, 6).

The issue's first finding: one causal context with an HLC of 2^63-1 (or ~1,030 counter increments of 2^53,
or a forged anti-entropy push) made every later write answer 200 but never replicate, lost an acknowledged
write after kill -9 and broke graceful restarts. Here each such input is refused where it enters (400 or a
counted drop), replication carries on, and a kill -9 plus restart recovers every acknowledged write.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip_agent.cli.cluster import AgentProcess, LocalCluster
from gossip_agent.core.crdt import MAX_COUNTER_DELTA
from gossip_agent.core.merkle import DEFAULT_BITS, DEFAULT_DEPTH
from tests.hostile.peer_support import (
    ae_request,
    context_header,
    counter_delta,
    cpu_s,
    get,
    http,
    lww_entry,
    measured,
    metric,
    now_ms,
    put,
    queued_s,
    replicate_body,
    sees_alive,
    start_cluster,
    wait_for,
    wait_ready,
)

LAG_BOUND = 2.0
Cluster = tuple[LocalCluster, list[AgentProcess], Path]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("peer-state")
    with LocalCluster(root) as c:
        yield c, start_cluster(c, root, 3), root


def replicated(agents: list[AgentProcess], key: str, value: bytes, timeout: float = 20.0) -> None:
    for a in agents:
        wait_for(lambda a=a: get(a, key) == value, timeout, f"{key}={value!r} at {a.name}")


def refused(agent: AgentProcess, reason: str) -> float:
    return metric(agent, f'gossip_state_refused_total{{reason="{reason}"}}')


def test_a_context_from_the_far_future_is_a_400_and_replication_goes_on(cluster: Cluster) -> None:
    _, agents, _ = cluster
    a0 = agents[0]
    for wall in (2**63 - 1, 2**62, now_ms() + 3_600_000):
        status, body = http(a0.addr, "PUT", "/v1/kv/poisoned", b"x", {"X-Gossip-Context": context_header(wall)})
        assert status == 400 and b"maxClockDriftMs" in body, (status, body)
    assert refused(a0, "clock_drift") >= 3
    for i in range(3):
        assert put(a0, "after", b"v%d" % i) == 200
    replicated(agents, "after", b"v2")
    # w=3 is met (the issue: w=4 answered 504 for good).
    assert http(a0.addr, "PUT", "/v1/kv/concern?w=3&timeout=10", b"c")[0] == 200
    wait_ready(a0)  # (a busy machine's lag alone fails /readyz for LAG_WINDOW s)


def test_counter_steps_above_2_32_are_a_400_and_the_counter_still_replicates(cluster: Cluster) -> None:
    """Steps of 2^53 used to overflow int64 after ~1,030 requests, then to use a replica's room up in 1,023
    (session 13, F7): a step is at most crdt.MAX_COUNTER_DELTA (2^32) either way, refused at the edge."""
    _, agents, _ = cluster
    a1 = agents[1]
    assert [counter_delta(a1, "big", d) for d in (2**53, -(2**53), MAX_COUNTER_DELTA + 1)] == [400] * 3
    statuses = [counter_delta(a1, "big", MAX_COUNTER_DELTA) for _ in range(5)]
    assert statuses == [200] * 5
    expected = str(5 * MAX_COUNTER_DELTA).encode()
    for a in agents:
        wait_for(lambda a=a: expected in http(a.addr, "GET", "/v1/crdt/counters/big")[1], 20.0,
                 f"the exact total at {a.name}")
    assert counter_delta(a1, "big", -MAX_COUNTER_DELTA) == 200


def test_forged_future_entries_from_peers_are_counted_drops(cluster: Cluster) -> None:
    _, agents, _ = cluster
    a2 = agents[2]
    future = lww_entry("forged", "evil", 1, 2**63 - 1, b"x")
    status, _ = http(a2.addr, "POST", "/v1/internal/replicate", replicate_body(future))
    assert status == 400
    shape = (DEFAULT_BITS, DEFAULT_DEPTH)
    status, _ = http(a2.addr, "POST", "/v1/internal/antientropy", ae_request(shape, [], push=[future]))
    assert status == 200  # the exchange is answered, the forged entry is not merged
    assert refused(a2, "clock_drift") >= 2
    assert get(a2, "forged") is None
    assert put(a2, "after-forge", b"ok") == 200
    replicated(agents, "after-forge", b"ok")


def test_anti_entropy_requests_are_bounded(cluster: Cluster) -> None:
    """Issue: want_nodes of 4,096 entries (~8 KB), 10 concurrent, stalled an agent 25 s (declared dead)."""
    _, agents, _ = cluster
    a0 = agents[0]
    # The lag and stall bounds are wall-clock: they leave out the time a0 waited for a core since before the
    # writes (the lag metric looks back LAG_WINDOW s). A quiet machine waits ~0; at load 40 on 2 cores, 0.1 s of
    # the agent's work takes 2 s.
    queued_before = queued_s(a0.pid)
    for i in range(1000):
        put(a0, f"bulk/{i}", b"v" * 32)
    shape = (DEFAULT_BITS, DEFAULT_DEPTH)
    # The request: 4,096 want_nodes (~8 KB), each near the root (every key under it, walked each time).
    body = ae_request(shape, [(1, i % (1 << DEFAULT_BITS)) for i in range(4096)])
    assert len(body) < 16 * 1024
    results: list[int] = []
    cpu_before = cpu_s(a0.pid)
    with measured(a0) as figures:
        threads = [threading.Thread(target=lambda: results.append(
            http(a0.addr, "POST", "/v1/internal/antientropy", body, timeout=60)[0])) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert set(results) <= {200, 503} and 200 in results
    lag = metric(a0, "gossip_event_loop_lag_max_seconds")
    queued = max(0.0, queued_s(a0.pid) - queued_before)
    cpu = cpu_s(a0.pid) - cpu_before
    print(f"stall {figures['stall_s']:.3f} s, loop lag {lag:.3f} s; a0 waited {queued:.3f} s for a core, "
          f"used {cpu:.3f} s of CPU in the attack")
    assert figures["stall_s"] - queued < LAG_BOUND * 5
    assert lag - queued < LAG_BOUND
    # And in CPU time, which load does not stretch: the whole attack (quiet machine: ~0.1 s; the issue's: 25 s),
    # with room for the agent's own gossip and the probe's requests over a long, busy window.
    assert cpu < LAG_BOUND * 5
    for a in agents:  # all 3 alive (a suspect, a probe the busy machine delayed, is waited out; dead fails)
        sees_alive(a, [x.name for x in agents])


def test_kill_9_then_restart_recovers_every_acknowledged_write(cluster: Cluster) -> None:
    c, agents, _ = cluster
    a2 = agents[2]
    # Poison attempts first (the attack made the next log record unreadable after kill -9).
    http(a2.addr, "PUT", "/v1/kv/acked", b"x", {"X-Gossip-Context": context_header(2**63 - 1)})
    acked = [f"acked/{i}" for i in range(20)]
    for key in acked:
        assert put(a2, key, key.encode()) == 200
    a2.signal(signal.SIGKILL)
    a2.wait(10)
    cfg_path = a2.config_path
    cfg = json.loads(cfg_path.read_text())
    restarted = c.start(cfg)
    wait_for(lambda: restarted.status(), 30.0, "the restarted agent")
    for key in acked:
        assert get(restarted, key) == key.encode()
    assert metric(restarted, 'gossip_state_recovery_problems_total{problem="record_unreadable"}') == 0
    # A graceful restart then an unreadable snapshot: recovered from the log and the peers, and said so.
    # (the snapshot is written on the graceful stop: a grace the busy machine's leave and flush fit in, not the
    # default 5 s, after which SIGKILL would leave no snapshot to break)
    assert c.stop(restarted, grace=60.0) == 0
    snap = Path(cfg["storage"]["dataDir"]) / "snapshot"
    assert snap.exists()
    snap.write_bytes(b"\x00garbage")
    again = c.start(cfg)
    wait_for(lambda: again.status(), 30.0, "the agent with a broken snapshot")
    assert metric(again, 'gossip_state_recovery_problems_total{problem="snapshot_unreadable"}') == 1
    assert "snapshot is unreadable" in again.log_path.read_text()
    for key in acked:  # only the snapshot held them: anti-entropy brings them back from the peers
        wait_for(lambda key=key: get(again, key) == key.encode(), 30.0, f"{key} back from the peers")
    agents[2] = again
