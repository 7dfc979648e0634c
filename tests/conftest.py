"""The `slow` group: long simulations that prove a property at full scale (1,000 nodes and the like).

The default run (`scripts/test`) skips them, with a reason that says how to run them, so the suite stays
within the time the README states on a busy 2-core machine; each has a smaller sibling in the default run
that proves the same property. They run when asked for: `scripts/test --slow` (everything), or a marker
expression that names them (`scripts/test -m slow`: only them).

Each slow test says what it costs: `@pytest.mark.slow(quiet_seconds=S)`, its CPU seconds (setup included)
on a quiet machine. Its budget is `--slow-budget` times that, in CPU seconds of the test's process (a CPU-time
timer, ITIMER_PROF, which a busy machine does not run down): CI (.ci/run) passes 3, so a regression that makes a
simulation 3x slower fails there, however many other runs share the cores; the default, 10, leaves room for a
slower laptop. A wall-clock timeout of BUSY_WALL_FACTOR times the budget backs it up (a hang, or work done in
child processes, which the CPU timer does not see): a test given a sixth of a core (load ~12 on 2 cores) still
fits (the CI rehearsal at load 5-10: a 1,000-member simulation of 80 s of CPU took over 240 s; the 25,000-packet
fuzzer, 30 s of CPU, over 270 s at load ~12). Passing runs take no longer for it.

Parallel runs: `scripts/test` runs the suite on pytest-xdist workers (`-n`, `--dist loadscope`). What tests
share, this file keeps apart or together, so no test depends on which worker runs it or what runs beside it:
- the unit of work is a test module: its tests run on one worker, in file order, as in a serial run (a module's
  tests may share a module-scoped fixture, such as a set of running agents, and rely on the ones before them);
- SHARED_RESOURCE_GROUPS joins modules that use the same fixed resource (a port range of their own) into one
  unit, so they never run at the same time;
- each worker gets its own slice of loopback ports for `free_port_block` (real agents on 127.0.0.1), below the
  kernel's ephemeral range, so two workers never pick the same block between checking and binding it;
- the modules with the longest tests (RUN_FIRST) are handed out first, so the run does not end on one worker
  still busy with a long module while the other waits.
Namespace tests need nothing: every testbed's names carry its process id and a random part.
(Not `--dist loadgroup` with xdist_group marks: xdist 3.8 groups by rewriting `item._nodeid`, which pytest 9.2's
`nodeid` no longer reads, so the marks were silently ignored; tests/test_parallel_rules.py checks the grouping.)
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests check properties, not speed: hypothesis' per-example deadline (200 ms) and its "too slow" health
# checks fail at random on a busy 2-core machine. One profile for the whole suite turns them off; the per-test
# `@settings(max_examples=...)` still bound the work.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])
settings.load_profile("suite")

pytest_plugins = ("pytester",)  # tests/test_slow_group.py checks these rules on a throwaway project

SLOW_HINT = "slow group: run with `scripts/test --slow` (all tests) or `scripts/test -m slow` (only these)"
DEFAULT_SLOW_BUDGET = 10.0
BUSY_WALL_FACTOR = 6.0  # wall-clock timeout = this x the CPU budget: a sixth of a core is enough


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (long full-scale simulations); `-m slow` runs only them")
    parser.addoption("--slow-budget", type=float, default=DEFAULT_SLOW_BUDGET, metavar="FACTOR",
                     help="timeout of each slow test = FACTOR x its quiet-machine seconds "
                          f"(default {DEFAULT_SLOW_BUDGET:g}; CI uses 3)")


def slow_requested(config: pytest.Config) -> bool:
    """`--slow`, or a `-m` expression that mentions the marker (`-m slow`, `-m "slow and not netns"`)."""
    return bool(config.getoption("--slow")) or "slow" in (config.getoption("markexpr") or "")


def quiet_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    assert marker is not None
    seconds = marker.kwargs.get("quiet_seconds")
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise pytest.UsageError(f"{item.nodeid}: write @pytest.mark.slow(quiet_seconds=S), S its measured CPU time")
    return float(seconds)


# Worker port slices: [PORT_SLICES_START, PORT_SLICES_END) split between the workers, below the ephemeral range
# (32768+, where `free_port()` and client sockets land) and below the bench smoke runs' own ranges (22000+).
PORT_SLICES_START = 10000
PORT_SLICES_END = 18000
MIN_PORT_SLICE = 1100  # free_port_block adds up to 999 to its start (pid spread), and blocks are a few ports
# (a slice is at least MIN_PORT_SLICE + 900 wide at the most workers scripts/test starts, 4: single free ports
# take the part above MIN_PORT_SLICE)

# Modules that take a fixed resource of their own; each set is one unit of work (one worker, one at a time).
SHARED_RESOURCE_GROUPS = {
    # Both benches pick agent ports from fixed ranges (22000 + pid % 5000, 27000 + pid % 3000) that can meet.
    "bench-port-ranges": ("tests/bench/test_bench_smoke.py", "tests/bench/test_bench_load.py"),
}
# Handed out first, in this order (measured: simulations, image install steps, real agents in namespaces,
# hostile peers, benches, agent processes and operator processes take minutes; the rest are many short tests
# that fill the gaps at the end).
RUN_FIRST = ("tests/sim/", "tests/chart/", "tests/chaos/", "tests/hostile/", "tests/bench/", "tests/agent/",
             "tests/operator/")


def worker_port_slice(worker: str, count: int) -> tuple[int, int]:
    """The ports worker `gw<k>` of `count` may hand out: its own slice, so workers never race for one block."""
    index = int(worker.removeprefix("gw"))
    width = max(MIN_PORT_SLICE, (PORT_SLICES_END - PORT_SLICES_START) // max(count, 1))
    start = PORT_SLICES_START + index * width
    return start, start + width


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        from gossip_agent.cli import cluster

        # Every caller (the tests, tests/hostile/peer_support.py, bench/bench_state.py) uses the defaults.
        start, end = worker_port_slice(worker, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        cluster.free_port_block.__defaults__ = (start, end)
        # Single ports (tests/support/kube_emulator.free_port) from the rest of the slice, above the blocks.
        # (tests/test_parallel_rules.py runs a copy of this file in a project without tests/support.)
        try:
            from tests.support.kube_emulator import PORT_RANGE_ENV
        except ImportError:
            return
        os.environ[PORT_RANGE_ENV] = f"{start + MIN_PORT_SLICE}-{end}"


def work_unit(nodeid: str) -> str:
    """What runs together on one worker: the test's module, or the resource group that module belongs to."""
    module = nodeid.split("::", 1)[0]
    return next((group for group, modules in SHARED_RESOURCE_GROUPS.items() if module in modules), module)


