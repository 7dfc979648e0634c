"""Issue 10's HTTP attacks against a real agent (in-process, loopback): each failed before its fix.

- 4: compressed bodies inflated before authentication (gzip bombs stalled the loop for seconds, +130 MB RSS);
- 8: no authentication on the API (anyone could write or make the agent leave); tokens with scopes, required
  client certificates, peer endpoints only for cluster members;
- 10: nested JSON gave 500; keys with NUL or `..` accepted; no header/body timeouts, no connection cap;
  watch slots exhaustible by one client.

The loop-lag probe is a task that sleeps 5 ms and records how late it wakes, less the time the loop's thread
waited for a core meanwhile: the worst is how long the event loop was blocked (the agent's probes, acks and
gossip wait that long). Bounds are generous; before the fixes the stalls were seconds. (At load 40 on 2 cores
a runnable thread can wait a second or more for a core: wall-clock lateness alone measured the machine.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from gossip_agent.core.config import SecurityConfig, from_mapping
from gossip_agent.io import http_limits
from gossip_agent.io.auth import generate_token
from gossip_agent.io.runtime import Agent
from gossip_agent.io.security import generate_key
from gossip_agent.io.state_service import state_extensions
from tests.hostile.agent_support import BASE, running, url
from tests.hostile.peer_support import rss_mb, thread_queued_s

MAX_STALL = 2.0  # seconds; before the fix 4 bombs stalled the agent 3.5-7.3 s (measured here)
MAX_RSS_GROWTH_MB = 64  # before the fix 4 bombs added ~130 MB


class LoopLagProbe:
    """Worst lateness of a 5 ms sleep while active, less the time the loop's thread spent runnable but waiting for
    a core meanwhile (schedstat run_delay; the loop, agent and client, runs in this thread): how long the loop was
    blocked by work or by sleeping/blocking on I/O, which a busy machine does not cause."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start, queued = loop.time(), thread_queued_s()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - start - self.period - (thread_queued_s() - queued))

    async def __aenter__(self) -> LoopLagProbe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """~1 MiB of gzip that inflates to 1 GiB of zeros (built once)."""
    if not _BOMB:
        deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(1 << 20)
        parts = [deflater.compress(block) for _ in range(1024)]
        parts.append(deflater.flush())
        _BOMB.append(b"".join(parts))
    return _BOMB[0]


@dataclass
class Tokens:
    read: str
    write: str
    path: str


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    t = Tokens(generate_token(), generate_token(), str(tmp_path / "api-tokens"))
    Path(t.path).write_text(f"# test tokens\nread:{t.read}\nwrite:{t.write}\n")
    return t


