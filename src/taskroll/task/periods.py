"""Rolling steps: a number of trading days, or a calendar period ("W", "M", "Q", "Y").

A period step cuts test windows at calendar boundaries: a window runs from its
first trading day to the last trading day of the same calendar week (Monday to
Sunday), month, quarter or year, and the next window starts on the next trading
day, which is the first trading day of a later period.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import pandas as pd

from taskroll.errors import TaskConfigError
from taskroll.task.calendar import TimeAdjuster

Step: TypeAlias = int | str
"""A rolling step: trading days (``int >= 1``) or a period code ``"W"``, ``"M"``, ``"Q"``, ``"Y"``."""

PERIODS = ("W", "M", "Q", "Y")
"""The canonical period codes: weekly, monthly, quarterly, yearly."""

PERIOD_ALIASES: dict[str, str] = {
    "W": "W", "M": "M", "ME": "M", "MS": "M", "Q": "Q", "QE": "Q", "QS": "Q",
    "Y": "Y", "YE": "Y", "YS": "Y", "A": "Y", "AS": "Y",
}
"""Accepted spellings (pandas-style aliases) → canonical code; one letter in any case."""


def parse_step(step: Any, where: str = "RollingGen") -> Step:
    """Validate a rolling step and return it in canonical form.

    Args:
        step: A positive ``int`` (trading days) or one of :data:`PERIOD_ALIASES`.
        where: Name used in error messages.

    Returns:
        The ``int``, or the canonical period code.

    Raises:
        TaskConfigError: For booleans, non-positive or non-integer numbers, and
            unknown strings; the message lists the accepted strings.
    """
    if isinstance(step, str):
        key = step.strip()
        key = key.upper() if len(key) == 1 else key
        if key in PERIOD_ALIASES:
            return PERIOD_ALIASES[key]
    elif isinstance(step, int) and not isinstance(step, bool) and step >= 1:
        return step
    accepted = ", ".join(repr(code) for code in PERIODS)
    aliases = ", ".join(repr(alias) for alias in PERIOD_ALIASES if alias not in PERIODS)
    raise TaskConfigError(
        f"{where}: step must be a positive int (trading days) or one of {accepted} (weekly, "
        f"monthly, quarterly, yearly; also {aliases}), got {step!r}")


def period_end(day: pd.Timestamp, period: str) -> pd.Timestamp:
    """Return the last calendar date of the period containing ``day``.

    Weeks run Monday to Sunday; quarters and years are calendar ones.

    Args:
        day: A date (midnight).
        period: A canonical code of :data:`PERIODS`.

    Returns:
        The period's last date (midnight), which need not be a trading day.

    Raises:
        TaskConfigError: For an unknown period code.
    """
    day = day.normalize()
    if period == "W":
        return day + pd.Timedelta(days=6 - day.weekday())
    if period == "Y":
        return pd.Timestamp(day.year, 12, 31)
    if period == "M":
        month = day.month
    elif period == "Q":
        month = (day.month - 1) // 3 * 3 + 3
    else:
        raise TaskConfigError(f"unknown period {period!r}; use one of {PERIODS}")
    first = pd.Timestamp(day.year, month, 1)
    return first + pd.Timedelta(days=first.days_in_month - 1)


def window_end_idx(ta: TimeAdjuster, start_idx: int, step: Step) -> int:
    """Index of the last day of the test window starting at ``start_idx`` (not clipped).

    For an ``int`` step it is ``start_idx + step - 1``; for a period, the last trading
    day of the period containing the day at ``start_idx``.
    """
    if isinstance(step, int):
        return start_idx + step - 1
    day = ta.get(start_idx)
    if day is None:
        raise TaskConfigError(f"window_end_idx: index {start_idx} is outside the calendar")
    return ta.align_idx(period_end(day, step), "end")


def next_start_idx(ta: TimeAdjuster, start_idx: int, step: Step) -> int:
    """Index of the next test window's first day after the window starting at ``start_idx``.

    For a period step this is the first trading day after the period of ``start_idx``,
    whatever part of the period the window started in. It may be ``len(ta.cals)``.
    """
    return window_end_idx(ta, start_idx, step) + 1
