"""Local clusters: a GossipCluster manifest run as real agent processes on 127.0.0.1.

`gossipctl up` and the real-process tests share this module. Every process started here is remembered by
its Popen (so by PID) and torn down by `LocalCluster.stop_all`: SIGTERM (a graceful leave), then SIGKILL
after a bound. Agents run in their own session, so a terminal's Ctrl-C reaches only gossipctl, which then
tears them down in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.core.config import ConfigError, from_mapping

MANIFEST_KIND = "GossipCluster"
DEFAULT_REPLICAS = 3
# How many of the first agents every agent lists as seeds (the operator uses the first pods the same way).
SEED_COUNT = 3
STOP_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    replicas: int
    spec: Mapping[str, Any]


def load_manifest(path: str | Path) -> Manifest:
    """A GossipCluster from a YAML file (the first document of that kind); ConfigError if it is not one."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"-f: cannot read {path}: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"-f: {path} is not valid YAML: {exc}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == MANIFEST_KIND:
            break
    else:
        raise ConfigError(f"-f: {path} holds no document of kind {MANIFEST_KIND}")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError("spec: expected a mapping")
    meta = doc.get("metadata") or {}
    name = str(meta.get("name") or "local") if isinstance(meta, dict) else "local"
    replicas = spec.get("replicas", DEFAULT_REPLICAS)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"spec.replicas: expected a positive integer, got {replicas!r}")
    return Manifest(name, replicas, spec)


def agent_configs(manifest: Manifest, *, base_port: int, replicas: int | None = None,
                  data_root: Path | None = None, extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One agent config mapping per replica: the spec's sections, a name, a loopback port, the first agents
    as seeds. Each is validated (ConfigError names the key)."""
    n = replicas or manifest.replicas
    seeds = [f"127.0.0.1:{base_port + i}" for i in range(min(SEED_COUNT, n))]
    out = []
    for i in range(n):
        data: dict[str, Any] = {k: v for k, v in manifest.spec.items() if k != "replicas"}
        data.setdefault("preset", "lan")
        data.update(name=f"{manifest.name}-{i}", bindAddress="127.0.0.1", advertiseAddress="127.0.0.1",
                    port=base_port + i, seeds=seeds)
        if data_root is not None:
            storage = dict(data.get("storage") or {})
            storage["dataDir"] = str(data_root / f"{manifest.name}-{i}")
            data["storage"] = storage
        for key, value in (extra or {}).items():
            if isinstance(value, Mapping):
                data[key] = {**dict(data.get(key) or {}), **value}
            else:
                data[key] = value
        from_mapping(data)  # validate now: fail before any process starts
        out.append(data)
    return out


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                # As the agent's server does: a port whose old connections linger in TIME_WAIT is free.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block(n: int, start: int = 20000, end: int = 60000) -> int:
    """The first port P ≥ start such that P..P+n-1 are free for TCP and UDP on 127.0.0.1."""
    port = start + (os.getpid() * 7) % 1000  # spread parallel callers a little
    while port + n < end:
        if all(port_is_free(p) for p in range(port, port + n)):
            return port
        port += n
    raise RuntimeError("no free block of ports")


@dataclass
class AgentProcess:
    name: str
    port: int
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    client: AgentClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = AgentClient(f"127.0.0.1:{self.port}", timeout=1.0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def status(self) -> dict[str, Any] | None:
        try:
            return self.client.status()
        except ClientError:
            return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalCluster:
    """Agent processes started from config mappings, all torn down by `stop_all` (also on `with` exit)."""

    def __init__(self, workdir: str | Path, *, python: str = sys.executable, log_level: str = "info",
                 env: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.log_level = log_level
        self.env = {**os.environ, **(env or {})}
        self.agents: list[AgentProcess] = []

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, config: Mapping[str, Any]) -> AgentProcess:
        name = str(config["name"])
        config_path = self.workdir / f"{name}.json"  # JSON: the agent then needs no YAML parser (~1 MiB)
        config_path.write_text(json.dumps(dict(config), indent=2))
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "gossip_agent", "--config", str(config_path), "--log-level", self.log_level],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True)
        agent = AgentProcess(name, int(config["port"]), config_path, log_path, proc)
        self.agents.append(agent)
        return agent

    def running(self) -> list[AgentProcess]:
        return [a for a in self.agents if a.running()]

    def stop(self, agent: AgentProcess, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM (graceful leave), then SIGKILL after `grace` seconds; the exit code."""
        agent.signal(signal.SIGTERM)
        code = agent.wait(grace)
        if code is None:
            agent.signal(signal.SIGKILL)
            code = agent.wait(grace)
        return code

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        live = self.running()
        for agent in live:
            agent.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for agent in live:
            agent.wait(max(0.0, deadline - time.monotonic()))
        for agent in self.running():
            agent.signal(signal.SIGKILL)
            agent.wait(grace)


def alive_counts(agents: Sequence[AgentProcess]) -> list[int | None]:
    """Each agent's count of alive members (None while it does not answer)."""
    out: list[int | None] = []
    for a in agents:
        status = a.status() if a.running() else None
        out.append(None if status is None else int(status["members"]["alive"]))
    return out