@pytest.fixture
def keyring(tmp_path: Path) -> str:
    path = tmp_path / "keyring"
    path.write_text(generate_key() + "\n")
    return str(path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- attack 4: compressed bodies ---------------------------------------------------------------------------

async def _bombard(agent: Agent, path: str, headers: dict[str, str], n: int = 4) -> tuple[list[int], float, float]:
    """n concurrent gzip bombs at `path`: (statuses, worst loop stall s, RSS growth MB)."""
    body = gzip_bomb()
    before = rss_mb(os.getpid())
    async with aiohttp.ClientSession() as session, LoopLagProbe() as probe:
        async def one() -> int:
            async with session.post(url(agent, path), data=body,
                                    headers={"Content-Encoding": "gzip", **headers}) as r:
                await r.read()
                return r.status
        statuses = await asyncio.wait_for(asyncio.gather(*[one() for _ in range(n)]), 60)
    return list(statuses), probe.worst, rss_mb(os.getpid()) - before


@pytest.mark.parametrize("path", ["/v1/internal/pushpull", "/v1/internal/antientropy", "/v1/internal/fetch"])
async def test_gzip_bombs_at_peer_endpoints_are_refused_unread(keyring: str, path: str) -> None:
    async with running("bombed", keyringFile=keyring) as agent:
        statuses, stall, growth = await _bombard(agent, path, {"Content-Type": "application/octet-stream"})
        print(f"{path}: statuses={statuses} stall={stall:.3f}s rss+={growth:.1f}MB")
        assert statuses == [415] * 4
        assert stall < MAX_STALL and growth < MAX_RSS_GROWTH_MB


async def test_gzip_bombs_without_a_token_are_refused_before_reading(keyring: str, tokens: Tokens) -> None:
    async with running("bombed", keyringFile=keyring, apiTokensFile=tokens.path) as agent:
        statuses, stall, growth = await _bombard(agent, "/v1/kv/bomb", {})
        print(f"no token: statuses={statuses} stall={stall:.3f}s rss+={growth:.1f}MB")
        assert statuses == [401] * 4
        assert stall < MAX_STALL and growth < MAX_RSS_GROWTH_MB


async def test_gzip_bombs_with_a_token_are_inflated_capped_off_the_loop(keyring: str, tokens: Tokens) -> None:
    async with running("bombed", keyringFile=keyring, apiTokensFile=tokens.path) as agent:
        statuses, stall, growth = await _bombard(agent, "/v1/kv/bomb", bearer(tokens.write))
        print(f"write token: statuses={statuses} stall={stall:.3f}s rss+={growth:.1f}MB")
        assert statuses == [413] * 4
        assert stall < MAX_STALL and growth < MAX_RSS_GROWTH_MB
        async with aiohttp.ClientSession(headers=bearer(tokens.write)) as s:
            # The agent still serves, and a legitimately compressed write is accepted and intact.
            value = b"compressed value " * 100
            async with s.put(url(agent, "/v1/kv/ok"), data=zlib.compress(value),
                             headers={"Content-Encoding": "deflate"}) as r:
                assert r.status == 200, await r.text()
            async with s.get(url(agent, "/v1/kv/ok")) as r:
                assert r.status == 200 and await r.read() == value
            async with s.get(url(agent, "/v1/kv/bomb")) as r:
                assert r.status == 404


async def test_truncated_or_trailing_compressed_bodies_are_400(tokens: Tokens) -> None:
    async with running("a", apiTokensFile=tokens.path) as agent, \
            aiohttp.ClientSession(headers=bearer(tokens.write)) as s:
        good = zlib.compress(b"x" * 1000)
        for body in (good[:-5], good + b"junk", b"not zlib at all"):
            async with s.put(url(agent, "/v1/kv/k"), data=body, headers={"Content-Encoding": "deflate"}) as r:
                assert r.status == 400, (body[:10], await r.text())
        async with s.put(url(agent, "/v1/kv/k"), data=b"x", headers={"Content-Encoding": "br"}) as r:
            assert r.status == 415


# -- attack 8: authentication and authorization -------------------------------------------------------------

async def test_without_tokens_the_api_is_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async with running("open") as agent, aiohttp.ClientSession() as s, s.get(url(agent, "/v1/members")) as r:
        assert r.status == 200
    assert any("HTTP API is open" in rec.getMessage() for rec in caplog.records)


async def test_tokens_gate_reads_and_writes_by_scope(tokens: Tokens) -> None:
    async with running("locked", apiTokensFile=tokens.path) as agent, aiohttp.ClientSession() as s:
        # Probes and metrics stay open (kubelet and Prometheus carry no token).
        for path in ("/healthz", "/readyz", "/metrics"):
            async with s.get(url(agent, path)) as r:
                assert r.status in (200, 503), path
        # No token / a wrong token: 401 with a challenge, nothing done.
        for headers in ({}, bearer("x" * 43), {"Authorization": f"Basic {tokens.write}"}):
            async with s.get(url(agent, "/v1/members"), headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.put(url(agent, "/v1/kv/k"), data=b"v", headers=headers) as r:
                assert r.status == 401
            async with s.post(url(agent, "/v1/leave"), headers=headers) as r:
                assert r.status == 401
        # A read token reads, but cannot write or make the agent leave.
        async with s.get(url(agent, "/v1/status"), headers=bearer(tokens.read)) as r:
            assert r.status == 200
        async with s.put(url(agent, "/v1/kv/k"), data=b"v", headers=bearer(tokens.read)) as r:
            assert r.status == 403 and "write scope" in (await r.json())["error"]
        async with s.post(url(agent, "/v1/crdt/counters/c"), json={"delta": 1}, headers=bearer(tokens.read)) as r:
            assert r.status == 403
        async with s.post(url(agent, "/v1/leave"), headers=bearer(tokens.read)) as r:
            assert r.status == 403
        assert not agent.node.leaving
        # A write token does both.
        async with s.put(url(agent, "/v1/kv/k"), data=b"v", headers=bearer(tokens.write)) as r:
            assert r.status == 200
        async with s.get(url(agent, "/v1/kv/k"), headers=bearer(tokens.read)) as r:
            assert r.status == 200 and await r.read() == b"v"
        async with s.post(url(agent, "/v1/leave"), headers=bearer(tokens.write)) as r:
            assert r.status == 200


async def test_a_rotated_token_file_takes_effect_without_restart(tokens: Tokens,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gossip_agent.io.auth.RELOAD_CHECK_INTERVAL", 0.0)
    async with running("rotating", apiTokensFile=tokens.path) as agent, aiohttp.ClientSession() as s:
        fresh = generate_token()
        Path(tokens.path).write_text(f"write:{fresh}\n")
        async with s.get(url(agent, "/v1/members"), headers=bearer(fresh)) as r:
            assert r.status == 200
        async with s.get(url(agent, "/v1/members"), headers=bearer(tokens.read)) as r:
            assert r.status == 401


def test_a_bad_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    from gossip_agent.core.config import ConfigError
    from gossip_agent.io.auth import ApiAuth

    for text in ("admin:abcdefghijklmnopqrstuvwxyz\n", "read:short\n", "", "write\n"):
        path = tmp_path / "t"
        path.write_text(text)
        with pytest.raises(ConfigError, match="api"):
            ApiAuth.from_config(SecurityConfig(api_tokens_file=str(path)), lambda: False)


def _pki(tmp_path: Path) -> tuple[str, str, str]:
    from tests.agent.test_tls import make_pki

    return make_pki(tmp_path)


async def test_required_client_certificates_and_cluster_only_peer_endpoints(tmp_path: Path) -> None:
    import ssl

    ca, crt, key = _pki(tmp_path)
    security = SecurityConfig(tls_cert_file=crt, tls_key_file=key, tls_ca_file=ca, tls_client_auth="required")
    cfg = replace(from_mapping({**BASE, "name": "mtls"}), security=security)
    agent = Agent(cfg, extensions=state_extensions(cfg))
    await agent.start()
    try:
        anonymous = ssl.create_default_context(cafile=ca)
        anonymous.check_hostname = False
        member = ssl.create_default_context(cafile=ca)
        member.check_hostname = False
        member.load_cert_chain(crt, key)
        base = f"https://127.0.0.1:{agent.port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/healthz", ssl=anonymous) as r:
                assert r.status == 200  # probes need no certificate
            async with s.get(base + "/v1/members", ssl=anonymous) as r:
                assert r.status == 403 and "client certificate" in (await r.json())["error"]
            async with s.post(base + "/v1/internal/pushpull", data=b"\x01", ssl=anonymous) as r:
                assert r.status == 403  # no keyring: peers prove membership with a certificate
            async with s.get(base + "/v1/members", ssl=member) as r:
                assert r.status == 200
            async with s.post(base + "/v1/internal/pushpull", data=b"\x01junk", ssl=member) as r:
                assert r.status == 400  # a member, but a malformed body
        from gossip_agent.cli.client import AgentClient

        with_cert = AgentClient(base, cafile=ca, cert=crt, key=key)
        assert (await asyncio.to_thread(with_cert.status))["name"] == "mtls"  # gossipctl --cert/--key
    finally:
        await agent.stop()


def test_required_client_auth_needs_a_ca() -> None:
    from gossip_agent.core.config import ConfigError

    with pytest.raises(ConfigError, match="tlsClientAuth"):
        from_mapping({**BASE, "security": {"tlsClientAuth": "required"}})
    with pytest.raises(ConfigError, match="tlsClientAuth"):
        from_mapping({**BASE, "security": {"tlsClientAuth": "maybe"}})


# -- attack 10: hygiene --------------------------------------------------------------------------------------

async def test_deeply_nested_json_is_400_not_500() -> None:
    async with running("json") as agent, aiohttp.ClientSession() as s:
        deep = b"[" * 30_000 + b"]" * 30_000
        shallow_but_too_deep = b'{"value": ' + b"[" * 40 + b"]" * 40 + b"}"
        for path, method in (("/v1/kv/k", "PUT"), ("/v1/crdt/counters/c", "POST"), ("/v1/crdt/sets/s", "POST")):
            for body in (deep, shallow_but_too_deep):
                async with s.request(method, url(agent, path), data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400, (path, r.status)
                    assert "nested deeper" in (await r.json())["error"]


@pytest.mark.parametrize(("raw", "why"), [
    ("a%00b", "control character U+0000"),
    ("a%01b", "control character U+0001"),
    ("tab%09key", "control character U+0009"),
    ("del%7Fkey", "control character U+007F"),
    ("a/%2E%2E/b", "path segment"),
    ("%2E%2E", "path segment"),
    ("a/./b", "path segment"),
    ("x" * 300, "1..256 bytes"),
])
async def test_bad_keys_get_a_clear_400(raw: str, why: str) -> None:
    async with running("keys") as agent, aiohttp.ClientSession() as s:
        from yarl import URL

        for method in ("PUT", "GET", "DELETE"):
            target = URL(f"http://127.0.0.1:{agent.port}/v1/kv/{raw}", encoded=True)
            async with s.request(method, target, data=b"v" if method == "PUT" else None) as r:
                assert r.status == 400, (method, raw, r.status)
                assert why in (await r.json())["error"]
        async with s.post(URL(f"http://127.0.0.1:{agent.port}/v1/crdt/counters/{raw}", encoded=True),
                          json={"delta": 1}) as r:
            assert r.status == 400
        async with s.get(url(agent, "/v1/kv"), params={"limit": "1000"}) as r:
            assert (await r.json())["entries"] == []  # nothing was stored


async def test_oversized_bodies_are_413_before_they_are_held() -> None:
    async with running("sizes") as agent, aiohttp.ClientSession() as s:
        big = b"x" * (64 * 1024 + 1)  # state.maxValueBytes + 1
        async with s.put(url(agent, "/v1/kv/k"), data=big) as r:
            assert r.status == 413

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b"y" * 65536  # 5 MiB, no Content-Length

        async with s.put(url(agent, "/v1/kv/k"), data=chunked()) as r:
            assert r.status == 413
        async with s.post(url(agent, "/v1/internal/pushpull"), data=b"z" * (5 << 20)) as r:
            assert r.status == 413


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.close()


async def test_a_request_head_that_never_completes_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "HEADER_TIMEOUT", 1.0)
    async with running("slowloris") as agent:
        sock = _connect(agent.port)
        sock.sendall(b"GET /v1/members HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert await asyncio.to_thread(_closed_within, sock, 10.0)


async def test_a_body_that_never_arrives_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "BODY_TIMEOUT", 1.0)
    async with running("slowbody") as agent:
        sock = _connect(agent.port)
        sock.sendall(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")

        def answer() -> bytes:
            sock.settimeout(10)
            try:
                return sock.recv(4096)
            finally:
                sock.close()

        assert (await asyncio.to_thread(answer)).startswith(b"HTTP/1.1 408")


async def test_connections_over_the_cap_are_closed_and_counted() -> None:
    from aiohttp import web

    from gossip_agent.io.http_api import make_app
    from gossip_agent.io.http_limits import ConnectionGuard, GuardedRunner
    from tests.agent.test_http_api import FakeAgent

    runner = GuardedRunner(make_app(FakeAgent()), guard=ConnectionGuard(max_total=3, max_per_client=2))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        held = [_connect(port), _connect(port)]
        for _ in range(100):  # wait until the server has admitted both (accepts may lag on a busy machine)
            if sum(runner.guard.per_client.values()) == 2:
                break
            await asyncio.sleep(0.05)
        extra = _connect(port)
        assert await asyncio.to_thread(_closed_within, extra, 5.0)
        assert runner.guard.refused == 1
        for sock in held:
            sock.close()
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200  # slots come back when connections close
    finally:
        await runner.cleanup()


async def test_one_client_cannot_take_every_watch_slot() -> None:
    async with running("watch") as agent, aiohttp.ClientSession() as s:
        streams = []
        try:
            for _ in range(http_limits.MAX_WATCHES_PER_CLIENT):
                r = await s.get(url(agent, "/v1/watch"))
                assert r.status == 200
                streams.append(r)
            async with s.get(url(agent, "/v1/watch")) as r:
                assert r.status == 429 and "per client" in (await r.json())["error"]
            async with s.get(url(agent, "/v1/watch"), params={"prefix": "\x00"}) as r:
                assert r.status in (400, 429)
        finally:
            for r in streams:
                r.close()
        for _ in range(50):  # a hung-up watch frees its slot within about a second
            async with s.get(url(agent, "/v1/watch")) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 200


async def test_gossipctl_sends_its_token(tokens: Tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from gossip_agent.cli.client import AgentClient, ClientError, add_client_args, client_from_args

    async with running("cli", apiTokensFile=tokens.path) as agent:
        addr = f"127.0.0.1:{agent.port}"
        with pytest.raises(ClientError, match="401"):
            await asyncio.to_thread(AgentClient(addr).status)
        assert (await asyncio.to_thread(AgentClient(addr, token=tokens.read).status))["name"] == "cli"
        monkeypatch.setenv("GOSSIP_TOKEN", tokens.write)
        parser = argparse.ArgumentParser()
        add_client_args(parser)
        client = client_from_args(parser.parse_args(["--addr", addr]))
        status, _ = await asyncio.to_thread(client.request, "PUT", "/v1/kv/from-cli", b"v")
        assert status == 200


def test_local_clusters_encrypt_gossip_by_default() -> None:
    from gossip_agent.cli.main import build_parser as ctl_parser

    assert ctl_parser().parse_args(["up", "-f", "x.yaml"]).encrypt is True
    assert ctl_parser().parse_args(["up", "-f", "x.yaml", "--no-encrypt"]).encrypt is False


def test_the_operators_token_secret_is_what_the_agent_reads(tmp_path: Path) -> None:
    """The operator generates `<cluster>-api-tokens` (manifests/secret.py) in the agent's token-file format,
    mounts it where the ConfigMap's apiTokensFile points, and queries agents with its read token."""
    import base64

    from gossip_agent.io.auth import Scope, TokenFile
    from gossip_operator.manifests import configmap, secret, statefulset
    from gossip_operator.manifests.common import Owner
    from gossip_operator.spec import parse

    spec = parse({"image": "gossip-agent:0.1.0", "replicas": 3}, name="demo", namespace="ns")
    owner = Owner(name="demo", uid="u1")
    read, write = generate_token(), generate_token()
    body = secret.render_api_tokens(spec, owner, read, write)
    assert body["metadata"]["name"] == "demo-api-tokens"
    data = body["data"]["tokens"]
    path = tmp_path / "tokens"
    path.write_bytes(base64.b64decode(data))
    tokens = TokenFile(str(path))
    assert tokens.scope_of(read) is Scope.READ and tokens.scope_of(write) is Scope.WRITE
    assert secret.read_token(data) == read
    config_path = configmap.agent_config(spec, "cluster.local")["security"]["apiTokensFile"]
    sts = statefulset.render(spec, owner, cluster_domain="cluster.local", keyring_hash="h")
    pod = sts["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-tokens")
    volume = next(v for v in pod["volumes"] if v["name"] == "api-tokens")
    assert config_path == f"{mount['mountPath']}/tokens" and volume["secret"]["secretName"] == "demo-api-tokens"


async def test_refusals_are_counted_in_metrics(tokens: Tokens) -> None:
    from gossip_agent.cli.client import parse_metrics

    async with running("counted", apiTokensFile=tokens.path) as agent, aiohttp.ClientSession() as s:
        async with s.get(url(agent, "/v1/members")) as r:
            assert r.status == 401
        async with s.post(url(agent, "/v1/internal/pushpull"), data=b"x", headers={"Content-Encoding": "gzip"}) as r:
            assert r.status == 415
        async with s.get(url(agent, "/metrics")) as r:
            metrics = parse_metrics(await r.text())
        assert metrics['gossip_http_refused_total{reason="auth_401"}'] == 1
        assert metrics['gossip_http_refused_total{reason="encoding_refused"}'] == 1
        assert metrics['gossip_http_refused_total{reason="connection_cap"}'] == 0


async def test_the_operator_queries_token_protected_agents_with_its_read_token(tokens: Tokens) -> None:
    from gossip_operator.agents import AgentsClient
    from gossip_operator.status import PodObservation

    async with running("queried", apiTokensFile=tokens.path) as agent:
        client = AgentsClient(timeout=5.0)
        try:
            pod = PodObservation("queried-0", "127.0.0.1", True, port=agent.port)
            (without,) = await client.query([pod], default_port=agent.port, limit=1)
            assert not without.ok and "401" in (without.error or "")
            (with_token,) = await client.query([pod], default_port=agent.port, limit=1, token=tokens.read)
            assert with_token.ok and with_token.status is not None and with_token.status["name"] == "queried"
        finally:
            await client.close()
