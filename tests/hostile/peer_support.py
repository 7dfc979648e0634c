"""Peer-side attacks on real agents (issue 10), shared by tests/hostile/test_peer_*.py and bench/hostile_peer.py.

The attack builders produce raw wire bytes (not through our encoders' checks), so the same attacks run against
older agents too (bench/hostile_peer.py --pythonpath measures "before"). A `Stall` probe thread measures how
long an agent takes to answer /healthz during an attack: an outside view of event-loop stalls, next to the
agent's own gossip_event_loop_lag_* metrics.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from gossip_agent.cli.client import AgentClient, ClientError, parse_metrics
from gossip_agent.cli.cluster import AgentProcess, LocalCluster, free_port_block
from gossip_agent.io.runtime import LAG_WINDOW

T = TypeVar("T")
VERSION = b"\x01"
ALIVE, SUSPECT = 4, 5

SPEC: dict[str, Any] = {
    "preset": "local",
    "membership": {"probeInterval": "500ms", "probeTimeout": "200ms", "suspicionMult": 3,
                   "suspicionMaxTimeoutMult": 2, "reapAfter": "60s", "streamTimeout": "2s"},
    "gossip": {"interval": "100ms", "pushPullInterval": "5s"},
    "antiEntropy": {"interval": "2s"},
    "storage": {"fsync": "interval"},
}


# -- cluster --------------------------------------------------------------------------------------------
def config(name: str, port: int, seeds: list[str], data: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {**SPEC, "name": name, "bindAddress": "127.0.0.1", "advertiseAddress": "127.0.0.1",
                           "port": port, "seeds": seeds, "storage": {**SPEC["storage"], "dataDir": str(data / name)}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def start_cluster(c: LocalCluster, root: Path, n: int, **extra: Any) -> list[AgentProcess]:
    base = free_port_block(n)
    seeds = [f"127.0.0.1:{base}"]
    agents = [c.start(config(f"a{i}", base + i, seeds, root / "data", **extra)) for i in range(n)]
    wait_for(lambda: all_alive(agents, n), 60.0, f"{n} agents to join")
    return agents


def all_alive(agents: list[AgentProcess], n: int) -> bool:
    for a in agents:
        s = a.status()
        if s is None or s["members"]["alive"] != n:
            return False
    return True


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ClientError, OSError, ValueError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


def http(addr: str, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{addr}{path}", data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# The timeout of a direct call that must be answered (`patient`): only a hang waits this long.
PATIENT_S = 60.0


def patient(agent: AgentProcess) -> AgentClient:
    """A client of `agent` for calls made once, outside a retrying wait: `agent.client`'s 1 s timeout is meant for
    polling loops, where a miss is retried; at load 40 on 2 cores an answer can take longer than 1 s (the agent
    waits for a core), and a ClientError there fails the test by load, not by anything the agent did."""
    return AgentClient(agent.addr, timeout=PATIENT_S)


def metrics(agent: AgentProcess) -> dict[str, float]:
    return parse_metrics(patient(agent).metrics())


def wait_ready(agent: AgentProcess, timeout: float = LAG_WINDOW + 30.0) -> None:
    """/readyz answers 200, waited for: it also fails while the loop lagged > 1 s within the last LAG_WINDOW s,
    which a busy machine's wait for a core alone causes (load 40 on 2 cores: 0.1 s of work takes 2 s). The lag an
    attack causes is bounded by the tests' own assertions; a closed endpoint or a dead agent never gets ready."""
    wait_for(lambda: http(agent.addr, "GET", "/readyz")[0] == 200, timeout, f"{agent.name} to be ready")


def sees_alive(agent: AgentProcess, names: Iterable[str], timeout: float = 30.0) -> dict[str, str]:
    """`agent`'s view ({name: state}) once it sees each of `names` alive; one of them dead or left fails at once.
    A suspect is waited out: on a busy machine a probe's ack can miss its 200 ms timeout, and the member refutes."""
    want = set(names)

    def view() -> dict[str, str] | None:
        states = {m["name"]: m["state"] for m in patient(agent).members()}
        assert all(states.get(n) in ("alive", "suspect") for n in want), states
        return states if all(states[n] == "alive" for n in want) else None

    return wait_for(view, timeout, f"{agent.name} to see {sorted(want)} alive")


def metric(agent: AgentProcess, name: str) -> float:
    return metrics(agent).get(name, 0.0)


