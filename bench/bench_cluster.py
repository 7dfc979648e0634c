"""Issue 2's cluster benchmark: our agents beside HashiCorp Serf, same machine, same run, same timings.

Both run as real processes on 127.0.0.1 with memberlist's LAN timings (probe 1 s, timeout 500 ms, 3 indirect
checks, suspicion mult 4, gossip 200 ms to 3 peers; ours with immediate forwarding). Implementations run one
after the other (never at the same time), each through the same scenarios:

  join    N agents: 3 seeds started one by one, then the other N-3 in one burst, all joining through the seeds.
          Time from the last agent's start (its "listening" / "Serf agent running!" line) until every agent
          has seen all N alive. Repeated --runs times (a fresh cluster each); the worst run is the figure, and
          runs over the 1.0 s target are counted (a straggler waiting for the next push-pull shows up here).
  idle    After --settle-seconds, over --idle-seconds: CPU per agent from /proc/PID/stat, RSS from
          /proc/PID/status, traffic per agent from nftables counters on the agents' port range (UDP, and TCP in
          both directions; IP-level bytes, created and removed by the bench) for both; ours also from its
          /metrics byte counters (payload only). Payload from nft = bytes - 28 B/UDP packet - 52 B/TCP segment.
  rumor   A new agent joins, then leaves gracefully (ours SIGTERM, Serf SIGINT); for each, the time from the
          first of the N agents logging it to the last. Median (and max) over --rumor-runs.
  kill    kill -9 a random non-seed agent; time until every live agent has marked it dead (Serf:
          EventMemberFailed). A replacement joins before the next kill, so N stays the same. --kill-runs times.
  soak    --soak-n agents (started in batches of --soak-batch) for --soak-seconds once converged; false
          positives, suspicions, CPU, RSS and traffic per agent. Not in the default set: ask for it.

False positives (every scenario): a member that was neither killed nor stopped marked dead (or left) by anyone.
Suspicions of live members that were refuted are reported apart (ours logs every agent's suspicion; Serf logs
only the prober's, so the like-for-like number is the count of distinct live members suspected).

Every agent's stdout is read by one thread that stamps each line on arrival (Serf's own log timestamps have
one-second resolution); ours also logs millisecond timestamps, reported as a cross-check ("ours, log clock").

    python bench/bench_cluster.py [--impls ours,serf] [--scenarios join,idle,rumor,kill[,soak]|all] [--n 50]
        [--runs 5] [--rumor-runs 5] [--kill-runs 3] [--idle-seconds 60] [--soak-n 200] [--soak-seconds 600]
        [--profile-seconds 30] [--ours-set membership.probeSchedule=shuffled] [--json FILE] [--keep-logs DIR]

Processes are remembered by Popen and stopped by PID (graceful signal, then SIGKILL); nftables counters live
in a table of their own, removed in `finally` and at exit. Everything is bounded by timeouts.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import datetime as dt
import json
import os
import platform
import random
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gossip_agent
from gossip_agent.__main__ import set_key_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import serf as serf_mod  # noqa: E402  (bench/serf.py, beside this file)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SEEDS = 3
SCENARIOS = ("join", "idle", "rumor", "kill", "soak")
DEFAULT_SCENARIOS = ("join", "idle", "rumor", "kill")

# memberlist DefaultLANConfig, spelled out for ours (the `lan` preset has the same numbers).
LAN_SPEC: dict[str, Any] = {
    "preset": "lan",
    "membership": {"probeInterval": "1s", "probeTimeout": "500ms", "indirectChecks": 3, "suspicionMult": 4},
    "gossip": {"fanout": 3, "interval": "200ms", "immediateForward": True},
}

TARGETS = {
    "join_worst_s": 1.0, "kill_dead_all_worst_s": 9.0, "false_positives": 0, "rumor_join_median_ms": 90.0,
    "rumor_leave_median_ms": 90.0, "idle_cpu_pct": 0.1, "idle_traffic_Bps": 230.0, "idle_rss_mib": 40.0,
    "soak_false_positives": 0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- process registry: everything we start, stopped by PID at exit --------------------------------------------
_PROCS: list[subprocess.Popen[bytes]] = []


def _stop_procs(procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    live = [p for p in procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in live:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5.0)


def _cleanup_all() -> None:
    _stop_procs(_PROCS, signal.SIGTERM, 3.0)
    Nft.remove_all()


atexit.register(_cleanup_all)


def _on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# -- nftables byte counters -----------------------------------------------------------------------------------
class Nft:
    """Counters in a table of our own on the output hook: UDP to the port range, TCP to it and from it.
    Loopback packets pass the output hook once, so each byte is counted once (as sent)."""

    _live: set[str] = set()
    COUNTERS = ("c_udp", "c_tcp_to", "c_tcp_from")

    def __init__(self, lo: int, hi: int) -> None:
        self.table = f"gossip_bench_{os.getpid()}"
        self.lo, self.hi = lo, hi
        self.ok = False

    @staticmethod
    def _nft(*args: str, check: bool = True) -> str:
        res = subprocess.run(["nft", *args], capture_output=True, text=True, timeout=10)
        if check and res.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def __enter__(self) -> Nft:
        if shutil.which("nft") is None:
            log("nft not found: no wire traffic figures")
            return self
        t, rng = self.table, f"{self.lo}-{self.hi}"
        try:
            Nft._live.add(t)
            self._nft("add", "table", "inet", t)
            for c in self.COUNTERS:
                self._nft("add", "counter", "inet", t, c)
            self._nft("add", "chain", "inet", t, "out", "{ type filter hook output priority 0; policy accept; }")
            self._nft("add", "rule", "inet", t, "out", "ip", "daddr", "127.0.0.1", "udp", "dport", rng,
                      "counter", "name", "c_udp")
            self._nft("add", "rule", "inet", t, "out", "ip", "daddr", "127.0.0.1", "tcp", "dport", rng,
                      "counter", "name", "c_tcp_to")
            self._nft("add", "rule", "inet", t, "out", "ip", "daddr", "127.0.0.1", "tcp", "sport", rng,
                      "counter", "name", "c_tcp_from")
            self.ok = True
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            log(f"nft counters unavailable ({exc}): no wire traffic figures")
            self._remove(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove(self.table)

    @classmethod
    def _remove(cls, table: str) -> None:
        if table in cls._live:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=10)
            cls._live.discard(table)

    @classmethod
    def remove_all(cls) -> None:
        for t in list(cls._live):
            cls._remove(t)

    def read(self) -> dict[str, tuple[int, int]] | None:
        """counter name -> (packets, bytes)."""
        if not self.ok:
            return None
        data = json.loads(self._nft("-j", "list", "counters", "table", "inet", self.table))
        out = {}
        for item in data.get("nftables", []):
            c = item.get("counter")
            if c:
                out[c["name"]] = (int(c["packets"]), int(c["bytes"]))
        return out


def traffic_from_nft(before: dict[str, tuple[int, int]] | None, after: dict[str, tuple[int, int]] | None,
                     n_agents: int, seconds: float) -> dict[str, float] | None:
    if before is None or after is None or n_agents <= 0 or seconds <= 0:
        return None
    d = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in Nft.COUNTERS}
    udp_p, udp_b = d["c_udp"]
    tcp_p = d["c_tcp_to"][0] + d["c_tcp_from"][0]
    tcp_b = d["c_tcp_to"][1] + d["c_tcp_from"][1]
    per = n_agents * seconds
    return {
        "wire_Bps": (udp_b + tcp_b) / per,
        "udp_wire_Bps": udp_b / per,
        "tcp_wire_Bps": tcp_b / per,
        "payload_Bps": (udp_b - 28 * udp_p + tcp_b - 52 * tcp_p) / per,
        "udp_pps": udp_p / per,
        "tcp_pps": tcp_p / per,
    }


# -- /proc ----------------------------------------------------------------------------------------------------
def cpu_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the full line)


def pss_mib(pid: int) -> float | None:
    """Proportional set size: shared pages (libpython, libcrypto...) split among the processes mapping them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- log collection -------------------------------------------------------------------------------------------