def run_first_rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(RUN_FIRST) if item.nodeid.startswith(prefix)), len(RUN_FIRST))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` with work_unit() as the scope, in collection order (RUN_FIRST first)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # xdist would put the modules with most tests first instead
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike (stable), so their collections match
        items.sort(key=run_first_rank)
    run_slow = slow_requested(config)
    budget = float(config.getoption("--slow-budget"))
    skip = pytest.mark.skip(reason=SLOW_HINT)
    for item in items:
        if item.get_closest_marker("slow") is None:
            continue
        seconds = quiet_seconds(item)
        if run_slow:
            item.add_marker(pytest.mark.timeout(BUSY_WALL_FACTOR * budget * seconds))
            item.stash[CPU_BUDGET] = budget * seconds
        else:
            item.add_marker(skip)


CPU_BUDGET = pytest.StashKey[float]()
CPU_BUDGET_EXCEEDED = pytest.StashKey[str]()  # set when the budget ran out; cleared once a report says so


def budget_message(limit: float) -> str:
    return f"CPU budget of {limit:g} s exceeded (--slow-budget x quiet_seconds of CPU)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A slow test's CPU budget (setup, call and teardown), counted by the process CPU-time timer: it fails the
    test once the process has used that much CPU, however long a busy machine made it wait for a core."""
    limit = item.stash.get(CPU_BUDGET, None)
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def over_budget(signum: int, frame: Any) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        # Remembered as well as raised: code under test that catches BaseException (a retry loop, a cleanup
        # that swallows everything) would otherwise let an over-budget test pass (pytest_runtest_makereport).
        item.stash[CPU_BUDGET_EXCEEDED] = budget_message(limit)
        pytest.fail(budget_message(limit), pytrace=True)

    previous = signal.signal(signal.SIGPROF, over_budget)
    signal.setitimer(signal.ITIMER_PROF, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A phase that passed after its slow test ran out of CPU budget is a failure: the budget's exception was
    swallowed by the code under test (the first report after the timer fired says so, once)."""
    outcome = yield
    message = item.stash.get(CPU_BUDGET_EXCEEDED, None)
    if message is None:
        return
    report = outcome.get_result()
    if report.failed:  # the budget's own failure, or another: either way reported
        del item.stash[CPU_BUDGET_EXCEEDED]
        return
    if report.passed:
        del item.stash[CPU_BUDGET_EXCEEDED]
        report.outcome = "failed"
        report.longrepr = f"{message}; the test's code caught the exception and went on"