def queued_s(pid: int) -> float:
    """Seconds the threads of process `pid` have spent runnable but waiting for a core: the second field of Linux's
    /proc/<pid>/task/<tid>/schedstat ('run_delay', ns); 0.0 where it cannot be read. On a busy machine a stall
    measured in wall-clock time is mostly this wait, not the agent's work: bounds on such stalls leave it out."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def thread_queued_s(tid: int | None = None) -> float:
    """`queued_s` for one thread of this process (default: the calling thread): only its own wait for a core, so
    no other thread's wait (nor a thread that exits meanwhile) moves the figure."""
    stat = Path(f"/proc/self/task/{tid or threading.get_native_id()}/schedstat")
    with suppress(OSError, ValueError, IndexError):
        return int(stat.read_text().split()[1]) / 1e9
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used: its work, which a busy machine does not stretch."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def put(agent: AgentProcess, key: str, value: bytes, query: str = "") -> int:
    return http(agent.addr, "PUT", f"/v1/kv/{key}{query}", value)[0]


def get(agent: AgentProcess, key: str) -> bytes | None:
    status, body = http(agent.addr, "GET", f"/v1/kv/{key}")
    return body if status == 200 else None


def udp_send(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


# -- stall probe ----------------------------------------------------------------------------------------
class Stall:
    """Polls /healthz every 50 ms in a thread; `worst` is the longest answer time (or timeout) seen."""

    def __init__(self, agent: AgentProcess, timeout: float = 30.0) -> None:
        self.addr, self.timeout = agent.addr, timeout
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            with suppress(OSError):
                http(self.addr, "GET", "/healthz", timeout=self.timeout)
            self.worst = max(self.worst, time.monotonic() - t0)
            self._stop.wait(0.05)

    def __enter__(self) -> Stall:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)


@contextmanager
def measured(agent: AgentProcess) -> Iterator[dict[str, float]]:
    """Figures of an attack on `agent`: stall seconds seen from outside, RSS before/after (MB)."""
    out: dict[str, float] = {"rss_before_mb": rss_mb(agent.pid)}
    with Stall(agent) as stall:
        yield out
    out["stall_s"] = stall.worst
    out["rss_after_mb"] = rss_mb(agent.pid) if agent.running() else 0.0


# -- attack builders (raw wire bytes) -------------------------------------------------------------------
def packet(sender: str, messages: list[list[Any]]) -> bytes:
    return VERSION + msgpack.packb([sender, messages], use_bin_type=True)


def alive(name: str, incarnation: int, host: str, port: int, meta: Mapping[str, str] | None = None) -> list[Any]:
    return [ALIVE, name, incarnation, host, port, dict(meta or {})]


def push_pull_body(sender: str, rows: list[list[Any]], join: bool = False) -> bytes:
    body = msgpack.packb([sender, join, rows], use_bin_type=True)
    return b"\x02" + zlib.compress(body, 9)


def fake_rows(n: int, prefix: str = "fake") -> list[list[Any]]:
    return [[f"{prefix}{i}", "127.0.0.1", 1 + i % 60000, 1, 0, {}] for i in range(n)]


def context_header(wall_ms: int, logical: int = 0, node: str = "evil") -> str:
    return base64.b64encode(msgpack.packb([5, [], [wall_ms, logical, node]], use_bin_type=True)).decode()


def ae_request(shape: tuple[int, int], want_nodes: list[tuple[int, int]], push: list[Any] | None = None) -> bytes:
    flat = [n for node in want_nodes for n in node]
    return b"\x01" + msgpack.packb([3, list(shape), None, [], [], push or [], [], flat], use_bin_type=True)


def lww_entry(key: str, node: str, counter: int, wall_ms: int, value: bytes) -> list[Any]:
    return [0, key, [node, counter], [[node, counter, wall_ms, 0, value]]]


def replicate_body(entry: list[Any]) -> bytes:
    return b"\x01" + msgpack.packb([1, entry], use_bin_type=True)


def counter_delta(agent: AgentProcess, key: str, delta: int) -> int:
    return http(agent.addr, "POST", f"/v1/crdt/counters/{key}", json.dumps({"delta": delta}).encode(),
                {"Content-Type": "application/json"})[0]


def now_ms() -> int:
    return int(time.time() * 1000)


def random_name() -> str:
    return "x" + os.urandom(4).hex()
