"""Peer attacks over UDP and push-pull on real agents on 127.0.0.1 (issue 10, items 2, 3, 5, 7).

Each test sends the crafted input to a real agent and checks that it still gossips, that the input was a
counted drop, that /readyz tells the truth, and that the event loop did not stall (the agent's own
gossip_event_loop_lag_max_seconds, bounded generously: a busy 2-core CI machine, not a benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gossip_agent.cli.cluster import AgentProcess, LocalCluster
from tests.hostile.peer_support import (
    alive,
    fake_rows,
    http,
    measured,
    metric,
    packet,
    patient,
    push_pull_body,
    queued_s,
    sees_alive,
    start_cluster,
    udp_send,
    wait_for,
    wait_ready,
)

MAX_MEMBERS = 64
LAG_BOUND = 2.0  # seconds: a stall the attack would cause is 10 s to minutes; a busy CI box stays well below
# once the time the agent waited for a core is left out (`waited`): at load 40 on 2 cores 0.1 s of work takes 2 s.


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    root = tmp_path_factory.mktemp("peer-udp")
    with LocalCluster(root) as c:
        yield start_cluster(c, root, 3, membership={"maxMembers": MAX_MEMBERS})


def dropped(agent: AgentProcess, reason: str) -> float:
    return metric(agent, f'gossip_packets_dropped_total{{reason="{reason}"}}')


def waited(agent: AgentProcess, since: float) -> float:
    """Seconds `agent` has waited for a core since `queued_s` read `since`: left out of the wall-clock bounds."""
    return max(0.0, queued_s(agent.pid) - since)  # (a thread gone since: never a negative wait)


def still_gossips(agents: list[AgentProcess]) -> None:
    """Every agent sees every other alive, sends UDP, and is ready; a fresh write reaches everyone."""
    a0 = agents[0]
    out = metric(a0, 'gossip_packets_total{direction="out"}')
    wait_for(lambda: metric(a0, 'gossip_packets_total{direction="out"}') > out + 5, 20.0, "UDP packets out")
    for a in agents:
        wait_for(lambda a=a: (s := a.status()) and s["members"]["alive"] == len(agents), 30.0, f"{a.name} sees all")
        wait_ready(a)  # (a busy machine's lag alone fails /readyz for LAG_WINDOW s; the attack's is bounded)
        assert metric(a, "gossip_udp_up") == 1
    key = f"probe-{time.monotonic_ns()}"
    assert http(a0.addr, "PUT", f"/v1/kv/{key}", b"v")[0] == 200
    for a in agents:
        wait_for(lambda a=a: http(a.addr, "GET", f"/v1/kv/{key}")[0] == 200, 20.0, f"the write at {a.name}")


def test_alive_with_an_unencodable_host_is_dropped_and_udp_stays_up(cluster: list[AgentProcess]) -> None:
    """Issue: 64 x 'é' as a host raised 'encoding of hostname failed' in sendto, asyncio closed the endpoint
    and nothing reopened it."""
    a0 = cluster[0]
    before, queued = dropped(a0, "bad_host"), queued_s(a0.pid)
    with measured(a0) as figures:
        for i in range(5):
            udp_send(a0.port, packet("evil", [alive(f"evil-host-{i}", 1, "é" * 64, 7946)]))
        wait_for(lambda: dropped(a0, "bad_host") >= before + 5, 10.0, "bad_host drops")
    assert "evil-host-0" not in {m["name"] for m in patient(a0).members()}
    still_gossips(cluster)
    assert metric(a0, "gossip_udp_reopens_total") == 0
    assert figures["stall_s"] - waited(a0, queued) < LAG_BOUND * 5


def test_incarnation_2_64_minus_1_is_a_counted_drop_and_the_victim_stays(cluster: list[AgentProcess]) -> None:
    a0, a1, _ = cluster
    before = dropped(a0, "out_of_range")
    udp_send(a0.port, packet("evil", [alive(a1.name, 2**64 - 1, "127.0.0.1", a1.port)]))
    udp_send(a1.port, packet("evil", [[5, a1.name, 2**64 - 1, "evil"]]))
    wait_for(lambda: dropped(a0, "out_of_range") > before, 10.0, "out_of_range drop")
    time.sleep(2.0)  # a push-pull or two: it used to fail forever ("task pushpull failed")
    still_gossips(cluster)
    assert metric(a1, 'gossip_stream_ops_total{op="pushpull",result="ok"}') >= 1


def test_alive_flood_is_capped_and_real_news_still_spreads(cluster: list[AgentProcess]) -> None:
    """Issue: 5,000 forged Alives left ~1,960 fake members, maxed Lifeguard health, pushed real rumors out
    of the queue and caused a false death."""
    a0 = cluster[0]
    queued = queued_s(a0.pid)
    with measured(a0) as figures:
        for batch in range(500):  # 5,000 forged members, 10 per packet, over ~5 s
            udp_send(a0.port, packet("evil", [alive(f"flood{batch}-{i}", 1, "127.0.0.1", 9) for i in range(10)]))
            if batch % 50 == 0:
                time.sleep(0.5)
    members = patient(a0).members()
    assert len(members) <= MAX_MEMBERS
    # Every forged member past the cap that arrived is a counted refusal (UDP may lose some of the 500 packets).
    assert metric(a0, 'gossip_node_events_total{event="member_cap"}') >= 2000
    # Real news still spreads from the flooded agent: a write, and no real member is declared dead.
    still_gossips(cluster)
    for a in cluster:
        sees_alive(a, [x.name for x in cluster])  # (a suspect, on a busy machine, is waited out; dead fails)
    assert metric(a0, "gossip_event_loop_lag_max_seconds") - waited(a0, queued) < LAG_BOUND
    assert figures["stall_s"] - waited(a0, queued) < LAG_BOUND * 5


def test_push_pull_with_forty_thousand_fake_members_is_refused_cheaply(cluster: list[AgentProcess]) -> None:
    """Issue: 1,000 fake members in 4 KiB stalled an agent 10.9 s; 40,000 left it unresponsive > 5 min."""
    a0 = cluster[2]
    queued = queued_s(a0.pid)
    body = push_pull_body("evil", fake_rows(40_000, "pp"))
    assert len(body) < 1 << 20
    with measured(a0) as figures:
        status, answer = http(a0.addr, "POST", "/v1/internal/pushpull", body, timeout=60)
    assert status == 400 and b"too_many_members" in answer
    assert metric(a0, 'gossip_packets_dropped_total{reason="too_many_members"}') >= 1
    # Below the cap, a view full of strangers is merged in chunks without stalling the loop.
    body = push_pull_body("evil", fake_rows(MAX_MEMBERS - 10, "small"))
    status, _ = http(a0.addr, "POST", "/v1/internal/pushpull", body, timeout=60)
    assert status == 200
    assert len(patient(a0).members()) <= MAX_MEMBERS
    assert metric(a0, "gossip_event_loop_lag_max_seconds") - waited(a0, queued) < LAG_BOUND
    assert figures["stall_s"] - waited(a0, queued) < LAG_BOUND * 5
    still_gossips(cluster)
