"""Which event loop runs the agent: asyncio's own, or uvloop (libuv, in C) when asked for and installed.

Why uvloop: an agent's CPU goes mostly to small callbacks (a datagram in, a few out, a timer re-armed), and
uvloop's loop, transports and timers cost less per callback than asyncio's pure-Python selector loop. The
agent is written against asyncio's interfaces only, so either loop runs it; the transport adapts to the one
it gets (io/transport.py: the selector loop reads one datagram per callback, so the transport reads the rest
of a burst itself; uvloop already reads a burst per wake-up).

Choice (flag `--event-loop`, else the environment variable `GOSSIP_EVENT_LOOP`, else `DEFAULT`):
  asyncio  asyncio's loop; uvloop is never imported (its memory is not paid);
  auto     uvloop if it can be imported, else asyncio's loop (a build without it still runs);
  uvloop   uvloop or fail at startup (`LoopUnavailable`): the operator asked for it.

The default is asyncio's loop: uvloop is a trade, not a free win. Measured (session 12, 2-core machine shared
with other work): an agent answering pings in-process -13 % CPU (37.5 -> 32.5 us a ping: the driver's own
path); CPU per delivered write at N=50, 100 writes/s -5.7 %, +2.4 % and -0.6 % in three A/B runs (the core's work per
write dominates there, and run-to-run noise is about +-4 %); but idle RSS per agent at N=10 +2.65 MiB (42.05 ->
44.7 MiB; PSS +1.3 MiB: the library's pages are shared between agents on a node) for uvloop's module, its C
library's pages and the loop's 256 KB receive buffer, and #11 asks that idle figures be no worse. Pick `auto`
where CPU matters more than ~3 MiB a member (the image ships uvloop, pinned in requirements-agent.txt).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

ENV_VAR = "GOSSIP_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")
DEFAULT = "asyncio"

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopUnavailable(ValueError):
    """The chosen event loop cannot be used (unknown name, or uvloop asked for but not importable)."""


def choice_from(flag: str | None, environ: Mapping[str, str]) -> str:
    """The flag if given, else the environment variable if set and not empty, else `DEFAULT`; checked."""
    value = flag if flag is not None else (environ.get(ENV_VAR) or DEFAULT)
    value = value.strip().lower()
    if value not in CHOICES:
        raise LoopUnavailable(f"{ENV_VAR} / --event-loop: expected one of {', '.join(CHOICES)}, got {value!r}")
    return value


def loop_factory(choice: str) -> tuple[LoopFactory | None, str]:
    """(factory for `asyncio.Runner`, the loop's name). None: asyncio's default loop."""
    if choice == "asyncio":
        return None, "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise LoopUnavailable(f"event loop uvloop asked for but not importable: {exc}") from None
        return None, "asyncio"
    factory: LoopFactory = uvloop.new_event_loop
    return factory, "uvloop"


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """`asyncio.run(main)` on a loop from `factory` (None: asyncio's default)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
