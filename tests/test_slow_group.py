"""The slow group's rules (tests/conftest.py), run on a throwaway test file with pytest's own pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    slow: long\n"

TESTS = """
import pytest

@pytest.mark.slow(quiet_seconds=2)
def test_big(request):
    print("TIMEOUT", request.node.get_closest_marker("timeout").args[0])

def test_small():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_group=TESTS)
    return pytester


def test_default_run_skips_the_slow_group_and_says_how_to_run_it(project: pytest.Pytester) -> None:
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*slow group: run with `scripts/test --slow`*`scripts/test -m slow`*"])


def test_m_slow_runs_only_the_slow_group_under_budget_times_quiet_seconds(project: pytest.Pytester) -> None:
    result = project.runpytest("-m", "slow", "-s")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*TIMEOUT 120.0"])  # the default CPU budget, 10 x 2 s, x6 in wall time
    result = project.runpytest("-m", "slow", "--slow-budget", "3", "-s")
    result.stdout.fnmatch_lines(["*TIMEOUT 36.0"])  # CI's


def test_slow_flag_runs_everything(project: pytest.Pytester) -> None:
    project.runpytest("--slow").assert_outcomes(passed=2)


def test_a_slow_test_must_state_its_cost(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_bad="import pytest\n\n@pytest.mark.slow\ndef test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*quiet_seconds*"])


BUDGETED = """
import time
import pytest

@pytest.mark.slow(quiet_seconds=0.5)
def test_burns_cpu():
    t = time.process_time()
    while time.process_time() - t < 5:
        pass

@pytest.mark.slow(quiet_seconds=0.5)
def test_swallows_the_budget():
    t = time.process_time()
    while time.process_time() - t < 1.5:
        try:
            while time.process_time() - t < 1.5:
                pass
        except BaseException:  # code under test that catches everything, the budget's exception included
            pass

@pytest.mark.slow(quiet_seconds=0.5)
def test_waits_like_a_starved_test():
    time.sleep(1.2)  # over the 0.5 s CPU budget in wall time, but no CPU: a busy machine's waiting for a core
"""


def test_the_budget_is_cpu_time_so_waiting_for_a_core_does_not_count(pytester: pytest.Pytester) -> None:
    # The wall-clock backstop made wide, so only the CPU budget decides (on a busy machine 0.5 s of CPU can take
    # longer than 6 x 0.5 s).
    assert "BUSY_WALL_FACTOR = 6.0" in CONFTEST
    pytester.makeconftest(CONFTEST.replace("BUSY_WALL_FACTOR = 6.0", "BUSY_WALL_FACTOR = 200.0"))
    pytester.makeini(INI)
    pytester.makepyfile(test_budget=BUDGETED)
    result = pytester.runpytest_subprocess("-m", "slow", "--slow-budget", "1")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*test_burns_cpu*CPU budget of 0.5 s exceeded*"])
    result.stdout.fnmatch_lines(["*_ test_swallows_the_budget _*",
                                 "CPU budget of 0.5 s exceeded*the test's code caught the exception and went on"])
