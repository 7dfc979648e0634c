"""`gossipctl`: run a GossipCluster manifest locally (`up`), and talk to one agent (`members`, `status`,
`leave`), plus `keygen` for keyring files.

Subcommands are registered by `COMMANDS` (name -> (register, run)); a later module (the key-value commands)
adds its own entries with the same shape.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from gossip_agent import __version__
from gossip_agent.cli import kv
from gossip_agent.cli.client import ClientError, Register, Run, add_client_args, client_from_args
from gossip_agent.cli.cluster import (
    LocalCluster,
    agent_configs,
    alive_counts,
    load_manifest,
    port_is_free,
)
from gossip_agent.core.config import ConfigError

# -- client commands -----------------------------------------------------------------------------------

def run_members(args: argparse.Namespace) -> int:
    members = client_from_args(args).members()
    if args.json:
        print(json.dumps({"members": members}, indent=2))
        return 0
    rows = [("NAME", "ADDRESS", "STATE", "INCARNATION", "META")]
    for m in sorted(members, key=lambda m: m["name"]):
        meta = ",".join(f"{k}={v}" for k, v in sorted(m.get("meta", {}).items()))
        rows.append((m["name"], f"{m['address']}:{m['port']}", m["state"], str(m["incarnation"]), meta))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def run_status(args: argparse.Namespace) -> int:
    status = client_from_args(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    counts = status.get("members", {})
    print(f"name:        {status.get('name')}")
    print(f"address:     {status.get('address')}:{status.get('port')}")
    print(f"incarnation: {status.get('incarnation')}")
    print(f"health:      {status.get('health')}")
    print("members:     " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("alive", "suspect", "dead", "left")))
    for key in ("state", "convergence"):
        if key in status:
            print(f"{key + ':':<13}{json.dumps(status[key])}")
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

def register_up(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, help="GossipCluster manifest (YAML)")
    p.add_argument("--base-port", type=int, default=7946, help="port of agent 0; agent i uses base+i")
    p.add_argument("--replicas", type=int, help="override spec.replicas")
    p.add_argument("--dir", default=".local-cluster", help="configs, logs and data (default %(default)s)")
    p.add_argument("--preset", choices=["lan", "local", "wan"], help="override the timings preset")
    p.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=True,
                   help="generate a keyring and encrypt all gossip (default; --no-encrypt for plaintext)")
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
        if self.tty and self.last:
            sys.stdout.write("\r\x1b[K")
        print(line, flush=True)
        self.last = ""


def _counts_line(elapsed: float, n: int, counts: Sequence[int | None]) -> str:
    cells = " ".join("·" if c is None else str(c) for c in counts)
    seen = sum(1 for c in counts if c == n)
    return f"[{elapsed:5.1f}s] alive seen by each agent: {cells}   ({seen}/{n} see all {n})"


def run_up(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.file)
    n = args.replicas or manifest.replicas
    if n < 1:
        raise ConfigError("--replicas: must be >= 1")
    workdir = Path(args.dir).resolve()
    extra: dict[str, Any] = {}
    if args.preset:
        extra["preset"] = args.preset
    if args.encrypt:
        from gossip_agent.io.security import generate_key
        workdir.mkdir(parents=True, exist_ok=True)
        keyring = workdir / "keyring"
        keyring.write_text(generate_key() + "\n")
        keyring.chmod(0o600)
        extra["security"] = {"keyringFile": str(keyring)}
    configs = agent_configs(manifest, base_port=args.base_port, replicas=n, data_root=workdir / "data",
                            extra=extra)
    busy = [c["port"] for c in configs if not port_is_free(c["port"])]
    if busy:
        print(f"gossipctl: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use; "
              f"pick another --base-port", file=sys.stderr)
        return 2

    stop = {"requested": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["requested"] = True

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalCluster(workdir, log_level=args.log_level)
    progress = _Progress()
    try:
        print(f"starting {n} agents of {manifest.name!r} on 127.0.0.1:{args.base_port}..{args.base_port + n - 1} "
              f"(preset {configs[0]['preset']}, logs in {workdir})", flush=True)
        started = time.monotonic()
        for cfg in configs:
            cluster.start(cfg)
        converged_at: float | None = None
        while not stop["requested"]:
            dead = [a for a in cluster.agents if not a.running()]
            if dead:
                progress.done("")
                for a in dead:
                    print(f"agent {a.name} exited with code {a.proc.returncode}; last log lines:\n{a.log_tail()}",
                          file=sys.stderr)
                return 1
            counts = alive_counts(cluster.agents)
            elapsed = time.monotonic() - started
            if converged_at is None:
                if all(c == n for c in counts):
                    converged_at = elapsed
                    progress.done(_counts_line(elapsed, n, counts))
                    print(f"converged: all {n} agents see {n} alive members after {elapsed:.2f}s", flush=True)
                    if args.exit_when_converged:
                        return 0
                    print("running; Ctrl-C stops every agent.  Try: gossipctl members --addr "
                          f"127.0.0.1:{args.base_port}", flush=True)
                elif elapsed > args.timeout:
                    progress.done(_counts_line(elapsed, n, counts))
                    print(f"gossipctl: not converged after {args.timeout:.0f}s", file=sys.stderr)
                    if args.exit_when_converged:
                        return 1
                    converged_at = -1.0  # keep running and reporting, but stop waiting
                else:
                    progress.show(_counts_line(elapsed, n, counts))
            else:
                progress.show(_counts_line(elapsed, n, counts), key=tuple(counts))
            # Fast while converging; afterwards gentle, so watching does not dominate an idle cluster's load.
            time.sleep(0.2 if converged_at is None else 2.0)
        progress.done("stopping: every agent leaves gracefully")
        return 0
    finally:
        cluster.stop_all()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


# -- entry point ---------------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "up": ("run a GossipCluster manifest as local agent processes", register_up, run_up),
    "members": ("list an agent's members", add_client_args, run_members),
    "status": ("show an agent's status", add_client_args, run_status),
    "leave": ("ask an agent to leave gracefully and exit", add_client_args, run_leave),
    "keygen": ("print a new base64 key for a keyring file", register_keygen, run_keygen),
}
COMMANDS.update(kv.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gossipctl", description="Local gossip clusters and agent queries.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, register, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        register(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"gossipctl: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"gossipctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
