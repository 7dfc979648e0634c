"""The agent client: bounded status queries, and HTTPS with a TLS Secret that has no ca.crt."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from gossip_operator.agents import AgentsClient
from gossip_operator.kube import KubeClient, load_configuration
from gossip_operator.refresh import _tls_trust
from gossip_operator.runtime import Runtime
from gossip_operator.settings import OperatorSettings
from gossip_operator.spec import parse
from gossip_operator.status import PodObservation
from tests.agent.test_tls import make_pki
from tests.operator.helpers import NAMESPACE
from tests.operator.test_lifecycle import hanging_agents
from tests.support.kube_emulator import EmulatedCluster, free_port


async def test_unreachable_agents_cost_a_bounded_number_of_queries() -> None:
    """Every agent hangs: the pass used to walk the whole StatefulSet, one batch per timeout. Now it asks
    `limit` agents, at most `limit` replacements, all in parallel, and gives up after its budget."""
    client = AgentsClient(timeout=0.5)
    try:
        async with hanging_agents(12) as (ports, asked, _):
            pods = [PodObservation(name=f"demo-{i}", ip="127.0.0.1", ready=True, port=port)
                    for i, port in enumerate(ports)]
            reports = await client.query(pods, default_port=7946, limit=3)
            assert len(set(asked)) <= 6, f"asked {len(set(asked))} of 12 agents"
            assert len(reports) <= 6 and not any(r.ok for r in reports)
            assert {r.pod for r in reports} <= {f"demo-{i}" for i in range(12)}
    finally:
        await client.close()


async def _https_agent(tmp_path: Path) -> tuple[web.AppRunner, int, str]:
    """An agent-like HTTPS server whose certificate is signed by a CA; returns (runner, port, tls.crt PEM)."""
    _ca, crt, key = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"name": "demo-0", "members": {"alive": 1}})

    async def members(_: web.Request) -> web.Response:
        return web.json_response({"members": [{"name": "demo-0", "state": "alive", "incarnation": 1}]})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/members", members)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, port, Path(crt).read_text()


async def test_tls_queries_work_with_only_the_served_certificate(tmp_path: Path) -> None:
    """A TLS Secret without ca.crt: the operator pins tls.crt (the certificate every agent serves). Before, it
    fell back to the system CAs, which know no cluster-internal CA, and every query failed."""
    runner, port, served = await _https_agent(tmp_path)
    client = AgentsClient(timeout=5.0)
    pod = PodObservation(name="demo-0", ip="127.0.0.1", ready=True, port=port)
    try:
        (pinned,) = await client.query([pod], default_port=port, limit=1, tls=True, tls_ca=served)
        assert pinned.ok, pinned.error
        (system,) = await client.query([pod], default_port=port, limit=1, tls=True, tls_ca=None)
        assert not system.ok and "certificate" in (system.error or "").lower()
        (tmp_path / "other").mkdir()
        _, other, _ = make_pki(tmp_path / "other")
        (wrong,) = await client.query([pod], default_port=port, limit=1, tls=True, tls_ca=Path(other).read_text())
        assert not wrong.ok  # pinning another certificate does not let this one through
    finally:
        await client.close()
        await runner.cleanup()


async def test_the_trust_anchor_is_ca_crt_else_tls_crt(cluster: EmulatedCluster) -> None:
    ca, crt = "-----BEGIN CERTIFICATE-----\nCA\n", "-----BEGIN CERTIFICATE-----\nLEAF\n"

    def secret(name: str, **data: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": NAMESPACE}, "type": "kubernetes.io/tls",
                "data": {k.replace("_", "."): base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    cluster.api.create_object("v1/secrets", secret("with-ca", ca_crt=ca, tls_crt=crt, tls_key="k"))
    cluster.api.create_object("v1/secrets", secret("without-ca", tls_crt=crt, tls_key="k"))
    settings = OperatorSettings(kubeconfig=str(cluster.kubeconfig))
    runtime = Runtime(settings=settings, kube=KubeClient(load_configuration(settings.kubeconfig)),
                      agents=AgentsClient(timeout=1.0))
    try:
        for name, expected in (("with-ca", ca), ("without-ca", crt)):
            spec = parse({"image": "x", "security": {"tlsSecret": name}}, name="demo", namespace=NAMESPACE)
            assert await _tls_trust(runtime, spec) == expected
    finally:
        await runtime.close()
