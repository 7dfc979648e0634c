"""Helpers to run HashiCorp Serf agents on 127.0.0.1 as a reference peer for bench_cluster.py.

Serf (memberlist SWIM + Lifeguard underneath) is the Debian package `serf` (`apt-get install serf`). Each agent
binds one gossip port (UDP + TCP push-pull) and one RPC port (for `serf members`):

    serf agent -node NAME -bind 127.0.0.1:PORT -rpc-addr 127.0.0.1:RPCPORT -log-level info [-join ADDR ...]

The default profile is `lan`, memberlist's DefaultLANConfig: probe 1 s, probe timeout 500 ms, 3 indirect
checks, suspicion mult 4, gossip 200 ms to 3 nodes, push-pull 30 s (scaled up past 32 members) — the same
timings as our `lan` preset. `-join` fails fatally if no address answers, so seeds must be up first.

Serf's log lines carry one-second timestamps ("2026/11/24 16:18:32 [INFO] serf: EventMemberJoin: s1 127.0.0.1"),
too coarse for sub-second figures: bench_cluster.py therefore stamps every line of every agent (ours too) when
it reads it from the agent's stdout pipe. `parse_line` maps a line to a member event.

Serf leaves gracefully on SIGINT (not on SIGTERM: `leave_on_terminate` is off by default).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence

SERF = "serf"
GRACEFUL_SIGNAL = signal.SIGINT

# "    2026/11/24 16:18:32 [INFO] serf: EventMemberJoin: s1 127.0.0.1"
_EVENT_RE = re.compile(r"serf: EventMember(Join|Failed|Leave|Update|Reap): (\S+)")
_SUSPECT_RE = re.compile(r"memberlist: Suspect (\S+) has failed")
_REFUTE_RE = re.compile(r"memberlist: Refuting a suspect message")
_RUNNING = "==> Serf agent running!"
_EVENT_KIND = {"Join": "join", "Failed": "dead", "Leave": "left", "Update": "update", "Reap": "reap"}


def available() -> bool:
    return shutil.which(SERF) is not None


def version() -> str:
    try:
        out = subprocess.run([SERF, "version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return out.splitlines()[0].strip() if out else "unknown"


def agent_command(name: str, port: int, rpc_port: int, join: Sequence[int] = (), *, log_level: str = "info",
                  profile: str = "lan") -> list[str]:
    """The argv of one serf agent on 127.0.0.1:port joining the agents on the `join` ports."""
    cmd = [SERF, "agent", "-node", name, "-bind", f"127.0.0.1:{port}", "-rpc-addr", f"127.0.0.1:{rpc_port}",
           "-log-level", log_level, "-profile", profile]
    for p in join:
        cmd += ["-join", f"127.0.0.1:{p}"]
    return cmd


def parse_line(line: str) -> tuple[str, str] | None:
    """(kind, subject) for a member event line, ("listening", "") once the agent runs, else None.

    kinds: join, dead (EventMemberFailed), left, update, reap, suspect (memberlist's own suspicion of a probe
    target), refute (this agent refuted a suspicion about itself)."""
    if _RUNNING in line:
        return ("listening", "")
    m = _EVENT_RE.search(line)
    if m:
        return (_EVENT_KIND[m.group(1)], m.group(2))
    m = _SUSPECT_RE.search(line)
    if m:
        return ("suspect", m.group(1))
    if _REFUTE_RE.search(line):
        return ("refute", "")
    return None


def members(rpc_port: int, timeout: float = 10.0) -> dict[str, str] | None:
    """name -> status ("alive", "failed", "left", "leaving") as one agent sees it; None if it does not answer."""
    try:
        res = subprocess.run([SERF, "members", "-rpc-addr", f"127.0.0.1:{rpc_port}", "-format=json"],
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return None
    return {m["name"]: m["status"] for m in data.get("members", [])}
