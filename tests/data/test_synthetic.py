"""The synthetic market: determinism, calendar, life cycle, and realistic statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import SyntheticLoader, SyntheticMarket, generate_market, trading_calendar
from taskroll.data.quality import clean_bars
from taskroll.data.synthetic import BAR_COLUMNS
from taskroll.errors import DataError, DataQualityWarning


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
    with pytest.raises(DataError, match="bad_bar_rate"):
        SyntheticMarket(n_instruments=2, bad_bar_rate=1.0)
    with pytest.raises(DataError, match="duplicate_rows"):
        SyntheticMarket(n_instruments=2, duplicate_rows=-1)


# -- dirty data -----------------------------------------------------------------------------------

SMALL: dict[str, Any] = {"seed": 11, "n_instruments": 40, "start": "2018-01-01",
                         "end": "2020-12-31"}
"""40 instruments over three years, default settings."""


def test_default_bars_are_pinned() -> None:
    """The bars of an existing seed never change (computed before bad bars existed)."""
    bars = SyntheticMarket(**SMALL).bars()
    index = bars.index
    key = (index.get_level_values(0).asi8.tobytes()
           + "|".join(index.get_level_values(1)).encode())
    assert len(bars) == 26161
    assert hashlib.sha256(key).hexdigest() == (
        "69bdb4261021efeef2e814c7b14aa7e54dbca8daf29479f66b66966e9e11709e")
    sums = {"open": 613977.7214063087, "high": 623910.0002129157, "low": 604524.6828613626,
            "close": 614296.7523707947, "volume": 34138813150.07909, "vwap": 614133.2722624826,
            "factor": 29764.04082860416}
    for name, total in sums.items():
        assert bars[name].sum() == pytest.approx(total, rel=1e-11), name
    rows = [[11.055040945414465, 11.157383909188933, 10.925340174075979, 10.926143917615661,
             2408200.0, 11.016878222112114, 1.0],
            [10.180286797927607, 10.240527569495077, 9.99130367494398, 10.061787770551073,
             1692332.0, 10.061496033516065, 1.0],
            [23.889004867203557, 24.484004892248795, 23.684653187092476, 24.262881587828097,
             1412895.0, 24.152814499501854, 1.0],
            [14.202944899445116, 14.484652402576417, 14.07114448718824, 14.395425122948538,
             170817.80613802862, 14.305578135240786, 1.1651478525557004]]
    np.testing.assert_allclose(bars.iloc[[0, 1, 12345, -1]].to_numpy(), rows, rtol=1e-12)
    assert list(bars.index[[0, -1]]) == [(pd.Timestamp("2018-01-02"), "SH600000"),
                                         (pd.Timestamp("2020-12-31"), "SH600039")]
    explicit = SyntheticMarket(**SMALL, bad_bar_rate=0.0, duplicate_rows=0)
    pd.testing.assert_frame_equal(explicit.bars(), bars, check_exact=True)


def test_a_small_dirty_market_has_all_four_phenomena() -> None:
    clean = SyntheticMarket(**SMALL).bars()
    market = SyntheticMarket(**SMALL, bad_bar_rate=0.01)
    bars = market.bars()
    calendar = market.calendar
    assert bars.index.equals(clean.index)
    # listings after the start, delistings before the end, suspensions inside lives
    dates = pd.Series(bars.index.get_level_values(0), index=bars.index.get_level_values(1))
    first, last = dates.groupby(level=0).min(), dates.groupby(level=0).max()
    assert (first > calendar[0]).sum() >= 2
    assert (last < calendar[-1]).sum() >= 2
    _, report = clean_bars(bars)
    assert report.suspended_days > 50 and report.late_listings == (first > calendar[0]).sum()
    # bad bars: all four kinds, and only on the planted rows
    planted = round(0.01 * len(bars))
    assert report.invalid_price_bars + report.zero_volume_bars == planted
    prices = bars[["open", "high", "low", "close", "vwap"]]
    assert (prices == 0).any(axis=1).sum() > 0
    assert (prices < 0).any(axis=1).sum() > 0
    assert prices.isna().any(axis=1).sum() > 0
    assert (bars["volume"] == 0).sum() > 0
    changed = ~((bars == clean) | (bars.isna() & clean.isna())).all(axis=1)
    assert changed.sum() == planted
    pd.testing.assert_frame_equal(bars[~changed], clean[~changed], check_exact=True)
    pd.testing.assert_series_equal(bars["factor"], clean["factor"], check_exact=True)


def test_duplicate_rows_are_exact_copies() -> None:
    arguments: dict[str, Any] = {"seed": 2, "n_instruments": 6, "start": "2020-01-01",
                                 "end": "2020-06-30"}
    clean = SyntheticMarket(**arguments).bars()
    bars = generate_market(**arguments, duplicate_rows=5, bad_bar_rate=0.02)
    assert len(bars) == len(clean) + 5
    assert bars.index.is_monotonic_increasing and not bars.index.is_unique
    assert bars.index.duplicated().sum() == 5
    deduplicated, report = clean_bars(bars)
    assert report.duplicated_rows == 5 and deduplicated.index.equals(clean.index)


def test_synthetic_loader_forwards_dirty_arguments(fresh_caches: None) -> None:
    with pytest.warns(DataQualityWarning):
        loader = SyntheticLoader(seed=2, n_instruments=6, start="2020-01-01", end="2020-06-30",
                                 bad_bar_rate=0.05, duplicate_rows=2)
        report = loader.quality_report()
    assert report is not None and report.duplicated_rows == 2
    assert report.invalid_price_bars + report.zero_volume_bars == round(0.05 * report.rows)
