"""Top-k dropout: Qlib's ``TopkDropoutStrategy`` (``qlib.contrib.strategy``), daily.

Each trading day the strategy reads the scores of the previous trading day and
decides, as Qlib does:

1. ``last``: the names held, sorted by score (best first; a held name without a
   score sorts last);
2. ``today``: the best-scored names not held, at most ``n_drop + topk - len(last)``;
3. ``sell``: the held names among the ``n_drop`` worst of ``last`` and ``today``
   together (so a held name is never swapped for a worse one);
4. ``buy``: the first ``len(sell) + topk - len(last)`` names of ``today``.

The backtest then sells (all shares of each name) and spends
``cash * risk_degree / len(buy)`` on each name bought, skipping names that cannot
be traded that day; a name held fewer than ``hold_thresh`` days is kept.

Differences from Qlib, all deliberate: ``method_sell`` is ``"bottom"`` and
``method_buy`` ``"top"`` only (the random variants are refused); ``n_drop=0`` sells
nothing (Qlib's ``list[-0:]`` would select the whole list); ``only_tradable``
looks at tradability as the backtest's exchange sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from taskroll.errors import TaskConfigError


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"TopkDropoutStrategy: {name} must be an int >= {minimum}, "
                              f"got {value!r}")
    return value


@dataclass(frozen=True)
class Decision:
    """What the strategy wants to trade on one day.

    Attributes:
        sell: Held names to sell, in holding order (best score first).
        buy: Names to buy, best score first; the buy budget is split among all of them.
    """

    sell: list[str]
    buy: list[str]


class TopkDropoutStrategy:
    """Hold ``topk`` names; each day replace at most ``n_drop`` of them.

    Args:
        topk: Number of names in the portfolio.
        n_drop: Number of names replaced each day.
        method_sell: ``"bottom"`` (Qlib's default; the only one supported).
        method_buy: ``"top"`` (Qlib's default; the only one supported).
        hold_thresh: Minimum days a name is held before it may be sold.
        only_tradable: Choose only among names tradable that day (Qlib's option).
        forbid_all_trade_at_limit: A name at either limit is neither bought nor sold
            (Qlib's default ``True``); ``False``: only a limit-up forbids buying and only
            a limit-down forbids selling.
        risk_degree: Fraction of the cash spent on buying (Qlib's default 0.95).
        signal: Ignored placeholder (Qlib's ``"<PRED>"``); the backtest passes the scores.

    Raises:
        TaskConfigError: For a bad count, method or risk degree.
    """

    def __init__(self, topk: int, n_drop: int, method_sell: str = "bottom",
                 method_buy: str = "top", hold_thresh: int = 1, only_tradable: bool = False,
                 forbid_all_trade_at_limit: bool = True, risk_degree: float = 0.95,
                 signal: object = None) -> None:
        self.topk = _count(topk, "topk", 1)
        self.n_drop = _count(n_drop, "n_drop", 0)
        self.hold_thresh = _count(hold_thresh, "hold_thresh", 0)
        if method_sell != "bottom" or method_buy != "top":
            raise TaskConfigError(
                "TopkDropoutStrategy: only method_sell='bottom' and method_buy='top' are "
                f"supported (random choices would make the backtest irreproducible), got "
                f"method_sell={method_sell!r}, method_buy={method_buy!r}")
        if (isinstance(risk_degree, bool) or not isinstance(risk_degree, (int, float))
                or not 0 < risk_degree <= 1):
            raise TaskConfigError(f"TopkDropoutStrategy: risk_degree must be in (0, 1], "
                                  f"got {risk_degree!r}")
        self.method_sell = method_sell
        self.method_buy = method_buy
        self.only_tradable = bool(only_tradable)
        self.forbid_all_trade_at_limit = bool(forbid_all_trade_at_limit)
        self.risk_degree = float(risk_degree)
        self.signal = signal

    def decide(self, scores: pd.Series, held: Sequence[str],
               tradable: Callable[[str], bool] | None = None) -> Decision:
        """Return the day's sells and buys from the previous day's scores.

        Args:
            scores: Score per instrument (higher is better); NaN scores are dropped.
            held: Names held now.
            tradable: ``name -> bool`` for ``only_tradable``; ``None``: all tradable.

        Returns:
            The :class:`Decision`.
        """
        scores = scores.dropna()
        is_tradable = tradable if (self.only_tradable and tradable is not None) else None

        def first(names: Sequence[str], count: int) -> list[str]:
            if is_tradable is None:
                return list(names)[:count]
            return [name for name in names if is_tradable(name)][:max(count, 0)]

        def last_of(names: Sequence[str], count: int) -> list[str]:
            if count <= 0:
                return []
            if is_tradable is None:
                return list(names)[-count:]
            return [name for name in names if is_tradable(name)][-count:]

        last = list(scores.reindex(list(held)).sort_values(ascending=False).index)
        candidates = scores[~scores.index.isin(last)].sort_values(ascending=False)
        today = first(list(candidates.index), self.n_drop + self.topk - len(last))
        combined = scores.reindex(pd.Index(last).union(pd.Index(today)))
        ranked = list(combined.sort_values(ascending=False).index)
        worst = set(last_of(ranked, self.n_drop))
        sell = [name for name in last if name in worst]
        buy = today[:len(sell) + self.topk - len(last)]
        return Decision(sell=sell, buy=buy)
