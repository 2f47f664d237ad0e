"""Qlib's binary day layout, written by ``write_qlib_data`` and read by ``QlibDataLoader``.

Real files in ``tmp_path``; a hand-built folder checks the layout's meaning independently
of the writer (a shared misreading would otherwise pass the round trip).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import taskroll
from taskroll import config
from taskroll.data import (
    Alpha158,
    DataHandlerLP,
    QlibDataLoader,
    SyntheticMarket,
    read_qlib_calendar,
    read_qlib_feature,
    read_qlib_instruments,
    write_qlib_data,
)
from taskroll.errors import DataError
from taskroll.task.calendar import TimeAdjuster, weekday_calendar
from taskroll.task.gen import RollingGen

T = pd.Timestamp
SPANS = [("SH600001", "2019-03-01", "2019-06-28"), ("SH600001", "2020-01-02", "2020-02-28"),
         "SH600002"]


@pytest.fixture(scope="module")
def qlib_folder(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest market (suspensions, listings, delistings) in Qlib's layout."""
    return write_qlib_data(bars, tmp_path_factory.mktemp("qlib") / "cn_data",
                           markets={"small": SPANS})


@pytest.fixture(autouse=True)
def restored_data_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove, after the test, the data settings ``init`` exports (setenv records that they
    were absent; delenv of an absent name records nothing)."""
    for name in ("TASKROLL_PROVIDER_URI", "TASKROLL_REGION"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file's content hash: proof an error changed nothing."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def write_layout_by_hand(folder: Path) -> Path:
    """Five days; SH600000 from day 1 with a suspension on day 3; SZ000001 days 0-1."""
    (folder / "calendars").mkdir(parents=True)
    (folder / "calendars" / "day.txt").write_text(
        "2021-01-04\n2021-01-05\n2021-01-06\n2021-01-07\n2021-01-08\n")
    (folder / "instruments").mkdir()
    (folder / "instruments" / "all.txt").write_text(
        "SH600000\t2021-01-05\t2021-01-08\nSZ000001\t2021-01-04\t2021-01-05\n")
    (folder / "instruments" / "csi300.txt").write_text(
        "SH600000\t2021-01-05\t2021-01-05\nSH600000\t2021-01-08\t2021-01-08\n"
        "SZ000001\t2021-01-04\t2021-01-04\n")
    for name, start, closes in (("sh600000", 1, [10.0, 11.0, np.nan, 13.5]),
                                ("sz000001", 0, [20.0, 21.25])):
        (folder / "features" / name).mkdir(parents=True)
        np.array([start, *closes], dtype="<f4").tofile(folder / "features" / name / "close.day.bin")
    return folder


def test_round_trip_gives_back_the_panel_float32_exact(qlib_folder: Path,
                                                       bars: pd.DataFrame) -> None:
    loaded = QlibDataLoader(qlib_folder).load_all()
    expected = bars.astype(np.float32).astype(np.float64)  # Qlib stores float32
    pd.testing.assert_frame_equal(loaded, expected)
    calendar = read_qlib_calendar(qlib_folder)
    assert calendar.equals(pd.DatetimeIndex(bars.index.get_level_values(0).unique()))
    assert (qlib_folder / "features" / "sh600000" / "close.day.bin").is_file()
    assert set(read_qlib_instruments(qlib_folder)) == set(bars.index.get_level_values(1))


def test_the_layout_means_what_qlib_means(tmp_path: Path) -> None:
    folder = write_layout_by_hand(tmp_path / "hand")
    start, values = read_qlib_feature(folder / "features" / "sh600000" / "close.day.bin", 5)
    assert start == 1 and values.dtype == np.float32 and len(values) == 4
    loader = QlibDataLoader(folder)
    frame = loader.load_all()
    assert list(frame.columns) == ["close"]
    expected = pd.Series(
        [20.0, 10.0, 21.25, 11.0, 13.5],
        index=pd.MultiIndex.from_tuples(
            [(T("2021-01-04"), "SZ000001"), (T("2021-01-05"), "SH600000"),
             (T("2021-01-05"), "SZ000001"), (T("2021-01-06"), "SH600000"),
             (T("2021-01-08"), "SH600000")], names=["datetime", "instrument"]), name="close")
    pd.testing.assert_series_equal(frame["close"], expected, check_index_type=False)
    # a market keeps each instrument's rows inside its (several) listing spans
    csi300 = loader.load("csi300")
    assert list(csi300.index) == [(T("2021-01-04"), "SZ000001"), (T("2021-01-05"), "SH600000"),
                                  (T("2021-01-08"), "SH600000")]
    assert loader.calendar().equals(pd.DatetimeIndex(pd.bdate_range("2021-01-04", "2021-01-08"),
                                                     name="datetime"))


def test_markets_restrict_instruments_and_spans(qlib_folder: Path, bars: pd.DataFrame) -> None:
    loader = QlibDataLoader(qlib_folder)
    small = loader.load("small", "2019-01-01", "2020-12-31")
    names = small.index.get_level_values(1)
    dates = small.index.get_level_values(0)
    assert set(names) == {"SH600001", "SH600002"}
    first = dates[names == "SH600001"]
    in_spans = ((first >= T("2019-03-01")) & (first <= T("2019-06-28"))) | (
        (first >= T("2020-01-02")) & (first <= T("2020-02-28")))
    assert in_spans.all() and first.min() < T("2019-07-01") and first.max() > T("2020-01-01")
    whole = bars.xs("SH600002", level=1)
    assert (names == "SH600002").sum() == len(whole)  # a bare name: its whole life
    # the same market as Qlib's dict form, any case; a list of names ignores case
    pd.testing.assert_frame_equal(loader.load({"market": "SMALL", "filter_pipe": []}), small)
    listed = loader.load(["sh600003", "SH600004"], "2020-01-01", "2020-01-31")
    assert set(listed.index.get_level_values(1)) == {"SH600003", "SH600004"}
    assert listed.index.get_level_values(0).min() >= T("2020-01-01")
    with pytest.raises(DataError, match="filter_pipe"):
        loader.load({"market": "small", "filter_pipe": [{"filter_type": "NameDFilter"}]})


def test_a_universe_limits_what_is_read(qlib_folder: Path) -> None:
    frame = QlibDataLoader(qlib_folder, universe="small").load_all()
    assert set(frame.index.get_level_values(1)) == {"SH600001", "SH600002"}
    # the whole history is read: spans are applied by select(), after features are computed
    assert frame.xs("SH600001", level=1).index.min() < T("2019-03-01")


def test_cached_until_a_file_changes(tmp_path: Path) -> None:
    folder = write_layout_by_hand(tmp_path / "hand")
    first = QlibDataLoader(folder).load_all()
    assert QlibDataLoader(folder).load_all() is first
    path = folder / "features" / "sz000001" / "close.day.bin"
    np.array([0, 20.0, 22.5, 23.0], dtype="<f4").tofile(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = QlibDataLoader(folder).load_all()
    assert changed is not first
    assert changed.loc[(T("2021-01-06"), "SZ000001"), "close"] == 23.0


def test_fast_on_300_instruments_by_3000_days(tmp_path: Path) -> None:
    import time

    bars = SyntheticMarket(seed=2, n_instruments=300, start="2010-01-01",
                           end="2021-06-30").bars()
    folder = write_qlib_data(bars, tmp_path / "big")
    started = time.perf_counter()
    frame = QlibDataLoader(folder).load_all()
    elapsed = time.perf_counter() - started
    assert len(frame) == len(bars) and frame.index.get_level_values(0).nunique() > 2900
    assert elapsed < 10.0, f"reading took {elapsed:.1f}s"


# ---------------------------------------------------------------- bad input


def _truncate(folder: Path) -> None:
    path = folder / "features" / "sh600000" / "close.day.bin"
    path.write_bytes(path.read_bytes()[:-2])


def _past_calendar(folder: Path) -> None:
    np.array([3, 1.0, 2.0, 3.0], dtype="<f4").tofile(
        folder / "features" / "sh600000" / "close.day.bin")


def _bad_start(folder: Path) -> None:
    np.array([1.5, 1.0], dtype="<f4").tofile(folder / "features" / "sh600000" / "close.day.bin")


def _append_line(text: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        with (folder / "instruments" / "csi300.txt").open("a") as handle:
            handle.write(text)
    return change


def _unordered_calendar(folder: Path) -> None:
    (folder / "calendars" / "day.txt").write_text("2021-01-05\n2021-01-04\n2021-01-06\n"
                                                  "2021-01-07\n2021-01-08\n")


@pytest.mark.parametrize(("damage", "call", "message"), [
    (None, lambda folder: QlibDataLoader(folder / "missing"), "does not exist"),
    (lambda folder: (folder / "calendars" / "day.txt").unlink(),
     lambda folder: QlibDataLoader(folder), "calendars/day.txt is missing"),
    (None, lambda folder: QlibDataLoader(folder, freq="1min"), "freq='1min'"),
    (None, lambda folder: QlibDataLoader(folder).load("csi999"),
     r"market 'csi999'.*csi999.txt does not exist; markets there: \['all', 'csi300'\]"),
    (_append_line("SH600009 2021-01-04 2021-01-05\n"), lambda folder: QlibDataLoader(folder)
     .load("csi300"), r"csi300.txt, line 4: expected instrument<TAB>start<TAB>end"),
    (_append_line("SH600009\t2021-01-04\tsoon\n"), lambda folder: QlibDataLoader(folder)
     .load("csi300"), r"csi300.txt, line 4: cannot parse 'soon'"),
    (_append_line("SH600009\t2021-01-06\t2021-01-04\n"), lambda folder: QlibDataLoader(folder)
     .load("csi300"), r"line 4: the span .* ends before it starts"),
    (_truncate, lambda folder: QlibDataLoader(folder).load_all(),
     r"close.day.bin is truncated: 18 bytes"),
    (_past_calendar, lambda folder: QlibDataLoader(folder).load_all(), "run past the calendar"),
    (_bad_start, lambda folder: QlibDataLoader(folder).load_all(), "start index 1.5"),
    (_unordered_calendar, lambda folder: QlibDataLoader(folder).load_all(),
     "line 2: 2021-01-04 does not follow 2021-01-05"),
])
def test_bad_folders_raise_clear_errors_and_change_nothing(
        tmp_path: Path, damage: Callable[[Path], None] | None, call: Callable[[Path], Any],
        message: str) -> None:
    folder = write_layout_by_hand(tmp_path / "hand")
    if damage is not None:
        damage(folder)
    before = folder_digest(folder)
    with pytest.raises(DataError, match=message):
        call(folder)
    assert folder_digest(folder) == before


def test_writer_refuses_unknown_market_members(bars: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'NOPE' is not in the bars"):
        write_qlib_data(bars, tmp_path / "x", markets={"small": ["NOPE"]})
    with pytest.raises(DataError, match="to a later one"):
        write_qlib_data(bars, tmp_path / "x", markets={"small": [("SH600000", "2020-02-01",
                                                                   "2020-01-01")]})
    with pytest.raises(DataError, match="none of the fields"):
        write_qlib_data(bars[[]], tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- handlers and calendar


def test_a_handler_without_a_data_source_says_how_to_get_one(
        isolated_settings: config.Settings) -> None:
    with pytest.raises(DataError) as caught:
        Alpha158(start_time="2020-01-01", end_time="2020-03-31")
    message = str(caught.value)
    assert "provider_uri" in message and "FileLoader" in message
    assert "SyntheticLoader" in message
    with pytest.raises(DataError, match="no data source"):
        Alpha158(init_data=False)
    # an explicit synthetic loader keeps working
    handler = Alpha158(start_time="2018-06-01", end_time="2018-06-30", windows=[5],
                       data_loader={"class": "SyntheticLoader",
                                    "kwargs": {"n_instruments": 5, "start": "2018-01-01",
                                               "end": "2018-06-30"}})
    assert len(handler.fetch()) > 0


def test_a_handler_without_a_loader_reads_the_provider(isolated_settings: config.Settings,
                                                       qlib_folder: Path) -> None:
    taskroll.init(provider_uri=qlib_folder)
    handler = Alpha158(instruments="small", start_time="2019-01-01", end_time="2020-12-31",
                       windows=[5])
    assert isinstance(handler.data_loader, QlibDataLoader)
    assert handler.data_loader.universe == "small"
    features = handler.fetch(col_set="feature")
    names = features.index.get_level_values(1)
    assert set(names) == {"SH600001", "SH600002"}
    first = features.index.get_level_values(0)[names == "SH600001"]
    assert first.min() >= T("2019-03-01") and first.max() <= T("2020-02-28")
    assert not ((first > T("2019-06-28")) & (first < T("2020-01-02"))).any()
    handler.config(instruments=["SH600003"])
    handler.setup_data()
    assert set(handler.fetch().index.get_level_values(1)) == {"SH600003"}
    # the generic handler still needs a loader of feature/label columns
    with pytest.raises(taskroll.TaskConfigError, match="data_loader"):
        DataHandlerLP()


def test_the_calendar_comes_from_the_data(isolated_settings: config.Settings,
                                          qlib_folder: Path) -> None:
    assert TimeAdjuster().cals.equals(weekday_calendar())  # today's default without data
    taskroll.init(provider_uri=qlib_folder)
    expected = read_qlib_calendar(qlib_folder)
    assert TimeAdjuster().cals.equals(expected)
    generator = RollingGen(step=20)
    assert generator.ta.cals.equals(expected)
    assert generator.ta.align_time("2020-01-01", "start") == expected[expected >= "2020-01-01"][0]
