"""A throwaway network of Linux network namespaces for real-network fault tests (needs root).

Layout: one bridge namespace `<run>-br` holding a bridge `br0`, and N host namespaces `<run>-h<i>`, each
with loopback up and one veth `eth0` whose peer `p<i>` is a port of `br0`. Host i has the private address
`10.213.0.<10+i>/24` and no route anywhere else. Nothing is created in (or routed to) the root namespace:
links are created directly inside the namespaces, so parallel runs never collide on interface names, and the
run name (`gspc<pid>-<random>`) keeps namespace names apart.

Faults (all inside the host namespaces, so they combine):
- `partition(groups)`: each host drops input from hosts in other groups (UDP and TCP; silent drops, like a
  real partition: a TCP connect times out instead of failing fast); `heal()` removes it;
- `loss(percent)`: each host drops that share of its incoming packets at random (loopback exempt);
- `bandwidth(host, rate)`: a tbf qdisc on the host's egress and on its bridge port (the host's ingress);
- `link_down(host)` / `link_up(host)`.
Rules go through nftables (`inet` tables `gsp_part` / `gsp_loss`) or, without nft, iptables chains of the
same names. TESTBED.md: no `tc netem` here, so loss comes from the firewall, not a qdisc.

Talking to processes inside: `ns_socket(ns)` makes a socket in a namespace (a short-lived thread calls
setns(2), so the test process itself never moves); `http_get` uses it. Processes started by `spawn` are
`ip netns exec` children (the agent *is* the child: `ip` execs it), stopped by PID: SIGTERM, then SIGKILL
after a bound.

Cleanup: `close()` (called by the fixtures, and at exit as a backstop) stops our processes and deletes our
namespaces; `remove_stale()` deletes namespaces left by earlier runs of this harness whose process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from gossip_agent.core.config import AgentConfig, from_mapping

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
PREFIX = "gspc"
# <prefix><pid>-<hex>-<role>; only names of this shape are ever considered stale.
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)-([0-9a-f]{{6}})-(br|h\d+)$")
SUBNET = "10.213.0"
FIRST_HOST = 10
CLONE_NEWNET = 0x40000000
STOP_TIMEOUT = 5.0
CMD_TIMEOUT = 20.0


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be set up; the message carries the command and its stderr."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_ns(ns: str, argv: Sequence[str], *, input: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv], input=input, check=check)


# -- sockets inside a namespace ------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def join_netns(ns: str) -> None:
    """Move the CALLING thread into namespace `ns` (setns(2) changes only that thread): call it first thing
    in a thread of your own."""
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_ns_thread(ns: str, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread that joined namespace `ns` (the calling thread never moves); sockets made
    there stay in `ns` for life."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            join_netns(ns)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=body, name=f"in-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def ns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace `ns` (created by a helper thread that joined it; the socket keeps its
    namespace for life, whichever thread uses it)."""
    return in_ns_thread(ns, lambda: socket.socket(family, kind))


