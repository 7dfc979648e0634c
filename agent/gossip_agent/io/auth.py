"""Who may call which HTTP route: bearer tokens with scopes, required client certificates, cluster-only peers.

Routes fall in four classes (`route_class`):
- PUBLIC: `/healthz`, `/readyz`, `/metrics`. Never authenticated: kubelet probes and Prometheus scrapes carry
  no credentials, and these answers reveal nothing a pod-network neighbour cannot already see.
- PEER: `/v1/internal/...`. Only cluster members: with a keyring, the sealed body is the proof (a forged body
  fails AES-GCM before anything is decoded); without one but with a TLS CA, a verified client certificate is
  required (peers present theirs, see io/tls.py); with neither, the cluster is plaintext and open (warned).
- READ: every other GET/HEAD. Needs a `read` (or `write`) token when tokens are configured.
- WRITE: every other method (writes, deletes, CRDT updates, `POST /v1/leave`). Needs a `write` token.

Token file (`security.apiTokensFile`, the operator mounts a Secret): one `scope:token` a line, scope `read`
or `write`; blank lines and `#` comments ignored. The file is re-read when it changes (rotation without a
restart). Tokens are compared by SHA-256 digest with `hmac.compare_digest` against every configured token,
so neither a token's bytes nor its length leak through timing.

Without a token file the API is open (local development) and the agent logs a warning at startup.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gossip_agent.core.config import ConfigError, SecurityConfig
from gossip_agent.io.security import file_stamp

log = logging.getLogger("gossip_agent.auth")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PEER_PREFIX = "/v1/internal/"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKENS = 256
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
# A changed token file is noticed within this many seconds (one stat per request at most this often).
RELOAD_CHECK_INTERVAL = 1.0


class Scope(enum.Enum):
    READ = "read"
    WRITE = "write"


class RouteClass(enum.Enum):
    PUBLIC = "public"
    PEER = "peer"
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as `ApiAuth.check` could tell; handlers that share a resource fairly
    (watch slots, io/http_limits.py `WatchSlots`) read it from `request[CALLER]`.

    `token` is a short digest naming the bearer token (never the token itself), None when the API runs
    without tokens (every caller is then only its address); `write` says the token has the write scope."""

    token: str | None = None
    write: bool = False


CALLER = web.RequestKey("caller", Caller)
OPEN = Caller()


class TokenFileError(ConfigError):
    """The token file is unreadable or malformed; the message names the line."""