Parsed = tuple[str, str, float | None]  # kind, subject, log timestamp (epoch) or None


@dataclass(slots=True)
class Ev:
    t: float
    tlog: float | None
    obs: str
    kind: str
    subj: str


class LogHub:
    """One thread reads every agent's stdout, stamps each line on arrival, keeps member events."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.events: list[Ev] = []
        self.first: dict[tuple[str, str, str], Ev] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loghub", daemon=True)
        self._thread.start()

    def add(self, obs: str, pipe: Any, parse: Callable[[str], Parsed | None], logfile: Path | None) -> None:
        os.set_blocking(pipe.fileno(), False)
        f = open(logfile, "ab", buffering=0) if logfile else None  # noqa: SIM115 (closed at EOF or close())
        with self.lock:
            self.sel.register(pipe, selectors.EVENT_READ, [obs, parse, f, b""])

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                has = bool(self.sel.get_map())
            if not has:
                time.sleep(0.05)
                continue
            try:
                ready = self.sel.select(timeout=0.1)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            for key, _ in ready:
                self._read(key)

    def _read(self, key: selectors.SelectorKey) -> None:
        state = key.data
        try:
            chunk = os.read(key.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        now = time.time()
        if not chunk:
            with self.lock, contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(key.fileobj)
            with contextlib.suppress(OSError):
                os.close(key.fd)
            if state[2]:
                state[2].close()
            return
        if state[2]:
            state[2].write(chunk)
        buf = state[3] + chunk
        *lines, state[3] = buf.split(b"\n")
        obs, parse = state[0], state[1]
        new = []
        for raw in lines:
            parsed = parse(raw.decode("utf-8", "replace"))
            if parsed is not None:
                kind, subj, tlog = parsed
                new.append(Ev(now, tlog, obs, kind, subj))
        if new:
            with self.lock:
                for ev in new:
                    self.events.append(ev)
                    self.first.setdefault((ev.obs, ev.kind, ev.subj), ev)

    def get(self, obs: str, kind: str, subj: str = "") -> Ev | None:
        return self.first.get((obs, kind, subj))

    def get_any(self, obs: str, kinds: Sequence[str], subj: str) -> Ev | None:
        """The earliest of several kinds (a graceful leave that Serf reports as a failure still arrived)."""
        evs = [e for e in (self.first.get((obs, k, subj)) for k in kinds) if e is not None]
        return min(evs, key=lambda e: e.t) if evs else None

    def since(self, t0: float, kinds: Iterable[str]) -> list[Ev]:
        ks = set(kinds)
        with self.lock:
            return [e for e in self.events if e.t >= t0 and e.kind in ks]

    def close(self) -> None:
        """Stop once every pipe has reached EOF (bounded), then close what is left."""
        wait_until(lambda: not self.sel.get_map(), 5.0)
        self._stop.set()
        self._thread.join(2.0)
        with self.lock:
            for key in list(self.sel.get_map().values()):
                if key.data[2]:
                    key.data[2].close()


# -- implementations ------------------------------------------------------------------------------------------
_OURS_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ gossip_agent: "
                      r"(?:member (\S+) (join|update|suspect|alive|dead|left|reap) \(|agent (\S+) listening on )")


def parse_ours(line: str) -> Parsed | None:
    m = _OURS_RE.match(line)
    if not m:
        return None
    tlog = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
    if m.group(5):
        return ("listening", "", tlog)
    return (m.group(4), m.group(3), tlog)


def parse_serf(line: str) -> Parsed | None:
    p = serf_mod.parse_line(line)
    return None if p is None else (p[0], p[1], None)


@dataclass
class Agent:
    name: str
    port: int
    rpc_port: int
    proc: subprocess.Popen[bytes]
    spawned: float
    stopped: bool = False   # we stopped it (gracefully or by kill -9): its death is no false positive

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None


class Impl:
    name = ""
    graceful = signal.SIGTERM
    parse: Callable[[str], Parsed | None]

    def command(self, name: str, port: int, rpc_port: int, seeds: Sequence[int], workdir: Path) -> list[str]:
        raise NotImplementedError

    def view(self, agent: Agent) -> dict[str, str] | None:
        raise NotImplementedError

    def payload_bytes_out(self, agent: Agent) -> float | None:
        return None

    def version(self) -> str:
        return ""


def with_overrides(base: Mapping[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """`base` with `--ours-set section.key=value` pairs applied (values parsed as JSON, else strings)."""
    spec = copy.deepcopy(dict(base))
    for item in items:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--ours-set: expected section.key=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        set_key_path(spec, path.split("."), value)
    return spec


# Where our agents' bytecode lives here: outside the source trees and the interpreter's own directories (the
# optimized bytecode below is not what tests and tools load), kept between runs (compileall skips what is current).
PYCACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gossip-bench" / (
    f"pyc-{sys.implementation.cache_tag}-opt2")
# The interpreter settings of the agent image (Dockerfile.agent ENV), for our agents here too: no debug ranges,
# optimized (-OO: no docstrings, no asserts), bytecode compiled before they start (`precompile`).
AGENT_ENV = {"PYTHONNODEBUGRANGES": "1", "PYTHONOPTIMIZE": "2", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
_COMPILED: set[Path] = set()
# Standard library parts an agent never imports (and a large test suite): not compiled.
_NOT_COMPILED = r"[/\\](test|tests|idlelib|lib2to3|tkinter|turtledemo|ensurepip|pydoc_data)[/\\]"


def precompile(package: Path) -> None:
    """Bytecode for an agent package's modules and, once, for the standard library and installed packages, before
    its agents start, under AGENT_ENV: the image's agent loads bytecode compiled so (Dockerfile.agent), while an
    agent run from a source tree with PYTHONDONTWRITEBYTECODE set (as on our machines) compiled every module of
    its own at each start and stayed ~0.6 MiB larger idle for it. The optimized bytecode goes to PYCACHE (agents
    find it through PYTHONPYCACHEPREFIX): a first run compiles ~25 s, later ones only what changed."""
    if package in _COMPILED or not package.is_dir():
        return
    dirs = [str(package)]
    if not _COMPILED:
        paths = sysconfig.get_paths()
        dirs += sorted({paths["stdlib"], paths["purelib"], paths["platlib"]})
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", _NOT_COMPILED, *dirs],
                   env={**os.environ, **AGENT_ENV}, stdout=subprocess.DEVNULL, check=False, timeout=600)
    _COMPILED.add(package)


class Ours(Impl):
    name = "ours"
    graceful = signal.SIGTERM
    parse = staticmethod(parse_ours)

    def __init__(self, overrides: Sequence[str] = ()) -> None:
        self.spec = with_overrides(LAN_SPEC, overrides)

    def command(self, name: str, port: int, rpc_port: int, seeds: Sequence[int], workdir: Path) -> list[str]:
        for package in gossip_agent.__path__:  # what the agents import: this interpreter, this PYTHONPATH
            precompile(Path(package))
        cfg = {**self.spec, "name": name, "bindAddress": "127.0.0.1", "advertiseAddress": "127.0.0.1",
               "port": port, "seeds": [f"127.0.0.1:{p}" for p in seeds]}
        path = workdir / f"{name}.json"  # as gossipctl and the operator write it
        path.write_text(json.dumps(cfg))
        # `env` execs Python, so the PID is the agent's.
        return ["env", *(f"{k}={v}" for k, v in AGENT_ENV.items()), sys.executable, "-m", "gossip_agent",
                "--config", str(path), "--log-level", "info"]

    def _get(self, agent: Agent, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}{path}", timeout=5) as r:
                return bytes(r.read())
        except (OSError, ValueError):
            return None

    def view(self, agent: Agent) -> dict[str, str] | None:
        body = self._get(agent, "/v1/members")
        if body is None:
            return None
        return {m["name"]: m["state"] for m in json.loads(body)["members"]}

    def payload_bytes_out(self, agent: Agent) -> float | None:
        body = self._get(agent, "/metrics")
        if body is None:
            return None
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("gossip_bytes_total{") and 'direction="out"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def version(self) -> str:
        try:
            from gossip_agent import __version__
            return f"gossip_agent {__version__}, Python {platform.python_version()}"
        except ImportError:
            return "gossip_agent ?"


class Serf(Impl):
    name = "serf"
    graceful = serf_mod.GRACEFUL_SIGNAL
    parse = staticmethod(parse_serf)

    def command(self, name: str, port: int, rpc_port: int, seeds: Sequence[int], workdir: Path) -> list[str]:
        return serf_mod.agent_command(name, port, rpc_port, seeds)

    def view(self, agent: Agent) -> dict[str, str] | None:
        v = serf_mod.members(agent.rpc_port)
        if v is None:
            return None
        return {k: {"failed": "dead"}.get(s, s) for k, s in v.items()}

    def version(self) -> str:
        return f"serf {serf_mod.version()}"


# -- ports ----------------------------------------------------------------------------------------------------
def _port_free(port: int) -> bool:
    import socket
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Ports:
    """Blocks of free ports below the ephemeral range (so an nft port range never matches a client port)."""

    def __init__(self, start: int, end: int = 32700) -> None:
        self.next = start
        self.end = end

    def block(self, n: int) -> int:
        while self.next + n < self.end:
            base = self.next
            self.next += n
            if all(_port_free(p) for p in range(base, base + n)):
                return base
        raise RuntimeError(f"no free block of {n} ports below {self.end}")


# -- a cluster of one implementation --------------------------------------------------------------------------
class Cluster:
    def __init__(self, impl: Impl, hub: LogHub, workdir: Path, ports: Ports, capacity: int) -> None:
        self.impl, self.hub, self.workdir = impl, hub, workdir
        self.capacity = capacity
        self.base = ports.block(capacity)
        self.rpc_base = ports.block(capacity) if isinstance(impl, Serf) else 0
        self.agents: dict[str, Agent] = {}
        self.seq = 0
        self.tag = f"{impl.name[0]}{self.base}"

    @property
    def port_range(self) -> tuple[int, int]:
        return self.base, self.base + self.capacity - 1

    def spawn(self, seeds: Sequence[int]) -> Agent:
        if self.seq >= self.capacity:
            raise RuntimeError("cluster port block exhausted")
        i = self.seq
        self.seq += 1
        name = f"{self.tag}-{i}"
        port, rpc = self.base + i, (self.rpc_base + i if self.rpc_base else 0)
        cmd = self.impl.command(name, port, rpc, seeds, self.workdir)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
        _PROCS.append(proc)
        agent = Agent(name, port, rpc, proc, time.time())
        self.agents[name] = agent
        self.hub.add(name, proc.stdout, self.impl.parse, self.workdir / f"{name}.log")
        return agent

    def live(self) -> list[Agent]:
        return [a for a in self.agents.values() if not a.stopped and a.running()]

    def seed_ports(self) -> list[int]:
        return [self.base + i for i in range(SEEDS)]

    def wait_listening(self, agents: Sequence[Agent], timeout: float) -> bool:
        return wait_until(lambda: all(self.hub.get(a.name, "listening") for a in agents), timeout)

    def all_see(self, observers: Sequence[Agent], subjects: Sequence[Agent], kind: str = "join") -> bool:
        g = self.hub.get
        if kind == "gone":  # left, or (Serf, now and then, on a graceful leave) failed
            return all(g(o.name, "left", s.name) or g(o.name, "dead", s.name) for o in observers for s in subjects)
        return all(o.name == s.name or g(o.name, kind, s.name) is not None for o in observers for s in subjects)

    def seen(self, observers: Sequence[Agent], subjects: Sequence[Agent], kind: str = "join") -> Callable[[], bool]:
        """A predicate for wait_until: every observer has logged `kind` about every subject."""
        obs, subj = list(observers), list(subjects)
        return lambda: self.all_see(obs, subj, kind)

    def stop(self, agent: Agent, sig: int) -> None:
        agent.stopped = True
        if agent.running():
            with contextlib.suppress(ProcessLookupError):
                agent.proc.send_signal(sig)

    def stop_all(self) -> None:
        for a in self.agents.values():
            a.stopped = True
        _stop_procs([a.proc for a in self.agents.values()], signal.SIGTERM, 5.0)


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return pred()


def start_cluster(cl: Cluster, n: int, *, batch: int = 0, timeout: float = 90.0) -> dict[str, Any]:
    """Seeds one by one, then the rest in one burst (or in batches); waits until all see all N."""
    seeds: list[Agent] = []
    for i in range(min(SEEDS, n)):
        a = cl.spawn(cl.seed_ports()[:i])
        seeds.append(a)
        if not cl.wait_listening([a], 60.0):
            raise RuntimeError(f"{cl.impl.name}: seed {a.name} did not start:\n{tail(cl.workdir / (a.name + '.log'))}")
    rest: list[Agent] = []
    t_burst = time.time()
    todo = n - len(seeds)
    while todo > 0:
        k = todo if batch <= 0 else min(batch, todo)
        group = [cl.spawn(cl.seed_ports()) for _ in range(k)]
        rest += group
        todo -= k
        if batch > 0 and not cl.wait_listening(group, 120.0):
            raise RuntimeError(f"{cl.impl.name}: a batch of agents did not start")
    t_spawn_last = time.time()
    agents = seeds + rest
    ok = wait_until(lambda: cl.all_see(agents, agents), timeout, poll=0.05 if n <= 64 else 0.5)
    t_done = time.time()
    out: dict[str, Any] = {"n": n, "converged": ok, "spawn_seconds": round(t_spawn_last - t_burst, 3)}
    listen = [cl.hub.get(a.name, "listening") for a in agents]
    if ok and all(listen):
        t_listen_last = max(e.t for e in listen if e)
        conv = [max((_t(cl.hub.get(o.name, "join", s.name)) for s in agents if s is not o), default=o.spawned)
                for o in agents]
        t_conv = max(conv)
        out.update(join_s=t_conv - t_listen_last, from_spawn_s=t_conv - t_spawn_last,
                   observers_over_1s=sum(1 for c in conv if c - t_listen_last > 1.0))
        if all(e.tlog for e in listen if e):
            tl_listen = max(e.tlog for e in listen if e and e.tlog)
            tl_conv = max(max((_tlog(cl.hub.get(o.name, "join", s.name)) for s in agents if s is not o),
                              default=0.0) for o in agents)
            out["join_s_logclock"] = tl_conv - tl_listen
    else:
        missing = sum(1 for o in agents for s in agents if o is not s and not cl.hub.get(o.name, "join", s.name))
        out.update(join_s=None, missing_pairs=missing, waited_s=round(t_done - t_burst, 1))
    return out


def _t(e: Ev | None) -> float:
    return e.t if e is not None else float("nan")


def _tlog(e: Ev | None) -> float:
    return e.tlog or 0.0 if e is not None else 0.0


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def verify_views(cl: Cluster, agents: Sequence[Agent], sample: int = 0) -> dict[str, Any]:
    """Ask the agents themselves (HTTP / serf members): how many see every live agent alive."""
    expected = {a.name for a in agents}
    chosen = list(agents) if not sample or sample >= len(agents) else random.Random(7).sample(list(agents), sample)
    ok = bad = unanswered = 0
    for a in chosen:
        v = cl.impl.view(a)
        if v is None:
            unanswered += 1
        elif all(v.get(name) == "alive" for name in expected):
            ok += 1
        else:
            bad += 1
    return {"asked": len(chosen), "see_all_alive": ok, "disagree": bad, "unanswered": unanswered}


def false_positives(cl: Cluster, t0: float) -> dict[str, Any]:
    """Deaths/leaves of members we did not stop, and suspicions of members that were alive, since t0."""
    innocent = {a.name for a in cl.agents.values() if not a.stopped}
    evs = cl.hub.since(t0, ("dead", "left", "suspect"))
    fp = [e for e in evs if e.kind in ("dead", "left") and e.subj in innocent]
    sus = [e for e in evs if e.kind == "suspect" and e.subj in innocent]
    return {"false_positives": len(fp), "fp_members": sorted({e.subj for e in fp}),
            "suspect_events": len(sus), "suspected_members": len({e.subj for e in sus})}


# -- scenarios ------------------------------------------------------------------------------------------------
def scenario_idle(cl: Cluster, agents: Sequence[Agent], args: argparse.Namespace) -> dict[str, Any]:
    log(f"{cl.impl.name}: idle: settling {args.settle_seconds:.0f}s, then measuring {args.idle_seconds:.0f}s")
    time.sleep(args.settle_seconds)
    pay0 = [(time.time(), cl.impl.payload_bytes_out(a)) for a in agents]
    lo, hi = cl.port_range
    out: dict[str, Any] = {"load_before": loadavg()}
    with Nft(lo, hi) as nft:
        c0 = nft.read()
        t0 = time.monotonic()
        ticks0 = [cpu_ticks(a.pid) for a in agents]
        time.sleep(args.idle_seconds)
        ticks1 = [cpu_ticks(a.pid) for a in agents]
        secs = time.monotonic() - t0
        c1 = nft.read()
    rss = [rss_mib(a.pid) for a in agents]
    pss = [x for x in (pss_mib(a.pid) for a in agents) if x is not None]
    pay1 = [(time.time(), cl.impl.payload_bytes_out(a)) for a in agents]
    cpu = [100.0 * (b - a) / CLK_TCK / secs for a, b in zip(ticks0, ticks1, strict=True)
           if a is not None and b is not None]
    rss_ok = [r for r in rss if r is not None]
    out.update(seconds=round(secs, 1), load_after=loadavg(), agents=len(agents),
               cpu_pct_mean=statistics.fmean(cpu) if cpu else None, cpu_pct_max=max(cpu) if cpu else None,
               rss_mib_mean=statistics.fmean(rss_ok) if rss_ok else None, rss_mib_max=max(rss_ok) if rss_ok else None,
               pss_mib_mean=statistics.fmean(pss) if pss else None, traffic=traffic_from_nft(c0, c1, len(agents), secs))
    rates = [(b1 - b0) / (t1 - t0_) for (t0_, b0), (t1, b1) in zip(pay0, pay1, strict=True)
             if b0 is not None and b1 is not None and t1 > t0_]
    if rates:
        out["metrics_payload_out_Bps"] = statistics.fmean(rates)
    if args.profile_seconds > 0 and isinstance(cl.impl, Ours):
        out["profile"] = profile(agents[len(agents) // 2], args.profile_seconds, cl.workdir)
    return out


def profile(agent: Agent, seconds: float, workdir: Path) -> dict[str, Any]:
    """py-spy record (raw collapsed stacks) of one agent; top functions by own and by total samples."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and shutil.which(spy) is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    raw = workdir / f"profile-{agent.name}.txt"
    log(f"profiling {agent.name} (pid {agent.pid}) with py-spy for {seconds:.0f}s")
    res = subprocess.run([spy, "record", "--pid", str(agent.pid), "--duration", str(int(seconds)), "--rate", "1000",
                          "--format", "raw", "--nonblocking", "--output", str(raw)],
                         capture_output=True, text=True, timeout=seconds + 60)
    if res.returncode != 0 or not raw.exists():
        return {"error": res.stderr.strip()[-400:]}
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    return {"agent": agent.name, "seconds": seconds, "samples": samples, "raw": str(raw),
            "top_own": own.most_common(15), "top_total": total.most_common(25)}


