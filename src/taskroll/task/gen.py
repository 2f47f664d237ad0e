"""Task generators: turn task templates into lists of tasks, as Qlib's ``workflow.task.gen``.

:class:`RollingGen` cuts a template's test period into consecutive windows of
``step`` trading days or calendar periods and moves train/valid along, keeping a
label gap so no training or validation label uses a price from the next segment;
:class:`MultiHorizonGenBase` makes one task per label horizon; :func:`task_generator`
chains generators. Generated segments are ``(pandas.Timestamp, pandas.Timestamp)``
tuples on the generator's trading calendar
(:class:`~taskroll.task.calendar.TimeAdjuster`).

The code lives in :mod:`taskroll.task.base` (generator base, segment helpers),
:mod:`taskroll.task.rolling` (:class:`RollingGen`, :func:`handler_mod`) and
:mod:`taskroll.task.periods` (calendar-period steps); import it from here.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from typing import Any

from taskroll.errors import TaskConfigError
from taskroll.task.base import (
    Task,
    TaskGen,
    align_segments,
    gap_segments,
    make_adjuster,
    parse_segments,
    task_generator,
    trunc_segments,
    with_segments,
)
from taskroll.task.periods import PERIODS, Step
from taskroll.task.rolling import RollingGen, handler_mod, task_label_horizon

__all__ = [
    "PERIODS",
    "MultiHorizonGenBase",
    "RollingGen",
    "Step",
    "Task",
    "TaskGen",
    "gap_segments",
    "handler_mod",
    "task_generator",
    "task_label_horizon",
    "trunc_segments",
]


class MultiHorizonGenBase(TaskGen):
    """Generate one task per label horizon, with train/valid cut to avoid label leakage.

    Subclasses implement :meth:`set_horizon` (e.g. change the label expression). For
    horizon ``hr`` every non-test segment ends ``hr + label_leak_n`` trading days
    before the test start (Qlib's ``trunc_segments``).

    Args:
        horizon: The horizons, one task each (default ``(5,)``, as Qlib).
        label_leak_n: Trading days after the prediction day needed for a complete
            label (predict on ``T``, buy ``T+1``, sell ``T+2`` → 2).
        test_key: Name of the test segment.
        calendar: As in :class:`RollingGen`.

    Raises:
        TaskConfigError: For a negative horizon or ``label_leak_n``.
    """

    def __init__(self, horizon: Sequence[int] = (5,), label_leak_n: int = 2,
                 test_key: str = "test", calendar: Any = None) -> None:
        self.horizon = list(horizon)
        if any(isinstance(value, bool) or not isinstance(value, int) or value < 0
               for value in [*self.horizon, label_leak_n]):
            raise TaskConfigError(f"MultiHorizonGenBase: horizons and label_leak_n must be "
                                  f"ints >= 0, got {self.horizon!r} and {label_leak_n!r}")
        self.label_leak_n = label_leak_n
        self.test_key = test_key
        self.ta = make_adjuster(calendar)

    @abc.abstractmethod
    def set_horizon(self, task: Task, hr: int) -> None:
        """Change ``task`` **in place** so that it predicts horizon ``hr``.

        Args:
            task: A copy of the template.
            hr: The horizon in trading days.
        """

    def generate(self, task: Task) -> list[Task]:
        """Return one task per horizon, segments aligned and truncated.

        Args:
            task: The template (not modified).

        Returns:
            The tasks, in the order of ``horizon``.

        Raises:
            TaskConfigError: When segments are missing or malformed.
            CalendarError: When a segment lies outside the calendar.
        """
        tasks: list[Task] = []
        for hr in self.horizon:
            new_task = copy.deepcopy(task)
            self.set_horizon(new_task, hr)
            segments = align_segments(self.ta, parse_segments(new_task, (self.test_key,)))
            trunc_segments(self.ta, segments, hr + self.label_leak_n, self.test_key)
            with_segments(new_task, segments)
            tasks.append(new_task)
        return tasks
