"""Hostile-input review of `gossipctl up`'s control socket and cluster directory (careless or hostile local users).

Each test failed before its fix:
- a client that trickled one byte every 1.5 s into `control.sock` stalled `up`'s loop for as long as it
  trickled: a SIGKILLed agent was restarted after 18 s instead of its 1-2 s backoff (measured on a real `up`);
  each idle connection (`nc -U control.sock` left open) stalled it 2 s.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from gossip_agent.cli import control
from gossip_agent.cli.control import ControlServer


def _serve(server: ControlServer, seconds: float) -> list[tuple[float, dict[str, object]]]:
    """Run `up`'s polling as its loop does for `seconds`, answering every request; (time, request) each."""
    seen: list[tuple[float, dict[str, object]]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        for request, conn in server.wait(0.2):
            seen.append((time.monotonic(), request))
            ControlServer.answer(conn, {"ok": True, "message": "pong"})
        assert time.monotonic() - started < 1.0, "one wait() blocked the loop"
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
        answers.append(control.request(tmp_path, {"op": "ps"}, timeout=5.0))

    try:
        for t in threads:
            t.start()
        for s in idle:
            s.setblocking(False)
            with contextlib.suppress(OSError):  # BlockingIOError included: the backlog is full
                s.connect(str(server.path))
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        seen = _serve(server, 3.0 + control.IO_TIMEOUT)
        asker.join(5.0)
    finally:
        stop.set()
        for s in idle:
            s.close()
        server.close()
    assert [r for _, r in seen] == [{"op": "ps"}]
    assert answers and answers[0]["ok"] is True
