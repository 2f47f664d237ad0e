"""Trading calendars and :class:`TimeAdjuster`, which moves dates and segments along them.

A calendar is a sorted, unique, tz-naive :class:`pandas.DatetimeIndex` of days at
midnight. :func:`load_calendar` builds one from the dataset's own dates, a file or an
``exchange_calendars`` name; :func:`default_calendar` is the one used when none is
given (the configured Qlib data folder's, as in Qlib). :class:`TimeAdjuster` reproduces
Qlib's ``qlib.workflow.task.utils.TimeAdjuster`` on top of it, without Qlib.

Loading lives in :mod:`taskroll.task.calendar_sources` (dates, files, exchanges); its
public names are re-exported here, so import them all from this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

import numpy as np
import pandas as pd

from taskroll.errors import CalendarError, TaskConfigError
from taskroll.task.calendar_sources import (
    DEFAULT_CALENDAR_END,
    DEFAULT_CALENDAR_START,
    DateLike,
    Segment,
    default_calendar,
    load_calendar,
    to_timestamp,
    weekday_calendar,
)

__all__ = [
    "DEFAULT_CALENDAR_END",
    "DEFAULT_CALENDAR_START",
    "DateLike",
    "Segment",
    "TimeAdjuster",
    "default_calendar",
    "load_calendar",
    "to_timestamp",
    "weekday_calendar",
]


class TimeAdjuster:
    """Find and move dates on a trading calendar, as Qlib's ``TimeAdjuster``.

    Indices are positions in :attr:`cals`. Alignment follows Qlib: a ``"start"``
    point goes to the first calendar day on or after it, an ``"end"`` point to the
    last calendar day on or before it. ``None`` is an unbounded point and passes
    through alignment and shifting unchanged.

    The positional arguments keep Qlib's meaning, ``TimeAdjuster(future, end_time)``;
    the calendar is the keyword ``calendar``. taskroll's own short form
    ``TimeAdjuster(calendar_source)`` still works: a first argument that is not a bool
    is taken as the calendar.

    Args:
        future: Qlib's flag for including days after the last data day. Here
            ``False`` drops the days after today; ``True`` (default) keeps them.
        end_time: Optional last day kept (see :meth:`set_end_time`).
        calendar: A ``TimeAdjuster`` (its days are shared), or any :func:`load_calendar`
            source; ``None`` gives :func:`default_calendar` (the configured Qlib data
            folder's calendar, else the region's exchange calendar, else a weekday calendar
            2000-01-01..2035-12-31).

    Raises:
        CalendarError: When the calendar cannot be loaded or is empty.
        TypeError: When a calendar is given both first and as ``calendar``.
    """

    SHIFT_SD = "sliding"
    SHIFT_EX = "expanding"

    def __init__(self, future: Any = True, end_time: DateLike | None = None,
                 calendar: Any = None) -> None:
        if not isinstance(future, (bool, np.bool_)):  # taskroll's TimeAdjuster(calendar)
            if calendar is not None:
                raise TypeError("TimeAdjuster: the calendar is given twice (first argument "
                                "and calendar=); the first argument is Qlib's future flag")
            calendar, future = future, True
        future = bool(future)
        if isinstance(calendar, TimeAdjuster):
            full = calendar._full_cals
        elif calendar is None:
            full = default_calendar()
        else:
            full = load_calendar(calendar)
        if not future:
            today = pd.Timestamp.now().normalize()
            full = full[full <= today]
            if len(full) == 0:
                raise CalendarError("TimeAdjuster(future=False): the calendar starts after today")
        self._future = future
        self._full_cals: pd.DatetimeIndex = full
        self.cals: pd.DatetimeIndex = full
        self.set_end_time(end_time)

    def set_end_time(self, end_time: DateLike | None = None) -> None:
        """Cut :attr:`cals` at ``end_time`` (included); ``None`` restores the full calendar.

        Raises:
            CalendarError: When ``end_time`` is not a date or precedes the calendar.
        """
        if end_time is None:
            self.cals = self._full_cals
            return
        stamp = to_timestamp(end_time, "end_time")
        cut = self._full_cals[self._full_cals <= stamp]
        if len(cut) == 0:
            raise CalendarError(f"end_time {stamp.date()} is before the calendar's first day "
                                f"{self._full_cals[0].date()}")
        self.cals = cut

    def get(self, idx: int | None) -> pd.Timestamp | None:
        """Return the calendar day at ``idx``, or ``None`` when it is ``None`` or out of range."""
        if idx is None or idx < 0 or idx >= len(self.cals):
            return None
        return pd.Timestamp(self.cals[idx])

    def max(self) -> pd.Timestamp:
        """Return the last calendar day."""
        return pd.Timestamp(self.cals[-1])

    @overload
    def align_idx(self, time_point: None, tp_type: str = ...) -> None: ...

    @overload
    def align_idx(self, time_point: DateLike, tp_type: str = ...) -> int: ...

    def align_idx(self, time_point: DateLike | None, tp_type: str = "start") -> int | None:
        """Return the calendar index of ``time_point``.

        Args:
            time_point: A date; ``None`` means unbounded.
            tp_type: ``"start"``: index of the first day ``>= time_point`` (``len(cals)``
                when none); ``"end"``: index of the last day ``<= time_point`` (``-1``
                when none).

        Returns:
            The index, or ``None`` for ``None``.

        Raises:
            CalendarError: When ``time_point`` is not a date.
            TaskConfigError: When ``tp_type`` is neither ``"start"`` nor ``"end"``.
        """
        if time_point is None:
            return None
        stamp = to_timestamp(time_point, "time point")
        if tp_type == "start":
            return int(self.cals.searchsorted(stamp, side="left"))
        if tp_type == "end":
            return int(self.cals.searchsorted(stamp, side="right")) - 1
        raise TaskConfigError(f"tp_type must be 'start' or 'end', got {tp_type!r}")

    def cal_interval(self, time_point_a: DateLike, time_point_b: DateLike) -> int:
        """Return ``align_idx(a) - align_idx(b)``: trading days from ``b`` to ``a``.

        Raises:
            CalendarError: When a point is ``None`` or not a date.
        """
        if time_point_a is None or time_point_b is None:
            raise CalendarError("cal_interval: an unbounded (None) date has no interval")
        return self.align_idx(time_point_a) - self.align_idx(time_point_b)

    @overload
    def align_time(self, time_point: None, tp_type: str = ...) -> None: ...

    @overload
    def align_time(self, time_point: DateLike, tp_type: str = ...) -> pd.Timestamp: ...

    def align_time(self, time_point: DateLike | None,
                   tp_type: str = "start") -> pd.Timestamp | None:
        """Move ``time_point`` onto the calendar (see :meth:`align_idx`).

        Returns:
            The calendar day, or ``None`` for ``None``.

        Raises:
            CalendarError: When no calendar day lies on the required side of the point
                (a start after the last day, an end before the first day).
        """
        idx = self.align_idx(time_point, tp_type)
        if idx is None:
            return None
        day = self.get(idx)
        if day is None:
            side = "after the last" if tp_type == "start" else "before the first"
            raise CalendarError(
                f"{time_point!r} ({tp_type}) lies {side} calendar day "
                f"({self.cals[0].date()}..{self.cals[-1].date()}); use a longer calendar")
        return day

    @overload
    def align_seg(self, segment: Mapping[str, Any]) -> dict[str, Segment]: ...

    @overload
    def align_seg(self, segment: tuple[Any, ...] | list[Any]) -> Segment: ...

    def align_seg(self, segment: Mapping[str, Any] | tuple[Any, ...] | list[Any]
                  ) -> dict[str, Segment] | Segment:
        """Align a ``(start, end)`` segment, or a dict of them, onto trading days.

        ``("2008-01-01", "2014-12-31")`` becomes the first trading day on/after the
        start and the last on/before the end; ``None`` stays ``None``.

        Returns:
            A tuple of ``Timestamp``/``None``, or a new dict of them.

        Raises:
            CalendarError: When a point is not a date or lies outside the calendar.
            TaskConfigError: When a segment is not a pair.
        """
        if isinstance(segment, Mapping):
            return {key: self._align_pair(value) for key, value in segment.items()}
        return self._align_pair(segment)

    def _align_pair(self, segment: Any) -> Segment:
        if isinstance(segment, (tuple, list)) and len(segment) == 2:
            return (self.align_time(segment[0], "start"), self.align_time(segment[1], "end"))
        raise TaskConfigError(f"a segment must be a (start, end) pair, got {segment!r}")

    def truncate(self, segment: tuple[Any, ...] | list[Any], test_start: DateLike,
                 days: int) -> Segment:
        """Cut ``segment`` so that it ends ``days`` trading days before ``test_start``.

        Each bound's index becomes ``min(index, align_idx(test_start) - days)``; use
        ``days = label horizon + days the label looks ahead`` to avoid leakage. An
        unbounded end becomes that limit; an unbounded start stays ``None``.

        Returns:
            The new segment.

        Raises:
            CalendarError: When the cut segment would start before the calendar.
            TaskConfigError: When ``segment`` is not a pair.
        """
        if not isinstance(segment, (tuple, list)) or len(segment) != 2:
            raise TaskConfigError(f"a segment must be a (start, end) pair, got {segment!r}")
        limit = self.align_idx(test_start) - days
        if limit < 0:
            raise CalendarError(f"truncate: {days} trading days before {test_start!r} is before "
                                f"the calendar's first day {self.cals[0].date()}")
        start_idx = self.align_idx(segment[0], "start")
        end_idx = self.align_idx(segment[1], "end")
        new_start = None if start_idx is None else self.get(min(start_idx, limit))
        new_end = self.get(limit if end_idx is None else min(end_idx, limit))
        return (new_start, new_end)

    def shift(self, seg: tuple[Any, ...] | list[Any], step: int,
              rtype: str = SHIFT_SD) -> Segment:
        """Move a segment by ``step`` trading days.

        ``SHIFT_SD`` ("sliding") moves both bounds; ``SHIFT_EX`` ("expanding") only the
        end. An end moved past the calendar becomes ``None`` (as Qlib's ``get``);
        ``None`` bounds stay ``None``.

        Returns:
            The new segment.

        Raises:
            KeyError: When the new start lies outside the calendar (Qlib's signal that
                rolling has reached the calendar's end).
            TaskConfigError: For an unknown ``rtype`` or a segment that is not a pair.
        """
        if not isinstance(seg, (tuple, list)) or len(seg) != 2:
            raise TaskConfigError(f"a segment must be a (start, end) pair, got {seg!r}")
        start_idx = self.align_idx(seg[0], "start")
        end_idx = self.align_idx(seg[1], "end")
        if rtype == self.SHIFT_SD:
            start_idx = None if start_idx is None else start_idx + step
        elif rtype != self.SHIFT_EX:
            raise TaskConfigError(
                f"rtype must be {self.SHIFT_SD!r} or {self.SHIFT_EX!r}, got {rtype!r}")
        end_idx = None if end_idx is None else end_idx + step
        if start_idx is not None and not 0 <= start_idx < len(self.cals):
            raise KeyError("The segment is out of valid calendar")
        return (self.get(start_idx), self.get(end_idx))

    def __repr__(self) -> str:
        return (f"TimeAdjuster({self.cals[0].date()}..{self.cals[-1].date()}, "
                f"{len(self.cals)} days)")
