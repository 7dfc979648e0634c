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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gossip_agent.cli.client import ClientError

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 4096
IO_TIMEOUT = 2.0
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
    """The listening end, polled by `up`'s loop: `wait(timeout)` returns the requests that came meanwhile."""

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

    def wait(self, timeout: float) -> list[tuple[dict[str, Any], socket.socket]]:
        """Wait up to `timeout` seconds for requests; each comes with its connection, for `answer`."""
        out: list[tuple[dict[str, Any], socket.socket]] = []
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        while ready:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                break
            conn.settimeout(IO_TIMEOUT)
            try:
                request = json.loads(_read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as exc:
                self.answer(conn, {"ok": False, "message": f"bad request: {exc}"})
                continue
            out.append((request, conn))
        return out

    @staticmethod
    def answer(conn: socket.socket, reply: dict[str, Any]) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
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
