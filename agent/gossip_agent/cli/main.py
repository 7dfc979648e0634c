"""`gossipctl`: run a GossipCluster manifest locally (`up`) and steer it (`ps`, `kill`, `scale`), talk to one
agent (`members`, `status`, `leave`), plus `keygen` for keyring files.

Subcommands are registered by `COMMANDS` (name -> (register, run)); a later module (the key-value commands)
adds its own entries with the same shape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from gossip_agent import __version__
from gossip_agent.cli import control, kv, topology
from gossip_agent.cli.client import ClientError, Register, Run, add_client_args, client_from_args, shown
from gossip_agent.cli.cluster import (
    AgentProcess,
    ClusterDirBusy,
    DirLock,
    LocalCluster,
    Manifest,
    RestartBackoff,
    agent_configs,
    alive_counts,
    clean_dir,
    load_manifest,
    port_is_free,
)
from gossip_agent.cli.control import ControlServer
from gossip_agent.cli.supervisor import MAX_REPLICAS, STATE_FILE, SlotState, Supervisor
from gossip_agent.core.config import ConfigError

# -- how to run gossipctl again ---------------------------------------------------------------------------

def ctl_command() -> str:
    """The command that runs this gossipctl from the user's shell, for hints: `gossipctl` only when that
    name finds this very program on PATH (it often lives only in .venv/bin), else its path, relative to the
    current directory when under it."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0 == "-c" or argv0.endswith(".py"):  # python -m gossip_agent.cli, or embedded
        return f"{_shown_path(sys.executable)} -m gossip_agent.cli"
    found = shutil.which(Path(argv0).name)
    if found and Path(found).resolve() == Path(argv0).resolve():
        return Path(argv0).name
    return _shown_path(argv0)


def _shown_path(path: str) -> str:
    full = Path(path).absolute()  # not resolve(): a venv's bin/python symlink must stay the venv's
    cwd = Path.cwd()
    try:
        rel = full.relative_to(cwd)
    except ValueError:
        return shlex.quote(str(full))
    if cwd == cwd.parent:  # from / the absolute path reads better
        return shlex.quote(str(full))
    shown = str(rel)
    return shlex.quote(shown if "/" in shown else f"./{shown}")


# -- client commands -----------------------------------------------------------------------------------

def _wants_json(args: argparse.Namespace) -> bool:
    return bool(args.json) or getattr(args, "output", None) == "json"


def register_members(p: argparse.ArgumentParser) -> None:
    add_client_args(p)
    p.add_argument("-o", "--output", choices=["text", "wide", "json"], default="text",
                   help="text (default), wide (adds each member's metadata) or json (--json is the same)")


def run_members(args: argparse.Namespace) -> int:
    members = client_from_args(args).members()
    if _wants_json(args):
        print(json.dumps({"members": members}, indent=2))
        return 0
    wide = args.output == "wide"
    rows = [("NAME", "ADDRESS", "STATE", "INCARNATION", *(("META",) if wide else ()))]
    for m in sorted(members, key=lambda m: str(m["name"])):
        meta = ",".join(f"{k}={v}" for k, v in sorted(m.get("meta", {}).items()))
        rows.append((shown(m["name"]), shown(f"{m['address']}:{m['port']}"), shown(m["state"]),
                     shown(m["incarnation"]), *((shown(meta),) if wide else ())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def register_status(p: argparse.ArgumentParser) -> None:
    add_client_args(p)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text (default) or json (--json is the same)")


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") or "0"  # seconds and fractions: ms precision reads best
    return str(value)


def status_lines(status: dict[str, Any]) -> list[str]:
    """An agent's /v1/status as aligned `key: value` lines, each section's keys indented under its name."""
    status = dict(status)
    if "address" in status and "port" in status:
        status["address"] = f"{status['address']}:{status.pop('port')}"
    counts = status.get("members")
    if isinstance(counts, dict):
        status["members"] = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("alive", "suspect", "dead", "left"))
    top = [k for k, v in status.items() if not isinstance(v, dict)]
    width = max((len(k) for k in top), default=0) + 3  # the colon, two spaces
    lines = [f"{k + ':':<{width}}{_plain(status[k])}" for k in top]
    for key, value in status.items():
        if isinstance(value, dict):
            inner = max((len(k) for k in value), default=0) + 3
            lines.append(f"{key}:")
            lines.extend(f"  {k + ':':<{inner}}{_plain(v)}" for k, v in value.items())
    return lines


def run_status(args: argparse.Namespace) -> int:
    status = client_from_args(args).status()
    if _wants_json(args):
        print(json.dumps(status, indent=2))
        return 0
    print("\n".join(shown(line) for line in status_lines(status)))  # names and roots come from peers
    return 0


def run_leave(args: argparse.Namespace) -> int:
    client_from_args(args).leave()
    print(f"{args.addr}: leaving")
    return 0


def register_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=32, choices=[16, 24, 32], help="key bytes (default %(default)s)")


