"""When each agent applied each bench write, stamped inside the agent: the load bench's default observer.

Why: write->all latency is the time until the LAST agent has applied a write. The bench used to observe it
through a watch stream per agent (`GET /v1/watch`), read by observer processes on the same two cores. That
apparatus is itself load: each delivery became a watch line the agent renders and writes (~13 % of an agent's
CPU per delivery at N=50, by `--cpu-profile`) and the readers' wake-ups, and near the machine's capacity its
stamps lag with the readers' scheduling (the driver's own schedule lag reached p99 ~350 ms at N=50, 100
writes/s, nice -10 and all). An agent's own stamp at the moment it applies a change costs a list append, and
is what "applied everywhere" means. `bench_load.py --observer watch` keeps the watch streams, to compare.

Active only in a process started as `python -m gossip_agent ...` with `GOSSIP_APPLY_TRACE_DIR` set and this
directory on `PYTHONPATH` (bench_load.py sets both for the agents it starts). It wraps
`StateService._persist(changes)`, which the agent calls once per applied batch (a local write or a delivery),
right after the store changed and before the watchers are told, and records `key TAB perf_counter()` for each
changed key under `bench/`. `time.perf_counter` is CLOCK_MONOTONIC on Linux: one clock in every process, the
one the bench stamps its sends with. A daemon thread appends what gathered to `DIR/<pid>.trace` every
FLUSH_EVERY seconds (and once more at the end), so the bench can follow deliveries while it waits.

With `--cpu-profile` too, the CPU attribution hook (bench/cpu_profile/sitecustomize.py) is loaded from here:
Python imports only the first `sitecustomize` on the path.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

OUT_DIR = os.environ.get("GOSSIP_APPLY_TRACE_DIR", "")
PREFIX = "bench/"
FLUSH_EVERY = 0.2
"""Seconds between appends to the trace file: how far behind the bench's view of deliveries may be."""

ACTIVE = bool(OUT_DIR) and "gossip_agent" in list(getattr(sys, "orig_argv", sys.argv))

_lines: list[str] = []
_lock = threading.Lock()


def _chain_cpu_profile() -> None:
    """Load the CPU attribution hook too when it was asked for (its own module decides whether it is active)."""
    if not os.environ.get("GOSSIP_CPU_PROFILE_DIR"):
        return
    path = Path(__file__).resolve().parent.parent / "cpu_profile" / "sitecustomize.py"
    spec = importlib.util.spec_from_file_location("gossip_cpu_profile_hook", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def _install() -> None:
    from gossip_agent.io.state_service import StateService

    original = StateService._persist

    @functools.wraps(original)
    def persist(self: Any, changes: Any) -> Any:
        result = original(self, changes)  # raises when the change was not logged: then it is not stamped
        now = time.perf_counter()
        stamped = [f"{c.key}\t{now:.6f}\n" for c in changes if c.key.startswith(PREFIX) and c.entry is not None]
        if stamped:
            with _lock:
                _lines.extend(stamped)
        return result

    StateService._persist = persist  # type: ignore[method-assign]


def _take() -> str:
    with _lock:
        text = "".join(_lines)
        _lines.clear()
    return text


def _writer(path: str, stop: threading.Event) -> None:
    with open(path, "a", encoding="utf-8") as f:
        while not stop.wait(FLUSH_EVERY):
            text = _take()
            if text:
                f.write(text)
                f.flush()
        f.write(_take())


_chain_cpu_profile()

if ACTIVE:
    _orig_run = asyncio.Runner.run

    def _run_traced(self: asyncio.Runner, main: Any, **kwargs: Any) -> Any:
        _install()
        os.makedirs(OUT_DIR, exist_ok=True)
        stop = threading.Event()
        thread = threading.Thread(target=_writer, args=(os.path.join(OUT_DIR, f"{os.getpid()}.trace"), stop),
                                  daemon=True)
        thread.start()
        try:
            return _orig_run(self, main, **kwargs)
        finally:
            stop.set()
            thread.join(timeout=2)

    asyncio.Runner.run = _run_traced  # type: ignore[method-assign,assignment]
