"""Local clusters: a GossipCluster manifest run as real agent processes on 127.0.0.1.

`gossipctl up` and the real-process tests share this module. Every process started here is remembered by
its Popen (so by PID) and torn down by `LocalCluster.stop_all`: SIGTERM (a graceful leave), then SIGKILL
after a bound. Agents run in their own session, so a terminal's Ctrl-C reaches only gossipctl, which then
tears them down in order.

Also here: the manifest's checks (in its own terms: `spec.gossip: unknown key(s) ...`), the cluster
directory's lock (one `gossipctl up` per directory) and the restart backoff that `cli/supervisor.py` applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gossip_agent.cli.client import AgentClient, ClientError
from gossip_agent.core import settings_schema
from gossip_agent.core.config import ConfigError, from_mapping

MANIFEST_KIND = "GossipCluster"
DEFAULT_REPLICAS = 3
# How many of the first agents every agent lists as seeds (the operator uses the first pods the same way).
SEED_COUNT = 3
# How long a graceful stop (SIGTERM: leave, then flush the state) may take before SIGKILL: Kubernetes' default
# terminationGracePeriodSeconds. An agent leaves in well under a second on a quiet machine, but 5 s (the old
# figure) turned leaves into kills on a busy one: the member was then seen dead, not left, and no snapshot written.
STOP_GRACE = 30.0
# metadata.name as the operator admits it (gossip_operator.spec): also safe as a directory and member name.
_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    replicas: int
    spec: Mapping[str, Any]


# Keys of a GossipCluster spec that are the operator's business (the agents never see them), by section ("" is
# the spec itself). The agent's keys come from the settings' declarations (core/settings_schema.py), so only
# these are listed here, because the agent package runs without the operator installed; a test keeps the union
# equal to the CRD's spec. gossipctl checks a manifest against it, so a typo is reported in the manifest's own
# terms (`spec.gossip`, the keys a spec may hold), not in those of the agent config it expands to.
OPERATOR_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset({"replicas", "image", "imagePullPolicy", "paused", "resources", "podDisruptionBudget", "pod"}),
    "storage": frozenset({"size", "storageClassName", "ephemeral"}),
    "security": frozenset({"gossipKeySecret", "tlsSecret"}),
}


def spec_keys() -> dict[str, frozenset[str]]:
    """What a GossipCluster spec admits, by section ("" is the spec itself)."""
    sections = settings_schema.spec_keys()
    out = {"": settings_schema.spec_top_level_keys() | OPERATOR_KEYS[""]}
    out.update({section: keys | OPERATOR_KEYS.get(section, frozenset()) for section, keys in sections.items()})
    return out


def agent_mapping(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The agent config a spec describes: the spec without the operator's keys."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in OPERATOR_KEYS[""]:
            continue
        if key in OPERATOR_KEYS and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in OPERATOR_KEYS[key]}
        out[key] = value
    return out


# A manifest is a small text file; anything larger is a mistake (`-f /dev/zero` must not read forever).
MAX_MANIFEST_BYTES = 1 << 20


def _read_manifest_text(path: str | Path) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"-f: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ConfigError(f"-f: {path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"-f: {path} is not a text file (not UTF-8); expected a YAML manifest") from None
    if "\x00" in text:
        raise ConfigError(f"-f: {path} is not a text file (it holds NUL bytes); expected a YAML manifest")
    return text


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line out of PyYAML's multi-line report: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def check_spec_keys(spec: Mapping[str, Any]) -> None:
    """ConfigError naming `spec` or `spec.SECTION`, the unknown keys and the known ones."""
    known_keys = spec_keys()

    def check(data: Mapping[str, Any], section: str) -> None:
        known = known_keys[section]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            where = f"spec.{section}" if section else "spec"
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    check(spec, "")
    for section in known_keys:
        value = spec.get(section) if section else None
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"spec.{section}: expected a mapping, got {type(value).__name__}")
        check(value, section)


def load_manifest(path: str | Path) -> Manifest:
    """A GossipCluster from a YAML file (the first document of that kind); ConfigError if it is not one."""
    text = _read_manifest_text(path)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"-f: {path} is not valid YAML: {_yaml_problem(exc)}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == MANIFEST_KIND:
            break
    else:
        raise ConfigError(f"-f: {path} holds no document of kind {MANIFEST_KIND}")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError("spec: expected a mapping")
    check_spec_keys(spec)
    meta = doc.get("metadata") or {}
    name = str(meta.get("name") or "local") if isinstance(meta, dict) else "local"
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"metadata.name: {name!r} must be lowercase letters, digits and '-' (at most 52), "
                          "starting with a letter: it names the agents and the cluster directory")
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
        data = agent_mapping(manifest.spec)
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


# -- the cluster directory -----------------------------------------------------------------------------------

LOCK_FILE = "up.lock"


class ClusterDirBusy(Exception):
    """Another `gossipctl up` holds the cluster directory."""


def check_dir_is_ours(directory: Path) -> None:
    """PermissionError unless `directory` belongs to this user and others cannot write into it.

    `up` writes configs, the keyring and agents' data there and truncates its lock file: in a directory
    another user owns or anyone may write to, that user could plant symlinks (a root `gossipctl up` then
    overwrote any file they chose; found by review) or read the keyring. Like ssh's StrictModes."""
    st = os.stat(directory)
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{directory} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}); "
                              "use a directory of your own")
    if st.st_mode & stat.S_IWOTH:
        raise PermissionError(f"{directory} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}); "
                              f"chmod o-w {directory}, or use another directory")


