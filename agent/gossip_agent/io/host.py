"""What a layer (the replicated key-value state, agent II) sees of the agent it runs in, and the hook by
which it attaches.

Layers are written against `AgentHost`, a protocol of exactly the services they use, not against the
concrete `runtime.Agent`: the runtime imports the layers' base class from here, the layers import nothing
of the runtime, so the two never import each other (the `io` import cycle this module replaced).

An `Extension` may
- give the Node a `StateDelegate` (`state_delegate()`), which receives state rumors;
- add HTTP routes (`routes()`), e.g. `/v1/kv/...` and `/v1/internal/antientropy`;
- in `attach(host)` (after the Node exists, before the server starts) keep the host to use its services:
  `host.broadcast_state(payload, key=...)`, `host.update_meta(meta)`, `host.peer_client.exchange(...)`
  (sealed stream exchange with a peer), `host.live_members()`, `host.now()`, `host.metrics.registry`
  (register collectors), `host.spawn(coro, name)` (a tracked task, cancelled on shutdown);
- hear every membership change (`on_member_event(event)`: join, update, suspect, alive, dead, left, reap;
  called on the event loop as the Node reports it, the member table already updated; must not block);
- run its own loops between `start()` and `stop()` (stop is called after the graceful leave, before the
  server and sockets close);
- add keys to `/v1/status` (`status()`, e.g. `state` and `convergence`) and a readiness condition
  (`ready()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from gossip_agent.core.effects import MemberEvent
from gossip_agent.core.messages import Address, MemberSnapshot, MemberState
from gossip_agent.core.node import StateDelegate
from gossip_agent.core.rng import Rng
from gossip_agent.core.send_budget import SendBudget
from gossip_agent.io.metrics import AgentMetrics, AgentStats
from gossip_agent.io.peer_client import PeerClient
from gossip_agent.io.security import Security


class MemberView(Protocol):
    """The read-only view of this member's own Node a layer needs (name, address, metadata, counts)."""

    @property
    def name(self) -> str: ...

    @property
    def addr(self) -> Address: ...

    @property
    def leaving(self) -> bool: ...

    @property
    def meta(self) -> Mapping[str, str]: ...

    def counts(self) -> Mapping[MemberState, int]: ...

    def choose_partner(self, names: Sequence[str], rng: Rng) -> str | None: ...

    # The agent's byte budget (gossip.maxBytesPerSecond): anti-entropy's streams count against it too, and
    # its deferrals in the Node's counters.
    @property
    def send_budget(self) -> SendBudget: ...

    @property
    def stats(self) -> MutableMapping[str, int]: ...

    def is_near(self, name: str) -> bool | None: ...


class AgentHost(Protocol):
    """The agent's services for its layers (see the module docstring)."""

    @property
    def node(self) -> MemberView: ...

    @property
    def address(self) -> Address: ...

    @property
    def peer_client(self) -> PeerClient: ...

    @property
    def security(self) -> Security: ...

    @property
    def stats(self) -> AgentStats: ...

    @property
    def metrics(self) -> AgentMetrics: ...

    def now(self) -> float: ...

    def members(self) -> list[MemberSnapshot]: ...

    def live_members(self) -> list[MemberSnapshot]: ...

    def broadcast_state(self, payload: bytes, *, key: str | None = None, critical: bool = False) -> None: ...

    def update_meta(self, meta: Mapping[str, str]) -> None: ...

    def publish_root_digest(self, root_hex: str, keys: int, hlc_ms: int, *, seq_floor: int) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...


class Extension:
    """No-op base: override what the layer needs."""

    name = "extension"

    def state_delegate(self) -> StateDelegate | None:
        return None

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return ()

    def attach(self, host: AgentHost) -> None:
        """Called once the agent's Node exists and before any traffic is served."""

    def on_member_event(self, event: MemberEvent) -> None:
        """A membership change (see the module docstring); the default ignores it."""

    async def start(self) -> None:
        """Called after the agent's sockets are open, before joining."""

    async def stop(self) -> None:
        """Called on shutdown, after the graceful leave."""

    def status(self) -> Mapping[str, Any]:
        return {}

    def ready(self) -> bool:
        return True
