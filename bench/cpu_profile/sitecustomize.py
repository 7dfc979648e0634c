"""CPU attribution inside real agent processes: where an agent's CPU goes, measured in CPU time, not guessed.

Active only in a process started as `python -m gossip_agent` with `GOSSIP_CPU_PROFILE_DIR` set and this
directory on `PYTHONPATH` (`bench_load.py --cpu-profile DIR` sets both for the agents it starts). It costs a
couple of `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` calls per event-loop callback and per wrapped function.

What it records (thread CPU seconds and call counts, cumulative), once a second into DIR/<pid>.jsonl:
  handles    every event-loop callback (`asyncio.Handle._run`), by what it is: `udp_read` (a datagram),
             `tcp_read:<protocol>` (HTTP server/client bytes), `task:<coroutine>` (a step of a task: watch
             streams, anti-entropy sessions, HTTP handlers), `timer:<callback>`, `call:<callback>`;
  select     the selector's `select` calls (the kernel side of waiting: epoll plus wake-ups) and their count;
  gc         garbage collections by generation;
  funcs      inclusive CPU of named hot functions (FUNCS below; nested ones overlap their callers);
  rusage     the process's own utime/stime (getrusage), to check the attribution adds up.
`bench/cpu_profile/report.py` diffs two snapshots of every agent (the write window) and prints the breakdown.

ASYNCIO'S SELECTOR LOOP ONLY, for `handles` and `select`. Under uvloop (`--event-loop uvloop`, or `auto` where
it is installed; io/event_loop.py) callbacks run inside libuv's C loop: it calls protocols and callbacks directly,
with no Python-level handle or selector to wrap, and offers no hook that times callbacks (its `_debug_*` counters
count, in debug builds only). There `handles` and `select` stay empty; `funcs`, `gc` and `rusage` still are
recorded. So that no one reads an empty breakdown as "no callback CPU", every snapshot names the loop
(`loop`) and says whether its callbacks are attributed (`callbacks_attributed`); the agent says so on stderr at
start, and report.py says so above its figures and leaves out the rows it cannot fill.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import asyncio.selector_events
import functools
import gc
import json
import os
import resource
import selectors
import sys
import threading
import time
from collections import defaultdict
from typing import Any

OUT_DIR = os.environ.get("GOSSIP_CPU_PROFILE_DIR", "")


def active(argv: list[str], out_dir: str) -> bool:
    """Only an agent process (`python -m gossip_agent ...`) with somewhere to write is profiled: the bench
    itself and its helpers inherit the same environment."""
    return bool(out_dir) and "gossip_agent" in argv


ACTIVE = active(list(getattr(sys, "orig_argv", sys.argv)), OUT_DIR)

# module -> dotted names inside it: inclusive CPU per call.
FUNCS: dict[str, tuple[str, ...]] = {
    "gossip_agent.io.runtime": ("Agent._on_datagram", "Agent._send", "Agent._on_timer", "Agent._feed",
                                "Agent._perform", "Agent._peer_class", "Agent.broadcast_state",
                                "Agent.publish_root_digest", "Agent._reschedule"),
    "gossip_agent.io.transport": ("UdpTransport.sendto",),
    "gossip_agent.io.security": ("Security.open", "Security.seal"),
    "gossip_agent.core.codec": ("decode_packet", "encode_packet"),
    "gossip_agent.core.node": ("Node.handle_packet", "Node.tick", "Node.broadcast_state", "Node.next_deadline"),
    # (Node's concern modules: a method is wrapped on the class that defines it, which Node inherits from.)
    "gossip_agent.core.membership_rumors": ("MembershipRumors._apply_rumor",),
    "gossip_agent.core.tree_dissemination": ("TreeDissemination._tree_receive",),
    "gossip_agent.io.state_service": ("StateService.on_state_rumor", "StateService._persist",
                                      "StateService._on_timer", "StateService.put", "StateService._perform",
                                      "StateService.on_root_digest", "StateService._reschedule"),
    "gossip_agent.core.state_node": ("StateNode.on_rumor", "StateNode.tick", "StateNode.put"),
    "gossip_agent.io.probe_rtt": ("ProbeRtt.sent", "ProbeRtt.received"),
    "gossip_agent.io.metrics": ("AgentMetrics.render",),
    "gossip_agent.io.state_http": ("WatchHub.publish", "_event_line", "Watcher.take"),
}

_lock = threading.Lock()
_handles: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
_funcs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
_select = [0.0, 0, 0]   # cpu, calls, events
_gc = [0.0, 0, 0.0]     # cpu, collections, start mark
_gc_by_gen: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
# The loop the agent runs and whether its callbacks are timed (`callbacks_attributed`): set once it is known.
_loop_info: dict[str, Any] = {"loop": None, "callbacks_attributed": False}
_tt = time.thread_time


def _name(cb: Any) -> str:
    self = getattr(cb, "__self__", None)
    fname = getattr(cb, "__name__", None) or type(cb).__name__
    if isinstance(self, asyncio.Task):
        coro = self.get_coro()
        name = "task:" + str(getattr(coro, "__qualname__", type(coro).__name__))
        frame = getattr(coro, "cr_frame", None)
        if name.endswith("._handle_request") and frame is not None:  # aiohttp: name the route (first 2 parts)
            request = frame.f_locals.get("request")
            path = str(getattr(request, "path", "?"))
            name += " " + "/".join(path.split("/")[:3])
        return name
    if self is not None:
        tname = type(self).__name__
        if fname in ("_read_ready", "_write_ready", "_read_ready__get_buffer", "_read_ready__data_received"):
            if "Datagram" in tname:
                return "udp" + fname[:-6].replace("_ready", "")
            proto = getattr(self, "_protocol", None)
            return f"tcp{fname[:-6].replace('_ready', '')}:{type(proto).__name__}"
        return f"{tname}.{fname}"
    if isinstance(cb, functools.partial):
        return "partial:" + _name(cb.func)
    return str(getattr(cb, "__qualname__", fname))


def _install_handles() -> None:
    orig = asyncio.events.Handle._run

    def _run(self: asyncio.events.Handle) -> None:
        t0 = _tt()
        try:
            orig(self)
        finally:
            dt = _tt() - t0
            kind = "timer:" if isinstance(self, asyncio.TimerHandle) else ""
            slot = _handles[kind + _name(self._callback)]  # type: ignore[attr-defined]
            slot[0] += dt
            slot[1] += 1

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]

    sel_orig = selectors.EpollSelector.select

    def select(self: selectors.EpollSelector, timeout: float | None = None) -> Any:
        t0 = _tt()
        ready = sel_orig(self, timeout)
        _select[0] += _tt() - t0
        _select[1] += 1
        _select[2] += len(ready)
        return ready

    selectors.EpollSelector.select = select  # type: ignore[method-assign,assignment]


def loop_is_attributed(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this loop's callbacks run through `asyncio.Handle._run` and its waits through a `selectors`
    selector (what `_install_handles` wraps): asyncio's selector loop. uvloop's do not."""
    return isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


