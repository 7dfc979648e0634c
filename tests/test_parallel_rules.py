"""The rules that keep pytest-xdist workers apart (tests/conftest.py), checked directly and on a throwaway project."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tests.conftest import MIN_PORT_SLICE, PORT_SLICES_END, PORT_SLICES_START, work_unit, worker_port_slice

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    slow: long\n"


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_each_worker_has_its_own_port_slice_below_the_ephemeral_range(count: int) -> None:
    slices = [worker_port_slice(f"gw{i}", count) for i in range(count)]
    for (_, end), (next_start, _) in itertools.pairwise(slices):
        assert end <= next_start
    assert slices[0][0] == PORT_SLICES_START and slices[-1][1] <= PORT_SLICES_END < 32768
    assert all(end - start >= 1100 for start, end in slices)  # the pid spread (< 1000) plus a block fits


def test_a_module_is_one_unit_and_modules_sharing_a_port_range_are_one() -> None:
    assert work_unit("tests/agent/test_processes.py::test_a") == work_unit("tests/agent/test_processes.py::test_b")
    assert work_unit("tests/agent/test_processes.py::test_a") != work_unit("tests/agent/test_monitor.py::test_a")
    assert (work_unit("tests/bench/test_bench_smoke.py::test_x")
            == work_unit("tests/bench/test_bench_load.py::test_y[p]"))


def test_a_modules_tests_run_on_one_worker_in_file_order(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    body = "".join(f"def test_{i}():\n    pass\n\n" for i in range(6))
    pytester.makepyfile(test_one=body, test_two=body, test_three=body)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadscope", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=18)
    ran: dict[str, list[tuple[str, str]]] = {}
    for line in result.outlines:
        match = re.match(r"\[(gw\d)\] .*PASSED (test_\w+)\.py::(test_\d)", line)
        if match:
            ran.setdefault(match[2], []).append((match[1], match[3]))
    assert set(ran) == {"test_one", "test_two", "test_three"}, result.outlines
    for module, runs in ran.items():
        assert len({worker for worker, _ in runs}) == 1, (module, runs)
        assert [test for _, test in runs] == [f"test_{i}" for i in range(6)], (module, runs)


def test_scripts_test_distributes_by_module() -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "test").read_text()
    assert re.search(r"pytest -n \S+ --dist loadscope ", script), "scripts/test must keep --dist loadscope"


def test_single_free_ports_come_from_the_workers_own_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under xdist, free_port() draws from the upper half of the worker's slice, never the ephemeral range
    the other worker's client sockets share (CI once lost that race: "address already in use")."""
    from tests.conftest import worker_port_slice
    from tests.support.kube_emulator import PORT_RANGE_ENV, free_port

    for count in (2, 4):
        start, end = worker_port_slice(f"gw{count - 1}", count)
        assert end - start >= MIN_PORT_SLICE + 500
        monkeypatch.setenv(PORT_RANGE_ENV, f"{start + MIN_PORT_SLICE}-{end}")
        ports = {free_port() for _ in range(20)}
        assert all(start + MIN_PORT_SLICE <= p < end < 32768 for p in ports), ports


def test_free_ports_in_a_row_are_all_different(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pick several ports before binding any (tests/operator/test_lifecycle.hanging_agents: twelve); drawn
    at random from a worker's slice two could be the same port (CI: "address already in use")."""
    from tests.conftest import worker_port_slice
    from tests.support.kube_emulator import PORT_RANGE_ENV, free_port

    start, end = worker_port_slice("gw0", 2)
    monkeypatch.setenv(PORT_RANGE_ENV, f"{start + MIN_PORT_SLICE}-{end}")
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
