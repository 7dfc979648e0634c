"""Write concern uses the healthy peers (issue 10): `w=N` asks another peer when one is slow.

Before: `WriteConcern.next_targets` never looked past a peer it had asked, so with one peer paused (SIGSTOP)
5 of 10 `w=2` writes answered 504 although 3 healthy peers were free. A paused process is the realistic slow
peer: its sockets accept connections (the kernel does) but nothing answers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from gossip_agent.cli.cluster import AgentProcess, LocalCluster
from tests.hostile.peer_support import http, metric, patient, start_cluster


@pytest.fixture(scope="module")
def quad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    root = tmp_path_factory.mktemp("peer-wc")
    with LocalCluster(root) as c:
        # Slow failure detection: the paused peer stays "alive" for the whole test, as in the issue.
        yield start_cluster(c, root, 4, membership={"probeInterval": "2s", "probeTimeout": "1s",
                                                    "suspicionMult": 10, "streamTimeout": "5s"})


def test_w2_with_one_paused_peer_is_met_by_the_healthy_ones(quad: list[AgentProcess]) -> None:
    writer, paused = quad[0], quad[1]
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        answers = []
        started = time.monotonic()
        for i in range(10):
            status, body = http(writer.addr, "PUT", f"/v1/kv/wc/{i}?w=2&timeout=4", b"v", timeout=30)
            answers.append((status, json.loads(body).get("acknowledged")))
        elapsed = time.monotonic() - started
        members = {m["name"]: m["state"] for m in patient(writer).members()}
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    assert members[paused.name] in ("alive", "suspect"), members  # the paused peer was still a candidate
    assert answers == [(200, 2)] * 10, answers
    assert elapsed < 10 * 4, elapsed  # no write waited out its timeout
    assert metric(writer, 'gossip_state_write_concern_total{result="met"}') >= 10
    assert metric(writer, 'gossip_state_write_concern_total{result="timeout"}') == 0