def unattributed_warning(name: str) -> str:
    return (f"cpu_profile: CALLBACKS NOT ATTRIBUTED in pid {os.getpid()}: its event loop is {name}, which runs its "
            "callbacks in C with no hook to time them (only asyncio's selector loop is hooked); functions, gc and "
            "rusage are recorded, handles and select stay empty. Profile with --event-loop asyncio to see callbacks.")


def _install_gc() -> None:
    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _gc[2] = _tt()
        else:
            dt = _tt() - _gc[2]
            _gc[0] += dt
            _gc[1] += 1
            slot = _gc_by_gen[int(info.get("generation", -1))]
            slot[0] += dt
            slot[1] += 1

    gc.callbacks.append(on_gc)


def _wrap(owner: Any, attr: str, label: str) -> None:
    fn = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if fn is None or isinstance(fn, (staticmethod, classmethod, property)):
        return
    slot = _funcs[label]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = _tt()
        try:
            return fn(*args, **kwargs)
        finally:
            slot[0] += _tt() - t0
            slot[1] += 1

    setattr(owner, attr, wrapper)


def _install_funcs() -> None:
    for module_name, names in FUNCS.items():
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = __import__(module_name, fromlist=["_"])
            except ImportError:
                continue
        for dotted in names:
            parts = dotted.split(".")
            owner: Any = module
            for p in parts[:-1]:
                owner = getattr(owner, p, None)
                if owner is None:
                    break
            if owner is not None:
                _wrap(owner, parts[-1], f"{module_name.rsplit('.', 1)[-1]}:{dotted}")


def _snapshot() -> dict[str, Any]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    agent_stats: dict[str, Any] = {}
    return {"t": time.time(), "utime": ru.ru_utime, "stime": ru.ru_stime,
            "handles": {k: list(v) for k, v in list(_handles.items())},
            "funcs": {k: list(v) for k, v in list(_funcs.items())},
            "select": list(_select), "gc": _gc[:2], "gc_by_gen": {str(k): list(v) for k, v in _gc_by_gen.items()},
            **_loop_info, **agent_stats}


def _writer(path: str, stop: threading.Event) -> None:
    with open(path, "a", encoding="utf-8") as f:
        while not stop.wait(1.0):
            f.write(json.dumps(_snapshot()) + "\n")
            f.flush()
        f.write(json.dumps(_snapshot()) + "\n")


def _first(marker: str) -> bool:
    """True in the one process that creates `marker` (cProfile slows a process: profile only one agent)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


if ACTIVE:
    # The agent runs its loop with `asyncio.Runner` (io/event_loop.py: the loop is a choice), and asyncio.run
    # is a Runner too: hooking Runner.run catches both.
    _orig_run = asyncio.Runner.run

    def _run_profiled(self: asyncio.Runner, main: Any, **kwargs: Any) -> Any:
        _install_funcs()
        _install_gc()
        loop = self.get_loop()  # what `run` creates first anyway (the Runner's loop factory: asyncio's or uvloop)
        _loop_info["loop"] = loop_name(loop)
        if loop_is_attributed(loop):
            _install_handles()
            _loop_info["callbacks_attributed"] = True
        else:
            print(unattributed_warning(_loop_info["loop"]), file=sys.stderr, flush=True)
        os.makedirs(OUT_DIR, exist_ok=True)
        stop = threading.Event()
        thread = threading.Thread(target=_writer, args=(os.path.join(OUT_DIR, f"{os.getpid()}.jsonl"), stop),
                                  daemon=True)
        thread.start()
        prof = None
        if os.environ.get("GOSSIP_CPU_PROFILE_CPROFILE") and _first(os.path.join(OUT_DIR, "cprofile.claimed")):
            import cProfile
            prof = cProfile.Profile(time.thread_time)  # CPU time of the loop thread, not wall time
            prof.enable()
        try:
            return _orig_run(self, main, **kwargs)
        finally:
            if prof is not None:
                prof.disable()
                prof.dump_stats(os.path.join(OUT_DIR, f"{os.getpid()}.prof"))
            stop.set()
            thread.join(timeout=2)

    asyncio.Runner.run = _run_profiled  # type: ignore[method-assign,assignment]
