"""How `gossipctl kill`, `scale` and `ps` talk to a running `gossipctl up`: a UNIX socket in its directory.

`up` listens on `<cluster dir>/control.sock` (mode 0600: only its user may steer it). A request is one JSON
line, e.g. {"op": "scale", "replicas": 5}; the answer is one JSON line {"ok": bool, "message": str, ...}.
`up` serves it between two ticks of its loop, so requests are handled one at a time, with a bound on size
and time. The socket goes with `up`; a socket left by an `up` that was SIGKILLed refuses connections, and the
next `up` (which holds the directory's lock) replaces it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gossip_agent.cli.client import ClientError

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 4096
IO_TIMEOUT = 2.0
# Control connections waiting for their request line at once (a user runs one command at a time).
MAX_PENDING = 16
# sun_path holds 108 bytes; a longer path is reached through /proc/self/fd/N/ of its directory (Linux).
_MAX_SUN_PATH = 100


@contextlib.contextmanager
def _socket_address(path: Path) -> Iterator[str]:
    if len(os.fsencode(path)) < _MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """The listening end, polled by `up`'s loop: `wait(timeout)` returns the requests that came meanwhile.

    Never blocks on one client: connections are read without blocking, each must deliver its line within
    `IO_TIMEOUT` of connecting, and at most `MAX_PENDING` wait at once (more are closed at once). Reading each
    connection to its newline in turn (the first version) let one client that sent a byte every 1.5 s stall
    `up`'s loop for as long as it liked: no restarts of crashed agents meanwhile (found by review).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an `up` that died; we hold the directory lock, so it is not live
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _socket_address(self.path) as addr:
            self._sock.bind(addr)
        self.path.chmod(0o600)
        self._sock.listen(8)
        self._sock.setblocking(False)
        # connection -> (bytes so far, deadline)
        self._pending: dict[socket.socket, tuple[bytes, float]] = {}

    def wait(self, timeout: float) -> list[tuple[dict[str, Any], socket.socket]]:
        """Wait up to `timeout` seconds for requests; each comes with its connection, for `answer`."""
        out: list[tuple[dict[str, Any], socket.socket]] = []
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            wake = min([deadline, *(d for _, d in self._pending.values())])
            # poll, not select: `up` with hundreds of agents holds file descriptors past select's 1,024.
            poller = select.poll()
            by_fd = {s.fileno(): s for s in (self._sock, *self._pending)}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(max(0.0, wake - now) * 1000):
                if by_fd[fd] is self._sock:
                    self._accept()
                else:
                    self._receive(by_fd[fd], out)
            now = time.monotonic()
            for conn, (_, expires) in list(self._pending.items()):
                if now >= expires:
                    del self._pending[conn]
                    self.answer(conn, {"ok": False, "message": f"bad request: no complete line within "
                                                               f"{IO_TIMEOUT:g} s"})
            if out or now >= deadline:
                return out

    def _accept(self) -> None:
        for _ in range(MAX_PENDING):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors: try again on the next wake
            if len(self._pending) >= MAX_PENDING:
                self.answer(conn, {"ok": False, "message": "busy: too many control connections"})
                continue
            conn.setblocking(False)
            self._pending[conn] = (b"", time.monotonic() + IO_TIMEOUT)

    def _receive(self, conn: socket.socket, out: list[tuple[dict[str, Any], socket.socket]]) -> None:
        data, expires = self._pending[conn]
        try:
            chunk = conn.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        data += chunk
        if chunk and b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
            self._pending[conn] = (data, expires)
            return
        del self._pending[conn]
        try:
            if len(data.split(b"\n", 1)[0]) > MAX_REQUEST_BYTES:
                raise ValueError(f"longer than {MAX_REQUEST_BYTES} bytes")
            request = json.loads(data.split(b"\n", 1)[0])
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.answer(conn, {"ok": False, "message": f"bad request: {exc}"})
            return
        out.append((request, conn))

    @staticmethod
    def answer(conn: socket.socket, reply: dict[str, Any]) -> None:
        # A reply is one short line: it fits the socket buffer, so the timeout only matters for a client
        # that stopped reading with a full buffer.
        with conn, contextlib.suppress(OSError):
            conn.settimeout(IO_TIMEOUT)
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        for conn in self._pending:
            conn.close()
        self._pending.clear()
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(MAX_REQUEST_BYTES)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"longer than {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def request(directory: Path, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the `up` running in `directory`; its answer. ClientError if none runs there."""
    path = directory / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with _socket_address(path) as addr:
                s.connect(addr)
            s.sendall(json.dumps(req).encode() + b"\n")
            line = _read_line(s)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(f"no `gossipctl up` is running in {directory}") from None
        except (OSError, ValueError) as exc:
            raise ClientError(f"the `gossipctl up` in {directory} did not answer: {exc}") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise ClientError(f"the `gossipctl up` in {directory} answered garbage") from None
    if not isinstance(reply, dict):
        raise ClientError(f"the `gossipctl up` in {directory} answered garbage")
    return reply


def is_running(directory: Path) -> bool:
    """Whether an `up` answers on `directory`'s control socket."""
    path = directory / SOCKET_NAME
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        try:
            with _socket_address(path) as addr:
                s.connect(addr)
        except OSError:
            return False
    return True
