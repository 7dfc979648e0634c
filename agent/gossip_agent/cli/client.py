"""A small synchronous HTTP client of one agent's API (docs/agent-api.md), for gossipctl and tests.

`--addr` takes "host:port" (HTTP) or a URL ("https://host:port"). Every call has a timeout (a stream has
one to connect, none between lines); errors are `ClientError` with a message fit for a terminal. An HTTP
error status is an answer, not an error: `request`/`call` return it. An answer http.client cannot parse (a
header line over 64 KiB, a connection closed mid-answer: `http.client.HTTPException`, which is no OSError) is a
`ClientError` too: it used to leave gossipctl with a raw traceback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from gossip_agent.core.text import escape_control_chars

DEFAULT_TIMEOUT = 2.0


class ClientError(Exception):
    pass


def base_url(addr: str) -> str:
    addr = addr.strip().rstrip("/")
    if "://" in addr:
        return addr
    return f"http://{addr}"


def check_addr(addr: str) -> str:
    """`addr` itself if it names an http(s) host and a port 1..65535 (or none); else ValueError saying what
    is wrong: a port out of range must read "invalid port", not later "connection refused"."""
    url = base_url(addr)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {addr!r}: must be a number 1..65535") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{addr!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{addr!r}: no host (expected host:port or a URL)")
    if port == 0:
        raise ValueError(f"invalid port in {addr!r}: must be a number 1..65535")
    return addr


def _addr_arg(addr: str) -> str:
    try:
        return check_addr(addr)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Stream:
    """An open streaming answer (e.g. `GET /v1/watch`): its status, then its lines as they come."""

    def __init__(self, status: int, resp: IO[bytes]) -> None:
        self.status = status
        self._resp = resp

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._resp
        except _ANSWER_ERRORS as exc:
            raise ClientError(f"the stream from the agent broke: {_reason(exc)}") from None

    def read(self) -> bytes:
        try:
            return self._resp.read()
        except _ANSWER_ERRORS as exc:
            raise ClientError(f"cannot read the answer of the agent: {_reason(exc)}") from None

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_ANSWER_ERRORS = (OSError, TimeoutError, http.client.HTTPException)


def _reason(exc: BaseException) -> str:
    """One line naming what went wrong (http.client's messages may quote the offending line: cut short)."""
    reason = getattr(exc, "reason", None) or exc
    text = f"{type(exc).__name__}: {reason}" if isinstance(exc, http.client.HTTPException) else str(reason)
    return escape_control_chars(text[:200])


class AgentClient:
    def __init__(self, addr: str, *, timeout: float = DEFAULT_TIMEOUT, cafile: str | None = None,
                 insecure: bool = False, token: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        try:
            check_addr(addr)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        self.url = base_url(addr)
        self.timeout = timeout
        # A bearer token for agents with security.apiTokensFile (read or write scope); sent on every request.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self._ssl = ssl.create_default_context(cafile=cafile)
            if insecure or cafile:
                # Agents' certificates name pods by DNS; a CA check without hostname check is what peers do.
                self._ssl.check_hostname = False
            if insecure:
                self._ssl.verify_mode = ssl.CERT_NONE
            if cert:  # a client certificate, for agents with security.tlsClientAuth: required
                try:
                    self._ssl.load_cert_chain(cert, key)
                except (OSError, ssl.SSLError) as exc:
                    raise ClientError(f"--cert/--key: cannot load: {exc}") from None

    def request(self, method: str, path: str, body: bytes | None = None, *,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        reply = self.call(method, path, body, headers=headers)
        return reply.status, reply.body

    def call(self, method: str, path: str, body: bytes | None = None, *,
             headers: Mapping[str, str] | None = None) -> Reply:
        """`request` with the answer's headers too (e.g. `X-Gossip-Context`)."""
        status, resp = self._open(method, path, body, headers, self.timeout)
        try:
            with resp:
                return Reply(status, dict(resp.headers), bytes(resp.read()))
        except _ANSWER_ERRORS as exc:
            raise ClientError(f"cannot read the answer of the agent at {self.url}: {_reason(exc)}") from None

    def stream(self, path: str, *, headers: Mapping[str, str] | None = None) -> Stream:
        """`GET path` whose answer is read as it comes (no timeout between lines)."""
        status, resp = self._open("GET", path, None, headers, None)
        return Stream(status, resp)

    def _open(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None,
              timeout: float | None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={**self._auth, **(headers or {})})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout, context=self._ssl)
            return int(resp.status), resp
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc
        except http.client.HTTPException as exc:
            raise ClientError(f"the agent at {self.url} sent an answer this client cannot read: "
                              f"{_reason(exc)}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ClientError(f"cannot reach the agent at {self.url}: {_reason(exc)}") from None

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ClientError(f"GET {path}: HTTP {status}: {body[:200].decode(errors='replace')}")
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"GET {path}: the answer is not JSON") from None

    def members(self) -> list[dict[str, Any]]:
        data = self.get_json("/v1/members")
        return list(data["members"])

    def status(self) -> dict[str, Any]:
        return dict(self.get_json("/v1/status"))

    def metrics(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise ClientError(f"GET /metrics: HTTP {status}")
        return body.decode()

    def ready(self) -> bool:
        return self.request("GET", "/readyz")[0] == 200

    def leave(self) -> None:
        status, _ = self.request("POST", "/v1/leave", b"")
        if status != 200:
            raise ClientError(f"POST /v1/leave: HTTP {status}")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {"name{labels}": value} (enough for tests and quick checks)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


# -- command-line glue shared by every subcommand that talks to an agent --------------------------------------

Register = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def add_client_args(p: argparse.ArgumentParser, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """The options that say which agent to talk to and how (`client_from_args` reads them)."""
    p.add_argument("--addr", default="127.0.0.1:7946", type=_addr_arg,
                   help="agent address host:port or URL (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer (-o json where offered)")
    p.add_argument("--cacert", help="CA file to verify an https agent")
    p.add_argument("--insecure", action="store_true", help="do not verify an https agent's certificate")
    p.add_argument("--timeout", type=float, default=timeout, help="seconds (default %(default)s)")
    p.add_argument("--cert", help="client certificate (PEM) for an https agent that requires one")
    p.add_argument("--key", help="private key of --cert (PEM; default: in the --cert file)")
    p.add_argument("--token", default=os.environ.get("GOSSIP_TOKEN") or None,
                   help="API bearer token (default: $GOSSIP_TOKEN); needed when the agent has security.apiTokensFile")


def client_from_args(args: argparse.Namespace) -> AgentClient:
    return AgentClient(args.addr, timeout=args.timeout, cafile=args.cacert, insecure=args.insecure,
                       token=getattr(args, "token", None), cert=getattr(args, "cert", None),
                       key=getattr(args, "key", None))


# Characters a terminal shows as nothing yet acts on, beyond C0/C1 controls (core/text.py): the bidirectional
# controls (marks, embeddings, overrides, isolates) reorder the text after them, so a key or member name holding
# U+202E printed the rest of its line reversed ("Trojan Source"); U+2028/U+2029 break lines in some viewers.
# Keys and names may hold them (the edge refuses control characters only), so they are escaped when printed.
_BIDI = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_INVISIBLE = re.compile(f"[{_BIDI}]")
# What JSON leaves raw that a terminal acts on: DEL and C1 controls (json.dumps escapes only C0) and the above.
_JSON_RAW = re.compile(f"[\x7f-\x9f{_BIDI}]")


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def shown(text: object) -> str:
    """`text` safe to print on a terminal: control characters as \\xNN, bidirectional controls as \\uNNNN.
    What agents report (metadata values, from any peer) reached the terminal raw, so escape sequences could
    clear it or forge lines, and a U+202E reversed the rest of a line (review)."""
    return _INVISIBLE.sub(_unicode_escape, escape_control_chars(str(text)))


# Words a shell takes as they are: no quoting, expansion, globbing, splitting or history character, and no
# leading `=` (zsh expands `=ls` to the path of ls).
_SHELL_PLAIN = re.compile(r"[\w.,/:@%+-][\w.,/:@%+=-]*")


def shell_word(text: str) -> str:
    """`text` where a user may copy it into a shell command (the keys `ls` and `watch` print, a set's
    elements): as is when every character is printable, else quoted as bash's `$'...'` with each one that is
    not (C0/C1 controls, DEL, bidirectional and other format characters, line separators) as the \\xNN
    escapes of its UTF-8 bytes, and \\ and ' escaped. `shown`'s escapes are safe on a terminal but are another
    key when pasted (`gossipctl get 'a\\x1bb'` asks for a backslash, an x, ...); `$'a\\x1bb'` is the key
    itself in bash, ksh and zsh, whatever the locale, and prints nothing a terminal acts on.

    As is means made only of characters no shell acts on (`_SHELL_PLAIN`: letters, digits, `_.,/:@%+=-`): a
    printable key may still hold `$(...)`, backquotes, quotes, spaces, globs or `~`, which pasted raw would run
    or change (review: `x$(touch f)` printed raw made the paste run `touch`); those are quoted too."""
    if _SHELL_PLAIN.fullmatch(text):
        return text
    out = []
    for ch in text:
        if not ch.isprintable():
            out.append("".join(f"\\x{byte:02x}" for byte in ch.encode("utf-8", "surrogatepass")))
        elif ch in "\\'":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def json_text(data: Any, *, indent: int | None = None) -> str:
    """`data` as JSON for a terminal or a script: non-ASCII text stays readable (`ensure_ascii=False`), and what
    a terminal would act on is a \\uNNNN escape: `json.dumps` escapes C0 controls only, so `--json` printed
    C1 controls (U+009B is a CSI, as ESC [ is), DEL and bidirectional controls raw (review). The escapes are
    JSON's own: a reader decodes the same strings."""
    return _JSON_RAW.sub(_unicode_escape, json.dumps(data, indent=indent, ensure_ascii=False))
