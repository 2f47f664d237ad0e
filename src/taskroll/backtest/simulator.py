"""The daily backtest loop: a signal, a top-k dropout strategy, an exchange, one account.

Meaning as Qlib's daily ``backtest`` with ``SimulatorExecutor(time_per_step="day")``:
on trading day ``t`` the strategy reads the scores dated ``t-1`` (the previous day of
the bars' calendar; no scores: no trade), sells, then buys, at the day's deal price;
holdings are valued at the day's close (the last known close while suspended).

The daily report has Qlib's columns, each a fraction of the previous day's account
value ``A_{t-1}`` (the initial cash on the first day):

* ``return`` = (``A_t`` - ``A_{t-1}`` + cost of day ``t``) / ``A_{t-1}``: the return
  before costs; ``cost`` = cost of day ``t`` / ``A_{t-1}``, so ``return - cost`` is the
  account's true return;
* ``turnover`` = traded value of day ``t`` / ``A_{t-1}``;
* ``bench``: the benchmark's return; ``account`` (``A_t``), ``value`` (holdings at
  close), ``cash``, ``total_cost`` and ``total_turnover`` (running sums, currency).

Simplifications: no trading unit (fractional amounts), no volume limit, no partial
fill other than the cash limit of a buy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from taskroll.backtest.exchange import BUY, SELL, Exchange
from taskroll.backtest.strategy import TopkDropoutStrategy
from taskroll.errors import DataError, TaskConfigError

REPORT_COLUMNS = ("account", "return", "total_turnover", "turnover", "total_cost", "cost",
                  "value", "cash", "bench")


@dataclass
class _Holding:
    amount: float
    price: float
    count: int = 0


@dataclass
class _Account:
    cash: float
    holdings: dict[str, _Holding] = field(default_factory=dict)
    total_cost: float = 0.0
    total_turnover: float = 0.0

    def value(self) -> float:
        return self.cash + sum(holding.amount * holding.price
                               for holding in self.holdings.values())


def benchmark_returns(benchmark: Any, exchange: Exchange,
                      dates: pd.DatetimeIndex) -> pd.Series:
    """Daily benchmark returns on ``dates``.

    Args:
        benchmark: ``None`` (zero), an instrument of the bars (its close-to-close
            return, as Qlib's ``$close/Ref($close, 1) - 1``) or a Series of daily returns
            indexed by date.
        exchange: The exchange holding the bars.
        dates: The backtest's trading days.

    Returns:
        A float Series on ``dates``; a day without a value counts as 0.

    Raises:
        TaskConfigError: For an instrument absent from the bars or another type.
    """
    if benchmark is None:
        return pd.Series(0.0, index=dates, name="bench")
    if isinstance(benchmark, pd.Series):
        series = benchmark.copy()
        series.index = pd.DatetimeIndex(series.index)
        return series.reindex(dates).fillna(0.0).astype(float).rename("bench")
    if isinstance(benchmark, str):
        if benchmark not in exchange.change.columns:
            raise TaskConfigError(
                f"backtest.benchmark {benchmark!r} is not an instrument of the bars; give an "
                "instrument of the data, a Series of daily returns, or None")
        return exchange.change[benchmark].reindex(dates).fillna(0.0).rename("bench")
    raise TaskConfigError(f"backtest.benchmark must be an instrument name, a Series or None, "
                          f"got {type(benchmark).__name__}")


def _scores_by_date(signal: pd.Series | pd.DataFrame) -> dict[pd.Timestamp, pd.Series]:
    if isinstance(signal, pd.DataFrame):
        signal = signal.iloc[:, 0]  # as Qlib: the first column is the score
    if not (isinstance(signal.index, pd.MultiIndex) and signal.index.nlevels == 2):
        raise DataError("the backtest's signal must be indexed by (datetime, instrument)")
    frame = signal.astype(float)
    dates = pd.DatetimeIndex(frame.index.get_level_values(0))
    return {pd.Timestamp(date): frame[dates == date].droplevel(0)
            for date in dates.unique().sort_values()}


def backtest_daily(signal: pd.Series | pd.DataFrame, exchange: Exchange,
                   strategy: TopkDropoutStrategy, start_time: Any = None,
                   end_time: Any = None, account: float = 1e9,
                   benchmark: Any = None) -> tuple[pd.DataFrame, dict[pd.Timestamp, pd.DataFrame]]:
    """Run the daily top-k dropout backtest.

    Args:
        signal: Scores indexed by ``(datetime, instrument)`` (a frame's first column).
        exchange: Bars, deal prices, costs and limits.
        strategy: The top-k dropout strategy.
        start_time: First trading day (default: the first day of the bars).
        end_time: Last trading day (default: the last day of the bars).
        account: Initial cash.
        benchmark: See :func:`benchmark_returns`.

    Returns:
        ``(report, positions)``: the daily report (see the module doc) indexed by date,
        and per date a frame of the holdings after that day's trades, indexed by
        instrument with columns ``amount``, ``price`` (close), ``weight`` (of the
        account) and ``count_day`` (days held).

    Raises:
        TaskConfigError: For a non-positive account, an empty date range or a bad benchmark.
        DataError: For a malformed signal.
    """
    if isinstance(account, bool) or not isinstance(account, (int, float)) or account <= 0:
        raise TaskConfigError(f"backtest.account must be a number > 0, got {account!r}")
    calendar = exchange.calendar
    first = 0 if start_time is None else int(calendar.searchsorted(pd.Timestamp(start_time)))
    last = len(calendar) if end_time is None else int(calendar.searchsorted(
        pd.Timestamp(end_time), "right"))
    if first >= last:
        raise TaskConfigError(f"backtest: no trading day of the bars between {start_time} and "
                              f"{end_time}; the bars cover {calendar.min()}..{calendar.max()}")
    dates = calendar[first:last]
    bench = benchmark_returns(benchmark, exchange, dates)
    scores = _scores_by_date(signal)
    state = _Account(cash=float(account))
    rows: list[dict[str, float]] = []
    positions: dict[pd.Timestamp, pd.DataFrame] = {}
    for offset, date in enumerate(dates):
        previous_value = state.value()
        index = first + offset
        day_scores = scores.get(calendar[index - 1]) if index > 0 else None
        cost, traded = (0.0, 0.0) if day_scores is None or day_scores.empty else _trade(
            state, strategy, exchange, day_scores, date)
        for name, holding in state.holdings.items():
            close = exchange.price(name, date)
            if not math.isnan(close):
                holding.price = close
            holding.count += 1
        value = state.value()
        stock_value = value - state.cash
        rows.append({
            "account": value, "return": (value - previous_value + cost) / previous_value,
            "total_turnover": state.total_turnover, "turnover": traded / previous_value,
            "total_cost": state.total_cost, "cost": cost / previous_value,
            "value": stock_value, "cash": state.cash, "bench": float(bench[date]),
        })
        positions[date] = pd.DataFrame(
            {"amount": [holding.amount for holding in state.holdings.values()],
             "price": [holding.price for holding in state.holdings.values()],
             "weight": [holding.amount * holding.price / value
                        for holding in state.holdings.values()],
             "count_day": [holding.count for holding in state.holdings.values()]},
            index=pd.Index(list(state.holdings), name="instrument"))
    report = pd.DataFrame(rows, index=pd.DatetimeIndex(dates, name="datetime"),
                          columns=list(REPORT_COLUMNS))
    return report, positions


def _trade(state: _Account, strategy: TopkDropoutStrategy, exchange: Exchange,
           scores: pd.Series, date: pd.Timestamp) -> tuple[float, float]:
    """Deal one day's sells then buys; return ``(cost, traded value)`` of the day."""
    all_sides = strategy.forbid_all_trade_at_limit
    decision = strategy.decide(scores, list(state.holdings),
                               lambda name: exchange.is_tradable(name, date))
    cost = traded = 0.0
    for name in list(state.holdings):
        if name not in decision.sell:
            continue
        if not exchange.is_tradable(name, date, None if all_sides else SELL):
            continue
        holding = state.holdings[name]
        if holding.count < strategy.hold_thresh:
            continue
        trade_value = holding.amount * exchange.deal_price(name, date, SELL)
        trade_cost = exchange.trade_cost(trade_value, SELL)
        state.cash += trade_value - trade_cost
        cost, traded = cost + trade_cost, traded + trade_value
        del state.holdings[name]
    budget = state.cash * strategy.risk_degree / len(decision.buy) if decision.buy else 0.0
    for name in decision.buy:
        if not exchange.is_tradable(name, date, None if all_sides else BUY):
            continue
        trade_value = budget
        if state.cash < exchange.trade_cost(trade_value, BUY):
            continue
        if state.cash < trade_value + exchange.trade_cost(trade_value, BUY):
            trade_value = exchange.affordable_value(state.cash)  # Qlib clips to the cash
        if trade_value <= 0:
            continue
        price = exchange.deal_price(name, date, BUY)
        trade_cost = exchange.trade_cost(trade_value, BUY)
        state.cash -= trade_value + trade_cost
        cost, traded = cost + trade_cost, traded + trade_value
        state.holdings[name] = _Holding(amount=trade_value / price, price=price)
    state.total_cost += cost
    state.total_turnover += traded
    return cost, traded
