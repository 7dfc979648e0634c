"""One real in-process agent on 127.0.0.1 for the HTTP attack tests: start, yield, always stop; and raw bytes
to its HTTP port (requests no client library would send)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gossip_agent.core.config import from_mapping
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import state_extensions

BASE = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0}


@contextlib.asynccontextmanager
async def running(name: str, *, state: bool = True, gossip: dict[str, Any] | None = None,
                  **security: Any) -> AsyncIterator[Agent]:
    """An agent named `name` (with the state layer unless `state=False`), `security` as its config section
    and `gossip` as its gossip section."""
    cfg = from_mapping({**BASE, "name": name, **({"security": security} if security else {}),
                        **({"gossip": gossip} if gossip else {})})
    agent = Agent(cfg, extensions=state_extensions(cfg)) if state else Agent(cfg)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def url(agent: Agent, path: str) -> str:
    return f"http://127.0.0.1:{agent.port}{path}"


async def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send `data` as is to 127.0.0.1:`port` and read until the server closes (the request should say
    `Connection: close`); bounded by `timeout`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
