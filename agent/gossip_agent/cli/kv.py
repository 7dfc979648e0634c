"""gossipctl commands of the replicated state: put, get, del, ls, watch, counter incr/get, set add/rm/get.

`register(subparsers)` adds them to gossipctl's subcommand parser (each sets `run`); `COMMANDS` offers the
same commands in the shape of `cli.main.COMMANDS` (name -> (help, register, run)).

Values: `put KEY VALUE` (text), `--file PATH` (bytes; `-` is stdin). `get` prints the value raw; with
siblings (concurrent writes under the `siblings` policy) it prints each one and exits 3, and `--json` prints
the JSON answer. `--context TOKEN` sends back what a read returned (`get -v` prints it), which makes a put
overwrite exactly those versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote, urlencode

from gossip_agent.cli.client import ClientError, Register, Run, Stream, add_client_args, client_from_args

CONTEXT_HEADER = "X-Gossip-Context"
EXIT_SIBLINGS = 3



def _common(p: argparse.ArgumentParser) -> None:
    add_client_args(p, timeout=10.0)


def _write_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", type=int, default=1, help="members (this agent included) that must hold the write "
                   "before it is acknowledged (default %(default)s)")


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
    print(json.dumps(data, indent=2, ensure_ascii=False))


# -- key-value ---------------------------------------------------------------------------------------------
def register_put(p: argparse.ArgumentParser) -> None:
    _common(p)
    _write_opts(p)
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value as text (or use --file)")
    p.add_argument("--file", help="read the value from a file ('-': stdin)")
    p.add_argument("--context", help="causal context token from a read (overwrites what was read)")


def run_put(args: argparse.Namespace) -> int:
    if (args.value is None) == (args.file is None):
        raise ClientError("put: give the value as an argument or with --file (one of them)")
    if args.file == "-":
        value = sys.stdin.buffer.read()
    elif args.file is not None:
        try:
            with open(args.file, "rb") as f:
                value = f.read()
        except OSError as exc:
            raise ClientError(f"put: cannot read {args.file}: {exc.strerror}") from None
    else:
        value = args.value.encode()
    headers = {"Content-Type": "application/octet-stream"}
    if args.context:
        headers[CONTEXT_HEADER] = args.context
    status, _, body = _Http(args).call("PUT", _key_path(args.key) + _query(w=args.w if args.w != 1 else None),
                                       value, headers)
    if status != 200:
        raise _fail(status, body, f"put {args.key}")
    answer = json.loads(body)
    if args.json:
        _print_json(answer)
    else:
        print(f"ok ({answer.get('acknowledged', 1)} holder(s))")
    return 0


def register_get(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("key")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the causal context (stderr)")


def run_get(args: argparse.Namespace) -> int:
    status, headers, body = _Http(args).call("GET", _key_path(args.key) + ("?format=json" if args.json else ""))
    if status == 404:
        raise _fail(status, body, f"get {args.key}")
    if status != 200:
        raise _fail(status, body, f"get {args.key}")
    if args.verbose:
        print(f"context: {headers.get(CONTEXT_HEADER, '')}", file=sys.stderr)
    if args.json:
        _print_json(json.loads(body))
        return 0
    if int(headers.get("X-Gossip-Siblings", "1")) > 1:
        doc = json.loads(body)
        print(f"{len(doc['values'])} concurrent values (write back with --context {doc['context']} to resolve):",
              file=sys.stderr)
        for v in doc["values"]:
            print(v.get("value", v.get("valueBase64")))
        return EXIT_SIBLINGS
    sys.stdout.buffer.write(body)
    if sys.stdout.isatty() and not body.endswith(b"\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def register_del(p: argparse.ArgumentParser) -> None:
    _common(p)
    _write_opts(p)
    p.add_argument("key")
    p.add_argument("--context", help="causal context token: delete only what was read")


def run_del(args: argparse.Namespace) -> int:
    headers = {CONTEXT_HEADER: args.context} if args.context else {}
    status, _, body = _Http(args).call("DELETE", _key_path(args.key) + _query(w=args.w if args.w != 1 else None),
                                       None, headers)
    if status != 200:
        raise _fail(status, body, f"del {args.key}")
    if args.json:
        _print_json(json.loads(body))
    else:
        print("deleted")
    return 0


def register_ls(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=0, help="at most this many keys (default: all)")


def run_ls(args: argparse.Namespace) -> int:
    http = _Http(args)
    after: str | None = None
    shown = 0
    rows: list[dict[str, Any]] = []
    while True:
        page = 1000 if not args.limit else min(1000, args.limit - shown)
        status, _, body = http.call("GET", "/v1/kv" + _query(prefix=args.prefix, after=after, limit=page))
        if status != 200:
            raise _fail(status, body, "ls")
        doc = json.loads(body)
        for entry in doc["entries"]:
            rows.append(entry)
            shown += 1
            if not args.json:
                extra = f"  ({entry['siblings']} siblings)" if entry.get("siblings", 1) > 1 else ""
                kind = "" if entry.get("type") == "value" else f"  [{entry.get('type')}]"
                print(f"{entry['key']}{kind}{extra}")
        after = doc.get("next")
        if after is None or (args.limit and shown >= args.limit):
            break
    if args.json:
        _print_json({"entries": rows})
    return 0


def register_watch(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--count", type=int, default=0, help="exit after this many changes (default: never)")


def run_watch(args: argparse.Namespace) -> int:
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
                print(json.dumps(event, ensure_ascii=False), flush=True)
            else:
                shown = ""
                if "values" in event:
                    shown = " = " + " | ".join(str(v.get("value", v.get("valueBase64"))) for v in event["values"])
                elif "value" in event:
                    shown = f" = {event['value']}"
                print(f"{kind} {event['key']}{shown}  ({event.get('origin')})", flush=True)
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
        print(doc["value"])
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
            print(element)
    return 0


COMMANDS: dict[str, tuple[str, Register, Run]] = {
    "put": ("write a key", register_put, run_put),
    "get": ("read a key", register_get, run_get),
    "del": ("delete a key", register_del, run_del),
    "ls": ("list keys by prefix", register_ls, run_ls),
    "watch": ("stream changes under a prefix", register_watch, run_watch),
    "counter": ("PN-counter: incr NAME [DELTA] | get NAME", register_counter, run_counter),
    "set": ("OR-set: add NAME E... | rm NAME E... | get NAME", register_set, run_set),
}


def register(subparsers: Any) -> None:
    """Add the state commands to gossipctl's `add_subparsers()` object."""
    for name, (help_text, reg, run) in COMMANDS.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        reg(p)
        p.set_defaults(run=run)