def run_keygen(args: argparse.Namespace) -> int:
    from gossip_agent.io.security import generate_key
    print(generate_key(args.size))
    return 0


# -- up ------------------------------------------------------------------------------------------------

DEFAULT_ROOT = Path(".local-cluster")


def register_up(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, help="GossipCluster manifest (YAML)")
    p.add_argument("--base-port", type=int, default=7946, help="port of agent 0; agent i uses base+i")
    p.add_argument("--replicas", type=int, help="override spec.replicas")
    p.add_argument("--dir", help=f"configs, logs and data; kept between runs (default {DEFAULT_ROOT}/NAME, NAME "
                   "being the manifest's metadata.name)")
    p.add_argument("--clean", action="store_true", help="delete the directory's data, logs and configs first")
    p.add_argument("--preset", choices=["lan", "local", "wan"], help="override the timings preset")
    p.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=True,
                   help="generate a keyring and encrypt all gossip (default; --no-encrypt for plaintext)")
    p.add_argument("--restart-delay", type=float, default=10.0, metavar="S",
                   help="first wait before restarting an agent that died; doubles per death up to 30s "
                   "(default %(default)s, kubelet's first crash back-off: longer than failure detection, so the "
                   "live view shows suspect -> dead -> restarted -> alive; 1 brings it back at once)")
    p.add_argument("--exit-when-converged", action="store_true",
                   help="exit 0 once converged (non-zero on timeout), tearing the cluster down")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to converge (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class _Progress:
    """One status line, rewritten in place on a terminal, printed on change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = ""
        self.last_key: object = None

    def show(self, line: str, key: object = None) -> None:
        """Show `line`; off a terminal, only when `key` (what the line reports, not the clock) changed."""
        if line == self.last or (not self.tty and key is not None and key == self.last_key):
            return
        self.last, self.last_key = line, key
        if self.tty:
            sys.stdout.write("\r\x1b[K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def done(self, line: str) -> None:
        """Print `line` for good (an event), above the status line."""
        if self.tty and self.last:
            sys.stdout.write("\r\x1b[K")
        print(line, flush=True)
        self.last, self.last_key = "", None


def _counts_line(elapsed: float, n: int, counts: Sequence[int | None]) -> str:
    cells = " ".join("·" if c is None else str(c) for c in counts)
    seen = sum(1 for c in counts if c == n)
    return f"[{elapsed:5.1f}s] alive seen by each agent: {cells}   ({seen}/{n} see all {n})"


class _MemberView:
    """Membership as one running agent (the lowest ordinal) sees it; `update` returns its changes as event
    lines (suspect, dead, left, alive again with a new incarnation), so the live view shows failure
    detection, not only counts."""

    def __init__(self) -> None:
        self.observer = ""
        self.states: dict[str, tuple[str, int]] = {}

    def update(self, agents: Sequence[AgentProcess]) -> list[str]:
        observer = next((a for a in agents if a.running()), None)
        if observer is None:
            return []
        try:
            members = observer.client.members()
        except (ClientError, KeyError, TypeError, ValueError):
            return []
        new = {str(m["name"]): (str(m["state"]), int(m["incarnation"])) for m in members}
        if observer.name != self.observer:  # a new point of view: no changes to report yet
            self.observer, self.states = observer.name, new
            return []
        lines = []
        for name, (state, inc) in sorted(new.items()):
            old = self.states.get(name)
            if old is None:
                lines.append(f"{observer.name} sees {name} join ({state}, incarnation {inc})")
            elif old[0] != state:
                lines.append(f"{observer.name} sees {name} {state} (incarnation {inc})")
            elif old[1] != inc and state == "alive":
                lines.append(f"{observer.name} sees {name} alive again (incarnation {old[1]} -> {inc})")
        lines.extend(f"{observer.name} forgot {name} (reaped)" for name in sorted(set(self.states) - set(new)))
        self.states = new
        return [shown(line) for line in lines]  # member names come from peers


def up_plan(args: argparse.Namespace) -> tuple[Manifest, int, Path]:
    """The manifest, the number of agents and the directory of `up`, every input checked (ConfigError)
    before anything is written or started."""
    manifest = load_manifest(args.file)
    n = manifest.replicas if args.replicas is None else args.replicas
    if not 1 <= n <= MAX_REPLICAS:
        raise ConfigError(f"replicas (--replicas or spec.replicas): must be 1..{MAX_REPLICAS}, got {n}")
    if not 1 <= args.base_port <= 65536 - n:
        raise ConfigError(f"--base-port: agents use ports base..base+{n - 1}, so base must be 1..{65536 - n}, "
                          f"got {args.base_port}")
    if args.restart_delay < 0 or args.restart_delay > 3600:
        raise ConfigError("--restart-delay: must be 0..3600 seconds")
    workdir = Path(args.dir) if args.dir else DEFAULT_ROOT / manifest.name
    return manifest, n, workdir.resolve()


def run_up(args: argparse.Namespace) -> int:
    manifest, n, workdir = up_plan(args)
    try:
        lock = DirLock(workdir)  # before anything in the directory is touched
    except OSError as exc:
        raise ConfigError(f"--dir: cannot use {workdir}: {exc.strerror or exc}") from None
    try:
        return _run_up_locked(args, manifest, n, workdir)
    finally:
        lock.release()


def _run_up_locked(args: argparse.Namespace, manifest: Manifest, n: int, workdir: Path) -> int:
    ctl = ctl_command()
    if args.clean:
        clean_dir(workdir)
    extra: dict[str, Any] = {}
    if args.preset:
        extra["preset"] = args.preset
    if args.encrypt:
        from gossip_agent.io.security import generate_key
        keyring = workdir / "keyring"
        # Created 0600 (never readable by others, not even between a write and a chmod), afresh, not
        # through a symlink left in the directory (found by review).
        with contextlib.suppress(FileNotFoundError):
            keyring.unlink()
        with os.fdopen(os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as f:
            f.write(generate_key() + "\n")
        extra["security"] = {"keyringFile": str(keyring)}
    configs = agent_configs(manifest, base_port=args.base_port, replicas=n, data_root=workdir / "data",
                            extra=extra)
    busy = [c["port"] for c in configs if not port_is_free(c["port"])]
    if busy:
        print(f"gossipctl: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use; "
              f"pick another --base-port", file=sys.stderr)
        stale = _leftover_pids(workdir)
        if stale:
            print(f"gossipctl: agents of an earlier `gossipctl up` in this directory may still run (pids "
                  f"{', '.join(map(str, stale))}; its `up` was killed); stop them with `kill PID`", file=sys.stderr)
        return 2

    stop = {"requested": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["requested"] = True

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalCluster(workdir, log_level=args.log_level)
    sup = Supervisor(cluster, manifest, base_port=args.base_port, data_root=workdir / "data", extra=extra,
                     backoff=lambda: RestartBackoff(first=args.restart_delay), ctl=ctl)
    control = ControlServer(workdir)
    progress = _Progress()
    view = _MemberView()
    try:
        reused = (workdir / "data").is_dir() and any((workdir / "data").iterdir())
        print(f"starting {n} agents of {manifest.name!r} on 127.0.0.1:{args.base_port}..{args.base_port + n - 1} "
              f"(preset {configs[0]['preset']}); configs, logs and data in {_shown_path(str(workdir))}"
              + (" (data kept from an earlier run; --clean starts afresh)" if reused else ""), flush=True)
        started = time.monotonic()
        try:
            sup.scale(n, started)
        except ValueError as exc:  # a port taken since the check above
            print(f"gossipctl: {exc}", file=sys.stderr)
            return 2
        sup.write_state(workdir)
        converged = False
        ever_converged = False
        changed_at = started
        next_poll = next_view = started
        while not stop["requested"]:
            for request, conn in control.wait(0.2):
                reply, events = _serve(sup, request)
                ControlServer.answer(conn, reply)
                for line in events:
                    progress.done(f"[{time.monotonic() - started:5.1f}s] {line}")
                if events:
                    changed_at = time.monotonic()
                    sup.write_state(workdir)
            now = time.monotonic()
            events = sup.tick(now)
            if events:
                for line in events:
                    progress.done(f"[{time.monotonic() - started:5.1f}s] {line}")
                changed_at = now
                sup.write_state(workdir)
            if now - changed_at < 0.5 and ever_converged:  # something changed: report until converged again
                converged, next_poll = False, min(next_poll, now + 0.2)
            if ever_converged and now >= next_view:
                for line in view.update(sup.running()):
                    progress.done(f"[{time.monotonic() - started:5.1f}s] {line}")
                next_view = now + 0.5
            if now < next_poll:
                continue
            running = sup.running()
            live = len(running)
            by_slot = {a.name: c for a, c in zip(running, alive_counts(running), strict=True)}
            counts = [by_slot.get(s.name) for s in sup.slots if s.state is not SlotState.REMOVED]
            now = time.monotonic()
            elapsed = now - started
            if all(by_slot.get(a.name) == live for a in running):
                if not converged:
                    progress.done(_counts_line(elapsed, live, counts))
                    if not ever_converged:
                        print(f"converged: all {live} agents see {live} alive members after {elapsed:.2f}s",
                              flush=True)
                        if args.exit_when_converged:
                            return 0
                        print("running; Ctrl-C stops every agent.  Try:\n" + _hints(ctl, manifest.name, n,
                                                                                   args.base_port), flush=True)
                    else:
                        print(f"converged again: all {live} running agents see {live} alive members, "
                              f"{now - changed_at:.1f}s after the last change", flush=True)
                    converged = ever_converged = True
            else:
                converged = False
                if not ever_converged and elapsed > args.timeout:
                    progress.done(_counts_line(elapsed, live, counts))
                    print(f"gossipctl: not converged after {args.timeout:.0f}s", file=sys.stderr)
                    if args.exit_when_converged:
                        return 1
                    ever_converged = True  # keep running and reporting, but stop waiting
                else:
                    progress.show(_counts_line(elapsed, live, counts), key=(tuple(counts), live))
            # Fast while converging; afterwards gentle, so watching does not dominate an idle cluster's load.
            next_poll = now + (0.2 if not converged else 2.0)
        progress.done("stopping: every agent leaves gracefully")
        return 0
    finally:
        control.close()
        cluster.stop_all()
        with contextlib.suppress(OSError):
            (workdir / STATE_FILE).unlink()  # it describes a running `up`
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _leftover_pids(workdir: Path) -> list[int]:
    """PIDs that an `up` which did not stop cleanly (SIGKILL) left in its agents.json, and that still exist."""
    try:
        agents = json.loads((workdir / STATE_FILE).read_text())["agents"]
        pids = [int(a["pid"]) for a in agents if a.get("pid")]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


def _hints(ctl: str, cluster: str, n: int, base_port: int) -> str:
    """What to try next, with the command that works from this shell (see `ctl_command`)."""
    rows = [
        (f"members --addr 127.0.0.1:{base_port}", "what agent 0 sees"),
        ("ps", "this cluster's agents, PIDs and restarts"),
        (f"kill {cluster}-{n - 1}", "SIGKILL: it is restarted after a backoff"),
        (f"leave --addr 127.0.0.1:{base_port + n - 1}", "it leaves and stays gone ..."),
        (f"scale {n}", "... until scale brings it back (or adds, removes agents)"),
    ]
    width = max(len(cmd) for cmd, _ in rows)
    return "\n".join(f"  {ctl} {cmd:<{width}}  # {why}" for cmd, why in rows)


def _serve(sup: Supervisor, request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One control request (see cli/control.py): the answer, and the event lines for the live view."""
    op = request.get("op")
    try:
        if op == "ps":
            return {"ok": True, "message": "", "agents": sup.snapshot(), "replicas": sup.replicas}, []
        if op == "kill":
            name = request.get("name")
            if not isinstance(name, str):
                raise ValueError("kill: expected an agent name")
            message = sup.kill(name)
            return {"ok": True, "message": message}, [message + " (gossipctl kill)"]
        if op == "scale":
            replicas = request.get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int):
                raise ValueError("scale: expected an integer number of replicas")
            events = sup.scale(replicas, time.monotonic())
            return {"ok": True, "message": f"scaled to {replicas}" + ("" if events else " (nothing to do)")}, [
                f"scale {replicas} (gossipctl scale)", *events]
    except (ValueError, ConfigError) as exc:
        return {"ok": False, "message": str(exc)}, []
    return {"ok": False, "message": f"unknown op {op!r}"}, []