class DirLock:
    """An exclusive lock on a cluster directory, held while the process lives (or until `release`).

    Two `gossipctl up` on one directory would overwrite each other's configs and start two agents on one
    data directory (one WAL, one replica id): the second must fail before touching anything. The lock is
    `flock` on `up.lock`, so the kernel releases it when the holder dies, even by SIGKILL: no stale lock to
    clean. The file holds the holder's PID, for the error message only.
    """

    def __init__(self, directory: Path) -> None:
        import fcntl  # POSIX only, like the rest of the local cluster

        self.path = directory / LOCK_FILE
        directory.mkdir(parents=True, exist_ok=True)
        check_dir_is_ours(directory)
        # O_NOFOLLOW: an `up.lock` planted as a symlink would have had its target truncated (found by review).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ClusterDirBusy(f"{directory} is in use by another `gossipctl up` (pid {holder}); stop it first, "
                                 "or give this one another --dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clean_dir(directory: Path) -> None:
    """Delete everything in a cluster directory but its lock: configs, logs, keyring and agents' data."""
    import shutil

    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# -- restarts ------------------------------------------------------------------------------------------------

@dataclass
class RestartBackoff:
    """When to restart an agent that exited without leaving: CrashLoopBackOff in small.

    The delay doubles with each such exit, from `first` to `cap`, and starts over once the agent ran
    `reset_after` seconds; whatever the delays, at most `max_per_window` restarts fall in any `window`
    seconds, so an agent that dies at once does not spin. Takes `now` (no clock of its own).
    """

    first: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    max_per_window: int = 5
    window: float = 60.0
    failures: int = 0
    restarts: list[float] = field(default_factory=list)

    def delay(self, ran: float, now: float) -> float:
        """Seconds to wait before restarting an agent that exited at `now` after running `ran` seconds."""
        if ran >= self.reset_after:
            self.failures = 0
        wait: float = min(self.cap, self.first * 2.0 ** min(self.failures, 30))
        self.failures += 1
        self.restarts = [t for t in self.restarts if t > now - self.window]
        if len(self.restarts) >= self.max_per_window:
            wait = max(wait, self.restarts[-self.max_per_window] + self.window - now)
        return wait

    def restarted(self, now: float) -> None:
        self.restarts.append(now)


def describe_exit(code: int) -> str:
    """'killed by SIGKILL' / 'exit code 1' from a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
