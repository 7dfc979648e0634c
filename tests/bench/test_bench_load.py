"""bench/bench_load.py and bench/report.py do not rot: a 3-agent run end to end, then the report from its JSON.

No timing is asserted (timings belong to the benchmark, not to tests): only that every write reached every
agent, the roots agreed, and — where the bench can count bytes (root: nftables and AF_PACKET) — that the
bytes by message type add up to the counted total, that state rumors are among them, and that the bench's own
HTTP traffic is not. Plus the byte accounting on a hand-made result, without processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_load.py"
REPORT = ROOT / "bench" / "report.py"

sys.path.insert(0, str(ROOT / "bench"))

import bench_load  # noqa: E402

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc (Linux)")


def can_count_bytes() -> bool:
    """nftables usable here (root with CAP_NET_ADMIN and the `nft` tool)."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return False
    return subprocess.run(["nft", "list", "tables"], capture_output=True, timeout=10).returncode == 0


def can_capture() -> bool:
    """A packet socket can be opened here (CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()
    except (OSError, AttributeError):
        return False
    return True


def test_byte_figures_add_up_and_split_membership_from_data() -> None:
    r = {"nft_whole": {"bytes": 12_000, "udp_bytes": 10_000, "udp_packets": 20, "tcp_bytes": 2_000},
         "nft_during_writes": {"bytes": 6_000}, "floor_bytes_per_write": 500,
         # The capture saw half the datagrams (the other half dropped): shares scale to the nft total.
         "capture": {"packets": 10, "wire_bytes": 5_000,
                     "wire_bytes_by_type": {"state": 2_000, "alive": 2_500, "ping": 500}},
         "agent_counters": {"bytes_out_by_kind": {"pushpull": 300}, "bytes_in_by_kind": {"pushpull": 100},
                            "antientropy_bytes": {"sent": 100, "received": 300}}}
    out = bench_load.byte_figures(r, writes=4, n=3, write_window=2.0)
    assert out["bytes_per_write"] == 3_000
    assert out["x_floor"] == 6.0
    assert out["kBps_during_writes"] == 3.0
    assert out["bytes_by_type"] == {"alive": 5_000, "state": 4_000, "ping": 1_000, "tcp:pushpull": 1_000,
                                    "tcp:antientropy": 1_000}
    assert sum(out["bytes_by_type"].values()) == 12_000
    assert out["membership_share"] == pytest.approx(7 / 12, abs=1e-3)   # alive + ping + push-pull
    assert out["alive_share"] == pytest.approx(5 / 12, abs=1e-3)
    assert out["udp_split"] == "capture"


def test_byte_figures_use_the_agents_message_counts_when_the_capture_dropped() -> None:
    # The capture kept 1 state message in 4 but every alive one: its shares alone would say alive 2/3.
    r = {"nft_whole": {"bytes": 9_000, "udp_bytes": 9_000, "udp_packets": 80, "tcp_bytes": 0},
         "floor_bytes_per_write": 1_000,
         "capture": {"packets": 40, "wire_bytes": 3_000, "messages": {"state": 10, "alive": 20},
                     "wire_bytes_by_type": {"state": 1_000, "alive": 2_000}},
         "agent_counters": {"messages_out_by_type": {"state": 40, "alive": 20, "nack": 1}}}
    out = bench_load.byte_figures(r, writes=3, n=3, write_window=1.0)
    assert out["udp_split"].startswith("agent message counts")
    # state 40 x 100 B, alive 20 x 100 B, nack 1 x the captured mean (100 B); scaled to 9,000.
    assert out["bytes_by_type"] == {"state": 5_902, "alive": 2_951, "nack": 148}
    assert out["capture_kept"] == 0.5


@linux
def test_out_rates_per_agent_and_budget_plan() -> None:
    before = [{'gossip_bytes_total{direction="out",kind="ping"}': 100.0},
              {'gossip_bytes_total{direction="out",kind="ping"}': 0.0}]
    after = [{'gossip_bytes_total{direction="out",kind="ping"}': 1100.0,
              'gossip_bytes_total{direction="out",kind="state"}': 2000.0,
              'gossip_bytes_total{direction="in",kind="state"}': 9999.0,
              'gossip_bytes_total{direction="out",kind="antientropy"}': 7777.0},
             {'gossip_bytes_total{direction="out",kind="ping"}': 1000.0}]
    assert bench_load.out_rates(before, after, 2.0) == {"mean": 1000, "max": 1500}
    args = argparse.Namespace(n="10", rate="100", writes=0, seconds=1.0, modes="push-pull", set=[], size=512,
                              critical_every=10, budget=30000, serf=False, issue_scenario=False, sweep=False,
                              broadcasts="")
    plain, budgeted = bench_load.plan(args)
    assert plain.budget == 0 and budgeted.budget == 30000
    assert "gossip.maxBytesPerSecond=30000" in budgeted.sets and budgeted.critical_every == 10


def test_apply_trace_reads_appended_lines_and_keeps_a_torn_tail(tmp_path: Path) -> None:
    """The bench follows the agents' apply stamps as they are appended: a line cut by the writer's flush is
    completed by the next poll, the first stamp of a key per agent wins, and a missing file is not yet."""
    arrivals: dict[str, dict[str, float]] = {}
    trace = bench_load.ApplyTrace(tmp_path, {11: "a", 12: "b"}, arrivals)
    trace.poll()
    assert arrivals == {}
    (tmp_path / "11.trace").write_bytes(b"bench/x\t1.5\nbench/y\t2.")
    trace.poll()
    assert arrivals == {"bench/x": {"a": 1.5}}
    with (tmp_path / "11.trace").open("ab") as f:
        f.write(b"25\nbench/x\t9.0\n")
    (tmp_path / "12.trace").write_bytes(b"bench/x\t3.0\n")
    trace.poll()
    assert arrivals == {"bench/x": {"a": 1.5, "b": 3.0}, "bench/y": {"a": 2.25}}


@pytest.mark.parametrize("observer", ["trace", "watch"])
def test_bench_load_smoke(tmp_path: Path, observer: str) -> None:
    """Both observers see every write everywhere: the agents' own apply stamps (the default) and the watch
    streams."""
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(BENCH), "--n", "3", "--rate", "20", "--writes", "6", "--size", "300",
           "--modes", "push-pull", "--settle", "0.5", "--idle-seconds", "1", "--tail", "0.5",
           "--deliver-timeout", "60", "--observer", observer,
           "--converge-timeout", "60", "--base-port", str(27000 + os.getpid() % 3000),
           "--json", str(out), "--keep-logs", str(tmp_path / "logs")]
    if shutil.which("serf") and observer == "trace":
        cmd.append("--serf")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the bench stops its agents and removes its counters on SIGTERM
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stdout + stderr[-4000:]
    data = json.loads(out.read_text())
    ours = [r for r in data["results"] if r["scenario"]["impl"] == "ours"]
    assert len(ours) == 1
    r = ours[0]
    assert r["apparatus"]["observer"] == observer
    assert r["writes_acked"] == 6 and not r["write_errors"]
    assert r["latency"]["complete"] == 6, r["latency"]
    assert r["roots_equal_after_last_write_s"] is not None
    assert r["incarnation"]["max"] >= 0
    assert {"false_positives", "suspected_members"} <= set(r["membership_under_load"])
    if can_count_bytes():
        whole = r["nft_whole"]
        assert whole["udp_bytes"] > 0
        if can_capture():
            assert r["capture"]["undecoded_packets"] == 0
            assert r["bytes_by_type"].get("state", 0) > 0
        assert sum(r["bytes_by_type"].values()) == pytest.approx(whole["bytes"], rel=0.01)
        # 6 PUTs of 300 B, watch streams and status polls went through the client address: none counted. What
        # is counted is agent-to-agent: at least one copy of each write to each of the 2 others.
        assert whole["bytes"] >= r["floor_bytes_per_write"] * 6
        assert r["idle"]["Bps_per_agent"] >= 0
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"gossip_load_{proc.pid}" not in tables
    if observer == "watch":
        return
    if shutil.which("serf"):
        serf = [r for r in data["results"] if r["scenario"]["impl"] == "serf"]
        assert serf and "error" not in serf[0], serf

    md = tmp_path / "REPORT.md"
    res = subprocess.run([sys.executable, str(REPORT), "--output", str(md), "--out-dir", str(tmp_path / "plots"),
                          str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    text = md.read_text()
    assert "## Targets" in text and "| load | push-pull | 3 |" in text
