"""risk_analysis against hand-computed values (Qlib's meaning, both accumulation modes)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from taskroll.backtest import excess_return_analysis, risk_analysis
from taskroll.backtest.report import cumulative_return_png, parse_frequency
from taskroll.errors import TaskConfigError

RETURNS = pd.Series([0.01, -0.02, 0.03, 0.0])
# mean = 0.02 / 4 = 0.005; deviations 0.005, -0.025, 0.025, -0.005: squares sum to
# 0.0013, sample variance 0.0013 / 3, std = sqrt(0.0013 / 3).
STD = math.sqrt(0.0013 / 3)


def test_sum_mode_by_hand() -> None:
    risk = risk_analysis(RETURNS, N=252)["risk"]
    assert risk["mean"] == pytest.approx(0.005)
    assert risk["std"] == pytest.approx(STD)
    assert risk["annualized_return"] == pytest.approx(0.005 * 252)
    assert risk["information_ratio"] == pytest.approx(0.005 / STD * math.sqrt(252))
    # Running sum 0.01, -0.01, 0.02, 0.02; peak 0.01 then 0.02: deepest fall -0.02.
    assert risk["max_drawdown"] == pytest.approx(-0.02)


def test_product_mode_by_hand() -> None:
    risk = risk_analysis(RETURNS, N=252, mode="product")["risk"]
    final = 1.01 * 0.98 * 1.03  # the compounded curve's last value
    assert risk["mean"] == pytest.approx(final ** 0.25 - 1)
    logs = [math.log(1.01), math.log(0.98), math.log(1.03), 0.0]
    assert risk["std"] == pytest.approx(pd.Series(logs).std(ddof=1))
    assert risk["annualized_return"] == pytest.approx(final ** (252 / 4) - 1)
    assert risk["max_drawdown"] == pytest.approx(1.01 * 0.98 / 1.01 - 1)


def test_frequency_gives_qlibs_scaler() -> None:
    # Qlib scales a day by 238 (its year of trading days), a week by 50, a month by 12.
    assert risk_analysis(RETURNS)["risk"]["annualized_return"] == pytest.approx(0.005 * 238)
    assert risk_analysis(RETURNS, freq="week")["risk"]["annualized_return"] \
        == pytest.approx(0.005 * 50)
    assert parse_frequency("1day") == (1, "day") and parse_frequency("5min") == (5, "minute")


def test_constant_returns_have_no_information_ratio() -> None:
    risk = risk_analysis(pd.Series([0.01, 0.01, 0.01]), N=252)["risk"]
    assert math.isnan(risk["information_ratio"]) and risk["max_drawdown"] == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"N": None, "freq": None}, "needs N"),
    ({"freq": "fortnight"}, "unknown frequency"),
    ({"mode": "log"}, "mode"),
])
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        risk_analysis(RETURNS, **kwargs)  # type: ignore[arg-type]


def test_excess_return_analysis_and_chart() -> None:
    dates = pd.date_range("2021-01-04", periods=4, freq="B")
    report = pd.DataFrame({"return": [0.02, -0.01, 0.04, 0.01], "bench": [0.01] * 4,
                           "cost": [0.001, 0.0, 0.001, 0.0]}, index=dates)
    analysis = excess_return_analysis(report)
    without = analysis.loc["excess_return_without_cost", "risk"]
    with_cost = analysis.loc["excess_return_with_cost", "risk"]
    assert without["mean"] == pytest.approx((0.01 - 0.02 + 0.03 + 0.0) / 4)
    assert with_cost["mean"] == pytest.approx((0.009 - 0.02 + 0.029 + 0.0) / 4)
    png = cumulative_return_png(report)
    assert png.startswith(b"\x89PNG")
