"""The state service in-process: recovery from snapshot + log, replica ids across wipes, snapshots, the watch
hub's slow-client rule, malformed rumors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gossip_agent.core.config import AgentConfig, from_mapping
from gossip_agent.core.kvstore import Change, KvStore
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_http import WATCH_QUEUE, WatchHub
from gossip_agent.io.state_service import StateService


def config(data: Path | None, **storage: Any) -> AgentConfig:
    return from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                         "storage": {"dataDir": str(data) if data else None, **storage}})


async def run_agent(cfg: AgentConfig) -> tuple[Agent, StateService]:
    svc = StateService(cfg)
    agent = Agent(cfg, extensions=[svc])
    await agent.start()
    return agent, svc


async def test_recovery_replays_snapshot_and_log(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d", snapshotEvery=50)
    agent, svc = await run_agent(cfg)
    for i in range(120):
        svc.put(f"k{i:03d}", f"v{i}".encode(), None)
    svc.delete("k000", None)
    svc.tick()  # snapshots past snapshotEvery records
    assert svc.stats.snapshots >= 1
    svc.put("after-snapshot", b"x", None)
    root, replica = svc.store.root_hex(), svc.store.node
    # No snapshot on stop: the log must carry what the snapshot does not (as after a kill -9).
    assert svc._log is not None
    svc._log.close()
    svc._log = None
    await agent.stop()
    again = StateService(cfg)
    again.open()
    assert again.store.root_hex() == root and again.store.node == replica
    assert again.store.get("after-snapshot") is not None and again.store.get("k000").deleted  # type: ignore[union-attr]
    assert len(again.store) == 120


async def test_wiped_data_dir_gets_a_fresh_replica_id(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d")
    agent, svc = await run_agent(cfg)
    svc.put("a", b"1", None)
    first = svc.store.node
    await agent.stop()
    assert first.startswith("solo@")
    agent, svc = await run_agent(cfg)
    assert svc.store.node == first and svc.store.get("a") is not None
    await agent.stop()
    for path in (tmp_path / "d").iterdir():
        path.unlink()
    agent, svc = await run_agent(cfg)
    assert svc.store.node != first and svc.store.get("a") is None
    await agent.stop()


async def test_in_memory_store_and_malformed_rumors_are_counted(tmp_path: Path) -> None:
    agent, svc = await run_agent(config(None))
    try:
        assert svc._log is None
        assert not svc.on_state_rumor(b"\x92\x01garbage", 0.0)
        assert not svc.on_state_rumor(b"\x95\x06\xa1k", 0.0)
        other = KvStore("peer@1")
        from gossip_agent.core.state_codec import encode_rumor
        entry = other.local_put("k", b"v", 1_000)
        assert svc.on_state_rumor(encode_rumor(entry), 0.0)
        assert not svc.on_state_rumor(encode_rumor(entry), 0.0)
        assert svc.stats.rumors == {"dropped": 2, "applied": 1, "duplicate": 1}
        status = agent.status()
        assert status["state"]["keys"] == 1 and status["convergence"]["converged"] is not None
    finally:
        await agent.stop()


async def test_watch_hub_drops_slow_clients() -> None:
    hub = WatchHub()
    fast_id, fast = hub.subscribe("a/")
    _, slow = hub.subscribe("")
    entry = KvStore("n@1").local_put("a/x", b"v", 1)
    for _ in range(WATCH_QUEUE):
        hub.publish([Change("a/x", entry, "local")])
        fast.get_nowait()
    hub.publish([Change("a/x", entry, "local")])
    assert hub.dropped == 1 and len(hub) == 1
    items = [slow.get_nowait() for _ in range(slow.qsize())]
    assert items[-1] is None and len(items) == WATCH_QUEUE + 1
    line = fast.get_nowait()
    assert line is not None and json.loads(line)["key"] == "a/x"
    hub.unsubscribe(fast_id)
    assert len(hub) == 0