# -- steering a running `up`: ps, kill, scale ------------------------------------------------------------

def register_control(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help=f"directory of the `gossipctl up` to steer, which listens on DIR/control.sock "
                   f"(default: the one running under {DEFAULT_ROOT}/)")


def register_kill(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="agent name, e.g. demo-2")
    register_control(p)


def register_scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("replicas", type=int, help="run agents 0..N-1: starts missing or departed ones, removes the rest")
    register_control(p)


def register_ps(p: argparse.ArgumentParser) -> None:
    register_control(p)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")


def cluster_dir(args: argparse.Namespace, agent: str | None = None) -> Path:
    """The directory of the `up` to talk to: --dir, else the one running under .local-cluster/ (for an
    agent name: its cluster's, if several run)."""
    if args.dir:
        return Path(args.dir)
    live = [d for d in sorted(DEFAULT_ROOT.iterdir()) if d.is_dir() and control.is_running(d)] \
        if DEFAULT_ROOT.is_dir() else []
    if agent is not None:
        mine = [d for d in live if agent.rsplit("-", 1)[0] == d.name]
        if mine:
            return mine[0]
    if len(live) == 1:
        return live[0]
    if not live:
        raise ClientError(f"no `gossipctl up` is running under {DEFAULT_ROOT}/ here; start one with "
                          f"`{ctl_command()} up -f MANIFEST`, or name its directory with --dir")
    raise ClientError(f"several `gossipctl up` run under {DEFAULT_ROOT}/ ({', '.join(d.name for d in live)}); "
                      "name one with --dir")


