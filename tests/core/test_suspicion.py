import math

from hypothesis import given
from hypothesis import strategies as st

from gossip_agent.core.suspicion import Suspicion, suspicion_min_timeout, suspicion_timeout


def test_min_timeout_follows_memberlist_formula() -> None:
    assert suspicion_min_timeout(4, 1, 1.0) == 4.0  # log10 clamps to 1 for small clusters
    assert suspicion_min_timeout(4, 10, 1.0) == 4.0
    assert math.isclose(suspicion_min_timeout(4, 100, 1.0), 8.0)
    assert math.isclose(suspicion_min_timeout(4, 1000, 0.5), 6.0)


def test_timeout_starts_at_max_and_reaches_min_at_expected_confirmations() -> None:
    assert suspicion_timeout(4.0, 24.0, 0, 2) == 24.0
    assert suspicion_timeout(4.0, 24.0, 2, 2) == 4.0
    assert 4.0 < suspicion_timeout(4.0, 24.0, 1, 2) < 24.0
    assert suspicion_timeout(4.0, 24.0, 0, 0) == 4.0  # no confirmations expected: min at once


@given(st.floats(0.1, 100), st.integers(1, 20), st.integers(0, 30))
def test_timeout_is_monotone_and_bounded(min_t: float, expected: int, c: int) -> None:
    max_t = 6 * min_t
    t = suspicion_timeout(min_t, max_t, c, expected)
    assert min_t - 1e-9 <= t <= max_t + 1e-9
    assert suspicion_timeout(min_t, max_t, c + 1, expected) <= t + 1e-9


def test_confirmations_count_distinct_accusers_other_than_the_first() -> None:
    s = Suspicion(incarnation=1, accuser="a", started=10.0, min_timeout=4.0, max_timeout=24.0, expected=2)
    assert s.deadline() == 34.0
    assert not s.confirm("a")
    assert s.confirm("b")
    assert not s.confirm("b")
    assert s.confirmations == 1
    assert s.confirm("c")
    assert s.deadline() == 14.0
    assert not s.confirm("d")  # beyond the expected number nothing changes
