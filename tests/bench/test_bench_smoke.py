"""Smoke run of bench/bench_cluster.py: a few agents, short windows, every scenario, JSON out.

Proves the script runs end to end (processes, log parsing, nft counters when root, the table); it asserts
no timings. Serf is included only if the `serf` binary is installed (Debian package `serf`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_cluster.py"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc (Linux)")


def test_bench_cluster_smoke(tmp_path: Path) -> None:
    impls = "ours,serf" if shutil.which("serf") else "ours"
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--impls", impls, "--scenarios", "all", "--n", "5", "--runs", "1",
           "--rumor-runs", "1", "--rumor-gap", "0.5", "--kill-runs", "1", "--kill-timeout", "40",
           "--settle-seconds", "1", "--idle-seconds", "3", "--soak-n", "5", "--soak-seconds", "3",
           "--soak-batch", "5", "--join-timeout", "60", "--base-port", str(22000 + os.getpid() % 5000),
           "--json", str(out), "--keep-logs", str(tmp_path / "logs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the bench stops its agents and removes its counters on SIGTERM
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stdout + stderr[-4000:]
    assert "ours/serf" in stdout
    data = json.loads(out.read_text())
    assert set(data["results"]) == set(impls.split(","))
    for name, r in data["results"].items():
        assert r["join"]["not_converged"] == 0, (name, r["join"])
        assert {"idle", "rumor", "kill", "soak"} <= set(r), name
        assert r["idle"]["cpu_pct_mean"] is not None
        assert r["kill"]["runs"], name
    metrics = {row["metric"] for row in data["table"]}
    assert "join: all see all N, worst run" in metrics
    # The bench removes its nftables table on exit.
    if shutil.which("nft") and os.geteuid() == 0:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"gossip_bench_{proc.pid}" not in tables
