"""The synthetic market: determinism, calendar, life cycle, and realistic statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taskroll.data import SyntheticMarket, generate_market, trading_calendar
from taskroll.data.synthetic import BAR_COLUMNS
from taskroll.errors import DataError


def test_same_seed_same_bars_and_different_seed_differs() -> None:
    first = SyntheticMarket(seed=3, n_instruments=25, start="2020-01-01", end="2020-12-31")
    second = SyntheticMarket(seed=3, n_instruments=25, start="2020-01-01", end="2020-12-31")
    pd.testing.assert_frame_equal(first.bars(), second.bars())
    other = generate_market(seed=4, n_instruments=25, start="2020-01-01", end="2020-12-31")
    assert not np.allclose(first.bars()["close"].iloc[:25], other["close"].iloc[:25])


def test_generate_market_matches_the_class(bars: pd.DataFrame) -> None:
    again = generate_market(seed=7, n_instruments=40, start="2019-01-01", end="2020-12-31",
                            suspension_rate=3.0, listing_fraction=0.3, delisting_fraction=0.2)
    pd.testing.assert_frame_equal(bars, again)


def test_frame_shape_index_and_columns(bars: pd.DataFrame, market: SyntheticMarket) -> None:
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert list(bars.index.names) == ["datetime", "instrument"]
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert all(dtype.kind == "f" for dtype in bars.dtypes)
    assert set(bars.index.get_level_values("datetime")) <= set(market.calendar)
    assert bars.notna().all().all()


def test_calendar_is_weekdays_minus_seeded_holidays() -> None:
    calendar = trading_calendar(seed=1, start="2015-01-01", end="2016-12-31")
    weekdays = pd.bdate_range("2015-01-01", "2016-12-31")
    assert calendar.is_monotonic_increasing and calendar.name == "datetime"
    assert (calendar.day_of_week < 5).all()
    holidays = weekdays.difference(calendar)
    assert 10 <= len(holidays) <= 24
    assert pd.Timestamp("2015-01-01") in holidays  # New Year
    assert calendar.equals(trading_calendar(seed=1, start="2015-01-01", end="2016-12-31"))
    assert not calendar.equals(trading_calendar(seed=2, start="2015-01-01", end="2016-12-31"))
    # the calendar does not depend on the market size
    small = SyntheticMarket(seed=1, n_instruments=3, start="2015-01-01", end="2016-12-31")
    assert small.calendar.equals(calendar)


def test_listings_delistings_and_suspensions(bars: pd.DataFrame,
                                             market: SyntheticMarket) -> None:
    dates = bars.index.get_level_values("datetime")
    by_instrument = pd.Series(dates, index=bars.index.get_level_values("instrument"))
    first, last = by_instrument.groupby(level=0).min(), by_instrument.groupby(level=0).max()
    assert (first > market.calendar[0]).any(), "some instruments list after the start"
    assert (last < market.calendar[-1]).any(), "some instruments delist before the end"
    position = pd.Series(np.arange(len(market.calendar)), index=market.calendar)
    span = position[last.to_numpy()].to_numpy() - position[first.to_numpy()].to_numpy() + 1
    rows = by_instrument.groupby(level=0).size().loc[first.index].to_numpy()
    assert (rows < span).sum() >= 10, "suspended days leave gaps inside instruments' lives"
    assert bars.index.get_level_values("instrument").nunique() == market.n_instruments


def test_bars_are_internally_consistent(bars: pd.DataFrame) -> None:
    tolerance = 1e-9
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1) - tolerance).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1) + tolerance).all()
    assert (bars["vwap"] <= bars["high"] + tolerance).all()
    assert (bars["vwap"] >= bars["low"] - tolerance).all()
    assert (bars["volume"] > 0).all() and (bars["low"] > 0).all()
    assert (bars["factor"] >= 1.0).all()


def _log_returns(bars: pd.DataFrame) -> pd.DataFrame:
    close = bars["close"].unstack("instrument")
    return np.log(close).diff()


def test_realistic_return_statistics() -> None:
    market = SyntheticMarket(seed=11, n_instruments=60, start="2014-01-01", end="2019-12-31",
                             suspension_rate=0.0)
    returns = _log_returns(market.bars())
    daily_std = returns.stack().std()
    assert 0.01 < daily_std < 0.04
    # volatility clustering: squared returns are autocorrelated
    squared_acf = [returns[name].dropna().pow(2).autocorr(1) for name in returns.columns]
    assert np.nanmean(squared_acf) > 0.03
    # returns themselves are close to serially uncorrelated
    acf = [returns[name].dropna().autocorr(1) for name in returns.columns]
    assert abs(np.nanmean(acf)) < 0.1
    # factor structure: instruments co-move
    correlation = returns.corr().to_numpy()
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    assert 0.1 < np.nanmean(off_diagonal) < 0.8
    # fat tails
    standardised = (returns - returns.mean()) / returns.std()
    assert standardised.stack().kurt() > 1.0


def test_latent_signal_predicts_next_day_returns() -> None:
    market = SyntheticMarket(seed=5, n_instruments=80, start="2018-01-01", end="2019-12-31",
                             suspension_rate=0.0, listing_fraction=0.0, delisting_fraction=0.0)
    returns = _log_returns(market.bars()).to_numpy()
    signal = market.latent_signal
    assert signal is not None
    daily_ic = [np.corrcoef(signal[day], returns[day])[0, 1] for day in range(1, len(returns))]
    assert 0.03 < np.mean(daily_ic) < 0.3
    flat = SyntheticMarket(seed=5, n_instruments=10, start="2018-01-01", end="2018-03-31",
                           signal_strength=0.0)
    flat.bars()
    assert flat.latent_signal is not None and not flat.latent_signal.any()


def test_generation_at_demo_size() -> None:
    bars = generate_market(seed=0, n_instruments=150, start="2017-01-01", end="2022-12-31")
    assert len(bars) > 150 * 1000


def test_invalid_arguments_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        SyntheticMarket(n_instruments=0)
    with pytest.raises(DataError):
        trading_calendar(start="2020-01-04", end="2020-01-05")  # a weekend only
    market = SyntheticMarket(seed=0, n_instruments=2, start="2020-01-01", end="2020-02-28")
    with pytest.raises(DataError, match="csv"):
        market.save(tmp_path / "bars.xlsx")
