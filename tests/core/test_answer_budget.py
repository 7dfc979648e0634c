"""The answer budget's rules (core/answer_budget.py): bytes of peers' answers in flight, in all and per address."""

from __future__ import annotations

import pytest

from gossip_agent.core.answer_budget import (
    ADDRESS_ANSWER_BYTES,
    AGENT_ANSWER_BYTES,
    REFUSED_ADDRESS,
    REFUSED_BUDGET,
    AnswerBudget,
    HeldAnswer,
)

MIB = 1024 * 1024


def _held(value: HeldAnswer | str) -> HeldAnswer:
    assert isinstance(value, HeldAnswer), value
    return value


def test_the_defaults_are_32_mib_per_agent_and_8_per_address() -> None:
    assert (AGENT_ANSWER_BYTES, ADDRESS_ANSWER_BYTES) == (32 * MIB, 8 * MIB)
    budget = AnswerBudget()
    assert (budget.total, budget.per_address) == (AGENT_ANSWER_BYTES, ADDRESS_ANSWER_BYTES)


def test_one_address_gets_its_share_then_address_refusals() -> None:
    budget = AnswerBudget()
    first, second = _held(budget.take("a", 3 * MIB)), _held(budget.take("a", 3 * MIB))
    assert budget.take("a", 3 * MIB) == REFUSED_ADDRESS  # 9 MiB > 8 MiB
    assert budget.refused == {REFUSED_ADDRESS: 1, REFUSED_BUDGET: 0}
    assert (budget.used, budget.in_flight) == (6 * MIB, 2)
    _held(budget.take("b", 3 * MIB))  # another address has its own share
    budget.give_back(first)
    _held(budget.take("a", 3 * MIB))
    assert budget.by_address["a"] == 6 * MIB
    budget.give_back(second)
    assert budget.by_address["a"] == 3 * MIB


def test_the_agent_total_refuses_past_32_mib_whatever_the_address() -> None:
    budget = AnswerBudget()
    for i in range(10):
        _held(budget.take(f"10.0.0.{i}", 3 * MIB))
    assert budget.take("10.0.0.99", 3 * MIB) == REFUSED_BUDGET  # 33 MiB > 32 MiB
    assert budget.refused[REFUSED_BUDGET] == 1
    assert budget.room("10.0.0.99") == 2 * MIB


def test_an_address_holding_nothing_may_exceed_its_share_if_the_total_allows() -> None:
    budget = AnswerBudget()
    _held(budget.take("a", 16 * MIB))  # one big value stays fetchable
    _held(budget.take("b", 12 * MIB))
    assert budget.take("c", 5 * MIB) == REFUSED_BUDGET  # 33 MiB: the total decides, not the share
    assert budget.take("a", 1) == REFUSED_ADDRESS  # a holds more than its share: nothing more


def test_an_agent_holding_nothing_takes_any_single_answer() -> None:
    budget = AnswerBudget(total=4 * MIB, per_address=MIB)
    big = _held(budget.take("a", 40 * MIB))
    assert budget.take("b", 1) == REFUSED_BUDGET
    budget.give_back(big)
    assert (budget.used, budget.in_flight, dict(budget.by_address)) == (0, 0, {})


def test_give_back_is_idempotent() -> None:
    budget = AnswerBudget()
    held = _held(budget.take("a", MIB))
    budget.give_back(held)
    budget.give_back(held)
    assert (budget.used, budget.in_flight, dict(budget.by_address)) == (0, 0, {})


def test_settle_trues_up_an_estimate_under_the_same_rules() -> None:
    budget = AnswerBudget(total=10 * MIB, per_address=4 * MIB)
    other = _held(budget.take("a", 2 * MIB))
    held = _held(budget.take("a", 1024))
    assert budget.settle(held, 2 * MIB) is None  # 4 MiB for a: within its share
    assert (held.size, budget.by_address["a"], budget.used) == (2 * MIB, 4 * MIB, 4 * MIB)
    assert budget.settle(held, 3 * MIB) == REFUSED_ADDRESS  # 5 MiB for a
    assert held.size == 2 * MIB and budget.used == 4 * MIB  # unchanged on refusal
    budget.give_back(other)
    assert budget.settle(held, 9 * MIB) is None  # a holds nothing else now: its share may be exceeded
    budget.give_back(held)
    assert (budget.used, budget.in_flight) == (0, 0)
    with pytest.raises(ValueError, match="given back"):
        budget.settle(held, 1)


def test_room_leaves_out_the_estimate_an_answer_is_held_under() -> None:
    budget = AnswerBudget(total=10 * MIB, per_address=4 * MIB)
    assert budget.room("a") == 10 * MIB
    _held(budget.take("a", 3 * MIB))
    held = _held(budget.take("a", 4096))
    assert budget.room("a") == MIB - 4096
    assert budget.room("a", besides=held.size) == MIB
    assert budget.room("b") == 7 * MIB - 4096


def test_bad_sizes_and_bounds_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="positive"):
        AnswerBudget(total=0)
    with pytest.raises(ValueError, match="positive"):
        AnswerBudget(per_address=-1)
    with pytest.raises(ValueError, match=">= 0"):
        AnswerBudget().take("a", -1)


def test_count_refusal_counts_a_refusal_decided_elsewhere() -> None:
    budget = AnswerBudget(total=MIB, per_address=MIB)
    _held(budget.take("a", MIB))
    reason = budget.refusal("b", 1)
    assert reason == REFUSED_BUDGET and budget.refused[REFUSED_BUDGET] == 0  # refusal() counts nothing
    budget.count_refusal(reason)
    assert budget.refused[REFUSED_BUDGET] == 1
