"""A dirty synthetic market for the no-look-ahead tests: gaps, suspensions, late
listings, delistings and bad bars."""

from __future__ import annotations

import pandas as pd
import pytest

from taskroll.data import SyntheticMarket


def dirty_bars(seed: int = 11, n_instruments: int = 30, start: str = "2019-01-01",
               end: str = "2021-06-30") -> pd.DataFrame:
    """Bars with frequent suspensions (gaps), late listings, delistings and bad bars."""
    market = SyntheticMarket(seed=seed, n_instruments=n_instruments, start=start, end=end,
                             suspension_rate=4.0, listing_fraction=0.3, delisting_fraction=0.2,
                             bad_bar_rate=0.004)
    bars = market.bars()
    prices = bars[["open", "high", "low", "close", "vwap"]]
    assert ((prices <= 0) | prices.isna()).any(axis=1).sum() > 0, "the market has bad bars"
    return bars


@pytest.fixture(scope="session")
def dirty() -> pd.DataFrame:
    return dirty_bars()


@pytest.fixture(scope="session")
def cut_dates(dirty: pd.DataFrame) -> list[pd.Timestamp]:
    """Several dates D spread over the panel (each a trading day)."""
    calendar = dirty.index.get_level_values(0).unique()
    return [calendar[position] for position in (70, 250, 251, 400, len(calendar) - 30)]