def _ask(directory: Path, req: dict[str, Any]) -> dict[str, Any]:
    reply = control.request(directory, req)
    if not reply.get("ok"):
        raise ClientError(str(reply.get("message") or "refused"))
    return reply


def run_kill(args: argparse.Namespace) -> int:
    print(_ask(cluster_dir(args, args.name), {"op": "kill", "name": args.name})["message"])
    return 0


def run_scale(args: argparse.Namespace) -> int:
    print(_ask(cluster_dir(args), {"op": "scale", "replicas": args.replicas})["message"])
    return 0


def run_ps(args: argparse.Namespace) -> int:
    reply = _ask(cluster_dir(args), {"op": "ps"})
    if args.output == "json":
        print(json.dumps({"replicas": reply.get("replicas"), "agents": reply.get("agents", [])}, indent=2))
        return 0
    rows = [("NAME", "PID", "PORT", "STATE", "RESTARTS", "LAST EXIT")]
    for a in reply.get("agents", []):
        rows.append((str(a["name"]), _plain(a.get("pid")), str(a["port"]), str(a["state"]), str(a["restarts"]),
                     _plain(a.get("lastExit"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


# -- entry point ---------------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "up": ("run a GossipCluster manifest as local agent processes, supervised like a StatefulSet",
           register_up, run_up),
    "ps": ("list the agents of a running `gossipctl up` (PIDs, states, restarts)", register_ps, run_ps),
    "kill": ("SIGKILL one agent of a running `gossipctl up` (it is restarted)", register_kill, run_kill),
    "scale": ("set the number of agents of a running `gossipctl up`", register_scale, run_scale),
    "members": ("list an agent's members", register_members, run_members),
    "status": ("show an agent's status", register_status, run_status),
    "leave": ("ask an agent to leave gracefully and exit", add_client_args, run_leave),
    "keygen": ("print a new base64 key for a keyring file", register_keygen, run_keygen),
}
COMMANDS.update(kv.COMMANDS)
COMMANDS.update(topology.COMMANDS)


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """allow_abbrev off on a parser and every subparser below it, whoever registered them: `--replica` must
    be an error, not `--replicas`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gossipctl", description="Local gossip clusters and agent queries.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, register, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        register(p)
        p.set_defaults(run=run)
    _no_abbreviations(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"gossipctl: invalid configuration: {shown(exc)}", file=sys.stderr)
        return 2
    except (ClientError, ClusterDirBusy) as exc:
        # Escaped: errors quote what an agent answered (its message, keys, a body) and what the user typed.
        print(f"gossipctl: {shown(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C ends a long-running command (watch, monitor ...): quietly, with the shell's code for SIGINT.
        return 130
    except BrokenPipeError:
        # `gossipctl ... | head`: the reader is gone; say nothing more (and not at interpreter exit either).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file or directory we were pointed at: one line, not a traceback
        print(f"gossipctl: {shown(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
