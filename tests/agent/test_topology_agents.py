"""Topology in running agents (in-process, loopback): coordinates exchanged on probes, the RTT API and
`gossipctl rtt`, the zone file read live into metadata, and the topology metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gossip_agent.cli.client import parse_metrics
from gossip_agent.cli.main import main as gossipctl
from gossip_agent.core.topology_state import ZONE_META_KEY
from gossip_agent.io.runtime import Agent
from tests.agent.test_runtime import alive, config, eventually


@pytest.fixture
async def zoned(tmp_path: Path) -> AsyncIterator[tuple[list[Agent], Path]]:
    zone_file = tmp_path / "zone"
    zone_file.write_text("zone-a\n")
    a0 = Agent(config("a0", topology={"zoneFile": str(zone_file)}))
    a0.zone_reload_every = 0.1
    await a0.start()
    seed = f"127.0.0.1:{a0.port}"
    others = [Agent(config("a1", [seed], topology={"zone": "zone-a"})),
              Agent(config("a2", [seed], topology={"zone": "zone-b"}))]
    for a in others:
        await a.start()
    agents = [a0, *others]
    try:
        await eventually(lambda: all(len(alive(a)) == 3 for a in agents), what="3 agents to join")
        yield agents, zone_file
    finally:
        for a in agents:
            await a.stop()


async def _get(agent: Agent, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{agent.port}{path}") as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


async def test_coordinates_spread_and_the_rtt_api_answers(zoned: tuple[list[Agent], Path]) -> None:
    agents, _ = zoned
    a0 = agents[0]
    await eventually(lambda: all(len(a.node.topology.coordinates()) == 2 for a in agents), timeout=60.0,
                     what="every agent to hold the others' coordinates")
    await eventually(lambda: a0.node.topology.client.stats.updates >= 3, timeout=60.0, what="RTT samples")
    status, body = await _get(a0, "/v1/coordinates")
    assert status == 200 and body["self"] == "a0" and body["zone"] == "zone-a"
    assert [row["name"] for row in body["coordinates"]] == ["a0", "a1", "a2"]
    assert all(len(row["vec"]) == 8 for row in body["coordinates"])
    assert {row["name"]: row["zone"] for row in body["coordinates"]} == {"a0": "zone-a", "a1": "zone-a",
                                                                         "a2": "zone-b"}
    status, body = await _get(a0, "/v1/rtt?to=a1")
    assert status == 200 and body["from"] == "a0" and body["to"] == "a1" and body["sameZone"] is True
    assert 0 <= body["rttSeconds"] < 1.0
    status, body = await _get(a0, "/v1/rtt?from=a1&to=a2")
    assert status == 200 and body["sameZone"] is False
    assert (await _get(a0, "/v1/rtt?to=nobody"))[0] == 404
    assert (await _get(a0, "/v1/rtt"))[0] == 400
    assert (await _get(a0, "/v1/rtt?to=a1&via=x"))[0] == 400
    assert (await _get(a0, "/v1/rtt?to=" + "x" * 300))[0] == 400


async def test_gossipctl_rtt_prints_the_estimate(zoned: tuple[list[Agent], Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    agents, _ = zoned
    a0 = agents[0]
    await eventually(lambda: len(a0.node.topology.coordinates()) == 2, timeout=60.0, what="coordinates")
    addr = f"127.0.0.1:{a0.port}"
    code = await asyncio.to_thread(gossipctl, ["rtt", "a1", "--addr", addr])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Estimated a0 <-> a1 rtt: ") and "(same zone)" in out
    code = await asyncio.to_thread(gossipctl, ["rtt", "a1", "a2", "--addr", addr])
    assert code == 0 and "a1 <-> a2" in capsys.readouterr().out
    code = await asyncio.to_thread(gossipctl, ["rtt", "ghost", "--addr", addr])
    assert code == 1 and "HTTP 404" in capsys.readouterr().err


async def test_a_rewritten_zone_file_is_announced_live(zoned: tuple[list[Agent], Path]) -> None:
    agents, zone_file = zoned
    a0, a1 = agents[0], agents[1]
    assert a0.node.meta[ZONE_META_KEY] == "zone-a"  # read before the first announcement
    zone_file.write_text("zone-c\n")
    await eventually(lambda: (m := a1.node.member("a0")) is not None and m.meta.get(ZONE_META_KEY) == "zone-c",
                     what="the new zone to reach a1")
    zone_file.write_text("not a zone!\n")
    await eventually(lambda: ZONE_META_KEY not in a0.node.meta, what="an invalid zone to count as unknown")
    assert a0.stats.zone_file_errors >= 1
    zone_file.unlink()
    await asyncio.sleep(0.3)
    assert ZONE_META_KEY not in a0.node.meta and a0.node.topology.local_zone is None


async def test_topology_metrics_are_exported(zoned: tuple[list[Agent], Path]) -> None:
    agents, _ = zoned
    a0 = agents[0]
    await eventually(lambda: a0.node.topology.client.stats.updates >= 2 and len(a0.node.topology.coordinates()) == 2
                     and a0.stats.peer_class_bytes[("out", "cross_zone")] > 0, timeout=60.0,
                     what="RTT samples, both coordinates, bytes to the other zone")
    metrics = parse_metrics(a0.render_metrics().decode())
    assert metrics["gossip_coordinates_known"] == 2
    assert 0 < metrics["gossip_coordinate_error"] <= 1.5
    assert metrics["gossip_rtt_estimate_relative_error_count"] >= 1
    assert metrics['gossip_peer_class_bytes_total{direction="out",peer_class="same_zone"}'] > 0
    assert metrics['gossip_peer_class_bytes_total{direction="out",peer_class="cross_zone"}'] > 0


async def test_a_hostile_coordinate_is_a_counted_refusal_and_the_ping_beside_it_is_still_acked(
        zoned: tuple[list[Agent], Path]) -> None:
    import math
    import socket

    from gossip_agent.core import codec
    from gossip_agent.core.messages import Ack, NetCoordinate, Packet, Ping

    agents, _ = zoned
    a0 = agents[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        bad = NetCoordinate((math.nan,) * 8, 0.001, 0.5, 0.0)
        packet = Packet("a1", (Ping(4242, "a0", "a1", ("127.0.0.1", port)), bad))
        s.sendto(codec.encode_packet(packet), ("127.0.0.1", a0.port))
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(s, 65535), timeout=30.0)
    answer = codec.decode_packet(data)
    assert answer.messages and answer.messages[0] == Ack(4242, answer.messages[0].digest)  # type: ignore[union-attr]
    await eventually(lambda: a0.node.topology.rejections().get("not_finite", 0) >= 1, what="a counted refusal")
    metrics = parse_metrics(a0.render_metrics().decode())
    assert metrics['gossip_coordinate_rejections_total{reason="not_finite"}'] >= 1
    stored = a0.node.topology.coordinates().get("a1")  # a1's own (earlier, finite) coordinate, if any
    assert stored is None or all(math.isfinite(x) for x in stored.vec)
