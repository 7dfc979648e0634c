"""Status from agents over HTTP: fake agents (fixed answers, incl. state roots) and real agent processes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.operator.conftest import EXAMPLE_PATH, wait_for
from tests.operator.helpers import GSC, NAMESPACE, STS, condition, events, gsc_body, play_statefulset
from tests.support.kube_emulator import EmulatedCluster, free_port

ROOT = "ab12cd34ef56" + "0" * 52


class FakeAgents:
    """aiohttp servers answering /v1/status and /v1/members like agents that agree on everything."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.ports = [free_port() for _ in names]
        self.runners: list[web.AppRunner] = []
        self.root = ROOT

    def _members(self) -> list[dict[str, Any]]:
        return [{"name": n, "address": "127.0.0.1", "port": p, "state": "alive", "incarnation": 1, "meta": {}}
                for n, p in zip(self.names, self.ports, strict=True)]

    async def start(self) -> None:
        for name, port in zip(self.names, self.ports, strict=True):
            async def status(_: web.Request, name: str = name) -> web.Response:
                return web.json_response({
                    "name": name, "incarnation": 1, "health": 0,
                    "members": {"alive": len(self.names), "suspect": 0, "dead": 0, "left": 0},
                    "state": {"root": self.root, "keys": 3, "hlc": 1},
                    "convergence": {"converged": True, "fraction": 1.0, "distinctRoots": 1,
                                    "secondsSinceAgreement": 0.0, "lastConvergenceSeconds": 0.25}})

            async def members(_: web.Request) -> web.Response:
                return web.json_response({"members": self._members()})

            app = web.Application()
            app.router.add_get("/v1/status", status)
            app.router.add_get("/v1/members", members)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _kubectl(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


@pytest.mark.skipif(not Path("/usr/bin/kubectl").exists(), reason="kubectl is not installed")
async def test_kubectl_apply_get_and_scale(cluster: EmulatedCluster, start_operator, kubectl_env) -> None:
    await start_operator(agent_timeout=AGENT_TIMEOUT)  # (every pass must count all 5: `get` reads any of them)
    await _kubectl(kubectl_env, "apply", "--validate=false", "-f", str(EXAMPLE_PATH))
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    names = [f"demo-{i}" for i in range(5)]
    agents = FakeAgents(names)
    await agents.start()
    try:
        play_statefulset(cluster.api, "demo", [("127.0.0.1", p) for p in agents.ports])
        await wait_for(lambda: (cluster.api.get_object(GSC, NAMESPACE, "demo").get("status") or {}).get(
            "converged"), what="converged")
        table = await _kubectl(kubectl_env, "get", "gsc")
        header, row = table.strip().splitlines()
        assert header.split() == ["NAME", "REPLICAS", "ALIVE", "CONVERGED", "ROOT", "AGE"]
        assert row.split()[:5] == ["demo", "5", "5", "true", ROOT[:12]]
        wide = await _kubectl(kubectl_env, "get", "gossip", "demo", "-o", "wide")
        assert wide.splitlines()[1].split()[2] == "5" and "Running" in wide  # READY and PHASE
        await _kubectl(kubectl_env, "scale", "gsc/demo", "--replicas=3")
        await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 3,
                       what="the StatefulSet scaled to 3")
        assert (await _kubectl(kubectl_env, "get", "gsc", "demo", "-o", "jsonpath={.spec.replicas}")) == "3"
        status = cluster.api.get_object(GSC, NAMESPACE, "demo")["status"]
        assert status["stateRoot"] == ROOT and status["convergenceSeconds"] == 0.25
        assert status["lastConvergedTime"]
        # New writes move the root; the status follows at the next pass.
        agents.root = "ff" * 32
        await wait_for(lambda: cluster.api.get_object(GSC, NAMESPACE, "demo")["status"]["stateRoot"] == "ff" * 32,
                       what="the new root")
    finally:
        await agents.stop()


# ---------------------------------------------------------------------------------------------- real agents

def _agent_available() -> bool:
    return importlib.util.find_spec("gossip_agent") is not None and importlib.util.find_spec(
        "gossip_agent.__main__") is not None


@contextlib.asynccontextmanager
async def _agents(tmp_path: Path, count: int) -> AsyncIterator[tuple[list[int], list[asyncio.subprocess.Process]]]:
    ports = [free_port() for _ in range(count)]
    processes: list[asyncio.subprocess.Process] = []
    try:
        for i, port in enumerate(ports):
            config = {"name": f"demo-{i}", "bindAddress": "127.0.0.1", "port": port, "preset": "local",
                      "seeds": [f"127.0.0.1:{p}" for p in ports if p != port]}
            path = tmp_path / f"agent-{i}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = open(tmp_path / f"agent-{i}.log", "wb")  # noqa: SIM115 - closed with the process
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gossip_agent", "--config", str(path), stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        yield ports, processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _has_state_layer() -> bool:
    """Whether `python -m gossip_agent` runs the replicated state (GET /v1/status then has state/convergence)."""
    try:
        from gossip_agent.core.config import from_mapping
        from gossip_agent.io.extension import default_extensions
    except ImportError:
        return False
    return any(getattr(e, "name", "") == "state" for e in default_extensions(from_mapping({"name": "probe"})))


