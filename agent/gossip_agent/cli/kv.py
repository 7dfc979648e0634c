"""gossipctl commands of the replicated state: put, get, del, ls, watch, counter incr/get, set add/rm/get,
register lww|mv set/get.

`register(subparsers)` adds them to gossipctl's subcommand parser (each sets `run`); `COMMANDS` offers the
same commands in the shape of `cli.main.COMMANDS` (name -> (help, register, run)); it also carries
`gossipctl monitor` (cli/monitor.py), so that command needs no line in cli/main.py.

Values: `put KEY VALUE` (text), `--file PATH` (bytes; `-` is stdin). `get` writes the value exactly as
stored, byte for byte, and adds nothing: `$(gossipctl get k)` and `gossipctl get k > file` give back what
was put. Only on a terminal, and only if the value does not end with a newline, one is added so the prompt
starts on its own line. With siblings (concurrent writes under the `siblings` policy) it prints each one
and exits 3, and `--json` prints the JSON answer. `get -v` also prints, on stderr (stdout stays the value),
the key's version vector, each value's dot and HLC timestamp, and the causal context token; `--context
TOKEN` sends that token back, which makes a put overwrite exactly the versions read; a put whose token names
writes this agent has not seen (read at another agent, not arrived here yet) is made all the same, but prints
on stderr which writes stay as siblings and what to do (exit 0: it wrote). `del --context TOKEN`
whose token names writes this agent has not seen (read at another agent, not arrived here yet) does not
delete them: it prints "NOT deleted", the writes that stay live and what to do, on stderr, and exits 4.

What lists things one a line (set elements, `ls`, siblings, `watch`) escapes control characters as \\xNN
and bidirectional controls as \\uNNNN (cli/client.py `shown`): an element holding a newline or an escape
sequence printed as forged extra lines or reached the terminal (review). A key or set element, which a user
may copy into the next command, is instead printed as bash's `$'...'` when it holds such a character
(`shell_word`: `$'a\\x1bb'`, which bash, ksh and zsh read as the key itself); others print as they are.
`--json` output escapes what JSON leaves raw (DEL, C1 and bidirectional controls) as \\uNNNN (`json_text`):
the same JSON, nothing a terminal acts on. Only `get` writes a value raw, as stored (see above).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any
from urllib.parse import quote, urlencode

from gossip_agent.cli import monitor
from gossip_agent.cli.client import (
    ClientError,
    Register,
    Run,
    Stream,
    add_client_args,
    client_from_args,
    json_text,
    shell_word,
    shown,
)

CONTEXT_HEADER = "X-Gossip-Context"
EXIT_SIBLINGS = 3
EXIT_NOT_DELETED = 4
"""`gossipctl del --context TOKEN`: the token names writes the agent has not seen, which stay live when they
reach it (the key is not deleted; the agent answered 409 `"deleted": false`)."""



def _common(p: argparse.ArgumentParser) -> None:
    add_client_args(p, timeout=10.0)


def _write_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", type=int, default=1, help="members (this agent included) that must hold the write "
                   "before it is acknowledged (default %(default)s)")


def _critical_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--critical", action="store_true", help="send with ?priority=critical: the change jumps "
                   "every gossip queue and reaches more peers at once (for the few writes that must spread first)")


PRIORITY_HEADER = "X-Gossip-Priority"
DOWNGRADED_NOTE = ("note: the agent wrote this change as a normal one, not critical: its critical write rate "
                   "(state.criticalWritesPerSecond, shared by all its clients) is spent for now. The change is "
                   "stored and spreads all the same, only without priority.")


def _note_downgrade(args: argparse.Namespace, headers: dict[str, str]) -> None:
    """`--critical` asked, and the agent answered `X-Gossip-Priority: normal` (io/critical_limit.py: over the
    rate, the write is made as a normal one, never refused): say so on stderr. The exit status stays 0 (the
    write succeeded); stdout stays what scripts read."""
    if not getattr(args, "critical", False):
        return
    answered = next((v for k, v in headers.items() if k.lower() == PRIORITY_HEADER.lower()), None)
    if answered is not None and answered.strip().lower() == "normal":
        print(DOWNGRADED_NOTE, file=sys.stderr)


def _write_query(args: argparse.Namespace) -> str:
    """`-w` (when not 1) and `--critical` (when given) as the write's query string."""
    return _query(w=args.w if args.w != 1 else None,
                  priority="critical" if getattr(args, "critical", False) else None)


