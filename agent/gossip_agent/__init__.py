"""Gossip agent: SWIM membership with Lifeguard, rumor dissemination and a replicated key-value state.

`core/` holds the pure protocol logic (no sockets, no clock, no global random); `io/` the asyncio shell
around it; `sim/` a deterministic driver of the same cores; `cli/` the command-line tools.
"""

__version__ = "0.1.0"
