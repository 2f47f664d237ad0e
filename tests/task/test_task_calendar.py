"""TimeAdjuster and load_calendar against small hand-written calendars and real files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taskroll.errors import CalendarError, TaskConfigError
from taskroll.task.calendar import TimeAdjuster, load_calendar, weekday_calendar

T = pd.Timestamp

# Hand-written: a week with a holiday (Wed 2024-01-03) and a long weekend (Mon 2024-01-08).
DAYS = ["2024-01-02", "2024-01-04", "2024-01-05", "2024-01-09", "2024-01-10",
        "2024-01-11", "2024-01-12", "2024-01-15"]


@pytest.fixture
def adjuster() -> TimeAdjuster:
    return TimeAdjuster(DAYS)


def test_cals_get_and_max(adjuster: TimeAdjuster) -> None:
    assert list(adjuster.cals) == [T(day) for day in DAYS]
    assert adjuster.get(0) == T("2024-01-02")
    assert adjuster.get(7) == T("2024-01-15")
    assert adjuster.get(8) is None
    assert adjuster.get(-1) is None
    assert adjuster.get(None) is None
    assert adjuster.max() == T("2024-01-15")


def test_align_idx_start_and_end(adjuster: TimeAdjuster) -> None:
    assert adjuster.align_idx("2024-01-03") == 1  # holiday: next day for a start
    assert adjuster.align_idx("2024-01-03", tp_type="end") == 0  # previous day for an end
    assert adjuster.align_idx("2024-01-06") == 3  # Saturday -> Tue 9th (Mon 8th closed)
    assert adjuster.align_idx("2024-01-06", tp_type="end") == 2
    assert adjuster.align_idx("2024-01-04") == adjuster.align_idx("2024-01-04", "end") == 1
    assert adjuster.align_idx("2023-12-01") == 0
    assert adjuster.align_idx("2023-12-01", "end") == -1
    assert adjuster.align_idx("2024-02-01") == 8  # len(cals): beyond the end
    assert adjuster.align_idx(None) is None
    with pytest.raises(TaskConfigError, match="tp_type"):
        adjuster.align_idx("2024-01-04", tp_type="middle")


def test_align_time_seg_and_interval(adjuster: TimeAdjuster) -> None:
    assert adjuster.align_time(dt.date(2024, 1, 7)) == T("2024-01-09")
    assert adjuster.align_time(np.datetime64("2024-01-07"), "end") == T("2024-01-05")
    assert adjuster.align_seg(("2024-01-01", "2024-01-08")) == (T("2024-01-02"), T("2024-01-05"))
    segments = {"train": ["2024-01-03", None], "test": ("2024-01-13", "2024-01-20")}
    assert adjuster.align_seg(segments) == {
        "train": (T("2024-01-04"), None), "test": (T("2024-01-15"), T("2024-01-15"))}
    assert adjuster.cal_interval("2024-01-15", "2024-01-02") == 7
    assert adjuster.cal_interval("2024-01-02", "2024-01-15") == -7
    with pytest.raises(CalendarError, match="after the last"):
        adjuster.align_time("2024-02-01", "start")
    with pytest.raises(CalendarError, match="before the first"):
        adjuster.align_time("2023-12-01", "end")
    with pytest.raises(CalendarError):
        adjuster.cal_interval(None, "2024-01-02")  # type: ignore[arg-type]


def test_shift_sliding_expanding_and_beyond_end(adjuster: TimeAdjuster) -> None:
    segment = ("2024-01-02", "2024-01-05")  # idx 0..2
    assert adjuster.shift(segment, 2, TimeAdjuster.SHIFT_SD) == (T("2024-01-05"), T("2024-01-10"))
    assert adjuster.shift(segment, 2, TimeAdjuster.SHIFT_EX) == (T("2024-01-02"), T("2024-01-10"))
    assert adjuster.shift(segment, 5) == (T("2024-01-11"), T("2024-01-15"))  # sliding default
    # the end runs past the calendar: None, as Qlib's get
    assert adjuster.shift(segment, 6) == (T("2024-01-12"), None)
    assert adjuster.shift(segment, 7, TimeAdjuster.SHIFT_EX) == (T("2024-01-02"), None)
    # the start runs past the calendar: KeyError, as Qlib
    with pytest.raises(KeyError):
        adjuster.shift(segment, 8)
    # None bounds stay None
    assert adjuster.shift((None, "2024-01-04"), 1) == (None, T("2024-01-05"))
    with pytest.raises(TaskConfigError, match="rtype"):
        adjuster.shift(segment, 1, "rolling")


def test_truncate(adjuster: TimeAdjuster) -> None:
    # test starts on the 11th (idx 5): 2 days before it is idx 3 (the 9th)
    assert adjuster.truncate(("2024-01-02", "2024-01-10"), "2024-01-11", 2) == (
        T("2024-01-02"), T("2024-01-09"))
    assert adjuster.truncate(("2024-01-02", "2024-01-04"), "2024-01-11", 2) == (
        T("2024-01-02"), T("2024-01-04"))  # already early enough
    assert adjuster.truncate(("2024-01-10", "2024-01-10"), "2024-01-11", 3) == (
        T("2024-01-05"), T("2024-01-05"))
    assert adjuster.truncate((None, None), "2024-01-11", 1) == (None, T("2024-01-10"))
    with pytest.raises(CalendarError):
        adjuster.truncate(("2024-01-02", "2024-01-10"), "2024-01-04", 3)


def test_set_end_time(adjuster: TimeAdjuster) -> None:
    adjuster.set_end_time("2024-01-10")
    assert adjuster.max() == T("2024-01-10")
    adjuster.set_end_time(None)
    assert adjuster.max() == T("2024-01-15")


def test_default_calendar_is_weekdays_2000_to_2035() -> None:
    adjuster = TimeAdjuster()
    assert adjuster.cals[0] == T("2000-01-03")  # 2000-01-01 is a Saturday
    assert adjuster.max() == T("2035-12-31")
    assert (adjuster.cals.day_of_week < 5).all()
    shared = TimeAdjuster(adjuster)
    assert shared.cals.equals(adjuster.cals)


def test_weekday_calendar() -> None:
    days = weekday_calendar("2024-01-05", "2024-01-09")
    assert list(days) == [T("2024-01-05"), T("2024-01-08"), T("2024-01-09")]
    with pytest.raises(CalendarError, match="after end"):
        weekday_calendar("2024-02-01", "2024-01-01")
    with pytest.raises(CalendarError, match="not-a-date"):
        weekday_calendar("not-a-date", "2024-01-01")
    with pytest.raises(CalendarError):
        weekday_calendar("2024-01-06", "2024-01-07")  # a weekend only


def test_load_from_sequences_normalises() -> None:
    days = load_calendar(["2024-01-05 15:00", dt.date(2024, 1, 2), "2024-01-02",
                          pd.Timestamp("2024-01-04", tz="Asia/Shanghai")])
    assert list(days) == [T("2024-01-02"), T("2024-01-04"), T("2024-01-05")]
    assert days.tz is None
    panel_index = pd.MultiIndex.from_product(
        [pd.to_datetime(["2024-01-03", "2024-01-02"]), ["AAA", "BBB"]],
        names=["datetime", "instrument"])
    assert list(load_calendar(panel_index)) == [T("2024-01-02"), T("2024-01-03")]
    frame = pd.DataFrame({"close": [1.0, 2.0, 3.0, 4.0]}, index=panel_index)
    assert list(load_calendar(frame)) == [T("2024-01-02"), T("2024-01-03")]
    assert list(load_calendar(DAYS, start="2024-01-05", end="2024-01-09")) == [
        T("2024-01-05"), T("2024-01-09")]
    with pytest.raises(CalendarError):
        load_calendar(["2024-01-02", "garbage"])
    with pytest.raises(CalendarError):
        load_calendar(DAYS, start="2024-02-01")  # nothing left
    with pytest.raises(CalendarError, match="after end"):
        load_calendar(DAYS, start="2024-01-10", end="2024-01-05")
    with pytest.raises(CalendarError):
        load_calendar(42)


def test_load_from_text_csv_and_parquet(tmp_path: Path) -> None:
    expected = [T(day) for day in DAYS]
    text = tmp_path / "day.txt"
    text.write_text("\n".join(reversed(DAYS)) + "\n\n", encoding="utf-8")
    assert list(load_calendar(text)) == expected
    assert list(load_calendar(str(text))) == expected

    csv_path = tmp_path / "calendar.csv"
    pd.DataFrame({"value": range(len(DAYS)), "Date": DAYS}).to_csv(csv_path, index=False)
    assert list(load_calendar(csv_path)) == expected
    first_column = tmp_path / "first.csv"
    pd.DataFrame({"day": DAYS, "value": range(len(DAYS))}).to_csv(first_column, index=False)
    assert list(load_calendar(first_column)) == expected

    parquet_path = tmp_path / "calendar.parquet"
    pd.DataFrame({"datetime": pd.to_datetime(DAYS), "x": 1}).to_parquet(parquet_path)
    assert list(load_calendar(parquet_path)) == expected
    panel_path = tmp_path / "panel.parquet"
    index = pd.MultiIndex.from_product([pd.to_datetime(DAYS), ["A", "B"]],
                                       names=["datetime", "instrument"])
    pd.DataFrame({"close": 1.0}, index=index).to_parquet(panel_path)
    assert list(load_calendar(panel_path)) == expected
    assert TimeAdjuster(parquet_path).max() == T("2024-01-15")

    bad = tmp_path / "bad.txt"
    bad.write_text("2024-01-02\nnot a day\n", encoding="utf-8")
    with pytest.raises(CalendarError, match="date 2"):
        load_calendar(bad)
    with pytest.raises(CalendarError, match="does not exist"):
        load_calendar(tmp_path / "missing.csv")


def test_xshg_extended_with_weekdays_past_its_data() -> None:
    days = load_calendar("XSHG", start="2024-01-01", end="2027-12-31")
    assert T("2024-10-01") not in days  # National Day holiday from the exchange data
    assert T("2024-09-30") in days
    assert T("2027-03-03") in days  # past the data: every weekday
    assert T("2027-03-06") not in days  # a Saturday
    assert (days[days.year == 2027].day_of_week < 5).all()
    assert len(days[days.year == 2027]) == len(pd.bdate_range("2027-01-01", "2027-12-31"))
    assert days.is_monotonic_increasing and days.is_unique and days.tz is None
    adjuster = TimeAdjuster("XSHG")  # default end: 2035-12-31
    assert adjuster.max() == T("2035-12-31")
    assert adjuster.align_time("2027-06-05") == T("2027-06-07")  # Sat -> Mon
    with pytest.raises(CalendarError, match="unknown exchange calendar"):
        load_calendar("NOT_AN_EXCHANGE")