def http_get(ns: str, host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://host:port/path from inside namespace `ns`; OSError / http.client errors on failure."""
    sock = ns_socket(ns)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        sock.close()


def http_post(ns: str, host: str, port: int, path: str, body: bytes = b"", timeout: float = 2.0) -> int:
    sock = ns_socket(ns)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request("POST", path, body=body, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        sock.close()


# -- capability checks (conftest) ----------------------------------------------------------------------
def firewall_backend(ns: str) -> str | None:
    """"nft" or "iptables", whichever can install a rule inside `ns`; None if neither works.
    GOSSIP_CHAOS_FIREWALL=nft|iptables tries only that one (to test the fallback)."""
    only = os.environ.get("GOSSIP_CHAOS_FIREWALL")
    if only not in (None, "", "nft", "iptables"):
        raise NetnsError(f"GOSSIP_CHAOS_FIREWALL must be nft or iptables, got {only!r}")
    if shutil.which("nft") and only in (None, "", "nft"):
        probe = "table inet gsp_probe {\n chain input { type filter hook input priority 0; " \
                "numgen random mod 100 < 1 drop\n }\n}\n"
        ok = in_ns(ns, ["nft", "-f", "-"], input=probe, check=False).returncode == 0
        in_ns(ns, ["nft", "delete", "table", "inet", "gsp_probe"], check=False)
        if ok:
            return "nft"
    if shutil.which("iptables") and only in (None, "", "iptables"):
        ok = in_ns(ns, ["iptables", "-w", "-A", "INPUT", "-m", "statistic", "--mode", "random",
                        "--probability", "0.01", "-j", "DROP"], check=False).returncode == 0
        in_ns(ns, ["iptables", "-w", "-F", "INPUT"], check=False)
        if ok:
            return "iptables"
    return None


def environment_problem() -> str | None:
    """Why namespace tests cannot run here, or None if they can (root, `ip netns add`, nft or iptables)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables/iptables)"
    if not shutil.which("ip"):
        return "needs iproute2 (`ip`)"
    remove_stale()
    name = _run_name() + "-h0"
    try:
        proc = run(["ip", "netns", "add", name], check=False)
        if proc.returncode != 0:
            return f"`ip netns add` failed: {proc.stderr.strip()}"
        if firewall_backend(name) is None:
            return "neither nft nor iptables can install rules in a network namespace"
        if not shutil.which("tc"):
            return "needs `tc` (iproute2)"
        return None
    finally:
        run(["ip", "netns", "del", name], check=False)


# -- the testbed ---------------------------------------------------------------------------------------
def _run_name() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete namespaces named by this harness whose creating process no longer exists (a crashed run).
    Namespaces of live runs (parallel test sessions) are left alone."""
    removed: list[str] = []
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return removed
    for name in names:
        match = _NAME_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _kill_ns_pids(name)
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _kill_ns_pids(ns: str) -> None:
    """SIGKILL processes still inside a stale namespace of ours (`ip netns pids` lists exactly those)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    for line in proc.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(line), signal.SIGKILL)


@dataclass
class Host:
    index: int
    ns: str
    addr: str
    iface: str = "eth0"
    port: str = ""  # the veth end in the bridge namespace


@dataclass
class Proc:
    host: Host
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Testbed:
    """N hosts on one bridge, each in its own namespace. Use as a context manager or call `close()`."""

    __test__ = False  # not a pytest test class

    def __init__(self, n_hosts: int, workdir: Path) -> None:
        if not 1 <= n_hosts <= 200:
            raise ValueError("n_hosts must be 1..200")
        self.run_name = _run_name()
        self.workdir = workdir
        self.bridge_ns = f"{self.run_name}-br"
        self.hosts = [Host(i, f"{self.run_name}-h{i}", f"{SUBNET}.{FIRST_HOST + i}", port=f"p{i}")
                      for i in range(n_hosts)]
        self.procs: list[Proc] = []
        self.backend = "nft"
        self._created: list[str] = []
        self._closed = False
        self._partitioned = False
        self._lossy = False
        atexit.register(self.close)

    def __enter__(self) -> Testbed:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup / teardown ------------------------------------------------------------------------------
    def setup(self) -> None:
        remove_stale()
        try:
            self._add_ns(self.bridge_ns)
            br = self.bridge_ns
            run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", br, "link", "set", "br0", "up"])
            run(["ip", "-n", br, "link", "set", "lo", "up"])
            for h in self.hosts:
                self._add_ns(h.ns)
                run(["ip", "-n", br, "link", "add", h.port, "type", "veth", "peer", "name", h.iface,
                     "netns", h.ns])
                run(["ip", "-n", br, "link", "set", h.port, "master", "br0"])
                run(["ip", "-n", br, "link", "set", h.port, "up"])
                run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
                run(["ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", h.iface])
                run(["ip", "-n", h.ns, "link", "set", h.iface, "up"])
            backend = firewall_backend(self.hosts[0].ns)
            if backend is None:
                raise NetnsError("neither nft nor iptables works inside a network namespace")
            self.backend = backend
        except BaseException:
            self.close()
            raise

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._created.append(name)

    def close(self) -> None:
        """Stop every process we started, then delete every namespace we created (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop_all(self.procs, timeout=3.0)
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.log_file.close()
        for name in reversed(self._created):
            run(["ip", "netns", "del", name], check=False)
        self._created.clear()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    # -- processes -------------------------------------------------------------------------------------
    def spawn(self, host: Host, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log_name: str | None = None) -> Proc:
        """Start `argv` inside the host's namespace; stdout and stderr go to a log file in workdir."""
        if self._closed:
            raise NetnsError("testbed is closed")
        log_path = self.workdir / f"{log_name or f'h{host.index}'}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        popen = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], stdin=subprocess.DEVNULL,
                                 stdout=log_file, stderr=subprocess.STDOUT,
                                 env=dict(env) if env is not None else None)
        proc = Proc(host, list(argv), popen, log_path, log_file)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL (by PID, our child only); returns the exit code."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(proc)
        return proc.popen.returncode

    def stop_all(self, procs: Sequence[Proc], timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM all at once, wait for all up to `timeout` in total, SIGKILL the rest."""
        running = [p for p in procs if p.popen.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in running:
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(p)

    def kill(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(STOP_TIMEOUT)

    # -- faults ----------------------------------------------------------------------------------------
    def partition(self, *groups: Iterable[Host]) -> None:
        """Cut traffic between groups (both ways, UDP and TCP). Hosts in no group keep reaching everyone."""
        sets = [list(g) for g in groups]
        self.heal()
        for i, group in enumerate(sets):
            others = [h.addr for j, g in enumerate(sets) if j != i for h in g]
            if not others:
                continue
            for h in group:
                self._drop_from(h, "gsp_part", others)
        self._partitioned = True

    def heal(self) -> None:
        if not self._partitioned:
            return
        for h in self.hosts:
            self._remove_table(h, "gsp_part")
        self._partitioned = False

    def loss(self, percent: int, hosts: Iterable[Host] | None = None) -> None:
        """Drop `percent`% of incoming packets (all protocols, loopback exempt) at random on each host."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        self.clear_loss()
        for h in self.hosts if hosts is None else hosts:
            if self.backend == "nft":
                self._nft(h, f"""table inet gsp_loss {{
                  chain input {{ type filter hook input priority -10; policy accept;
                    iifname "lo" accept
                    numgen random mod 100 < {percent} counter drop
                  }}
                }}""")
            else:
                self._ipt_chain(h, "gsp_loss", [["-m", "statistic", "--mode", "random", "--probability",
                                                 f"{percent / 100:.4f}", "-j", "DROP"]])
        self._lossy = True

    def clear_loss(self) -> None:
        if not self._lossy:
            return
        for h in self.hosts:
            self._remove_table(h, "gsp_loss")
        self._lossy = False

    def dropped_by_loss(self, host: Host) -> int | None:
        """Packets the loss rule dropped on `host` so far (nft only; None otherwise)."""
        if self.backend != "nft":
            return None
        out = in_ns(host.ns, ["nft", "list", "table", "inet", "gsp_loss"], check=False).stdout
        match = re.search(r"counter packets (\d+)", out)
        return int(match.group(1)) if match else None

    def bandwidth(self, host: Host, rate: str, *, burst: str = "16kb", latency: str = "200ms") -> None:
        """Limit the host's link to `rate` (tc rate syntax, e.g. "1mbit") in both directions."""
        for ns, dev in ((host.ns, host.iface), (self.bridge_ns, host.port)):
            run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", burst, "latency", latency])

    def clear_bandwidth(self, host: Host) -> None:
        for ns, dev in ((host.ns, host.iface), (self.bridge_ns, host.port)):
            run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)

    def link_down(self, host: Host) -> None:
        run(["ip", "-n", self.bridge_ns, "link", "set", host.port, "down"])

    def link_up(self, host: Host, wait_s: float = 10.0) -> None:
        """Bring `host`'s bridge port up and wait (bounded) until both veth ends report UP and the bridge
        forwards on the port: `ip link set up` returns before the carrier and the port state follow, and a
        packet sent meanwhile is lost (a busy machine lost all five of a test's datagrams that way)."""
        run(["ip", "-n", self.bridge_ns, "link", "set", host.port, "up"])
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            port = run(["ip", "-n", self.bridge_ns, "-o", "link", "show", host.port]).stdout
            inner = run(["ip", "-n", host.ns, "-o", "link", "show", host.iface]).stdout
            fwd = run(["bridge", "-n", self.bridge_ns, "link", "show", "dev", host.port]).stdout
            if "state UP" in port and "state UP" in inner and "forwarding" in fwd:
                return
            time.sleep(0.02)
        raise NetnsError(f"{host.port} did not come up within {wait_s} s")

    # -- firewall plumbing -----------------------------------------------------------------------------
    def _nft(self, host: Host, script: str) -> None:
        in_ns(host.ns, ["nft", "-f", "-"], input=script)

    def _drop_from(self, host: Host, table: str, addrs: Sequence[str]) -> None:
        if self.backend == "nft":
            self._nft(host, f"""table inet {table} {{
              chain input {{ type filter hook input priority -20; policy accept;
                ip saddr {{ {", ".join(addrs)} }} drop
              }}
            }}""")
        else:
            self._ipt_chain(host, table, [["-s", a, "-j", "DROP"] for a in addrs])

    def _ipt_chain(self, host: Host, chain: str, rules: Sequence[Sequence[str]]) -> None:
        ipt = ["iptables", "-w"]
        in_ns(host.ns, [*ipt, "-N", chain])
        for rule in rules:
            in_ns(host.ns, [*ipt, "-A", chain, *rule])
        in_ns(host.ns, [*ipt, "-I", "INPUT", "1", "!", "-i", "lo", "-j", chain])

    def _remove_table(self, host: Host, name: str) -> None:
        if self.backend == "nft":
            in_ns(host.ns, ["nft", "delete", "table", "inet", name], check=False)
        else:
            ipt = ["iptables", "-w"]
            in_ns(host.ns, [*ipt, "-D", "INPUT", "!", "-i", "lo", "-j", name], check=False)
            in_ns(host.ns, [*ipt, "-F", name], check=False)
            in_ns(host.ns, [*ipt, "-X", name], check=False)


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `check()` until truthy; AssertionError naming `what` (and the last value) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)




# -- gossip agents on the testbed ----------------------------------------------------------------------
AGENT_PORT = 7946


@dataclass
class AgentProc:
    name: str
    host: Host
    proc: Proc
    port: int = AGENT_PORT

    @property
    def addr(self) -> str:
        return self.host.addr


class AgentNet:
    """Gossip agents (`python -m gossip_agent`), one per host namespace, sharing one config `spec`.

    Queries go to an agent's own address from inside its own namespace, so they cross only loopback: the
    faults (which exempt `lo`) never touch them."""

    def __init__(self, bed: Testbed, spec: Mapping[str, object], python: str) -> None:
        self.bed = bed
        self.spec = dict(spec)
        self.python = python
        self.agents: list[AgentProc] = []
        self._config_path = bed.workdir / "agent.yaml"
        self._config_path.write_text(yaml.safe_dump(self.spec))

    def start(self, host: Host, *, name: str | None = None, seeds: Sequence[Host] = (),
              log_level: str = "info") -> AgentProc:
        name = name or f"n{host.index}"
        argv = [self.python, "-m", "gossip_agent", "--config", str(self._config_path), "--name", name,
                "--bind-address", host.addr, "--port", str(AGENT_PORT), "--log-level", log_level]
        for seed in seeds:
            if seed is not host:
                argv += ["--seed", f"{seed.addr}:{AGENT_PORT}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOSSIP_")}
        env["PYTHONUNBUFFERED"] = "1"
        agent = AgentProc(name, host, self.bed.spawn(host, argv, env=env, log_name=name))
        self.agents.append(agent)
        return agent

    def get(self, agent: AgentProc, path: str, timeout: float = 2.0) -> bytes | None:
        """The body of a 200 answer, or None (agent down, not listening yet, error)."""
        try:
            status, body = http_get(agent.host.ns, agent.addr, agent.port, path, timeout)
        except (OSError, http.client.HTTPException):
            return None
        return body if status == 200 else None

    def members(self, agent: AgentProc) -> dict[str, str] | None:
        """{member name: state} as `agent` sees it, or None if it does not answer."""
        body = self.get(agent, "/v1/members")
        if body is None:
            return None
        return {m["name"]: m["state"] for m in json.loads(body)["members"]}

    def metrics(self, agent: AgentProc) -> dict[str, float] | None:
        body = self.get(agent, "/metrics")
        if body is None:
            return None
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def views(self, agents: Iterable[AgentProc]) -> dict[str, dict[str, str] | None]:
        return {a.name: self.members(a) for a in agents}

    def sees(self, observers: Iterable[AgentProc], expected: Mapping[str, Iterable[str]]) -> bool:
        """True if every observer's view has each named member in one of the allowed states (a missing member
        counts as state "absent")."""
        for a in observers:
            view = self.members(a)
            if view is None:
                return False
            for name, states in expected.items():
                if view.get(name, "absent") not in set(states):
                    return False
        return True

    def leave(self, agent: AgentProc, timeout: float = STOP_TIMEOUT) -> int | None:
        """Graceful leave (SIGTERM); the exit code."""
        return self.bed.stop(agent.proc, timeout)

    def crash(self, agent: AgentProc) -> None:
        self.bed.kill(agent.proc)

    def dead_reports(self, agent: AgentProc) -> list[str]:
        """Names `agent` logged as dead ("member X dead (...)" lines of the runtime's log)."""
        agent.proc.log_file.flush()
        try:
            text = agent.proc.log_path.read_text(errors="replace")
        except OSError:
            return []
        return re.findall(r"member (\S+) dead \(", text)

    def wait(self, check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
        """`wait_until`, with every agent's view and log tail in the message on timeout."""
        try:
            return wait_until(check, timeout, what, interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None

    def diagnostics(self) -> str:
        """Every agent's liveness, view and log tail: appended to assertion messages."""
        parts = []
        for a in self.agents:
            state = "running" if a.proc.alive() else f"exited {a.proc.popen.returncode}"
            parts.append(f"--- {a.name} on {a.host.ns} ({a.addr}), {state}, view {self.members(a)}\n"
                         f"{a.proc.log_tail(15)}")
        return "\n".join(parts)


def make_net(n_hosts: int, spec: dict[str, Any], workdir: Path) -> Iterator[AgentNet]:
    """A testbed of n_hosts namespaces with an AgentNet on it; always torn down (processes, namespaces)."""
    bed = Testbed(n_hosts, workdir)
    with bed:
        yield AgentNet(bed, spec, sys.executable)


def agent_config(spec: dict[str, Any]) -> AgentConfig:
    return from_mapping({**spec, "name": "x"})


# Added to every bound below. The waits return as soon as their condition holds, so a generous slack costs
# nothing when things work, and a 2-core machine shared with other work can stall agents for many seconds.
BUSY_MACHINE_SLACK = 30.0


def detection_bound(cfg: AgentConfig, n: int) -> float:
    """Worst case the config implies for every member to mark an unreachable one dead: a full probe round
    (n probes, each stretched by the largest Lifeguard awareness multiplier), the longest suspicion timeout
    (no confirmations), a push-pull as the backstop, plus slack for 2 shared cores."""
    m, g = cfg.membership, cfg.gossip
    probe_round = n * m.probe_interval * m.awareness_max_multiplier
    suspicion_max = m.suspicion_max_timeout_mult * m.suspicion_mult * max(1.0, math.log10(n)) * m.probe_interval
    return probe_round + suspicion_max + g.push_pull_interval + BUSY_MACHINE_SLACK


def spread_bound(cfg: AgentConfig, n: int) -> float:
    """A rumor reaches everyone: retransmissions over gossip intervals, else the next push-pull, plus slack."""
    g = cfg.gossip
    return (g.retransmit_mult * max(1.0, math.ceil(math.log10(n + 1))) * g.interval + 2 * g.push_pull_interval
            + BUSY_MACHINE_SLACK)


def startup_bound(cfg: AgentConfig, n: int) -> float:
    """n Python processes starting on 2 shared cores, joining through seeds, and a push-pull to converge."""
    return BUSY_MACHINE_SLACK + 3.0 * n + 2 * cfg.gossip.push_pull_interval
