"""Risk analysis of a return series and the cumulative-return chart of a backtest.

:func:`risk_analysis` has the meaning of Qlib's ``qlib.contrib.evaluate.risk_analysis``:
returns are accumulated by summation (``mode="sum"``, Qlib's default, so the curve is
not skewed exponentially) or by compounding (``mode="product"``).
"""

from __future__ import annotations

import io
import math
import re
from typing import Literal

import numpy as np
import pandas as pd

from taskroll.errors import TaskConfigError

FREQUENCY_SCALERS: dict[str, float] = {"minute": 240 * 238, "day": 238, "week": 50,
                                        "month": 12}
"""Periods per year for each frequency, as Qlib's ``risk_analysis`` (a year of 238 days)."""

_FREQUENCY = re.compile(r"^(\d*)(minute|min|day|d|week|w|month|mon)$")
_FREQUENCY_NAMES = {"min": "minute", "d": "day", "w": "week", "mon": "month"}


def parse_frequency(frequency: str) -> tuple[int, str]:
    """Split a Qlib frequency such as ``"day"``, ``"1day"`` or ``"5min"`` into ``(count, unit)``.

    Raises:
        TaskConfigError: For an unknown frequency.
    """
    match = _FREQUENCY.match(str(frequency).strip().lower())
    if match is None:
        raise TaskConfigError(f"unknown frequency {frequency!r}; use e.g. 'day', '1day', "
                              "'week', 'month' or '5min'")
    count = int(match.group(1) or 1)
    unit = _FREQUENCY_NAMES.get(match.group(2), match.group(2))
    return count, unit


def risk_analysis(returns: pd.Series, N: int | float | None = None,
                  freq: str | None = "day",
                  mode: Literal["sum", "product"] = "sum") -> pd.DataFrame:
    """Mean, std, annualised return, information ratio and max drawdown of ``returns``.

    Args:
        returns: Returns per period (e.g. daily excess returns).
        N: Periods per year; when given it wins over ``freq`` (silently: Qlib warns,
            on every call that passes ``N``, since its ``freq`` defaults to ``"day"``).
        freq: Frequency giving ``N`` when ``N`` is ``None`` (day: 238, week: 50,
            month: 12, minute: 240 * 238; divided by the count of ``"5min"`` etc.).
        mode: ``"sum"``: mean and sample std of the returns, annualised return
            ``mean * N``, max drawdown of the running sum. ``"product"``: geometric mean
            per period, std of the log returns, compounded annual return, max drawdown
            of the compounded curve as a fraction of its peak.

    Returns:
        A one-column frame (``"risk"``) indexed by ``mean``, ``std``,
        ``annualized_return``, ``information_ratio`` (``mean / std * sqrt(N)``; NaN when
        the std is 0 or undefined, where Qlib divides by zero) and ``max_drawdown``.

    Raises:
        TaskConfigError: For neither ``N`` nor ``freq``, or an unknown mode.
    """
    if N is None:
        if freq is None:
            raise TaskConfigError("risk_analysis needs N (periods per year) or freq")
        count, unit = parse_frequency(freq)
        N = FREQUENCY_SCALERS[unit] / count
    values = returns.astype(float)
    if mode == "sum":
        mean = values.mean()
        std = values.std(ddof=1)
        annualized_return = mean * N
        cumulative = values.cumsum()
        max_drawdown = (cumulative - cumulative.cummax()).min()
    elif mode == "product":
        curve = (1 + values).cumprod()
        mean = curve.iloc[-1] ** (1 / len(values)) - 1
        std = np.log(1 + values).std(ddof=1)
        annualized_return = curve.iloc[-1] ** (N / len(values)) - 1
        max_drawdown = (curve / curve.cummax() - 1).min()
    else:
        raise TaskConfigError(f"risk_analysis: mode must be 'sum' or 'product', got {mode!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean / std * math.sqrt(N) if std and np.isfinite(std) else math.nan
    data = {"mean": mean, "std": std, "annualized_return": annualized_return,
            "information_ratio": ratio, "max_drawdown": max_drawdown}
    return pd.Series({name: float(value) for name, value in data.items()}).to_frame("risk")


def excess_return_analysis(report: pd.DataFrame, freq: str = "1day") -> pd.DataFrame:
    """Qlib's ``port_analysis`` frame: risk of the excess return without and with cost.

    Args:
        report: A daily report with ``return``, ``bench`` and ``cost`` columns.
        freq: Frequency for :func:`risk_analysis`.

    Returns:
        A frame indexed by ``(analysis, metric)`` with one ``"risk"`` column, analyses
        ``excess_return_without_cost`` (return - bench) and ``excess_return_with_cost``
        (return - bench - cost).
    """
    analysis = {
        "excess_return_without_cost": risk_analysis(report["return"] - report["bench"],
                                                    freq=freq),
        "excess_return_with_cost": risk_analysis(
            report["return"] - report["bench"] - report["cost"], freq=freq),
    }
    return pd.concat(analysis)


def cumulative_return_png(report: pd.DataFrame, title: str = "cumulative return") -> bytes:
    """Draw the cumulative (summed) returns of a daily report as a PNG.

    Lines: the benchmark, the portfolio without cost, and the excess return without and
    with cost. Uses a :class:`~matplotlib.figure.Figure` with the Agg canvas, never
    pyplot's global state.

    Returns:
        The PNG bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only when plotting
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    curves = {
        "benchmark": report["bench"],
        "portfolio (without cost)": report["return"],
        "excess (without cost)": report["return"] - report["bench"],
        "excess (with cost)": report["return"] - report["bench"] - report["cost"],
    }
    for label, series in curves.items():
        axes.plot(report.index, series.cumsum(), label=label)
    axes.set_title(title)
    axes.set_ylabel("cumulative return (sum)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
