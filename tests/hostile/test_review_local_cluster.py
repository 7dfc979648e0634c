"""Hostile-input review of `gossipctl up`'s control socket and cluster directory (careless or hostile local users).

Each test failed before its fix:
- a client that trickled one byte every 1.5 s into `control.sock` stalled `up`'s loop for as long as it
  trickled: a SIGKILLed agent was restarted after 18 s instead of its 1-2 s backoff (measured on a real `up`);
  each idle connection (`nc -U control.sock` left open) stalled it 2 s.
- `up.lock` planted as a symlink in a cluster directory another user controls: `gossipctl up --dir` followed
  it and truncated the target (as root: any file), writing its PID there; the keyring was written the same
  way, and readable by others until its chmod.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gossip_agent.cli import control
from gossip_agent.cli.cluster import DirLock
from gossip_agent.cli.control import ControlServer
from gossip_agent.cli.main import build_parser, run_up
from gossip_agent.core.config import ConfigError
from tests.hostile.peer_support import thread_queued_s


def _serve(server: ControlServer, seconds: float,
           done: Callable[[], bool] = lambda: True) -> list[tuple[float, dict[str, object]]]:
    """Run `up`'s polling as its loop does for `seconds`, and on until `done()` (at most 30 s more: a busy machine
    can start a client late), answering every request; (time, request) each.
    Each wait(0.2) must return within 1 s, less the time this thread waited for a core meanwhile (at load 40 on
    2 cores that alone can exceed 1 s); blocking on a client (the bug: seconds in recv) is not such a wait."""
    seen: list[tuple[float, dict[str, object]]] = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end or (not done() and now < end + 30.0):
        started, queued = time.monotonic(), thread_queued_s()
        for request, conn in server.wait(0.2):
            seen.append((time.monotonic(), request))
            ControlServer.answer(conn, {"ok": True, "message": "pong"})
        assert time.monotonic() - started - (thread_queued_s() - queued) < 1.0, "one wait() blocked the loop"
    return seen


def test_a_trickling_or_idle_client_never_stalls_the_supervisor_loop(tmp_path: Path) -> None:
    server = ControlServer(tmp_path)
    stop = threading.Event()

    def trickle() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(server.path))
            give_up = time.monotonic() + 8.0  # bounded, so the unfixed server fails the test instead of hanging
            while not stop.is_set() and time.monotonic() < give_up:
                try:
                    s.send(b" ")
                except OSError:
                    return
                stop.wait(0.3)

    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(40)]  # more than MAX_PENDING
    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(3)]
    answers: list[dict[str, object]] = []

    def ask() -> None:
        time.sleep(0.5)
        # (the timeout is a hang's bound: the serving loop answers within a second of its wait for a core)
        answers.append(control.request(tmp_path, {"op": "ps"}, timeout=30.0))

    try:
        for t in threads:
            t.start()
        for s in idle:
            s.setblocking(False)
            with contextlib.suppress(OSError):  # BlockingIOError included: the backlog is full
                s.connect(str(server.path))
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        seen = _serve(server, 3.0 + control.IO_TIMEOUT, done=lambda: not asker.is_alive())
        asker.join(30.0)
    finally:
        stop.set()
        for s in idle:
            s.close()
        server.close()
    assert [r for _, r in seen] == [{"op": "ps"}]
    assert answers and answers[0]["ok"] is True


def test_a_planted_lock_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    (cluster / "up.lock").symlink_to(victim)
    with pytest.raises(OSError):
        DirLock(cluster)
    assert victim.read_text() == "precious\n"


def test_a_directory_others_can_write_or_own_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by every user"):
        DirLock(shared)
    assert not (shared / "up.lock").exists()
    if os.geteuid() == 0:  # as root (CI), hand the directory to another user
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to uid 65534"):
            DirLock(theirs)


def test_up_on_a_foreign_directory_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: gossip.example.com/v1alpha1\nkind: GossipCluster\nmetadata:\n  name: x\n"
                        "spec:\n  replicas: 1\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "keyring").symlink_to(tmp_path / "stolen-key")
    args = build_parser().parse_args(["up", "-f", str(manifest), "--dir", str(shared), "--exit-when-converged"])
    with pytest.raises(ConfigError, match="writable by every user"):
        run_up(args)
    assert not (tmp_path / "stolen-key").exists()


def test_the_keyring_is_private_from_the_start_and_not_written_through_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` replaces a keyring symlink left in its own directory instead of writing through it."""
    import gossip_agent.cli.main as main

    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: gossip.example.com/v1alpha1\nkind: GossipCluster\nmetadata:\n  name: x\n"
                        "spec:\n  replicas: 1\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keyring").symlink_to(tmp_path / "elsewhere")

    def no_agents(*_: object, **__: object) -> list[dict[str, object]]:
        raise RuntimeError("stop after the keyring")  # the keyring is written before any config or agent

    monkeypatch.setattr(main, "agent_configs", no_agents)
    args = build_parser().parse_args(["up", "-f", str(manifest), "--dir", str(mine), "--exit-when-converged"])
    with pytest.raises(RuntimeError, match="stop after the keyring"):
        run_up(args)
    keyring = mine / "keyring"
    assert not (tmp_path / "elsewhere").exists()
    assert not keyring.is_symlink()
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
