"""The exchange of the daily backtest: deal prices, trading costs and price limits.

Meaning as Qlib's ``qlib.backtest.exchange.Exchange`` for daily bars, with these
simplifications (each stated where it applies):

* quotes come from a bar panel indexed by ``(datetime, instrument)`` (columns such
  as ``close``, ``open``, ``vwap``), not from Qlib's expression engine;
* no trading unit (fractional share amounts), no volume limit, no impact cost, no
  adjustment factor (prices are used as given);
* ``limit_threshold`` is a float or ``None``; Qlib's pair of limit expressions is refused.

A day's *change* is the close-to-close return ``close_t / close_{t-1} - 1`` of the
instrument (Qlib's ``$change``). With ``limit_threshold=x``, a change ``>= x`` is a
limit-up (the name cannot be bought) and a change ``<= -x`` a limit-down (it cannot
be sold); a missing close is a suspension (no trade either way).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import TaskConfigError

BUY = "buy"
SELL = "sell"
_PRICE_FIELDS = ("close", "open", "high", "low", "vwap")


def _price_field(name: Any, where: str) -> str:
    """Normalise a Qlib price name (``"$close"`` or ``"close"``) to a panel column."""
    if not isinstance(name, str):
        raise TaskConfigError(f"{where}: a deal price is a field name such as 'close', "
                              f"got {name!r}")
    field = name[1:] if name.startswith("$") else name
    if field not in _PRICE_FIELDS:
        raise TaskConfigError(f"{where}: unknown deal price {name!r}; use one of "
                              f"{', '.join(_PRICE_FIELDS)} (with or without '$')")
    return field


def _valid_prices(column: pd.Series) -> pd.Series:
    """``column`` as floats, NaN where a price is missing, non-finite or ``<= 0``."""
    values = column.astype(float)
    return values.where(np.isfinite(values.to_numpy()) & (values.to_numpy() > 0))


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise TaskConfigError(f"exchange_kwargs.{name} must be a number >= 0, got {value!r}")
    return float(value)


class Exchange:
    """Daily quotes, deal prices, costs and limit flags over a bar panel.

    Args:
        quotes: Bars indexed by ``(datetime, instrument)`` with a ``close`` column and
            the deal price columns.
        deal_price: ``"close"`` (trade at the day's close, Qlib's usual setting),
            ``"open"``, ``"vwap"``..., or a ``(buy_price, sell_price)`` pair; a leading
            ``$`` is accepted.
        limit_threshold: ``None`` (no limit) or a fraction such as ``0.095``.
        open_cost: Cost of a buy as a fraction of its traded value.
        close_cost: Cost of a sell as a fraction of its traded value.
        min_cost: Minimum cost of one executed trade (in account currency).

    Raises:
        TaskConfigError: For a malformed setting or a panel lacking a needed column.
    """

    def __init__(self, quotes: pd.DataFrame, deal_price: Any = "close",
                 limit_threshold: float | None = None, open_cost: float = 0.0015,
                 close_cost: float = 0.0025, min_cost: float = 5.0) -> None:
        if isinstance(deal_price, (tuple, list)):
            if len(deal_price) != 2:
                raise TaskConfigError(f"exchange_kwargs.deal_price: a pair is (buy_price, "
                                      f"sell_price), got {deal_price!r}")
            self.buy_price = _price_field(deal_price[0], "exchange_kwargs.deal_price")
            self.sell_price = _price_field(deal_price[1], "exchange_kwargs.deal_price")
        else:
            self.buy_price = self.sell_price = _price_field(deal_price,
                                                            "exchange_kwargs.deal_price")
        if limit_threshold is not None and (
                isinstance(limit_threshold, bool)
                or not isinstance(limit_threshold, (int, float)) or not limit_threshold > 0):
            raise TaskConfigError(
                "exchange_kwargs.limit_threshold must be None or a fraction > 0 such as 0.095 "
                f"(Qlib's pair of limit expressions is not supported), got {limit_threshold!r}")
        self.limit_threshold = None if limit_threshold is None else float(limit_threshold)
        self.open_cost = _non_negative(open_cost, "open_cost")
        self.close_cost = _non_negative(close_cost, "close_cost")
        self.min_cost = _non_negative(min_cost, "min_cost")
        if not (isinstance(quotes.index, pd.MultiIndex) and quotes.index.nlevels == 2):
            raise TaskConfigError("the backtest needs bars indexed by (datetime, instrument)")
        needed = sorted({"close", self.buy_price, self.sell_price})
        missing = [name for name in needed if name not in quotes.columns]
        if missing:
            raise TaskConfigError(f"the backtest's bars lack column(s) {missing}; they have "
                                  f"{sorted(map(str, quotes.columns))}")
        # an invalid price (missing, non-finite, <= 0: a bad bar) is no price: not tradable
        self._fields = {name: _valid_prices(quotes[name]).unstack().sort_index()
                        for name in needed}
        close = self._fields["close"]
        self.change: pd.DataFrame = close / close.ffill().shift(1) - 1
        self.calendar = pd.DatetimeIndex(close.index)

    def price(self, instrument: str, date: pd.Timestamp, field: str = "close") -> float:
        """Return ``field`` of ``instrument`` on ``date`` (NaN when absent)."""
        frame = self._fields[field]
        if instrument not in frame.columns or date not in frame.index:
            return math.nan
        value: Any = frame.at[date, instrument]
        return float(value)

    def deal_price(self, instrument: str, date: pd.Timestamp, direction: str) -> float:
        """Return the price a ``direction`` (``"buy"``/``"sell"``) trade deals at (NaN: none)."""
        return self.price(instrument, date, self.buy_price if direction == BUY
                          else self.sell_price)

    def is_tradable(self, instrument: str, date: pd.Timestamp,
                    direction: str | None = None) -> bool:
        """Whether ``instrument`` can be traded on ``date``, as Qlib's ``is_stock_tradable``.

        Args:
            instrument: The name.
            date: The trading day.
            direction: ``"buy"`` (limit-up forbids), ``"sell"`` (limit-down forbids) or
                ``None`` (either limit forbids: Qlib's ``forbid_all_trade_at_limit``).

        Returns:
            ``False`` when suspended (no close or no deal price), or limited.
        """
        if math.isnan(self.price(instrument, date)):
            return False
        directions = (BUY, SELL) if direction is None else (direction,)
        if any(math.isnan(self.deal_price(instrument, date, side)) for side in directions):
            return False
        if self.limit_threshold is None:
            return True
        cell: Any = self.change.at[date, instrument]
        change = float(cell)
        if math.isnan(change):
            return True
        limit_up = change >= self.limit_threshold
        limit_down = change <= -self.limit_threshold
        return not ((BUY in directions and limit_up) or (SELL in directions and limit_down))

    def trade_cost(self, trade_value: float, direction: str) -> float:
        """Cost of a trade: ``max(value * rate, min_cost)``, 0 for an empty trade (as Qlib)."""
        if trade_value <= 0:
            return 0.0
        rate = self.open_cost if direction == BUY else self.close_cost
        return max(trade_value * rate, self.min_cost)

    def affordable_value(self, cash: float) -> float:
        """Largest buy value whose value plus cost fits in ``cash`` (0 when none does)."""
        if cash <= self.min_cost:
            return 0.0
        proportional = cash / (1 + self.open_cost)
        if proportional * self.open_cost >= self.min_cost:
            return proportional
        return cash - self.min_cost
