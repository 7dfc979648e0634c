"""The layers `python -m gossip_agent` attaches to its agent (today: the replicated key-value state).

The hook itself (`Extension`, and `AgentHost`, what a layer sees of the agent) lives in io/host.py; it is
re-exported here for existing imports.
"""

from __future__ import annotations

from gossip_agent.core.config import AgentConfig
from gossip_agent.io.host import AgentHost, Extension
from gossip_agent.io.state_service import state_extensions

__all__ = ["AgentHost", "Extension", "default_extensions"]


def default_extensions(config: AgentConfig) -> list[Extension]:
    """The layers `python -m gossip_agent` runs for `config`: the replicated key-value state."""
    return state_extensions(config)
