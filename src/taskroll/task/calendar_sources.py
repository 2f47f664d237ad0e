"""Trading calendars: parsing dates and loading a calendar from dates, a file or an exchange.

A calendar is a sorted, unique, tz-naive :class:`pandas.DatetimeIndex` of days at
midnight. :func:`load_calendar` builds one from the dataset's own dates, a file or an
``exchange_calendars`` name; :func:`default_calendar` is the one used when none is
given (the configured Qlib data folder's, as in Qlib).
:class:`~taskroll.task.calendar.TimeAdjuster` moves dates and segments along such a
calendar; import every name from :mod:`taskroll.task.calendar`, which re-exports this
module's public names.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from taskroll.config import REGION_CALENDARS, check_region, get_settings
from taskroll.errors import CalendarError, TaskConfigError

DateLike: TypeAlias = str | dt.date | dt.datetime | pd.Timestamp | np.datetime64
"""Anything :func:`to_timestamp` accepts as a date."""

Segment: TypeAlias = tuple[pd.Timestamp | None, pd.Timestamp | None]
"""A ``(start, end)`` pair of calendar days; ``None`` is an unbounded end."""

DEFAULT_CALENDAR_START = pd.Timestamp("2000-01-01")
DEFAULT_CALENDAR_END = pd.Timestamp("2035-12-31")

_PARQUET_SUFFIXES = (".parquet", ".pq")
_DATE_COLUMNS = ("date", "datetime")


def to_timestamp(value: Any, where: str = "date") -> pd.Timestamp:
    """Parse one date into a tz-naive :class:`pandas.Timestamp` (time of day kept).

    Args:
        value: A string, ``date``, ``datetime``, ``Timestamp`` or ``numpy.datetime64``.
            A tz-aware value keeps its wall-clock time and drops its zone.
        where: What the value is, used in error messages (``"task.dataset...test"``).

    Returns:
        The timestamp.

    Raises:
        CalendarError: For ``None``, numbers, booleans, NaT and unparseable values.
    """
    if value is None or isinstance(value, (bool, int, float, np.number)):
        raise CalendarError(f"{where}: {value!r} is not a date; use e.g. '2020-01-31'")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as error:
        raise CalendarError(f"{where}: cannot parse {value!r} as a date: {error}") from error
    if pd.isna(stamp):
        raise CalendarError(f"{where}: {value!r} is not a date (NaT)")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_localize(None)
    return stamp


def _finalise(dates: Iterable[Any] | pd.Index, what: str, start: DateLike | None,
              end: DateLike | None) -> pd.DatetimeIndex:
    """Normalise to midnight, drop the zone, sort, de-duplicate and cut to ``[start, end]``."""
    if isinstance(dates, pd.DatetimeIndex):
        index = dates
    else:
        values = list(dates)
        try:  # fast path: one consistent format, one zone
            index = pd.DatetimeIndex(pd.to_datetime(pd.Index(values, dtype=object)))
        except (ValueError, TypeError, OverflowError):  # mixed forms: one by one
            index = pd.DatetimeIndex([to_timestamp(value, f"{what}: date {number}")
                                      for number, value in enumerate(values, start=1)])
    if index.hasnans:
        raise CalendarError(f"{what}: contains missing dates (NaT)")
    if index.tz is not None:
        index = index.tz_localize(None)
    index = pd.DatetimeIndex(index.normalize().unique().sort_values()).as_unit("ns")
    start_stamp = None if start is None else to_timestamp(start, f"{what}: start").normalize()
    end_stamp = None if end is None else to_timestamp(end, f"{what}: end").normalize()
    if start_stamp is not None and end_stamp is not None and start_stamp > end_stamp:
        raise CalendarError(f"{what}: start {start_stamp.date()} is after end {end_stamp.date()}")
    if start_stamp is not None:
        index = index[index >= start_stamp]
    if end_stamp is not None:
        index = index[index <= end_stamp]
    if len(index) == 0:
        raise CalendarError(f"{what}: the calendar has no day between {start} and {end}")
    return index.rename(None)


def weekday_calendar(start: DateLike = DEFAULT_CALENDAR_START,
                     end: DateLike = DEFAULT_CALENDAR_END) -> pd.DatetimeIndex:
    """Return every Monday-to-Friday between ``start`` and ``end`` (both included).

    Args:
        start: First day considered.
        end: Last day considered.

    Returns:
        A tz-naive index of midnight days; holidays are not removed.

    Raises:
        CalendarError: When a bound is not a date, ``start`` is after ``end``, or the
            range holds no weekday.
    """
    start_stamp = to_timestamp(start, "weekday_calendar: start").normalize()
    end_stamp = to_timestamp(end, "weekday_calendar: end").normalize()
    if start_stamp > end_stamp:
        raise CalendarError(
            f"weekday_calendar: start {start_stamp.date()} is after end {end_stamp.date()}")
    days = pd.bdate_range(start_stamp, end_stamp)
    if len(days) == 0:
        raise CalendarError(f"weekday_calendar: no weekday between {start} and {end}")
    return _finalise(days, "weekday_calendar", None, None)


def default_calendar() -> pd.DatetimeIndex:
    """Return the trading calendar used when none is given (``TimeAdjuster(None)``).

    In order: the configured Qlib data folder's ``calendars/day.txt``
    (``taskroll.init(provider_uri=...)``, as Qlib's calendar comes from its data); else the
    exchange calendar of the configured ``region`` (``XSHG`` for ``"cn"``, ``XNYS`` for
    ``"us"``); else every weekday 2000-01-01..2035-12-31.

    Raises:
        CalendarError: When the data folder's calendar is missing or unreadable, or the
            configured region is not ``"cn"``/``"us"``.
    """
    settings = get_settings()
    if settings.provider_uri:
        path = Path(settings.provider_uri).expanduser() / "calendars" / "day.txt"
        if not path.is_file():
            raise CalendarError(f"the configured Qlib data folder {settings.provider_uri} has no "
                                "calendars/day.txt")
        return load_calendar(path)
    if settings.region:
        try:
            region = check_region(settings.region, "TASKROLL_REGION")
        except TaskConfigError as error:
            raise CalendarError(str(error)) from error
        return load_calendar(REGION_CALENDARS[region])
    return weekday_calendar()


def _column_dates(frame: pd.DataFrame, what: str) -> pd.Index:
    """Pick the dates of a table: a ``date``/``datetime`` column, a date index, or column 0."""
    lowered = {str(column).lower(): column for column in frame.columns}
    for name in _DATE_COLUMNS:
        if name in lowered:
            column: pd.Index = pd.Index(frame[lowered[name]].to_numpy())
            return column
    if isinstance(frame.index, (pd.MultiIndex, pd.DatetimeIndex)):
        return _index_dates(frame.index)
    if len(frame.columns) == 0:
        raise CalendarError(f"{what}: the table has no column to read dates from")
    first: pd.Index = pd.Index(frame.iloc[:, 0].to_numpy())
    return first


def _index_dates(index: pd.Index) -> pd.Index:
    """Dates of an index: the ``datetime`` (else first) level of a MultiIndex, or itself."""
    if isinstance(index, pd.MultiIndex):
        names = [str(name).lower() for name in index.names]
        level = next((names.index(name) for name in _DATE_COLUMNS if name in names), 0)
        return index.get_level_values(level)
    return index


def _read_file(path: Path) -> pd.Index:
    """Read the dates of a text, CSV or Parquet calendar file."""
    what = f"calendar file {str(path)!r}"
    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            return _column_dates(pd.read_parquet(path), what)
        if ".csv" in name:
            return _column_dates(pd.read_csv(path), what)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, ImportError) as error:
        raise CalendarError(f"{what}: cannot read it: {error}") from error
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and lines[0].lower() in _DATE_COLUMNS:  # a header line
        lines = lines[1:]
    for number, line in enumerate(lines, start=1):
        to_timestamp(line, f"{what}, date {number}")
    return pd.Index(lines)


def _exchange_sessions(name: str, start: DateLike | None,
                       end: DateLike | None) -> pd.DatetimeIndex:
    """Sessions of an ``exchange_calendars`` calendar, extended by weekdays past its data."""
    # the library trips newer pandas deprecations internally; they are not ours to act on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return _exchange_sessions_quietly(name, start, end)


def _exchange_sessions_quietly(name: str, start: DateLike | None,
                               end: DateLike | None) -> pd.DatetimeIndex:
    import exchange_calendars

    try:
        calendar_class = type(exchange_calendars.get_calendar(name))
    except Exception as error:  # the library raises its own InvalidCalendarName
        raise CalendarError(f"unknown exchange calendar {name!r}: {error}") from error
    bound_min, bound_max = calendar_class.bound_min(), calendar_class.bound_max()
    start_stamp = (to_timestamp(start, f"{name}: start").normalize() if start is not None
                   else bound_min if bound_min is not None else DEFAULT_CALENDAR_START)
    end_stamp = (to_timestamp(end, f"{name}: end").normalize() if end is not None
                 else max(DEFAULT_CALENDAR_END, bound_max or DEFAULT_CALENDAR_END))
    if start_stamp > end_stamp:
        raise CalendarError(f"{name}: start {start_stamp.date()} is after end {end_stamp.date()}")
    if bound_min is not None:
        start_stamp = max(start_stamp, bound_min)
    parts: list[pd.DatetimeIndex] = []
    data_end = end_stamp if bound_max is None else min(end_stamp, bound_max)
    if start_stamp <= data_end:
        try:
            calendar = exchange_calendars.get_calendar(name, start=start_stamp, end=data_end)
        except Exception as error:
            raise CalendarError(f"{name}: cannot build sessions {start_stamp.date()}.."
                                f"{data_end.date()}: {error}") from error
        parts.append(pd.DatetimeIndex(calendar.sessions))
    if bound_max is not None and end_stamp > bound_max:
        extension_start = max(start_stamp, bound_max + pd.Timedelta(days=1))
        parts.append(pd.DatetimeIndex(pd.bdate_range(extension_start, end_stamp)))
    dates = parts[0].append(parts[1:]) if len(parts) > 1 else parts[0] if parts else []
    return _finalise(dates, f"exchange calendar {name!r}", None, None)


def load_calendar(source: Any, start: DateLike | None = None,
                  end: DateLike | None = None) -> pd.DatetimeIndex:
    """Load a trading calendar.

    Sources:

    * a sequence of dates: a list, tuple, array, ``DatetimeIndex``, a Series of dates,
      or a (datetime, instrument) ``MultiIndex`` / a DataFrame indexed by one (its
      ``datetime`` level, else its first level, is used);
    * a path (``str`` or ``os.PathLike``) to a file: ``*.parquet``/``*.pq`` and
      ``*.csv`` tables use the column named ``date`` or ``datetime`` (any case), else a
      date index, else the first column; any other file is text with one date per line
      (blank lines, ``#`` comments and a ``date`` header line are skipped);
    * an ``exchange_calendars`` name such as ``"XSHG"`` or ``"XNYS"``. Without ``start``
      the calendar's whole history is used (from ``2000-01-01`` for calendars with no
      lower bound); without ``end`` it runs to ``DEFAULT_CALENDAR_END`` (2035-12-31).
      **Past the last session the library knows** (XSHG's data ends on 2026-12-31),
      the calendar is extended with every weekday (Monday to Friday, holidays not
      known): rolling tasks whose test windows reach into those years still work,
      but their day counts there are approximate until the library is updated.

    Args:
        source: One of the sources above.
        start: Optional first day kept.
        end: Optional last day kept.

    Returns:
        A sorted, unique, tz-naive ``DatetimeIndex`` of midnight days.

    Raises:
        CalendarError: When the file is missing or unreadable, the name is not a known
            calendar, a date cannot be parsed, ``start`` is after ``end``, or no day is left.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return _finalise(_read_file(path), f"calendar file {str(path)!r}", start, end)
        text = str(source)
        looks_like_path = (isinstance(source, os.PathLike) or os.sep in text
                           or path.suffix.lower() in (".txt", ".csv", *_PARQUET_SUFFIXES))
        if looks_like_path and not _is_exchange_name(text):
            raise CalendarError(f"calendar file {text!r} does not exist")
        return _exchange_sessions(text, start, end)
    if isinstance(source, pd.DataFrame):
        return _finalise(_column_dates(source, "calendar table"), "calendar table", start, end)
    if isinstance(source, pd.Series):
        if pd.api.types.is_datetime64_any_dtype(source.dtype) or source.dtype == object:
            dates: Any = pd.Index(source.to_numpy())
        else:
            dates = _index_dates(source.index)
        return _finalise(dates, "calendar series", start, end)
    if isinstance(source, pd.Index):
        return _finalise(_index_dates(source), "calendar index", start, end)
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise CalendarError(
            f"cannot load a calendar from a {type(source).__name__}; give dates, a file path "
            "or an exchange_calendars name such as 'XSHG'")
    return _finalise(list(source), "calendar dates", start, end)


def _is_exchange_name(name: str) -> bool:
    import exchange_calendars

    return name in exchange_calendars.get_calendar_names()
