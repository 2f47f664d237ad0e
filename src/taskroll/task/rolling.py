"""Rolling task generation without look-ahead: :class:`RollingGen` and :func:`handler_mod`.

Import these names from :mod:`taskroll.task.gen`. Three rules keep a rolling task
from seeing the future:

* **Label gap.** A data handler's *label horizon* ``h`` means that the label of
  trading day ``t`` uses bars up to and including ``t + h``. Every train/valid
  segment ends ``h + 1`` trading days (the *gap*) before the next segment starts,
  so its last label only uses bars from before that start.
* **Refit per roll.** The handler's (and its processors') ``fit_start_time`` /
  ``fit_end_time`` follow each task's train segment.
* **Calendar steps.** Test windows may follow calendar weeks, months, quarters or
  years (see :mod:`taskroll.task.periods`); they only depend on the calendar up
  to their own period's end.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.errors import CalendarError, LookAheadWarning, TaskConfigError
from taskroll.task.base import (
    SEGMENTS_WHERE,
    Task,
    TaskGen,
    align_segments,
    gap_segments,
    make_adjuster,
    parse_segments,
    with_segments,
)
from taskroll.task.calendar import DateLike, Segment, TimeAdjuster, to_timestamp
from taskroll.task.periods import Step, next_start_idx, parse_step, window_end_idx
from taskroll.task.spec import get_callable_by_config

_HANDLER_WHERE = "task.dataset.kwargs.handler"
_DEFAULT_HANDLER_MODULE = "taskroll.data.handler"  # as DatasetH resolves its handler cfg
_FIT_KEYS = ("fit_start_time", "fit_end_time")
_PROCESSOR_KEYS = ("infer_processors", "learn_processors")


def _check_horizon(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TaskConfigError(f"{where}: a label horizon must be an int >= 0 (trading days "
                              f"the label looks ahead), got {value!r}")
    return value


def _handler_of(task: Any) -> Any:
    dataset = task.get("dataset") if isinstance(task, Mapping) else None
    kwargs = dataset.get("kwargs") if isinstance(dataset, Mapping) else None
    return kwargs.get("handler") if isinstance(kwargs, Mapping) else None


def task_label_horizon(task: Any) -> int | None:
    """Return the label horizon declared by a task's data handler, or ``None`` when unknown.

    Looked up in order: the handler cfg's ``kwargs["label_horizon"]`` (path
    ``task["dataset"]["kwargs"]["handler"]``), then the ``LABEL_HORIZON`` attribute of the
    handler class the cfg names (resolved as :class:`~taskroll.data.dataset.DatasetH`
    does, default module ``taskroll.data.handler``; a handler given as a class or an
    object is read directly). A class that cannot be imported, a handler given as a
    file URI, or no attribute: ``None``.

    Args:
        task: A task or template.

    Returns:
        ``h``: the label of trading day ``t`` uses bars up to ``t + h``; or ``None``.

    Raises:
        TaskConfigError: When the declared horizon is not an int >= 0.
    """
    handler = _handler_of(task)
    if handler is None:
        return None
    handler_class: Any = handler
    if isinstance(handler, Mapping):
        handler_kwargs = handler.get("kwargs")
        if isinstance(handler_kwargs, Mapping) and handler_kwargs.get("label_horizon") is not None:
            return _check_horizon(handler_kwargs["label_horizon"],
                                  f"{_HANDLER_WHERE}.kwargs.label_horizon")
    if isinstance(handler, (Mapping, str)):
        try:
            handler_class, _ = get_callable_by_config(handler, _DEFAULT_HANDLER_MODULE,
                                                      _HANDLER_WHERE)
        except Exception:  # not importable (or a pickle URI): the horizon is unknown
            return None
    value = getattr(handler_class, "LABEL_HORIZON", None)
    if value is None:
        return None
    name = getattr(handler_class, "__qualname__", type(handler_class).__qualname__)
    return _check_horizon(value, f"{_HANDLER_WHERE}: {name}.LABEL_HORIZON")


def _handler_time(value: Any, path: str) -> pd.Timestamp:
    try:
        return to_timestamp(value, path)
    except CalendarError as error:
        raise TaskConfigError(str(error)) from error


def _refit_processors(processors: Sequence[Any], fit: Mapping[str, Any]) -> list[Any] | None:
    """Copies of the processor cfgs with a fit range set to ``fit``; ``None`` when none has one."""
    refitted: list[Any] = []
    changed = False
    for item in processors:
        item_kwargs = item.get("kwargs") if isinstance(item, Mapping) else None
        if isinstance(item, Mapping) and isinstance(item_kwargs, Mapping) and any(
                key in item_kwargs for key in _FIT_KEYS):
            item = {**item, "kwargs": {**item_kwargs, **fit}}
            changed = True
        refitted.append(item)
    return refitted if changed else None


def handler_mod(task: Task, rolling_gen: RollingGen) -> None:
    """Fit the data handler's cfg to the task's new segments.

    Changes ``task["dataset"]["kwargs"]["handler"]["kwargs"]`` (the dicts on that path,
    and the processor cfgs changed, are copied, so a template sharing them is not
    touched):

    * ``end_time`` is moved to the test segment's end when it is earlier (or to
      ``None`` when the test end is unbounded), ``start_time`` to the train segment's
      start when that is earlier; a missing or ``None`` bound stays as it is.
    * Unless ``rolling_gen.refit_per_roll`` is false: when the kwargs hold
      ``fit_start_time`` or ``fit_end_time``, both become the train segment's bounds;
      so do those of every processor cfg (a dict with ``kwargs``) in
      ``infer_processors`` / ``learn_processors`` whose kwargs hold one of them. Each
      roll then normalises with statistics of its own training window.

    Tasks whose handler is not a cfg dict (absent, an object, a file URI) are left alone.

    Args:
        task: A generated task, changed in place.
        rolling_gen: The generator; its ``test_key``, ``train_key`` and
            ``refit_per_roll`` are used.

    Raises:
        TaskConfigError: When a handler bound or a segment bound is not a date.
    """
    dataset = task.get("dataset")
    kwargs = dataset.get("kwargs") if isinstance(dataset, Mapping) else None
    handler = kwargs.get("handler") if isinstance(kwargs, Mapping) else None
    handler_kwargs = handler.get("kwargs") if isinstance(handler, Mapping) else None
    segments = kwargs.get("segments") if isinstance(kwargs, Mapping) else None
    if not isinstance(handler_kwargs, Mapping) or not isinstance(segments, Mapping):
        return
    path = f"{_HANDLER_WHERE}.kwargs"
    updates: dict[str, Any] = {}
    test_segment = segments.get(rolling_gen.test_key)
    end_time = handler_kwargs.get("end_time")
    if isinstance(test_segment, (tuple, list)) and len(test_segment) == 2 and end_time is not None:
        test_end = test_segment[1]
        if test_end is None or _handler_time(end_time, f"{path}.end_time") < _handler_time(
                test_end, f"task.dataset.kwargs.segments.{rolling_gen.test_key}[1]"):
            updates["end_time"] = test_end
    train_value = segments.get(rolling_gen.train_key)
    train_segment: Sequence[Any] | None = (
        train_value if isinstance(train_value, (tuple, list)) and len(train_value) == 2 else None)
    start_time = handler_kwargs.get("start_time")
    if train_segment is not None and start_time is not None:
        train_start = train_segment[0]
        if train_start is None or _handler_time(start_time, f"{path}.start_time") > _handler_time(
                train_start, f"task.dataset.kwargs.segments.{rolling_gen.train_key}[0]"):
            updates["start_time"] = train_start
    if train_segment is not None and getattr(rolling_gen, "refit_per_roll", True):
        fit = dict(zip(_FIT_KEYS, train_segment, strict=True))
        if any(key in handler_kwargs for key in _FIT_KEYS):
            updates.update(fit)
        for key in _PROCESSOR_KEYS:
            processors = handler_kwargs.get(key)
            if isinstance(processors, (list, tuple)):
                refitted = _refit_processors(processors, fit)
                if refitted is not None:
                    updates[key] = type(processors)(refitted)
    if updates:
        assert isinstance(dataset, Mapping) and isinstance(kwargs, Mapping)
        assert isinstance(handler, Mapping)
        new_handler = {**handler, "kwargs": {**handler_kwargs, **updates}}
        task["dataset"] = {**dataset, "kwargs": {**kwargs, "handler": new_handler}}


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TaskConfigError(f"RollingGen: {name} must be True or False, got {value!r}")
    return value


class RollingGen(TaskGen):
    """Generate rolling tasks: consecutive test windows, train/valid moving along, no look-ahead.

    From a template whose test segment starts at the first test day, :meth:`generate`
    makes the first task, whose test window runs from that day for ``step`` trading
    days (or to the end of its calendar period for a period ``step``); each next
    window starts on the trading day after the previous one ends, until a window
    would start after the template's test end (the calendar end when it is ``None``).
    Every other segment moves by the number of trading days the test start moved:
    under ``ROLL_EX`` the train start is kept (expanding window), under ``ROLL_SD``
    train moves as a whole (sliding window); valid always slides.

    **Label gap.** The template's label horizon ``h`` is ``label_horizon`` when given,
    else the handler cfg's kwargs ``label_horizon``, else its class's ``LABEL_HORIZON``
    (:func:`task_label_horizon`). Every non-test segment of every task then ends at
    least ``g = h + 1`` trading days before the next segment starts (train before
    valid, valid before test; :func:`~taskroll.task.base.gap_segments`), so
    ``index(train end) + h < index(valid start)`` and the last label of a segment
    only uses bars from before the next one. ``trunc_days`` overrides ``g`` when it is
    at least ``g``; a smaller one needs ``allow_label_leak=True`` (and warns). With an
    unknown ``h`` and no ``trunc_days`` nothing is cut and a
    :class:`~taskroll.errors.LookAheadWarning` is issued once per call.

    Differences from Qlib, on purpose: the gap applies relative to the next segment,
    not only to the test start, and is derived from the horizon by default; the last
    test window is clipped to the template's test end (and to the calendar end);
    every following window has its full length from its start (so a clipped window
    does not shorten later ones in :meth:`gen_following_tasks`); and the calendar is
    an argument instead of Qlib's data provider.

    Args:
        step: Trading days per test window (``int >= 1``), or a calendar period:
            ``"W"`` (Monday-Sunday weeks), ``"M"``, ``"Q"``, ``"Y"`` (also ``"ME"``,
            ``"MS"``, ``"QE"``, ``"QS"``, ``"YE"``, ``"YS"``, ``"A"``, ``"AS"``).
        rtype: ``ROLL_EX`` (expanding) or ``ROLL_SD`` (sliding).
        ds_extra_mod_func: Called as ``func(task, self)`` on each generated task; the
            default, :func:`handler_mod`, widens the handler's time range and refits it.
        test_key: Name of the test segment.
        train_key: Name of the train segment.
        trunc_days: The gap in trading days between a segment's end and the next
            segment's start; ``None``: ``label horizon + 1``.
        task_copy_func: Copies the template for each task; the default deep copy can
            be replaced to share heavy objects (the segments and handler path are
            still copied, so the template is never changed).
        calendar: A :class:`TimeAdjuster`, dates or a :func:`load_calendar` source;
            ``None``: a weekday calendar 2000..2035.
        label_horizon: The label horizon ``h`` of every template, overriding the handler's.
        allow_label_leak: Accept a ``trunc_days`` below ``h + 1`` (with a warning).
        refit_per_roll: Read by :func:`handler_mod`: move fit ranges to each train
            segment (default) or keep the template's.

    Raises:
        TaskConfigError: For a bad ``step``, ``rtype``, ``trunc_days``, ``label_horizon``
            or flag, or a ``trunc_days`` below ``label_horizon + 1`` without
            ``allow_label_leak``.
        CalendarError: When the calendar cannot be loaded.
    """

    ROLL_EX = TimeAdjuster.SHIFT_EX  # fixed start date, expanding end date
    ROLL_SD = TimeAdjuster.SHIFT_SD  # fixed segment size, slides from the start date

    def __init__(self, step: Step = 40, rtype: str = ROLL_EX,
                 ds_extra_mod_func: Callable[[Task, RollingGen], None] | None = handler_mod,
                 test_key: str = "test", train_key: str = "train",
                 trunc_days: int | None = None,
                 task_copy_func: Callable[[Task], Task] = copy.deepcopy,
                 calendar: Any = None, *, label_horizon: int | None = None,
                 allow_label_leak: bool = False, refit_per_roll: bool = True) -> None:
        self.step: Step = parse_step(step)
        if rtype not in (self.ROLL_EX, self.ROLL_SD):
            raise TaskConfigError(
                f"RollingGen: rtype must be ROLL_EX ({self.ROLL_EX!r}) or ROLL_SD "
                f"({self.ROLL_SD!r}), got {rtype!r}")
        if trunc_days is not None and (isinstance(trunc_days, bool)
                                       or not isinstance(trunc_days, int) or trunc_days < 0):
            raise TaskConfigError(
                f"RollingGen: trunc_days must be None or an int >= 0, got {trunc_days!r}")
        self.label_horizon = (None if label_horizon is None
                              else _check_horizon(label_horizon, "RollingGen: label_horizon"))
        self.allow_label_leak = _check_flag(allow_label_leak, "allow_label_leak")
        self.refit_per_roll = _check_flag(refit_per_roll, "refit_per_roll")
        self.rtype = rtype
        self.ds_extra_mod_func = ds_extra_mod_func
        self.test_key = test_key
        self.train_key = train_key
        self.trunc_days = trunc_days
        self.task_copy_func = task_copy_func
        self.ta = make_adjuster(calendar)
        if self.label_horizon is not None and not self.allow_label_leak:
            self._checked_gap(self.label_horizon)

    def horizon_of(self, task: Task) -> int | None:
        """Return the label horizon used for ``task``: ``label_horizon``, else the handler's.

        Raises:
            TaskConfigError: When the handler declares an invalid horizon.
        """
        if self.label_horizon is not None:
            return self.label_horizon
        return task_label_horizon(task)

    def _checked_gap(self, horizon: int) -> int:
        """The gap for a known horizon: ``trunc_days`` if allowed, else ``horizon + 1``."""
        required = horizon + 1
        if self.trunc_days is None or self.trunc_days >= required:
            return required if self.trunc_days is None else self.trunc_days
        message = (f"RollingGen: trunc_days={self.trunc_days} is below the gap of {required} "
                   f"trading days that label horizon {horizon} needs (horizon + 1): the labels "
                   f"at the end of train/valid would use prices from the next segment")
        if not self.allow_label_leak:
            raise TaskConfigError(f"{message}; use trunc_days >= {required}, leave trunc_days="
                                  "None to derive it, or pass allow_label_leak=True to accept "
                                  "the leak")
        warnings.warn(f"{message}; allowed by allow_label_leak=True", LookAheadWarning,
                      stacklevel=4)
        return self.trunc_days

    def _gap(self, task: Task) -> int | None:
        """The gap for ``task``'s segments, or ``None`` (no cut) for an unknown horizon."""
        horizon = self.horizon_of(task)
        if horizon is not None:
            return self._checked_gap(horizon)
        if self.trunc_days is None:
            warnings.warn(
                f"RollingGen: the label horizon of {_HANDLER_WHERE} is unknown, so train/valid "
                "segments are not truncated and their last labels may use prices from the next "
                "segment; set RollingGen(label_horizon=h), the handler cfg's kwargs "
                "'label_horizon', or a LABEL_HORIZON class attribute (the label of day t uses "
                "bars up to t + h), or give trunc_days", LookAheadWarning, stacklevel=3)
        return self.trunc_days

    def _update_task_segs(self, task: Task, segments: Mapping[str, Segment]) -> None:
        with_segments(task, segments)
        if self.ds_extra_mod_func is not None:
            self.ds_extra_mod_func(task, self)

    def _test_window(self, start_idx: int, test_end: pd.Timestamp) -> Segment:
        """The window from ``start_idx``, clipped to ``test_end`` and the calendar end."""
        end_idx = min(window_end_idx(self.ta, start_idx, self.step),
                      self.ta.align_idx(test_end, "end"), len(self.ta.cals) - 1)
        return (self.ta.get(start_idx), self.ta.get(end_idx))

    def gen_following_tasks(self, task: Task, test_end: DateLike | None) -> list[Task]:
        """Generate the rolling tasks that follow ``task``, up to ``test_end``.

        Each next test window starts on the trading day after the previous window's
        full length (``step`` days, or the end of the period of the previous test
        start) and is clipped to ``test_end``; every other segment moves by as many
        trading days as the test start (train expanding under ``ROLL_EX``), and the
        label gap is applied to each new task. Generation stops when a test window
        would start after ``test_end`` or beyond the calendar. ``task`` may come back
        from a store (segments as lists of date strings).

        Args:
            task: The latest rolling task (e.g. the last one trained).
            test_end: The last test day to cover; ``None``: the calendar end.

        Returns:
            The following tasks, ``task`` itself excluded (empty when none fits).

        Raises:
            TaskConfigError: When ``task``'s segments are missing or malformed, or a
                segment would be empty after the gap.
            CalendarError: When a date lies outside the calendar.
        """
        return self._following(task, test_end, self._gap(task))

    def _following(self, task: Task, test_end: DateLike | None, gap: int | None) -> list[Task]:
        previous = align_segments(self.ta, parse_segments(task, (self.test_key,)))
        limit = self.ta.max() if test_end is None else self.ta.align_time(test_end, "end")
        following: list[Task] = []
        while True:
            test_start = previous[self.test_key][0]
            if test_start is None:
                raise TaskConfigError(f"{SEGMENTS_WHERE}.{self.test_key}: the test start is None")
            start_idx = self.ta.align_idx(test_start)
            new_idx = next_start_idx(self.ta, start_idx, self.step)
            new_start = self.ta.get(new_idx)
            if new_start is None or new_start > limit:
                break
            segments: dict[str, Segment] = {}
            try:
                for key, segment in previous.items():
                    if key == self.test_key:
                        segments[key] = self._test_window(new_idx, limit)
                        continue
                    expanding = key == self.train_key and self.rtype == self.ROLL_EX
                    rtype = self.ta.SHIFT_EX if expanding else self.ta.SHIFT_SD
                    segments[key] = self.ta.shift(segment, step=new_idx - start_idx, rtype=rtype)
            except KeyError:  # a segment left the calendar: no more rolling
                break
            if gap is not None:
                segments = gap_segments(self.ta, segments, gap, self.test_key)
            new_task = self.task_copy_func(task)
            self._update_task_segs(new_task, segments)
            following.append(new_task)
            previous = segments
        return following

    def generate(self, task: Task) -> list[Task]:
        """Convert a template into its rolling tasks.

        Args:
            task: A template with ``dataset.kwargs.segments`` holding at least the train
                and test segments, e.g. ``{"train": ("2008-01-01", "2014-12-31"),
                "valid": ("2015-01-01", "2016-12-20"), "test": ("2017-01-01", None)}``.
                It is not modified.

        Returns:
            One task per test window, in time order; segments are tuples of
            ``pandas.Timestamp`` aligned to the calendar, with the label gap applied.

        Raises:
            TaskConfigError: When segments are missing or malformed (the message names
                the path, e.g. ``task.dataset.kwargs.segments.test``), a segment holds
                no trading day (before or after the gap), or the horizon or gap is invalid.
            CalendarError: When a segment lies outside the calendar.
        """
        parsed = parse_segments(task, (self.train_key, self.test_key))
        if parsed[self.test_key][0] is None:
            raise TaskConfigError(f"{SEGMENTS_WHERE}.{self.test_key}[0]: the test start must "
                                  "be a date to roll from")
        segments = align_segments(self.ta, parsed)
        gap = self._gap(task)
        test_start, test_end = segments[self.test_key]
        assert test_start is not None
        test_end = self.ta.max() if test_end is None else test_end
        segments[self.test_key] = self._test_window(self.ta.align_idx(test_start), test_end)
        if gap is not None:
            segments = gap_segments(self.ta, segments, gap, self.test_key)
        first = self.task_copy_func(task)
        self._update_task_segs(first, segments)
        return [first, *self._following(first, test_end, gap)]