# Timeouts of calls to agents that must be answered (read once, or the operator's status passes, whose every miss
# changes the reported status): a hang's bound. At load 40 on 2 cores an agent (or a fake one, served by the
# emulator's busy loop) can take over a second to answer, and the operator's 1 s (FAST) turned that into
# AgentsUnreachable / fewer members alive for a pass.
AGENT_TIMEOUT = 30.0


async def _agent_json(session: aiohttp.ClientSession, port: int, path: str) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}{path}",
                           timeout=aiohttp.ClientTimeout(total=AGENT_TIMEOUT)) as response:
        assert response.status == 200, f"{path} answered {response.status}"
        doc = await response.json()
        assert isinstance(doc, dict)
        return doc


async def _write_and_converge(ports: list[int], gsc: Any) -> None:
    """Write one key to one agent; the operator reports the agents' new common root once they converge."""
    before = gsc()["status"].get("stateRoot")
    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{ports[0]}/v1/kv/demo", data=b"x") as response:
            assert response.status in (200, 201, 204), await response.text()

        def reported() -> bool:
            status = gsc().get("status") or {}
            return bool(status.get("stateRoot")) and status.get("stateRoot") != before and status.get(
                "converged") is True and condition(gsc(), "Converged").get("status") == "True"

        await wait_for(reported, timeout=30, what="Converged=True on the new state root")
        status = gsc()["status"]
        roots = {(await _agent_json(session, port, "/v1/status"))["state"]["root"] for port in ports}
        assert roots == {status["stateRoot"]}, "the agents' roots and the reported one differ"
        assert status["stateRootShort"] == status["stateRoot"][:12] and status["lastConvergedTime"]
        async with session.get(f"http://127.0.0.1:{ports[2]}/v1/kv/demo") as value:  # replicated elsewhere
            assert value.status == 200 and await value.read() == b"x"


async def test_status_from_real_agents_then_one_killed(cluster: EmulatedCluster, start_operator,
                                                       tmp_path: Path) -> None:
    if not _agent_available():
        pytest.skip("the agent runtime (python -m gossip_agent) is not available yet")
    await start_operator(agent_timeout=AGENT_TIMEOUT)  # (a killed agent refuses at once: no wait for it)
    cluster.api.create_object(GSC, gsc_body(replicas=3, preset="local"))
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    async with _agents(tmp_path, 3) as (ports, processes):
        for port, process in zip(ports, processes, strict=True):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not await _healthy(port):
                if process.returncode is not None:
                    pytest.skip(f"the agent cannot start (exit {process.returncode}); see {tmp_path}")
                assert loop.time() < deadline, "an agent did not answer /healthz"
                await asyncio.sleep(0.1)
        play_statefulset(cluster.api, "demo", [("127.0.0.1", p) for p in ports])

        def gsc() -> dict[str, Any]:
            return cluster.api.get_object(GSC, NAMESPACE, "demo") or {}

        # One status, the one that says Ready (a later pass may differ: 3 agents on a busy machine).
        ready_doc = await wait_for(lambda: (g := gsc()) and condition(g, "Ready").get("status") == "True" and g,
                                   timeout=30, what="Ready=True from the agents' reports")
        status = ready_doc["status"]
        assert status["members"]["alive"] == 3 and status["phase"] == "Running"
        assert condition(ready_doc, "Degraded")["status"] == "False"
        await wait_for(lambda: condition(gsc(), "Converged").get("status") == "True", timeout=30, what="Converged")
        if _has_state_layer():
            await _write_and_converge(ports, gsc)
        ready_since = condition(gsc(), "Ready")["lastTransitionTime"]

        processes[2].kill()  # kill -9 demo-2; its pod still looks Ready (nobody runs a kubelet here)
        await processes[2].wait()
        await wait_for(lambda: condition(gsc(), "Degraded").get("status") == "True", timeout=40,
                       what="Degraded=True after kill -9")
        degraded = condition(gsc(), "Degraded")
        assert degraded["reason"] in ("MembersSuspect", "MembersFailed", "AgentsUnreachable")
        await wait_for(lambda: "demo-2" in gsc()["status"].get("unhealthyMembers", []), timeout=40,
                       what="demo-2 reported unhealthy by its peers")
        assert gsc()["status"]["phase"] == "Degraded"
        failed = await wait_for(lambda: events(cluster.api, "MemberFailed"), what="a MemberFailed event")
        assert "demo-2" in failed[0]["message"] and failed[0]["type"] == "Warning"
        ready = condition(gsc(), "Ready")
        if ready["status"] == "True":  # still ready: the transition time did not move
            assert ready["lastTransitionTime"] == ready_since
