"""`gossipctl monitor`: follow one agent's membership events (`GET /v1/members/watch`), like `serf monitor`.

It prints the member table the agent holds when the stream opens (the `snapshot`), then one line per event:
joins, suspicions, deaths, leaves, `alive` (a suspicion refuted, or a dead member back), reaps, `refute`
(the agent refuted a rumor about itself) and convergence changes of the replicated state (rate-limited by the
agent). `--updates` adds metadata/address updates (frequent: every state-root publication is one).
`-o json` prints the stream's JSON lines as they arrive instead (heartbeats left out), for scripts.

Ctrl-C exits quietly with status 0, and so does a closed pipe (`gossipctl monitor | head`). The agent
ending the stream exits 1 naming why: it stopped, or it dropped us for reading too slowly (reconnect: the
new snapshot says where things stand).

Registered through `cli.kv.COMMANDS` (`COMMANDS` below has the same shape as `cli.main.COMMANDS`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from gossip_agent.cli.client import (
    AgentClient,
    ClientError,
    Register,
    Run,
    add_client_args,
    client_from_args,
    json_text,
    shown,
)

WATCH_PATH = "/v1/members/watch"
_ROOT_CHARS = 12
_META_VALUE_CHARS = 16


def register_monitor(p: argparse.ArgumentParser) -> None:
    add_client_args(p)
    with contextlib.suppress(argparse.ArgumentError):  # unless the shared client options already offer -o
        p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                       help="text (one readable line per event, default) or json (the raw stream)")
    p.add_argument("--updates", action="store_true",
                   help="also show metadata/address updates (frequent: each state-root publication is one)")
    p.add_argument("--count", type=int, default=0, help="exit after this many events (default: never)")


def run_monitor(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False)) or getattr(args, "output", "text") == "json"
    path = WATCH_PATH + ("?updates=true" if args.updates else "")
    # Ctrl-C and a reader that went away (`| head`) end it quietly in `main()`, as for every command.
    return _follow(client_from_args(args), path, as_json, max(0, args.count))


def _follow(client: AgentClient, path: str, as_json: bool, count: int) -> int:
    stream = client.stream(path)
    seen = 0
    with stream:
        if stream.status != 200:
            raise ClientError(f"monitor: HTTP {stream.status}: {_error_text(stream.read())}")
        try:
            for raw in stream:
                try:
                    event = json.loads(raw)
                except ValueError:
                    raise ClientError(f"monitor: the agent sent a line that is not JSON: {raw[:100]!r}") from None
                kind = event.get("event")
                if kind == "heartbeat":
                    continue
                if kind == "error":
                    raise ClientError(f"monitor: {event.get('error')}")
                if as_json:
                    print(json_text(event), flush=True)
                elif kind == "snapshot":
                    for line in format_snapshot(event):
                        print(line)
                    sys.stdout.flush()
                else:
                    print(format_event(event), flush=True)
                if kind != "snapshot":
                    seen += 1
                    if count and seen >= count:
                        return 0
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"monitor: the stream from {client.url} broke: {exc}") from None
    raise ClientError(f"monitor: the agent at {client.url} closed the stream (stopped or restarting?)")


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode(errors="replace")


# -- formatting ------------------------------------------------------------------------------------------------
def _clock(event: Mapping[str, Any]) -> str:
    t = event.get("time")
    if not isinstance(t, int | float):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _member(m: Mapping[str, Any]) -> str:
    return shown(f"{m.get('name')}  {m.get('address')}:{m.get('port')}")


def _meta(meta: Any) -> str:
    if not isinstance(meta, Mapping) or not meta:
        return ""
    cells = []
    for k, v in sorted(meta.items()):
        text = str(v)
        cells.append(f"{k}={text[:_META_VALUE_CHARS]}{'…' if len(text) > _META_VALUE_CHARS else ''}")
    return "  meta " + shown(",".join(cells))


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _convergence(conv: Mapping[str, Any]) -> str:
    root = str(conv.get("root") or "")[:_ROOT_CHARS]
    fraction = conv.get("fraction")
    share = f"{fraction * 100:.0f}% agree" if isinstance(fraction, int | float) else "agreement unknown"
    text = f"{'converged' if conv.get('converged') else 'diverged ':<9}  root {root}  ({share}, " \
           f"{_plural(conv.get('distinctRoots'), 'distinct root')}"
    changes = conv.get("rootChanges")
    if isinstance(changes, int) and changes:
        text += f", {_plural(changes, 'root change')} since the last report"
    return text + ")"


def format_snapshot(event: Mapping[str, Any]) -> list[str]:
    """The opening member table: one line per member, then the convergence state (if the agent has one).
    Every line is `shown` (escaped) whole: names, states and roots come from peers."""
    at, me = _clock(event), event.get("self")
    members = [m for m in event.get("members", []) if isinstance(m, Mapping)]
    lines = [f"{at}  snapshot  {_plural(len(members), 'member')} known to {me}"]
    for m in members:
        mine = " (this agent)" if m.get("name") == me else ""
        lines.append(f"{at}  {'member':<9} {_member(m)}  {m.get('state')}  incarnation {m.get('incarnation')}"
                     f"{mine}")
    conv = event.get("convergence")
    if isinstance(conv, Mapping):
        lines.append(f"{at}  {_convergence(conv)}")
    return [shown(line) for line in lines]


def format_event(event: Mapping[str, Any]) -> str:
    """One readable line for a delta event, escaped whole (`shown`): what it names comes from peers (a refuted
    rumor's member name, or any field of an event kind this gossipctl does not know, were printed raw)."""
    return shown(_event_line(event))


def _event_line(event: Mapping[str, Any]) -> str:
    at, kind = _clock(event), str(event.get("event"))
    member = event.get("member")
    if kind == "convergence":
        return f"{at}  {_convergence(event)}"
    if kind == "refute" and isinstance(member, Mapping):
        return f"{at}  {'refute':<9} {member.get('name')} (this agent) refuted a rumor about itself: now " \
               f"incarnation {event.get('incarnation')}"
    if isinstance(member, Mapping):
        extra = _meta(member.get("meta")) if kind in ("join", "update") else ""
        return f"{at}  {kind:<9} {_member(member)}  incarnation {member.get('incarnation')}{extra}"
    rest = {k: v for k, v in event.items() if k not in ("event", "time")}
    return f"{at}  {kind:<9} {json_text(rest)}"


COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "monitor": ("follow an agent's membership events (joins, suspicions, deaths, leaves, convergence)",
                register_monitor, run_monitor),
}