def scenario_rumor(cl: Cluster, agents: Sequence[Agent], args: argparse.Namespace) -> dict[str, Any]:
    joins: list[float] = []
    leaves: list[float] = []
    join_from_listen: list[float] = []
    leave_from_signal: list[float] = []
    joins_log: list[float] = []
    leaves_log: list[float] = []
    failures = 0
    left_as_failed = 0
    misses: list[dict[str, Any]] = []
    for r in range(args.rumor_runs):
        x = cl.spawn(cl.seed_ports())
        if not wait_until(cl.seen(agents, [x]), 30.0):
            failures += 1
            missed = [o.name for o in agents if not cl.hub.get(o.name, "join", x.name)]
            misses.append({"run": r, "subject": x.name, "never_heard_by": missed})
            log(f"{cl.impl.name}: rumor run {r}: join of {x.name} did not reach {missed} in 30s")
            cl.stop(x, signal.SIGKILL)
            continue
        evs = [cl.hub.get(o.name, "join", x.name) for o in agents]
        ts = [e.t for e in evs if e]
        joins.append(max(ts) - min(ts))
        if all(e and e.tlog for e in evs):
            tl = [e.tlog for e in evs if e and e.tlog]
            joins_log.append(max(tl) - min(tl))
        lx = cl.hub.get(x.name, "listening")
        if lx:
            join_from_listen.append(max(ts) - lx.t)
        time.sleep(args.rumor_gap)
        t_sig = time.time()
        cl.stop(x, cl.impl.graceful)
        if not wait_until(cl.seen(agents, [x], "gone"), 30.0):
            failures += 1
            log(f"{cl.impl.name}: rumor run {r}: leave of {x.name} did not reach everyone in 30s")
        else:
            evs = [cl.hub.get_any(o.name, ("left", "dead"), x.name) for o in agents]
            left_as_failed += sum(1 for e in evs if e and e.kind == "dead")
            ts = [e.t for e in evs if e]
            leaves.append(max(ts) - min(ts))
            leave_from_signal.append(max(ts) - t_sig)
            if all(e and e.tlog for e in evs):
                tl = [e.tlog for e in evs if e and e.tlog]
                leaves_log.append(max(tl) - min(tl))
        with contextlib.suppress(subprocess.TimeoutExpired):
            x.proc.wait(10)
        if x.running():
            x.proc.kill()
        time.sleep(args.rumor_gap)
    return {
        "runs": args.rumor_runs, "failures": failures, "leave_seen_as_failure": left_as_failed,
        "join_misses": misses,
        "join_spread_ms": [round(v * 1000, 1) for v in joins],
        "leave_spread_ms": [round(v * 1000, 1) for v in leaves],
        "join_median_ms": _med_ms(joins), "join_max_ms": _max_ms(joins),
        "leave_median_ms": _med_ms(leaves), "leave_max_ms": _max_ms(leaves),
        "join_median_ms_logclock": _med_ms(joins_log), "leave_median_ms_logclock": _med_ms(leaves_log),
        "join_from_listening_median_ms": _med_ms(join_from_listen),
        "leave_from_signal_median_ms": _med_ms(leave_from_signal),
    }