class _Http:
    """The agent client of one command, answers as (status, headers, body)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.client = client_from_args(args)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        reply = self.client.call(method, path, body, headers=headers)
        return reply.status, dict(reply.headers), reply.body

    def stream(self, path: str) -> Stream:
        return self.client.stream(path)


def _fail(status: int, body: bytes, what: str) -> ClientError:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:300].decode(errors="replace")
    return ClientError(f"{what}: HTTP {status}: {message}")


def _key_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def _query(**params: Any) -> str:
    items = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(items) if items else ""


def _print_json(data: Any) -> None:
    print(json_text(data, indent=2))


# -- key-value ---------------------------------------------------------------------------------------------
def register_put(p: argparse.ArgumentParser) -> None:
    _common(p)
    _write_opts(p)
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value as text (or use --file)")
    p.add_argument("--file", help="read the value from a file ('-': stdin)")
    p.add_argument("--context", help="causal context token from a read (overwrites what was read; writes it names "
                   "that this agent has not seen yet stay as siblings: says so on stderr)")
    _critical_opt(p)


def run_put(args: argparse.Namespace) -> int:
    return _put_bytes(_Http(args), _key_path(args.key), args, _value_arg(args, "put"), f"put {args.key}", args.key)


def _put_bytes(http: _Http, path: str, args: argparse.Namespace, value: bytes, what: str, name: str) -> int:
    """PUT `value` (with `--context` and `-w` when given) and report how many members hold it (and, on stderr,
    the writes its context named that stay as siblings: `_note_siblings_remain`)."""
    headers = {"Content-Type": "application/octet-stream"}
    if getattr(args, "context", None):
        headers[CONTEXT_HEADER] = args.context
    status, answer_headers, body = http.call("PUT", path + _write_query(args), value, headers)
    if status != 200:
        raise _fail(status, body, what)
    _note_downgrade(args, answer_headers)
    answer = json.loads(body)
    if args.json:
        _print_json(answer)
    else:
        held = answer.get("acknowledged", 1) if isinstance(answer, dict) else "?"
        print(shown(f"ok ({held} holder(s))"))
    _note_siblings_remain(name, answer)
    return 0


MAX_LISTED = 64  # writes a note lists at most (as the agent does): a hostile answer may list millions


def _note_siblings_remain(name: str, answer: Any) -> None:
    """The agent wrote, but its answer says `"siblingsMayRemain": true` (docs/agent-api.md, PUT): the context
    named writes it has not seen, which stay as siblings of this write when they arrive. Say so on stderr,
    with the count, the writes listed and the agent's advice, as `del` says NOT deleted (`_report_not_deleted`);
    this printed only "ok", so a read-modify-write looked resolved. The exit status stays 0, unlike `del`'s 4:
    the write was made and replicates (the agent answers 2xx), nothing printed is false, and a script that
    retried a put on a non-zero status would add one more sibling. `--json` prints the answer's fields as
    they are on stdout, and this note too (stderr)."""
    if not isinstance(answer, dict) or answer.get("siblingsMayRemain") is not True:
        return
    # The answer is the agent's, and the write is made: whatever its fields hold, this prints and never fails
    # (a crash here exited 1 after a write that succeeded, and a script retrying on it added a sibling: review).
    remaining = answer.get("remaining")
    listed = [d for d in remaining if isinstance(d, dict)][:MAX_LISTED] if isinstance(remaining, list) else []
    count = answer.get("remainingCount")
    if isinstance(count, bool) or not isinstance(count, int) or count < len(listed):
        count = len(listed)
    dots = ", ".join(f"{d.get('node')}:{d.get('counter')}" for d in listed)
    more = f" (and {count - len(listed)} more)" if count > len(listed) else ""
    print(f"gossipctl: note: {shell_word(name)} is written, but {count} write(s) its context named have not "
          "reached this agent: they are not replaced, and stay as siblings when they arrive", file=sys.stderr)
    if dots:
        print(f"  not replaced: {shown(dots)}{shown(more)}", file=sys.stderr)
    if answer.get("advice"):
        print(f"  {shown(str(answer['advice']))}", file=sys.stderr)


def register_get(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("key")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print (on stderr) the version vector, each value's dot and HLC, and the context")


def _value_bytes(v: dict[str, Any]) -> bytes:
    if "valueBase64" in v:
        return base64.b64decode(v["valueBase64"])
    return str(v.get("value", "")).encode()


def _hlc_text(ts: Any) -> str:
    if not isinstance(ts, dict):
        return "?"
    return f"{ts.get('time')} (wall {ts.get('wallMs')} ms, logical {ts.get('logical')}, node {ts.get('node')})"


def print_versions(doc: dict[str, Any], file: Any) -> None:
    """The readable version information of a `?format=json` read."""
    vv = doc.get("versionVector") or {}
    print(shown("version vector: " + (", ".join(f"{node}={n}" for node, n in vv.items()) or "(empty)")), file=file)
    for i, v in enumerate(doc.get("values", []), 1):
        dot = v.get("dot") or {}
        print(shown(f"value {i}: dot {dot.get('node')}:{dot.get('counter')}  hlc {_hlc_text(v.get('timestamp'))}"),
              file=file)
    if doc.get("context"):
        print(shown(f"context: {doc['context']}"), file=file)


def _write_value(value: bytes) -> None:
    """The value exactly; a newline only when a terminal shows it and it lacks one (see the docstring)."""
    sys.stdout.buffer.write(value)
    if value and not value.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def run_get(args: argparse.Namespace) -> int:
    as_doc = args.json or args.verbose
    status, headers, body = _Http(args).call("GET", _key_path(args.key) + ("?format=json" if as_doc else ""))
    if status != 200:
        raise _fail(status, body, f"get {args.key}")
    if args.json:
        _print_json(json.loads(body))
        return 0
    doc = json.loads(body) if as_doc or int(headers.get("X-Gossip-Siblings", "1")) > 1 else None
    if args.verbose and doc is not None:
        print_versions(doc, sys.stderr)
    if doc is not None and len(doc["values"]) > 1:
        print(shown(f"{len(doc['values'])} concurrent values (write back with --context {doc['context']} to "
                    "resolve):"), file=sys.stderr)
        for v in doc["values"]:
            print(shown(v.get("value", v.get("valueBase64"))))  # one a line
        return EXIT_SIBLINGS
    _write_value(_value_bytes(doc["values"][0]) if doc is not None else body)
    return 0


def register_del(p: argparse.ArgumentParser) -> None:
    _common(p)
    _write_opts(p)
    p.add_argument("key")
    p.add_argument("--context", help="causal context token: delete only what was read (if it names writes this "
                   "agent has not seen yet, the key is not deleted: says so and exits 4)")
    _critical_opt(p)


def run_del(args: argparse.Namespace) -> int:
    headers = {CONTEXT_HEADER: args.context} if args.context else {}
    status, answer_headers, body = _Http(args).call("DELETE", _key_path(args.key) + _write_query(args), None,
                                                    headers)
    not_deleted = _not_deleted(status, body)
    if not_deleted is not None:
        return _report_not_deleted(args, not_deleted)
    if status != 200:
        raise _fail(status, body, f"del {args.key}")
    _note_downgrade(args, answer_headers)
    if args.json:
        _print_json(json.loads(body))
    else:
        print("deleted")
    return 0


def _not_deleted(status: int, body: bytes) -> dict[str, Any] | None:
    """The agent's answer when the context named writes it has not seen (409, `"deleted": false` with
    `remaining`, docs/agent-api.md): those stay live when they reach it. None for any other answer."""
    if status != 409:
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("deleted") is False and isinstance(answer.get("remaining"), list):
        return answer
    return None


def _report_not_deleted(args: argparse.Namespace, answer: dict[str, Any]) -> int:
    """Say that the key is NOT deleted, which writes stay live and what to do, on stderr (with `--json`, the
    answer on stdout too), and exit EXIT_NOT_DELETED: this used to print "deleted" and exit 0 (ctx-review F2)."""
    if args.json:
        _print_json(answer)
    dots = [f"{d.get('node')}:{d.get('counter')}" for d in answer["remaining"] if isinstance(d, dict)]
    print(f"gossipctl: NOT deleted: {shown(str(answer.get('error', '')))}", file=sys.stderr)
    print(f"  still live once they arrive: {shown(', '.join(dots))}", file=sys.stderr)
    if answer.get("advice"):
        print(f"  {shown(str(answer['advice']))}", file=sys.stderr)
    return EXIT_NOT_DELETED


def register_ls(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=0, help="at most this many keys (default: all)")


def run_ls(args: argparse.Namespace) -> int:
    http = _Http(args)
    after: str | None = None
    listed = 0
    rows: list[dict[str, Any]] = []
    while True:
        page = 1000 if not args.limit else min(1000, args.limit - listed)
        status, _, body = http.call("GET", "/v1/kv" + _query(prefix=args.prefix, after=after, limit=page))
        if status != 200:
            raise _fail(status, body, "ls")
        doc = json.loads(body)
        for entry in doc["entries"]:
            rows.append(entry)
            listed += 1
            if not args.json:
                extra = f"  ({entry['siblings']} siblings)" if entry.get("siblings", 1) > 1 else ""
                kind = "" if entry.get("type") == "value" else f"  [{entry.get('type')}]"
                print(shell_word(entry["key"]) + shown(f"{kind}{extra}"))
        after = doc.get("next")
        if after is None or (args.limit and listed >= args.limit):
            break
    if args.json:
        _print_json({"entries": rows})
    return 0


def register_watch(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--count", type=int, default=0, help="exit after this many changes (default: never)")


def run_watch(args: argparse.Namespace) -> int:
    """Stream changes until Ctrl-C, which `main()` turns into a quiet exit 130 for every command."""
    resp = _Http(args).stream("/v1/watch" + _query(prefix=args.prefix))
    seen = 0
    with resp:
        if resp.status != 200:
            raise _fail(resp.status, resp.read(), "watch")
        for raw in resp:
            event = json.loads(raw)
            kind = event.get("event")
            if kind in ("watching", "heartbeat"):
                continue
            if kind == "error":
                raise ClientError(f"watch: {event.get('error')}")
            if args.json:
                print(json_text(event), flush=True)
            else:
                value = ""
                if "values" in event:
                    value = " = " + " | ".join(str(v.get("value", v.get("valueBase64"))) for v in event["values"])
                elif "value" in event:
                    value = f" = {event['value']}"
                print(shown(f"{kind} ") + shell_word(str(event["key"])) + shown(f"{value}  ({event.get('origin')})"),
                      flush=True)
            seen += 1
            if args.count and seen >= args.count:
                return 0
    return 0


# -- CRDTs -------------------------------------------------------------------------------------------------
def register_counter(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    incr = sub.add_parser("incr", help="add DELTA (default 1; negative decrements)")
    _common(incr)
    _write_opts(incr)
    incr.add_argument("name")
    incr.add_argument("delta", nargs="?", type=int, default=1)
    get = sub.add_parser("get", help="print the counter's value")
    _common(get)
    get.add_argument("name")


def run_counter(args: argparse.Namespace) -> int:
    path = "/v1/crdt/counters/" + quote(args.name, safe="/")
    http = _Http(args)
    if args.action == "incr":
        body = json.dumps({"delta": args.delta}).encode()
        status, _, answer = http.call("POST", path + _query(w=args.w if args.w != 1 else None), body,
                                      {"Content-Type": "application/json"})
    else:
        status, _, answer = http.call("GET", path)
    if status != 200:
        raise _fail(status, answer, f"counter {args.action} {args.name}")
    doc = json.loads(answer)
    if args.json:
        _print_json(doc)
    else:
        print(shown(doc["value"]))
    return 0


def register_set(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text in (("add", "add elements"), ("rm", "remove elements")):
        sp = sub.add_parser(action, help=help_text)
        _common(sp)
        _write_opts(sp)
        sp.add_argument("name")
        sp.add_argument("elements", nargs="+")
    get = sub.add_parser("get", help="print the set's elements, one a line")
    _common(get)
    get.add_argument("name")


def run_set(args: argparse.Namespace) -> int:
    path = "/v1/crdt/sets/" + quote(args.name, safe="/")
    http = _Http(args)
    if args.action in ("add", "rm"):
        field = "add" if args.action == "add" else "remove"
        body = json.dumps({field: args.elements}).encode()
        status, _, answer = http.call("POST", path + _query(w=args.w if args.w != 1 else None), body,
                                      {"Content-Type": "application/json"})
    else:
        status, _, answer = http.call("GET", path)
    if status != 200:
        raise _fail(status, answer, f"set {args.action} {args.name}")
    doc = json.loads(answer)
    if args.json:
        _print_json(doc)
    else:
        for element in doc["elements"]:
            print(shell_word(str(element)))  # one a line, quoted for a shell if it holds a newline, an ESC, ...
    return 0


# -- registers -------------------------------------------------------------------------------------------
def register_register(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_text in (("lww", "last-writer-wins register: the latest write wins"),
                            ("mv", "multi-value register: concurrent writes all stay until overwritten")):
        kp = kinds.add_parser(kind, help=help_text, description=help_text)
        actions = kp.add_subparsers(dest="action", required=True, metavar="ACTION")
        sp = actions.add_parser("set", help="assign a value")
        _common(sp)
        _write_opts(sp)
        sp.add_argument("name")
        sp.add_argument("value", nargs="?", help="the value as text (or use --file)")
        sp.add_argument("--file", help="read the value from a file ('-': stdin)")
        if kind == "mv":
            sp.add_argument("--context", help="context token from a read: replace exactly the values read")
        gp = actions.add_parser("get", help="print the value (mv: every concurrent value, one a line)")
        _common(gp)
        gp.add_argument("name")
        gp.add_argument("-v", "--verbose", action="store_true",
                        help="also print (on stderr) the timestamp (lww) or dots, version vector and context (mv)")


def _value_arg(args: argparse.Namespace, what: str) -> bytes:
    if (args.value is None) == (args.file is None):
        raise ClientError(f"{what}: give the value as an argument or with --file (one of them)")
    if args.file == "-":
        return sys.stdin.buffer.read()
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ClientError(f"{what}: cannot read {args.file}: {exc.strerror}") from None
    return str(args.value).encode()


def run_register(args: argparse.Namespace) -> int:
    path = f"/v1/crdt/registers/{args.kind}/" + quote(args.name, safe="/")
    what = f"register {args.kind} {args.action} {args.name}"
    http = _Http(args)
    if args.action == "set":
        return _put_bytes(http, path, args, _value_arg(args, what), what, args.name)
    status, _, answer = http.call("GET", path)
    if status != 200:
        raise _fail(status, answer, what)
    doc = json.loads(answer)
    if args.json:
        _print_json(doc)
        return 0
    if args.kind == "lww":
        if args.verbose:
            print(shown(f"hlc {_hlc_text(doc.get('timestamp'))}"), file=sys.stderr)
        _write_value(_value_bytes(doc))
        return 0
    if args.verbose:
        print_versions(doc, sys.stderr)
    values = doc.get("values", [])
    if len(values) == 1:
        _write_value(_value_bytes(values[0]))
        return 0
    if values:
        print(shown(f"{len(values)} concurrent values (write back with --context {doc['context']} to resolve):"),
              file=sys.stderr)
    for v in values:
        print(shown(v.get("value", v.get("valueBase64"))))  # one a line
    return EXIT_SIBLINGS if len(values) > 1 else 0


COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "put": ("write a key", register_put, run_put),
    "get": ("read a key", register_get, run_get),
    "del": ("delete a key", register_del, run_del),
    "ls": ("list keys by prefix", register_ls, run_ls),
    "watch": ("stream changes under a prefix", register_watch, run_watch),
    "counter": ("PN-counter: incr NAME [DELTA] | get NAME", register_counter, run_counter),
    "set": ("OR-set: add NAME E... | rm NAME E... | get NAME", register_set, run_set),
    "register": ("registers: lww|mv set NAME VALUE | lww|mv get NAME", register_register, run_register),
}
COMMANDS.update(monitor.COMMANDS)


def register(subparsers: Any) -> None:
    """Add the state commands to gossipctl's `add_subparsers()` object."""
    for name, (help_text, reg, run) in COMMANDS.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        reg(p)
        p.set_defaults(run=run)
