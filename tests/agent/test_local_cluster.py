"""`gossipctl up` as a supervisor, with real processes on loopback: a killed agent comes back with its data
directory as a new incarnation while the others keep running; a left agent stays gone until `scale`; `kill`,
`ps` and `scale` steer it; a second `up` on the same directory is refused; `members`/`status` output; Ctrl-C
on `watch`. Every wait is a bounded poll on a condition, generous for a busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.cli.cluster import free_port_block, port_is_free
from gossip_agent.cli.control import SOCKET_NAME
from tests.agent.test_processes import FAST_SPEC, wait_for
from tests.hostile.peer_support import PATIENT_S

N = 3
NAME = "lc"
# Restart, rejoin and leave each take seconds; the bounds allow for a machine busy with other work.
BOUND = 60.0


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    dir: Path
    out: Path
    base: int
    pids: set[int]  # every agent PID seen, to clean up by PID if `up` itself fails

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def agents(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads((self.dir / "agents.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        out = {a["name"]: a for a in doc["agents"]}
        self.pids.update(a["pid"] for a in out.values() if a["pid"])
        return out

    def client(self, i: int) -> AgentClient:
        # A busy machine's timeout, not 2 s: views are also read once outside the waits (alive_view's None, a
        # ClientError there, failed the test by load); in the waits a down agent refuses at once.
        return AgentClient(f"127.0.0.1:{self.base + i}", timeout=PATIENT_S)


def ctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossip_agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def alive_view(up: Up, i: int) -> dict[str, tuple[str, int]] | None:
    try:
        return {m["name"]: (m["state"], m["incarnation"]) for m in up.client(i).members()}
    except ClientError:
        return None


def all_see_alive(up: Up, running: list[int], names: set[str]) -> bool:
    for i in running:
        view = alive_view(up, i)
        if view is None or {n for n, (s, _) in view.items() if s == "alive"} != names:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by `up`) is not alive either.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def start_up(tmp: Path, *extra: str) -> Up:
    manifest = tmp / "m.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "gossip-operator.dev/v1alpha1", "kind": "GossipCluster",
                                        "metadata": {"name": NAME}, "spec": {**FAST_SPEC, "replicas": N}}))
    base = free_port_block(N + 1)
    out = tmp / "up.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gossip_agent.cli", "up", "-f", str(manifest), "--base-port", str(base),
             "--dir", str(tmp / "lc"), "--restart-delay", "1", *extra],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Up(proc, tmp / "lc", out, base, set())


def stop_up(up: Up) -> None:
    up.agents()  # remember the latest PIDs
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
        try:
            up.proc.wait(30)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait(10)
    for pid in up.pids:  # only if `up` could not stop its agents: by PID, the ones it reported
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    u = start_up(tmp_path_factory.mktemp("up"))
    try:
        wait_for(lambda: "converged: all 3 agents" in u.output() or u.proc.poll() is not None, BOUND,
                 "gossipctl up to converge")
        assert u.proc.poll() is None, u.output()
        yield u
    finally:
        stop_up(u)
    assert u.proc.returncode == 0, u.output()
    assert "stopping: every agent leaves gracefully" in u.output()
    wait_for(lambda: all(port_is_free(p) for p in range(u.base, u.base + N)), 15.0, "agents' ports to be free")


def names() -> set[str]:
    return {f"{NAME}-{i}" for i in range(N)}


def test_kill9_agent_is_restarted_with_its_data_dir_while_the_others_keep_running(up: Up) -> None:
    victim = f"{NAME}-2"
    assert ctl("put", "k", "v", "--addr", f"127.0.0.1:{up.base + 2}").returncode == 0  # a record in its log
    replica = up.client(2).status()["state"]["replica"]
    before = up.agents()
    others = {n: a["pid"] for n, a in before.items() if n != victim}
    inc_before = max(v[victim][1] for i in (0, 1) if (v := alive_view(up, i)))

    os.kill(before[victim]["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        a = up.agents().get(victim)
        return a if a and a["state"] == "running" and a["pid"] not in (None, before[victim]["pid"]) else None

    after = wait_for(restarted, BOUND, f"{victim} to be restarted")
    assert after["restarts"] == 1 and after["lastExit"] == "killed by SIGKILL"
    wait_for(lambda: all_see_alive(up, [0, 1, 2], names()), BOUND, "every agent to see every other alive")
    # A new incarnation of the same member, on the same data directory (same replica id, same data).
    views = [alive_view(up, i) for i in (0, 1)]
    assert all(v is not None and v[victim][1] > inc_before for v in views), views
    assert up.client(2).status()["state"]["replica"] == replica
    # The others were never touched.
    now = up.agents()
    assert {n: now[n]["pid"] for n in others} == others and all(pid_alive(p) for p in others.values())
    out = up.output()
    assert f"{victim} exited (killed by SIGKILL), restarting in 1s" in out
    assert f"{victim} restarted (pid {after['pid']}, restart 1)" in out


def test_gossipctl_kill_ps_and_a_bad_request(up: Up) -> None:
    before = up.agents()[f"{NAME}-1"]
    res = ctl("kill", f"{NAME}-1", "--dir", str(up.dir))
    assert res.returncode == 0 and "killed with SIGKILL" in res.stdout, res.stderr
    wait_for(lambda: (a := up.agents().get(f"{NAME}-1", {})).get("restarts") == before["restarts"] + 1
             and a["state"] == "running", BOUND, "the killed agent to be restarted")
    ps = json.loads(ctl("ps", "--dir", str(up.dir), "-o", "json").stdout)
    assert {a["name"]: a["restarts"] for a in ps["agents"]}[f"{NAME}-1"] == before["restarts"] + 1
    # Garbage on the control socket gets an error answer, and `up` keeps serving.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(up.dir / SOCKET_NAME))
        s.sendall(b"\x00garbage\n")
        assert json.loads(s.recv(4096))["ok"] is False
    res = ctl("kill", "nobody", "--dir", str(up.dir))
    assert res.returncode == 1 and "no agent 'nobody'" in res.stderr
    wait_for(lambda: all_see_alive(up, [0, 1, 2], names()), BOUND, "the cluster to converge again")


def test_a_left_agent_stays_gone_until_scale_brings_it_back(up: Up) -> None:
    leaver = f"{NAME}-1"
    res = ctl("leave", "--addr", f"127.0.0.1:{up.base + 1}")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: up.agents().get(leaver, {}).get("state") == "left", BOUND, f"{leaver} to be seen as left by `up`")
    assert f"{leaver} left; not restarting" in up.output()
    wait_for(lambda: all((v := alive_view(up, i)) and v[leaver][0] == "left" for i in (0, 2)), BOUND,
             "the others to see it left")
    # Longer than a restart would take (backoff 1 s): `left` is final, nothing listens on its port.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert up.agents()[leaver]["state"] == "left" and up.agents()[leaver]["pid"] is None
        time.sleep(0.2)
    assert port_is_free(up.base + 1)

    res = ctl("scale", str(N), "--dir", str(up.dir))
    assert res.returncode == 0 and f"scaled to {N}" in res.stdout, res.stderr
    wait_for(lambda: all_see_alive(up, [0, 1, 2], names()), BOUND, f"{leaver} to be back and alive everywhere")
    assert f"{leaver} back: scaled to {N}" in up.output()


def test_scale_down_and_up(up: Up) -> None:
    res = ctl("scale", "2", "--dir", str(up.dir))
    assert res.returncode == 0, res.stderr
    wait_for(lambda: f"{NAME}-2" not in up.agents(), BOUND, f"{NAME}-2 to be removed")
    wait_for(lambda: all((v := alive_view(up, i)) and v[f"{NAME}-2"][0] == "left" for i in (0, 1)), BOUND,
             "the others to see it left")
    assert ctl("scale", str(N), "--dir", str(up.dir)).returncode == 0
    wait_for(lambda: all_see_alive(up, [0, 1, 2], names()), BOUND, "three alive agents again")


def test_a_second_up_on_the_same_directory_is_refused(up: Up, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"kind: GossipCluster\nmetadata: {{name: {NAME}}}\nspec: {{replicas: 1}}\n")
    res = ctl("up", "-f", str(manifest), "--dir", str(up.dir), "--base-port", str(free_port_block(2)),
              "--exit-when-converged")
    assert res.returncode == 1
    assert f"is in use by another `gossipctl up` (pid {up.proc.pid})" in res.stderr
    assert up.proc.poll() is None and len(up.agents()) == N  # the first one is untouched


def test_members_and_status_output(up: Up) -> None:
    addr = f"127.0.0.1:{up.base}"
    members = ctl("members", "--addr", addr)
    assert members.returncode == 0 and members.stdout.split("\n")[0].split() == [
        "NAME", "ADDRESS", "STATE", "INCARNATION"]
    assert "state.root=" not in members.stdout
    wide = ctl("members", "--addr", addr, "-o", "wide").stdout
    # Roots travel as convergence digests, not in the membership metadata.
    assert wide.split("\n")[0].split()[-1] == "META" and "state.root=" not in wide
    for flag in (["-o", "json"], ["--json"]):
        doc = json.loads(ctl("members", "--addr", addr, *flag).stdout)
        assert {m["name"] for m in doc["members"]} >= names()
    status = ctl("status", "--addr", addr).stdout
    assert "name:" in status and "alive" in status and "convergence:" in status and "{" not in status
    assert json.loads(ctl("status", "--addr", addr, "-o", "json").stdout)["name"] == f"{NAME}-0"
    assert json.loads(ctl("status", "--addr", addr, "--json").stdout)["name"] == f"{NAME}-0"


def ctrl_c_as_in_a_terminal() -> None:
    """Popen's preexec_fn: SIGINT at its default, as for a command typed in a terminal. A test run started in the
    background by a non-interactive shell (`cmd &`, as CI launchers do) has SIGINT ignored, its children inherit
    that, and Python then installs no KeyboardInterrupt handler: the Ctrl-C below would never arrive (the CI
    rehearsal's `timed out after 30 seconds`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_watch_exits_quietly(up: Up) -> None:
    addr = f"127.0.0.1:{up.base}"
    watch = subprocess.Popen([sys.executable, "-m", "gossip_agent.cli", "watch", "--addr", addr],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        # Once it printed a change, it is inside its loop (not starting up): Ctrl-C lands there.
        deadline = time.monotonic() + BOUND
        line = ""
        while not line and time.monotonic() < deadline:
            assert ctl("put", "ctrl-c", "x", "--addr", addr).returncode == 0
            assert watch.stdout is not None
            if select.select([watch.stdout], [], [], 1.0)[0]:
                line = watch.stdout.readline()
        assert "ctrl-c" in line
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=BOUND)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(BOUND)
    assert watch.returncode == 130 and "Traceback" not in err and err.strip() == "", err


def test_restart_backoff_grows_and_is_capped_per_window() -> None:
    from gossip_agent.cli.cluster import RestartBackoff

    b = RestartBackoff(first=1.0, cap=8.0, reset_after=60.0, max_per_window=3, window=60.0)
    delays = []
    now = 0.0
    for _ in range(5):
        d = b.delay(ran=0.5, now=now)
        delays.append(d)
        now += d
        b.restarted(now)
    # 1, 2, 4 double; then at most 3 restarts per 60 s: the 4th waits until the 1st leaves the window.
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert delays[3] == pytest.approx(1.0 + 60.0 - 7.0)
    assert all(d <= 60.0 for d in delays)
    assert b.delay(ran=61.0, now=now + 1000) == 1.0  # ran long enough: starts over