def _med_ms(v: Sequence[float]) -> float | None:
    return round(statistics.median(v) * 1000, 1) if v else None


def _max_ms(v: Sequence[float]) -> float | None:
    return round(max(v) * 1000, 1) if v else None


def scenario_kill(cl: Cluster, agents: list[Agent], args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for r in range(args.kill_runs):
        candidates = [a for a in agents[SEEDS:] if a.running() and not a.stopped]
        if not candidates:
            break
        victim = rng.choice(candidates)
        observers = [a for a in agents if a is not victim and a.running() and not a.stopped]
        t_kill = time.time()
        cl.stop(victim, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.proc.wait(5)
        ok = wait_until(cl.seen(observers, [victim], "dead"), args.kill_timeout, poll=0.05)
        evs = [cl.hub.get(o.name, "dead", victim.name) for o in observers]
        ts = [e.t for e in evs if e and e.t >= t_kill]
        sus = [e.t for e in cl.hub.since(t_kill, ("suspect",)) if e.subj == victim.name]
        run: dict[str, Any] = {"victim": victim.name, "observers": len(observers), "complete": ok,
                               "first_suspect_s": round(min(sus) - t_kill, 3) if sus else None,
                               "dead_first_s": round(min(ts) - t_kill, 3) if ts else None,
                               "dead_all_s": round(max(ts) - t_kill, 3) if ok and ts else None,
                               "marked_dead_by": len(ts)}
        runs.append(run)
        log(f"{cl.impl.name}: kill run {r}: {run}")
        # A replacement keeps N constant for the next run.
        agents.remove(victim)
        repl = cl.spawn(cl.seed_ports())
        agents.append(repl)
        if not wait_until(lambda: cl.all_see(agents, agents[-1:]), 30.0):
            missed = [o.name for o in agents if o is not repl and not cl.hub.get(o.name, "join", repl.name)]
            run["replacement_never_heard_by"] = missed
            log(f"{cl.impl.name}: replacement {repl.name} was not seen by {missed} in 30s")
        wait_until(lambda: cl.all_see(agents[-1:], agents), 30.0)
        time.sleep(args.rumor_gap)
    alls = [r["dead_all_s"] for r in runs if r["dead_all_s"] is not None]
    return {"runs": runs, "dead_all_worst_s": max(alls) if alls else None,
            "dead_all_min_s": min(alls) if alls else None,
            "dead_all_median_s": round(statistics.median(alls), 3) if alls else None,
            "incomplete": sum(1 for r in runs if not r["complete"])}


def scenario_soak(impl: Impl, hub: LogHub, workdir: Path, ports: Ports, args: argparse.Namespace) -> dict[str, Any]:
    n = args.soak_n
    seconds = args.soak_seconds if impl.name == "ours" or args.soak_serf_seconds is None else args.soak_serf_seconds
    log(f"{impl.name}: soak: starting {n} agents in batches of {args.soak_batch}")
    cl = Cluster(impl, hub, workdir, ports, n + 4)
    t_start = time.time()
    out: dict[str, Any] = {"n": n, "load_before": loadavg()}
    try:
        start = start_cluster(cl, n, batch=args.soak_batch, timeout=args.soak_join_timeout)
        out["start"] = start
        out["startup_s"] = round(time.time() - t_start, 1)
        agents = list(cl.agents.values())
        out["during_startup"] = false_positives(cl, t_start)
        if not start["converged"]:
            log(f"{impl.name}: soak: did not converge in {args.soak_join_timeout:.0f}s; soaking anyway")
        t0 = time.time()
        lo, hi = cl.port_range
        with Nft(lo, hi) as nft:
            c0 = nft.read()
            ticks0 = [cpu_ticks(a.pid) for a in agents]
            m0 = time.monotonic()
            deadline = m0 + seconds
            next_report = m0 + 60
            while time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= next_report:
                    next_report += 60
                    fp = false_positives(cl, t0)
                    log(f"{impl.name}: soak {time.monotonic() - m0:.0f}/{seconds:.0f}s: {fp}, "
                        f"running {len(cl.live())}/{n}, load {loadavg()}")
            secs = time.monotonic() - m0
            ticks1 = [cpu_ticks(a.pid) for a in agents]
            c1 = nft.read()
        cpu = [100.0 * (b - a) / CLK_TCK / secs for a, b in zip(ticks0, ticks1, strict=True)
               if a is not None and b is not None]
        rss = [r for r in (rss_mib(a.pid) for a in agents) if r is not None]
        out.update(seconds=round(secs, 1), **false_positives(cl, t0), running=len(cl.live()),
                   cpu_pct_mean=statistics.fmean(cpu) if cpu else None, cpu_pct_max=max(cpu) if cpu else None,
                   rss_mib_mean=statistics.fmean(rss) if rss else None, traffic=traffic_from_nft(c0, c1, n, secs),
                   load_after=loadavg(), verify=verify_views(cl, agents))
    finally:
        cl.stop_all()
    return out


def run_impl(impl: Impl, hub: LogHub, workdir: Path, ports: Ports, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"version": impl.version()}
    rng = random.Random(args.seed)
    n = args.n
    spare = args.rumor_runs + args.kill_runs + 4
    need_cluster = any(s in args.scenarios for s in ("idle", "rumor", "kill"))
    cl: Cluster | None = None
    try:
        runs = args.runs if "join" in args.scenarios else 0
        join_runs: list[dict[str, Any]] = []
        for r in range(max(runs, 1 if need_cluster else 0)):
            if cl is not None:
                cl.stop_all()
            cl = Cluster(impl, hub, workdir, ports, n + spare)
            load = loadavg()
            t0 = time.time()
            start = start_cluster(cl, n, timeout=args.join_timeout)
            start.update(run=r, load=load, **false_positives(cl, t0))
            log(f"{impl.name}: join run {r}: {start}")
            if r < runs:
                join_runs.append(start)
        if join_runs:
            js = [j["join_s"] for j in join_runs]
            ok = [j for j in js if j is not None]
            res["join"] = {
                "runs": join_runs, "n": n,
                "worst_s": max(ok) if len(ok) == len(js) else None,
                "median_s": statistics.median(ok) if ok else None,
                "best_s": min(ok) if ok else None,
                "runs_over_target": sum(1 for j in js if j is None or j > TARGETS["join_worst_s"]),
                "not_converged": sum(1 for j in js if j is None),
                "false_positives": sum(j["false_positives"] for j in join_runs),
                "suspected_members": sum(j["suspected_members"] for j in join_runs),
            }
        if cl is None:
            return res
        agents = [a for a in cl.agents.values() if a.running()]
        t_session = time.time()
        res["verify_after_join"] = verify_views(cl, agents)
        if "idle" in args.scenarios:
            res["idle"] = scenario_idle(cl, agents, args)
            log(f"{impl.name}: idle: { {k: v for k, v in res['idle'].items() if k != 'profile'} }")
        if "rumor" in args.scenarios:
            res["rumor"] = scenario_rumor(cl, agents, args)
            log(f"{impl.name}: rumor: {res['rumor']}")
        if "kill" in args.scenarios:
            res["kill"] = scenario_kill(cl, agents, args, rng)
        res["session"] = false_positives(cl, t_session)
        res["verify_end"] = verify_views(cl, [a for a in agents if a.running() and not a.stopped])
    finally:
        if cl is not None:
            cl.stop_all()
    return res


# -- report ---------------------------------------------------------------------------------------------------
def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    o, s = results.get("ours", {}), results.get("serf", {})

    def fp_total(r: dict[str, Any]) -> int | None:
        parts = [_get(r, "join", "false_positives"), _get(r, "session", "false_positives")]
        vals = [p for p in parts if p is not None]
        return sum(vals) if vals else None

    def suspected(r: dict[str, Any]) -> int | None:
        parts = [_get(r, "join", "suspected_members"), _get(r, "session", "suspected_members")]
        vals = [p for p in parts if p is not None]
        return sum(vals) if vals else None

    spec: list[tuple[str, str, float | None, Callable[[dict[str, Any]], Any], str]] = [
        ("join: all see all N, worst run", "s", TARGETS["join_worst_s"], lambda r: _get(r, "join", "worst_s"), "<="),
        ("join: median run", "s", None, lambda r: _get(r, "join", "median_s"), ""),
        ("join: runs over 1.0 s (or never)", "runs", 0, lambda r: _get(r, "join", "runs_over_target"), "<="),
        ("kill -9: dead at all, worst", "s", TARGETS["kill_dead_all_worst_s"],
         lambda r: _get(r, "kill", "dead_all_worst_s"), "<="),
        ("kill -9: dead at all, best", "s", None, lambda r: _get(r, "kill", "dead_all_min_s"), ""),
        ("false positives (join+session)", "", 0, fp_total, "<="),
        ("live members suspected (refuted)", "", None, suspected, ""),
        ("rumor: join first->last, median", "ms", TARGETS["rumor_join_median_ms"],
         lambda r: _get(r, "rumor", "join_median_ms"), "<="),
        ("rumor: leave first->last, median", "ms", TARGETS["rumor_leave_median_ms"],
         lambda r: _get(r, "rumor", "leave_median_ms"), "<="),
        ("rumor: join first->last, max", "ms", None, lambda r: _get(r, "rumor", "join_max_ms"), ""),
        ("rumor: leave first->last, max", "ms", None, lambda r: _get(r, "rumor", "leave_max_ms"), ""),
        ("idle CPU per agent, mean", "% core", TARGETS["idle_cpu_pct"], lambda r: _get(r, "idle", "cpu_pct_mean"),
         "<="),
        ("idle CPU per agent, max", "% core", None, lambda r: _get(r, "idle", "cpu_pct_max"), ""),
        ("idle RSS per agent, mean", "MiB", TARGETS["idle_rss_mib"], lambda r: _get(r, "idle", "rss_mib_mean"), "<="),
        ("idle RSS per agent, max", "MiB", None, lambda r: _get(r, "idle", "rss_mib_max"), ""),
        ("idle PSS per agent, mean", "MiB", None, lambda r: _get(r, "idle", "pss_mib_mean"), ""),
        ("join rumors that missed someone", "", 0, lambda r: len(_get(r, "rumor", "join_misses") or [])
         if _get(r, "rumor") else None, "<="),
        ("idle traffic per agent, payload (nft)", "B/s", TARGETS["idle_traffic_Bps"],
         lambda r: _get(r, "idle", "traffic", "payload_Bps"), "<="),
        ("idle traffic per agent, wire (nft)", "B/s", None, lambda r: _get(r, "idle", "traffic", "wire_Bps"), ""),
        ("idle traffic per agent, /metrics out", "B/s", None, lambda r: _get(r, "idle", "metrics_payload_out_Bps"),
         ""),
        ("idle packets per agent (UDP)", "pkt/s", None, lambda r: _get(r, "idle", "traffic", "udp_pps"), ""),
        ("soak: false positives", "", TARGETS["soak_false_positives"],
         lambda r: _get(r, "soak", "false_positives"), "<="),
        ("soak: live members suspected", "", None, lambda r: _get(r, "soak", "suspected_members"), ""),
        ("soak: CPU per agent, mean", "% core", None, lambda r: _get(r, "soak", "cpu_pct_mean"), ""),
        ("soak: RSS per agent, mean", "MiB", None, lambda r: _get(r, "soak", "rss_mib_mean"), ""),
        ("soak: traffic per agent, payload", "B/s", None, lambda r: _get(r, "soak", "traffic", "payload_Bps"), ""),
    ]
    out = []
    for label, unit, target, fn, _op in spec:
        ov, sv = fn(o) if o else None, fn(s) if s else None
        if ov is None and sv is None:
            continue
        ratio = ov / sv if isinstance(ov, int | float) and isinstance(sv, int | float) and sv else None
        met = None if target is None or ov is None else bool(ov <= target)
        out.append({"metric": label, "unit": unit, "target": target, "ours": ov, "serf": sv, "ratio": ratio,
                    "met": met})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def print_table(table: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print(f"\nissue-2 cluster benchmark, {meta['date']}, {meta['machine']}, N={meta['n']}")
    print(f"load average at start {meta['load_start']}, at end {meta['load_end']}")
    for impl, v in meta["versions"].items():
        print(f"  {impl}: {v}")
    head = ("metric", "unit", "target", "ours", "serf", "ours/serf", "met")
    body = [(r["metric"], r["unit"], ("<= " + _fmt(r["target"])) if r["target"] is not None else "",
             _fmt(r["ours"]), _fmt(r["serf"]), f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
             _fmt(r["met"]) if r["met"] is not None else "") for r in table]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impls", default="ours,serf", help="comma list of ours, serf (default %(default)s)")
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma list of {', '.join(SCENARIOS)}, or 'all' (default %(default)s)")
    p.add_argument("--n", type=int, default=50, help="agents (default %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="join runs, a fresh cluster each (default %(default)s)")
    p.add_argument("--join-timeout", type=float, default=90.0, help="seconds to converge (default %(default)s)")
    p.add_argument("--rumor-runs", type=int, default=5)
    p.add_argument("--rumor-gap", type=float, default=2.0, help="pause around each rumor run, s")
    p.add_argument("--kill-runs", type=int, default=3)
    p.add_argument("--kill-timeout", type=float, default=60.0)
    p.add_argument("--settle-seconds", type=float, default=15.0)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--profile-seconds", type=float, default=0.0,
                   help="after the idle window, py-spy one of our agents this long (0: off)")
    p.add_argument("--soak-n", type=int, default=200)
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--soak-serf-seconds", type=float, default=None, help="Serf's soak length (default: same)")
    p.add_argument("--soak-batch", type=int, default=20, help="agents started at once during the soak start")
    p.add_argument("--soak-join-timeout", type=float, default=300.0)
    p.add_argument("--ours-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override our agents' config, e.g. membership.probeSchedule=shuffled (repeatable)")
    p.add_argument("--base-port", type=int, default=21000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write all figures as JSON here")
    p.add_argument("--keep-logs", metavar="DIR", help="keep configs and agent logs in DIR (default: a temp dir)")
    args = p.parse_args(argv)
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    args.scenarios = list(SCENARIOS) if args.scenarios == "all" else [
        s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS] + [i for i in args.impls if i not in ("ours", "serf")]
    if bad:
        p.error(f"unknown: {', '.join(bad)}")
    if args.n < SEEDS + 1:
        p.error(f"--n must be at least {SEEDS + 1}")
    signal.signal(signal.SIGTERM, _on_term)

    impls: list[Impl] = []
    for name in args.impls:
        if name == "serf" and not serf_mod.available():
            log("serf is not installed (apt-get install serf): skipping it")
            continue
        impls.append(Ours(args.ours_set) if name == "ours" else Serf())

    workdir = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.platform()}",
        "n": args.n, "load_start": loadavg(), "args": {k: v for k, v in vars(args).items()},
        "versions": {i.name: i.version() for i in impls}, "workdir": str(workdir),
    }
    hub = LogHub()
    ports = Ports(args.base_port)
    results: dict[str, Any] = {}
    try:
        for impl in impls:
            log(f"== {impl.name}: scenarios {', '.join(args.scenarios)}, N={args.n}, load {loadavg()}")
            results[impl.name] = run_impl(impl, hub, workdir, ports, args)
            if "soak" in args.scenarios:
                results[impl.name]["soak"] = scenario_soak(impl, hub, workdir, ports, args)
                log(f"{impl.name}: soak: {results[impl.name]['soak']}")
    finally:
        _cleanup_all()
        hub.close()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["load_end"] = loadavg()
    table = rows(results)
    print_table(table, meta)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "table": table, "results": results}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
