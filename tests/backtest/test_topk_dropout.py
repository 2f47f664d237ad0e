"""TopkDropoutStrategy's decision: Qlib's n_drop semantics, worked by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from taskroll.backtest import Decision, TopkDropoutStrategy
from taskroll.errors import TaskConfigError


def decide(scores: dict[str, float], held: list[str], topk: int = 3,
           n_drop: int = 2) -> Decision:
    return TopkDropoutStrategy(topk=topk, n_drop=n_drop).decide(pd.Series(scores), held)


def test_a_held_name_is_never_swapped_for_a_worse_one() -> None:
    # last = A(5), C(3), B(1); today = best 2 not held = D(4), E(2);
    # of A, D, C, E, B the worst 2 are E and B: only B is held, so only B is sold,
    # and one name (D) is bought: len(sell) + topk - len(last) = 1.
    decision = decide({"A": 5, "B": 1, "C": 3, "D": 4, "E": 2}, ["A", "B", "C"])
    assert decision == Decision(sell=["B"], buy=["D"])


def test_n_drop_worst_held_names_are_replaced_by_the_best_not_held() -> None:
    # last = A(5), C(3), B(1); today = D(4), E(3.5); worst 2 of all = C, B: both sold,
    # D and E bought.
    decision = decide({"A": 5, "B": 1, "C": 3, "D": 4, "E": 3.5}, ["A", "B", "C"])
    assert decision == Decision(sell=["C", "B"], buy=["D", "E"])


def test_filling_an_empty_or_short_portfolio() -> None:
    scores = {"A": 5, "B": 1, "C": 3, "D": 4}
    assert decide(scores, []) == Decision(sell=[], buy=["A", "D", "C"])
    # One held (B, the worst): today = best 4 not held (n_drop + topk - 1) = A, D, C;
    # worst 2 of B, A, D, C = C, B: B sold; buy = today[:1 + 3 - 1] = A, D, C.
    assert decide(scores, ["B"]) == Decision(sell=["B"], buy=["A", "D", "C"])


def test_a_held_name_without_a_score_is_sold_first() -> None:
    decision = decide({"A": 5, "B": 1, "D": 4}, ["A", "B", "Z"], n_drop=1)
    assert decision == Decision(sell=["Z"], buy=["D"])


def test_n_drop_zero_keeps_the_portfolio() -> None:
    assert decide({"A": 5, "B": 1, "C": 3, "D": 4}, ["A", "B", "C"], n_drop=0) \
        == Decision(sell=[], buy=[])


def test_only_tradable_skips_untradable_names() -> None:
    strategy = TopkDropoutStrategy(topk=2, n_drop=1, only_tradable=True)
    decision = strategy.decide(pd.Series({"A": 5, "B": 4, "C": 3}), [],
                               tradable=lambda name: name != "A")
    assert decision == Decision(sell=[], buy=["B", "C"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"topk": 0, "n_drop": 1}, "topk"),
    ({"topk": 2.5, "n_drop": 1}, "topk"),
    ({"topk": 2, "n_drop": -1}, "n_drop"),
    ({"topk": 2, "n_drop": 1, "method_sell": "random"}, "method_sell"),
    ({"topk": 2, "n_drop": 1, "method_buy": "random"}, "method_buy"),
    ({"topk": 2, "n_drop": 1, "risk_degree": 1.5}, "risk_degree"),
])
def test_bad_strategy_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        TopkDropoutStrategy(**kwargs)  # type: ignore[arg-type]