def route_class(method: str, path: str) -> RouteClass:
    if path in PUBLIC_PATHS:
        return RouteClass.PUBLIC
    if path.startswith(PEER_PREFIX):
        return RouteClass.PEER
    return RouteClass.READ if method in READ_METHODS else RouteClass.WRITE


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> list[tuple[Scope, bytes]]:
    """(scope, sha256 of the token) per `scope:token` line."""
    out: list[tuple[Scope, bytes]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope_text, sep, token = line.partition(":")
        scope = next((s for s in Scope if s.value == scope_text.strip()), None)
        if not sep or scope is None:
            raise TokenFileError(f"api tokens line {n}: expected 'read:<token>' or 'write:<token>'")
        token = token.strip()
        if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable() \
                or " " in token:
            raise TokenFileError(f"api tokens line {n}: a token is {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} printable "
                                 "ASCII characters without spaces")
        out.append((scope, _digest(token)))
    if len(out) > MAX_TOKENS:
        raise TokenFileError(f"api tokens: at most {MAX_TOKENS} tokens, got {len(out)}")
    return out


def token_identity(token: str) -> str:
    """A name for a token that is safe to keep and compare (64 bits of its SHA-256; not the token)."""
    return _digest(token)[:8].hex()


def generate_token() -> str:
    """A new random token (43 URL-safe characters, 256 bits)."""
    import secrets

    return secrets.token_urlsafe(32)


class TokenFile:
    """A token file, re-read when its stamp changes; a broken new version keeps the old tokens (logged); an
    emptied one (no token lines) revokes them all (logged)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp = file_stamp(self.path)
        self._checked = clock()
        self.tokens = self._load()
        if not self.tokens:
            raise TokenFileError(f"security.apiTokensFile: {path} holds no tokens")

    def _load(self) -> list[tuple[Scope, bytes]]:
        try:
            text = Path(self.path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"security.apiTokensFile: cannot read {self.path}: {exc}") from None
        return parse_tokens(text)

    def current(self) -> list[tuple[Scope, bytes]]:
        now = self._clock()
        if now - self._checked >= RELOAD_CHECK_INTERVAL:
            self._checked = now
            stamp = file_stamp(self.path)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    tokens = self._load()
                    if not tokens:
                        # Emptied: revoke every token (fail closed). Keeping the old ones, silently, was a
                        # revocation that did not happen (found by review).
                        log.error("%s now holds no tokens: every API request is refused until it holds some",
                                  self.path)
                    else:
                        log.info("reloaded %d API token(s) from %s", len(tokens), self.path)
                    self.tokens = tokens
                except TokenFileError as exc:
                    log.error("%s; keeping the previous tokens", exc)
        return self.tokens

    def scope_of(self, token: str) -> Scope | None:
        """The strongest scope `token` has, comparing against every token in constant time."""
        given = _digest(token)
        found: Scope | None = None
        for scope, digest in self.current():
            if hmac.compare_digest(given, digest) and found is not Scope.WRITE:
                found = scope
        return found


def _deny(status: int, message: str, *, bearer: bool = False) -> web.HTTPException:
    headers = {"WWW-Authenticate": 'Bearer realm="gossip-agent"'} if bearer else None
    cls: type[web.HTTPException] = web.HTTPUnauthorized if status == 401 else web.HTTPForbidden
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


@dataclass
class ApiAuth:
    """The HTTP API's access policy (see the module docstring). `check` raises 401/403 or returns."""

    tokens: TokenFile | None = None
    client_cert_required: bool = False
    # Peers without a keyring must show a certificate the CA verifies (only possible with a CA file).
    peer_certs_verifiable: bool = False
    encrypted: Callable[[], bool] = lambda: False

    @classmethod
    def from_config(cls, sec: SecurityConfig, encrypted: Callable[[], bool]) -> ApiAuth:
        tokens = TokenFile(sec.api_tokens_file) if sec.api_tokens_file else None
        return cls(tokens=tokens, client_cert_required=sec.tls_client_auth == "required",
                   peer_certs_verifiable=bool(sec.tls_cert_file and sec.tls_ca_file), encrypted=encrypted)

    def warnings(self) -> list[str]:
        """What an operator should hear at startup about an open API."""
        out = []
        if self.tokens is None and not self.client_cert_required:
            out.append("the HTTP API is open: anyone who reaches the port may read, write and make this agent "
                       "leave; set security.apiTokensFile (and/or tlsClientAuth: required) outside local "
                       "development")
        if not self.encrypted() and not self.peer_certs_verifiable:
            out.append("peer endpoints (/v1/internal/) accept anyone: set security.keyringFile (or TLS with "
                       "tlsCaFile) so only cluster members can sync state")
        return out

    def check(self, request: web.Request) -> RouteClass:
        kind = route_class(request.method, request.path)
        if kind is RouteClass.PUBLIC:
            return kind
        if kind is RouteClass.PEER:
            if not self.encrypted() and self.peer_certs_verifiable and not _has_verified_cert(request):
                raise _deny(403, "peer endpoints need a client certificate the cluster CA verifies")
            return kind
        if self.client_cert_required and not _has_verified_cert(request):
            raise _deny(403, "this agent requires a client certificate (security.tlsClientAuth: required)")
        if self.tokens is not None:
            token = _bearer(request)
            if token is None:
                raise _deny(401, "missing bearer token: send 'Authorization: Bearer <token>' "
                                 "(gossipctl --token or GOSSIP_TOKEN)", bearer=True)
            scope = self.tokens.scope_of(token)
            if scope is None:
                raise _deny(401, "invalid bearer token", bearer=True)
            if kind is RouteClass.WRITE and scope is not Scope.WRITE:
                raise _deny(403, f"{request.method} {request.path} needs a token with the write scope; this "
                                 "token is read-only")
            request[CALLER] = Caller(token_identity(token), scope is Scope.WRITE)
        return kind


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()[:MAX_TOKEN_CHARS + 1]


def _has_verified_cert(request: web.Request) -> bool:
    """True when the TLS peer presented a certificate; the server context (CERT_OPTIONAL with our CA) already
    refused any certificate the CA does not verify, so presence means verified."""
    transport = request.transport
    if transport is None:
        return False
    return bool(transport.get_extra_info("peercert"))
