"""The hook by which a layer (the replicated key-value state, agent II) attaches to an agent without the
runtime knowing it.

An `Extension` may
- give the Node a `StateDelegate` (`state_delegate()`), which receives state rumors;
- add HTTP routes (`routes()`), e.g. `/v1/kv/...` and `/v1/internal/antientropy`;
- in `attach(agent)` (after the Node exists, before the server starts) keep the agent to use its services:
  `agent.broadcast_state(payload, key=...)`, `agent.update_meta(meta)`, `agent.peer_client.exchange(...)`
  (sealed stream exchange with a peer), `agent.live_members()`, `agent.now()`, `agent.metrics.registry`
  (register collectors), `agent.spawn(coro, name)` (a tracked task, cancelled on shutdown);
- hear every membership change (`on_member_event(event)`: join, update, suspect, alive, dead, left, reap;
  called on the event loop as the Node reports it, the member table already updated; must not block);
- run its own loops between `start()` and `stop()` (stop is called after the graceful leave, before the
  server and sockets close);
- add keys to `/v1/status` (`status()`, e.g. `state` and `convergence`) and a readiness condition
  (`ready()`).

`default_extensions(config)` is what `python -m gossip_agent` attaches: the state layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import MemberEvent
from gossip_agent.core.node import StateDelegate

if TYPE_CHECKING:
    from gossip_agent.io.runtime import Agent


class Extension:
    """No-op base: override what the layer needs."""

    name = "extension"

    def state_delegate(self) -> StateDelegate | None:
        return None

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return ()

    def attach(self, agent: Agent) -> None:
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


def default_extensions(config: AgentConfig) -> list[Extension]:
    """The layers `python -m gossip_agent` runs for `config`: the replicated key-value state."""
    from gossip_agent.io.state_service import state_extensions  # lazy: state_service imports this module

    return state_extensions(config)
