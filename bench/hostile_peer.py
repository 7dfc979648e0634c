"""Before/after figures of issue 10's peer-side attacks on real agents (127.0.0.1), not in CI.

    .venv/bin/python bench/hostile_peer.py                           # this checkout
    git archive <old-commit> agent | tar -x -C /tmp/old              # the code before the fix ...
    .venv/bin/python bench/hostile_peer.py --pythonpath /tmp/old/agent   # ... measured the same way

Each attack gets a fresh 4-agent cluster and prints one JSON line: stall seconds (longest /healthz answer
while it ran, seen from outside), RSS of the attacked agent before/after (MB), drops counted by the agent,
whether data still replicates afterwards ("intact"), /readyz, and attack-specific numbers. The attacks are
the builders of tests/hostile/peer_support.py (raw wire bytes, so they run against any version).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gossip_agent.cli.cluster import AgentProcess, LocalCluster  # noqa: E402
from gossip_agent.core.merkle import DEFAULT_BITS, DEFAULT_DEPTH  # noqa: E402
from tests.hostile.peer_support import (  # noqa: E402
    ae_request,
    alive,
    context_header,
    counter_delta,
    fake_rows,
    get,
    http,
    measured,
    metrics,
    packet,
    push_pull_body,
    put,
    start_cluster,
    udp_send,
)


def replicates(agents: list[AgentProcess], timeout: float = 15.0) -> bool | str:
    """A fresh write at agents[0] reaches every other agent within `timeout`."""
    key = f"intact-{time.monotonic_ns()}"
    try:
        if put(agents[0], key, b"v") != 200:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(get(a, key) == b"v" for a in agents[1:]):
                return True
            time.sleep(0.2)
    except OSError as exc:
        return f"unresponsive ({type(exc).__name__})"
    return False


def drops(agent: AgentProcess) -> dict[str, float]:
    try:
        m = metrics(agent)
    except Exception:
        return {}
    return {k: v for k, v in m.items() if v and (k.startswith("gossip_packets_dropped_total")
                                                or k.startswith("gossip_state_refused_total")
                                                or "member_cap" in k)}


def ready(agent: AgentProcess) -> int:
    try:
        return http(agent.addr, "GET", "/readyz", timeout=5)[0]
    except OSError:
        return 0


def alive_view(agents: list[AgentProcess]) -> list[int | None]:
    out: list[int | None] = []
    for a in agents:
        s = a.status()
        out.append(None if s is None else s["members"]["alive"])
    return out


def attack_hlc(agents: list[AgentProcess]) -> dict[str, Any]:
    a0 = agents[0]
    header = context_header(2**63 - 1, 2**63 - 1)
    status, _ = http(a0.addr, "PUT", "/v1/kv/poison", b"x", {"X-Gossip-Context": header})
    w = http(a0.addr, "PUT", "/v1/kv/concern?w=4&timeout=5", b"c", timeout=30)[0]
    put(a0, "acked-before-kill", b"a")
    return {"poison_status": status, "w4_status": w, "acked_write_on_peers": [get(a, "acked-before-kill") is not None
                                                                             for a in agents[1:]]}


def attack_counter(agents: list[AgentProcess]) -> dict[str, Any]:
    statuses = [counter_delta(agents[0], "big", 2**53) for _ in range(1100)]
    time.sleep(3.0)
    values = []
    for a in agents:
        status, body = http(a.addr, "GET", "/v1/crdt/counters/big")
        values.append(json.loads(body).get("value") if status == 200 else status)
    return {"accepted": statuses.count(200), "refused_400": statuses.count(400),
            "values_agree": len({str(v) for v in values}) == 1, "values": [str(v)[:22] for v in values]}


def attack_bad_host(agents: list[AgentProcess]) -> dict[str, Any]:
    udp_send(agents[0].port, packet("evil", [alive("evil-host", 1, "é" * 64, 7946)]))
    time.sleep(5.0)
    out = metrics(agents[0]).get('gossip_packets_total{direction="out"}', 0)
    time.sleep(3.0)
    return {"udp_packets_out_in_3s": metrics(agents[0]).get('gossip_packets_total{direction="out"}', 0) - out}


def attack_incarnation(agents: list[AgentProcess]) -> dict[str, Any]:
    victim = agents[1]
    udp_send(agents[0].port, packet("evil", [alive(victim.name, 2**64 - 1, "127.0.0.1", victim.port)]))
    udp_send(agents[2].port, packet("evil", [[5, victim.name, 2**64 - 1, "evil"]]))
    time.sleep(15.0)
    states = [{m["name"]: m["state"] for m in a.client.members()}.get(victim.name) for a in (agents[0], agents[2])]
    log = victim.log_path.read_text(errors="replace")
    return {"victim_seen_as": states, "pushpull_task_failures_in_log": log.count("task pushpull failed")}


def attack_push_pull(n: int) -> Callable[[list[AgentProcess]], dict[str, Any]]:
    def run(agents: list[AgentProcess]) -> dict[str, Any]:
        body = push_pull_body("evil", fake_rows(n, "pp"))
        t0 = time.monotonic()
        status: int | str  # the HTTP status, or why there was none
        try:
            status = http(agents[0].addr, "POST", "/v1/internal/pushpull", body, timeout=120)[0]
        except OSError as exc:
            status = str(exc)
        return {"body_bytes": len(body), "status": status, "answer_s": round(time.monotonic() - t0, 2),
                "members_after": len(agents[0].client.members()) if agents[0].status() else None}
    return run


def attack_ae(agents: list[AgentProcess]) -> dict[str, Any]:
    a0 = agents[0]
    for i in range(2000):
        put(a0, f"bulk/{i}", b"v" * 16)
    nodes = [(1, i % (1 << DEFAULT_BITS)) for i in range(4096)]  # the issue's ~8 KB of want_nodes
    body = ae_request((DEFAULT_BITS, DEFAULT_DEPTH), nodes)
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(http(a0.addr, "POST", "/v1/internal/antientropy", body, timeout=120)[0])
        except OSError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"body_bytes": len(body), "statuses": sorted(map(str, results))}


def attack_flood(agents: list[AgentProcess]) -> dict[str, Any]:
    a0 = agents[0]
    for batch in range(500):
        udp_send(a0.port, packet("evil", [alive(f"flood{batch}-{i}", 1, "127.0.0.1", 9) for i in range(10)]))
        if batch % 50 == 0:
            time.sleep(0.5)
    time.sleep(5.0)
    real = {a.name for a in agents}
    views = [{m["name"]: m["state"] for m in a.client.members()} for a in agents]
    return {"members_at_target": len(views[0]),
            "real_members_not_alive": sorted({n for v in views for n, s in v.items() if n in real and s != "alive"}),
            "health_score": metrics(a0).get("gossip_health_score", 0)}


def attack_write_concern(agents: list[AgentProcess]) -> dict[str, Any]:
    paused = agents[1]
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        statuses = [http(agents[0].addr, "PUT", f"/v1/kv/wc/{i}?w=2&timeout=3", b"v", timeout=30)[0]
                    for i in range(10)]
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    return {"w2_statuses": statuses, "timeouts_504": statuses.count(504)}


ATTACKS: dict[str, Callable[[list[AgentProcess]], dict[str, Any]]] = {
    "hlc_context_2^63-1": attack_hlc,
    "counter_2^53_x1100": attack_counter,
    "alive_host_64xé": attack_bad_host,
    "incarnation_2^64-1": attack_incarnation,
    "pushpull_1000_fake": attack_push_pull(1000),
    "pushpull_40000_fake": attack_push_pull(40_000),
    "ae_want_nodes_4096_x10": attack_ae,
    "alive_flood_5000": attack_flood,
    "w2_one_peer_sigstop": attack_write_concern,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pythonpath", help="run the agents from this source tree (e.g. an old commit's agent/)")
    ap.add_argument("--only", nargs="*", help="attack names to run (default: all)")
    args = ap.parse_args()
    env = {"PYTHONPATH": args.pythonpath} if args.pythonpath else None
    for name, attack in ATTACKS.items():
        if args.only and name not in args.only:
            continue
        root = Path(tempfile.mkdtemp(prefix="hostile-"))
        with LocalCluster(root, env=env) as c:
            agents = start_cluster(c, root, 4)
            a0 = agents[0]
            with measured(a0 if name != "incarnation_2^64-1" else agents[1]) as figures:
                try:
                    extra = attack(agents)
                except Exception as exc:  # the old code may leave the agent unresponsive: that is a figure
                    extra = {"attack_error": f"{type(exc).__name__}: {exc}"[:120]}
            time.sleep(2.0)
            result = {"attack": name, "stall_s": round(figures["stall_s"], 2),
                      "rss_mb": [round(figures["rss_before_mb"], 1), round(figures["rss_after_mb"], 1)],
                      **extra, "drops": drops(a0), "intact": replicates(agents), "readyz": ready(a0),
                      "alive_views": alive_view(agents),
                      "loop_lag_max_s": metrics(a0).get("gossip_event_loop_lag_max_seconds")
                      if a0.status() else None}
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
