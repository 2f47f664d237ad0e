"""The daily top-k dropout backtest against hand-computed holdings, trades, costs and returns."""

from __future__ import annotations

import pandas as pd
import pytest

from taskroll.backtest import Exchange, TopkDropoutStrategy, backtest_daily
from taskroll.errors import TaskConfigError

DATES = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"])
D0, D1, D2, D3 = DATES


def bars(closes: dict[str, list[float]], dates: pd.DatetimeIndex = DATES) -> pd.DataFrame:
    """A bar panel with ``close`` (and ``open`` one below the close) from per-name closes."""
    rows = [(date, name, close) for name, values in closes.items()
            for date, close in zip(dates, values, strict=True)]
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "close"])
    frame["open"] = frame["close"] - 1
    return frame.set_index(["datetime", "instrument"]).sort_index()


def signal(scores: dict[pd.Timestamp, dict[str, float]]) -> pd.Series:
    rows = [(date, name, value) for date, values in scores.items()
            for name, value in values.items()]
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "score"])
    return frame.set_index(["datetime", "instrument"])["score"]


CLOSES = {"A": [10, 11, 11, 12], "B": [20, 20, 22, 22], "C": [5, 5, 5, 6], "D": [8, 8, 8, 8]}
SCORES = {D0: {"A": 3, "B": 2, "C": 1, "D": 0},
          D1: {"C": 3, "A": 2, "D": 1, "B": 0},
          D2: {"A": 3, "C": 2, "B": 1, "D": 0}}


def run_hand_case(**exchange_kwargs: float) -> tuple[pd.DataFrame, dict[pd.Timestamp, pd.DataFrame]]:
    settings = {"open_cost": 0.001, "close_cost": 0.002, "min_cost": 0.0, **exchange_kwargs}
    exchange = Exchange(bars(CLOSES), deal_price="close", **settings)
    strategy = TopkDropoutStrategy(topk=2, n_drop=1, risk_degree=0.5)
    return backtest_daily(signal(SCORES), exchange, strategy, D0, D3, account=1000.0,
                          benchmark="A")


def test_the_hand_computed_case() -> None:
    report, positions = run_hand_case()
    # D0: the scores of the day before D0 do not exist: no trade, nothing changes.
    assert report.loc[D0, "account"] == 1000.0
    assert report.loc[D0, ["return", "cost", "turnover"]].tolist() == [0.0, 0.0, 0.0]
    assert positions[D0].empty
    # D1 (scores of D0): nothing held; today = best 3 (n_drop + topk - 0) = A, B, C;
    # buy = today[:topk] = A, B with 1000 * 0.5 / 2 = 250 each at the close (11, 20).
    # Costs 250 * 0.001 = 0.25 each; cash 1000 - 500 - 0.5 = 499.5; holdings worth 500.
    assert report.loc[D1, "cash"] == pytest.approx(499.5)
    assert report.loc[D1, "account"] == pytest.approx(999.5)
    assert report.loc[D1, "return"] == pytest.approx(0.0, abs=1e-15)  # bought at the close
    assert report.loc[D1, "cost"] == pytest.approx(0.5 / 1000)
    assert report.loc[D1, "turnover"] == pytest.approx(500 / 1000)
    assert positions[D1]["amount"].to_dict() == pytest.approx({"A": 250 / 11, "B": 12.5})
    # D2 (scores of D1: C 3, A 2, D 1, B 0): held A, B; today = [C]; of A, B, C the
    # worst is B: sell B (12.5 at 22 = 275, cost 0.55), buy C with
    # (499.5 + 275 - 0.55) * 0.5 = 386.975 at 5 (cost 0.386975).
    # Return before cost: B earned 12.5 * (22 - 20) = 25 on an account of 999.5.
    cash_d2 = 499.5 + 275 - 0.55 - 386.975 - 0.386975
    assert report.loc[D2, "cash"] == pytest.approx(cash_d2)
    assert report.loc[D2, "return"] == pytest.approx(25 / 999.5)
    assert report.loc[D2, "cost"] == pytest.approx((0.55 + 0.386975) / 999.5)
    assert report.loc[D2, "turnover"] == pytest.approx((275 + 386.975) / 999.5)
    assert positions[D2]["amount"].to_dict() == pytest.approx({"A": 250 / 11, "C": 77.395})
    # D3 (scores of D2: A 3, C 2, B 1): of A, C, B the worst is B, which is not held,
    # so nothing is sold and nothing bought. A gains 250/11 * 1, C gains 77.395 * 1.
    account_d2 = cash_d2 + 250 + 386.975
    assert report.loc[D2, "account"] == pytest.approx(account_d2)
    assert report.loc[D3, "turnover"] == 0.0 and report.loc[D3, "cost"] == 0.0
    assert report.loc[D3, "return"] == pytest.approx((250 / 11 + 77.395) / account_d2)
    assert positions[D3]["count_day"].to_dict() == {"A": 3, "C": 2}
    # Benchmark A: close-to-close returns 0 (first day), 11/10 - 1, 0, 12/11 - 1.
    assert report["bench"].tolist() == pytest.approx([0.0, 0.1, 0.0, 12 / 11 - 1])
    assert report.loc[D3, "total_cost"] == pytest.approx(0.5 + 0.55 + 0.386975)


