"""Data quality: bad bars blanked and counted, duplicates, gaps, late listings, warnings, loaders."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import FileLoader, StaticLoader, SyntheticLoader, SyntheticMarket, validate_panel
from taskroll.data.quality import KINDS, DataQualityReport, clean_bars
from taskroll.errors import DataError, DataQualityWarning

BAR_NAMES = ["open", "high", "low", "close", "volume", "vwap", "factor"]
BAD = (pd.Timestamp("2020-01-03"), "B")
"""The row each case of the table spoils."""


def hand_panel() -> pd.DataFrame:
    """Three instruments on three days, every bar valid, plus a non-bar column ``amount``."""
    index = pd.MultiIndex.from_product(
        [pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]), ["A", "B", "C"]],
        names=["datetime", "instrument"])
    base = np.arange(1, len(index) + 1, dtype=np.float64)
    frame = pd.DataFrame({
        "open": 10.0 + base, "high": 11.0 + base, "low": 9.0 + base, "close": 10.5 + base,
        "volume": 1000.0 * base, "vwap": 10.2 + base, "factor": 1.0 + base / 100,
        "amount": 5000.0 * base, "board": ["main"] * len(index)}, index=index)
    return frame


def set_value(column: str, value: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def spoil(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[BAD, column] = value
        return frame
    return spoil


def integer_volume_zero(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["volume"] = frame["volume"].astype(np.int64)
    frame.loc[BAD, "volume"] = 0
    return frame


def duplicate_row(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.loc[[BAD]]]).sort_index()


CASES = [
    # id, spoil, invalid_price_bars, zero_volume_bars, duplicated_rows
    ("zero open", set_value("open", 0.0), 1, 0, 0),
    ("negative close", set_value("close", -3.0), 1, 0, 0),
    ("NaN high", set_value("high", np.nan), 1, 0, 0),
    ("NaN vwap", set_value("vwap", np.nan), 1, 0, 0),
    ("inf price", set_value("low", np.inf), 1, 0, 0),
    ("minus inf price", set_value("open", -np.inf), 1, 0, 0),
    ("zero volume", set_value("volume", 0.0), 0, 1, 0),
    ("negative volume", set_value("volume", -5.0), 0, 1, 0),
    ("NaN volume", set_value("volume", np.nan), 0, 1, 0),
    ("inf volume", set_value("volume", np.inf), 0, 1, 0),
    ("zero volume in an int column", integer_volume_zero, 0, 1, 0),
    ("zero price and zero volume", lambda frame: set_value("volume", 0.0)(
        set_value("close", 0.0)(frame)), 1, 0, 0),
    ("duplicate exact row", duplicate_row, 0, 0, 1),
]


@pytest.mark.parametrize(("spoil", "invalid_price", "zero_volume", "duplicated"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_bars_are_counted_and_blanked(spoil: Callable[[pd.DataFrame], pd.DataFrame],
                                          invalid_price: int, zero_volume: int,
                                          duplicated: int) -> None:
    clean = hand_panel()
    dirty = spoil(clean)
    before = dirty.copy(deep=True)
    cleaned, report = clean_bars(dirty, source="hand")
    # the input is untouched, bit for bit
    pd.testing.assert_frame_equal(dirty, before, check_exact=True)
    assert report == DataQualityReport(
        rows=9, instruments=3, invalid_price_bars=invalid_price, zero_volume_bars=zero_volume,
        duplicated_rows=duplicated, suspended_days=0, late_listings=0)
    assert list(cleaned.columns) == list(clean.columns)
    assert cleaned.index.equals(clean.index)
    others = cleaned.drop(index=[BAD])
    expected_others = dirty[~dirty.index.duplicated()].drop(index=[BAD])
    pd.testing.assert_frame_equal(others, expected_others, check_exact=True, check_dtype=False)
    numeric = cleaned.select_dtypes("number")
    assert not np.isinf(numeric.to_numpy(dtype=np.float64)).any()
    row = cleaned.loc[BAD]
    if invalid_price or zero_volume:
        blanked = ["open", "high", "low", "close", "volume", "vwap", "amount"]
        assert row[blanked].isna().all()
        assert row["factor"] == clean.loc[BAD, "factor"] and row["board"] == "main"
    else:
        pd.testing.assert_series_equal(row, clean.loc[BAD], check_exact=True)


def test_a_clean_panel_comes_back_as_it_is() -> None:
    frame = hand_panel()
    cleaned, report = clean_bars(frame)
    assert cleaned is frame
    assert report.invalid_price_bars == report.zero_volume_bars == report.duplicated_rows == 0


def test_rows_are_judged_on_their_own() -> None:
    dirty = set_value("close", 0.0)(hand_panel())
    whole, _ = clean_bars(dirty)
    for part in (dirty.iloc[:4], dirty.iloc[3:7], dirty.iloc[::2]):
        cleaned, _ = clean_bars(part)
        pd.testing.assert_frame_equal(cleaned, whole.loc[part.index], check_exact=True,
                                      check_dtype=False)


def test_conflicting_duplicates_raise() -> None:
    frame = hand_panel()
    conflicting = frame.loc[[BAD]].assign(close=99.0)
    with pytest.raises(DataError, match=r"hand: 1 duplicate .*different values"):
        clean_bars(pd.concat([frame, conflicting]).sort_index(), source="hand")
    with pytest.raises(DataError, match="duplicate"):
        validate_panel(pd.concat([frame, conflicting]))


def test_validate_panel_drops_exact_duplicates() -> None:
    frame = hand_panel()
    repeated = pd.concat([frame, frame.iloc[[2, 2, 5]]]).iloc[::-1]
    pd.testing.assert_frame_equal(validate_panel(repeated), frame, check_exact=True)


def test_suspended_days_and_late_listings_on_a_hand_made_panel() -> None:
    days = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"])
    present = {"A": [0, 1, 3, 4],   # one day suspended
               "B": [1, 2],         # listed late, delisted early: no gap
               "C": [0, 4],         # three days suspended
               "D": [2]}            # listed late
    rows = [(days[day], name) for name, on in present.items() for day in on]
    index = pd.MultiIndex.from_tuples(sorted(rows), names=["datetime", "instrument"])
    frame = pd.DataFrame({"close": 10.0, "volume": 100.0}, index=index)
    _, report = clean_bars(frame)
    assert (report.rows, report.instruments) == (9, 4)
    assert report.suspended_days == 4
    assert report.late_listings == 2
    # a slice keeps unused index levels: they are not instruments or days
    _, sliced = clean_bars(frame.loc[frame.index.get_level_values(1) != "D"])
    assert (sliced.instruments, sliced.suspended_days, sliced.late_listings) == (3, 4, 1)


def test_warn_issues_one_warning_per_non_zero_kind() -> None:
    report = DataQualityReport(rows=10, instruments=2, invalid_price_bars=3, zero_volume_bars=0,
                               duplicated_rows=2, suspended_days=5, late_listings=0,
                               constant_features=("KMID", "KLEN"), all_nan_features=())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.warn("bars.csv")
    messages = [str(item.message) for item in caught if item.category is DataQualityWarning]
    assert len(messages) == len(caught) == 4
    expected = {"invalid_price_bars": "3", "duplicated_rows": "2", "suspended_days": "5",
                "constant_features": "2"}
    for (kind, count), message in zip(expected.items(), messages, strict=True):
        assert message.startswith(f"bars.csv: {count} ") and f"[{kind}]" in message
    assert messages[-1].endswith("KMID, KLEN")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.warn("bars.csv", kinds=["invalid_price_bars", "zero_volume_bars"])
        report.warn("bars.csv", kinds="late_listings")
    assert [str(item.message) for item in caught] == [messages[0]]
    with pytest.raises(ValueError, match="unknown data quality kind"):
        report.warn("bars.csv", kinds=["rows"])


def test_to_dict_is_json() -> None:
    report = DataQualityReport(rows=np.int64(10), instruments=2,
                               invalid_price_bars=1, zero_volume_bars=0, duplicated_rows=0,
                               suspended_days=0, late_listings=0, all_nan_features=("X",))
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["rows"] == 10 and as_dict["all_nan_features"] == ["X"]
    assert set(as_dict) == {"rows", "instruments", *KINDS}


def test_with_features_finds_constant_and_all_nan_features() -> None:
    index = hand_panel().index
    count = len(index)
    values = {
        ("feature", "moving"): np.arange(count, dtype=np.float64),
        ("feature", "constant"): np.where(np.arange(count) % 3 == 0, np.nan, 2.5),
        ("feature", "empty"): np.full(count, np.nan),
        ("feature", "flag"): np.ones(count, dtype=np.int64),
        ("feature", "with_inf"): np.r_[np.inf, np.ones(count - 1)],
        ("label", "LABEL0"): np.zeros(count),
    }
    frame = pd.DataFrame(values, index=index)
    base = DataQualityReport(rows=count, instruments=3, invalid_price_bars=0, zero_volume_bars=0,
                             duplicated_rows=0, suspended_days=0, late_listings=0)
    report = base.with_features(frame)
    assert report.constant_features == ("constant", "flag")
    assert report.all_nan_features == ("empty",)
    assert base.constant_features == ()  # a copy: the report is frozen
    assert report.rows == base.rows
    with pytest.warns(DataQualityWarning) as caught:
        report.warn("Alpha158", kinds=("constant_features", "all_nan_features"))
    assert len(caught) == 2
    assert "empty" in str(caught[1].message) and "all_nan_features" in str(caught[1].message)
    # a frame without rows: every feature is all-NaN
    assert base.with_features(frame.iloc[:0]).all_nan_features == (
        "moving", "constant", "empty", "flag", "with_inf")


def test_clean_bars_is_fast_on_a_large_panel() -> None:
    days = pd.bdate_range("2015-01-01", periods=300)
    names = [f"SH{600000 + number}" for number in range(3000)]
    index = pd.MultiIndex.from_product([days, names], names=["datetime", "instrument"])
    generator = np.random.default_rng(0)
    frame = pd.DataFrame(generator.uniform(1.0, 2.0, (len(index), len(BAR_NAMES))),
                         index=index, columns=BAR_NAMES)
    frame.iloc[::997, 0] = 0.0
    frame.iloc[5::991, 4] = np.nan
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        cleaned, report = clean_bars(frame)
        timings.append(time.perf_counter() - start)
    assert report.invalid_price_bars == len(range(0, len(frame), 997))
    assert cleaned["close"].isna().sum() == report.invalid_price_bars + report.zero_volume_bars
    assert min(timings) < 0.25, timings  # ~0.03 s on a laptop; generous for slow machines


# -- loaders ------------------------------------------------------------------------------------

DIRTY: dict[str, Any] = {"seed": 5, "n_instruments": 12, "start": "2020-01-01",
                         "end": "2020-12-31", "bad_bar_rate": 0.01, "duplicate_rows": 4}


def quality_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(item.message) for item in caught if item.category is DataQualityWarning]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_loader_reports_and_warns_once(tmp_path: Path, fresh_caches: None,
                                            suffix: str) -> None:
    market = SyntheticMarket(**DIRTY)
    path = market.save(tmp_path / f"bars{suffix}")
    expected_cleaned, expected = clean_bars(market.bars())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = FileLoader(path)
        report = loader.quality_report()
        frame = loader.load_all()
        FileLoader(path).load()
        assert FileLoader(path).quality_report() is report
    messages = quality_warnings(caught)
    assert report is not None
    assert report == expected
    assert report.duplicated_rows == 4 and report.invalid_price_bars > 0
    assert report.zero_volume_bars > 0 and report.suspended_days > 0
    kinds = [kind for kind in KINDS if report.count(kind)]
    assert len(messages) == len(kinds)  # once per kind, not once per load
    assert all(str(path) in message for message in messages)
    assert frame.index.is_unique
    assert frame["close"].isna().sum() == report.invalid_price_bars + report.zero_volume_bars
    pd.testing.assert_frame_equal(frame, expected_cleaned, check_exact=suffix == ".parquet",
                                  check_index_type=False, check_freq=False)


def test_synthetic_loader_reports_and_warns_once(fresh_caches: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = SyntheticLoader(**DIRTY)
        report = loader.quality_report()
        SyntheticLoader(**DIRTY).load_all()
        assert SyntheticLoader(**DIRTY).quality_report() is report
    assert report is not None and report.duplicated_rows == 4
    planted = round(DIRTY["bad_bar_rate"] * report.rows)
    assert report.invalid_price_bars + report.zero_volume_bars == planted
    messages = quality_warnings(caught)
    assert len(messages) == sum(1 for kind in KINDS if report.count(kind))
    assert all(message.startswith("SyntheticLoader(seed=5") for message in messages)
    assert not np.isinf(loader.load_all().to_numpy()).any()


def test_static_loader_cleans_bars_and_skips_features(fresh_caches: None) -> None:
    bars = SyntheticMarket(**DIRTY).bars()
    with pytest.warns(DataQualityWarning, match="StaticLoader"):
        loader = StaticLoader(bars)
    report = loader.quality_report()
    assert report is not None and report.duplicated_rows == 4
    assert loader.load_all().index.is_unique
    assert loader.load_all()["open"].isna().sum() == (
        report.invalid_price_bars + report.zero_volume_bars)
    features = pd.DataFrame({("feature", "a"): 1.0, ("label", "LABEL0"): 0.0},
                            index=hand_panel().index)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        static = StaticLoader(features)
    assert static.quality_report() is None
    assert static.load_all() is not None and len(static.load_all()) == 9
