"""A small synchronous HTTP client of one agent's API (docs/agent-api.md), for gossipctl and tests.

`--addr` takes "host:port" (HTTP) or a URL ("https://host:port"). Every call has a timeout; errors are
`ClientError` with a message fit for a terminal.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

DEFAULT_TIMEOUT = 2.0


class ClientError(Exception):
    pass


def base_url(addr: str) -> str:
    addr = addr.strip().rstrip("/")
    if "://" in addr:
        return addr
    return f"http://{addr}"


class AgentClient:
    def __init__(self, addr: str, *, timeout: float = DEFAULT_TIMEOUT, cafile: str | None = None,
                 insecure: bool = False) -> None:
        self.url = base_url(addr)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self._ssl = ssl.create_default_context(cafile=cafile)
            if insecure or cafile:
                # Agents' certificates name pods by DNS; a CA check without hostname check is what peers do.
                self._ssl.check_hostname = False
            if insecure:
                self._ssl.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach the agent at {self.url}: {reason}") from None

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