def test_min_cost_applies_per_executed_trade() -> None:
    report, _ = run_hand_case(min_cost=1.0)
    # D1: two buys of 250 cost max(0.25, 1) = 1 each; D2: max(0.55, 1) + max(0.386975, 1).
    assert report.loc[D1, "cost"] == pytest.approx(2 / 1000)
    assert report.loc[D1, "cash"] == pytest.approx(498.0)
    assert report.loc[D2, "cost"] == pytest.approx(2 / 998.0)
    assert report.loc[D3, "cost"] == 0.0  # no trade, no minimum cost


def test_deal_price_open_earns_from_the_open() -> None:
    exchange = Exchange(bars(CLOSES), deal_price="$open", open_cost=0.0, close_cost=0.0,
                        min_cost=0.0)
    strategy = TopkDropoutStrategy(topk=2, n_drop=1, risk_degree=0.5)
    report, positions = backtest_daily(signal(SCORES), exchange, strategy, D0, D1,
                                       account=1000.0)
    # D1: buy A at the open 10 and B at 19 with 250 each; at the close A is worth
    # 25 * 11 = 275 and B 250/19 * 20: the day's return is (25 + 250/19) / 1000.
    assert positions[D1]["amount"].to_dict() == pytest.approx({"A": 25.0, "B": 250 / 19})
    assert report.loc[D1, "return"] == pytest.approx((25 + 250 / 19) / 1000)


LIMIT_CLOSES = {"A": [10, 10, 10, 10], "B": [10, 10, 9, 9], "C": [10, 10, 11, 11]}
LIMIT_SCORES = {D0: {"A": 2, "B": 3, "C": 1}, D1: {"C": 3, "A": 2, "B": 1}}


@pytest.mark.parametrize(("limit_threshold", "held_on_d2"), [
    # B falls 10% (limit-down: cannot be sold), C rises 10% (limit-up: cannot be bought).
    (0.095, {"A", "B"}),
    # Without limits B is sold at 9 and C bought at 11.
    (None, {"A", "C"}),
])
def test_limit_up_and_limit_down_exclusion(limit_threshold: float | None,
                                           held_on_d2: set[str]) -> None:
    exchange = Exchange(bars(LIMIT_CLOSES), limit_threshold=limit_threshold, open_cost=0.0,
                        close_cost=0.0, min_cost=0.0)
    strategy = TopkDropoutStrategy(topk=2, n_drop=1)
    report, positions = backtest_daily(signal(LIMIT_SCORES), exchange, strategy, D0, D2,
                                       account=1000.0)
    assert set(positions[D1].index) == {"A", "B"}  # D1: buy the best two of D0
    assert set(positions[D2].index) == held_on_d2
    assert (report.loc[D2, "turnover"] == 0.0) == (limit_threshold is not None)


def test_limits_per_direction_when_not_forbidding_all_trades() -> None:
    exchange = Exchange(bars(LIMIT_CLOSES), limit_threshold=0.095)
    assert not exchange.is_tradable("B", D2, "sell") and exchange.is_tradable("B", D2, "buy")
    assert not exchange.is_tradable("C", D2, "buy") and exchange.is_tradable("C", D2, "sell")
    assert not exchange.is_tradable("B", D2) and not exchange.is_tradable("C", D2)
    assert exchange.is_tradable("A", D2)


def test_a_missing_close_is_a_suspension_valued_at_the_last_close() -> None:
    closes = {"A": [10, 10, float("nan"), 12], "B": [10, 10, 10, 10]}
    exchange = Exchange(bars(closes), open_cost=0.0, close_cost=0.0, min_cost=0.0)
    strategy = TopkDropoutStrategy(topk=1, n_drop=1, risk_degree=1.0)
    scores = {D0: {"A": 2, "B": 1}, D1: {"B": 2, "A": 1}}
    report, positions = backtest_daily(signal(scores), exchange, strategy, D0, D3,
                                       account=100.0)
    # D1 buys A (100 at 10); D2 wants to swap A for B, but A is suspended: kept, worth 100.
    assert list(positions[D2].index) == ["A"]
    assert positions[D2].loc["A", "price"] == 10
    assert report.loc[D2, "account"] == pytest.approx(100.0)
    assert report.loc[D3, "return"] == pytest.approx(0.2)


def test_hold_thresh_keeps_a_name_held_too_briefly() -> None:
    exchange = Exchange(bars(CLOSES), open_cost=0.0, close_cost=0.0, min_cost=0.0)
    strategy = TopkDropoutStrategy(topk=2, n_drop=1, risk_degree=0.5, hold_thresh=2)
    _, positions = backtest_daily(signal(SCORES), exchange, strategy, D0, D2, account=1000.0)
    # On D2, B has been held one day (< 2): it is kept. As in Qlib, the buy list was
    # decided before the hold check, so C is still bought and the portfolio holds 3 names.
    assert set(positions[D2].index) == {"A", "B", "C"}
    assert positions[D2]["count_day"].to_dict() == {"A": 2, "B": 2, "C": 1}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"account": 0}, "account"),
    ({"start_time": "2030-01-01"}, "no trading day"),
    ({"benchmark": "SH000300"}, "not an instrument"),
    ({"benchmark": 3}, "benchmark must be"),
])
def test_bad_backtest_arguments(kwargs: dict[str, object], message: str) -> None:
    exchange = Exchange(bars(CLOSES))
    with pytest.raises(TaskConfigError, match=message):
        backtest_daily(signal(SCORES), exchange, TopkDropoutStrategy(topk=2, n_drop=1),
                       **kwargs)  # type: ignore[arg-type]
