"""Task generators: turn task templates into lists of tasks, as Qlib's ``workflow.task.gen``.

:class:`RollingGen` cuts a template's test period into consecutive windows of
``step`` trading days and moves train/valid along; :class:`MultiHorizonGenBase`
makes one task per label horizon; :func:`task_generator` chains generators.
Generated segments are ``(pandas.Timestamp, pandas.Timestamp)`` tuples on the
generator's trading calendar (:class:`~taskroll.task.calendar.TimeAdjuster`).
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, TypeAlias

import pandas as pd

from taskroll.errors import CalendarError, TaskConfigError
from taskroll.task.calendar import DateLike, Segment, TimeAdjuster, to_timestamp

Task: TypeAlias = dict[str, Any]
"""A task: ``{"model": cfg, "dataset": cfg, "record": [cfg, ...], ...}``."""

_SEGMENTS_PATH = ("dataset", "kwargs", "segments")


def task_generator(tasks: Task | Sequence[Task],
                   generators: TaskGen | Sequence[TaskGen]) -> list[Task]:
    """Apply each generator in turn to every task and return the flat list (a product).

    With templates ``[a, b, c]`` and generators ``[A, B]`` where ``A`` makes 2 tasks per
    template and ``B`` 3, the result has ``3 * 2 * 3 = 18`` tasks, ordered template by
    template, then by ``A``'s output, then by ``B``'s.

    Args:
        tasks: One task template or a sequence of them.
        generators: One :class:`TaskGen` or a sequence of them.

    Returns:
        The generated tasks; the templates themselves are not changed.
    """
    current: list[Task] = [tasks] if isinstance(tasks, Mapping) else list(tasks)
    generator_list = [generators] if isinstance(generators, TaskGen) else list(generators)
    for generator in generator_list:
        current = [new_task for task in current for new_task in generator.generate(task)]
    return current


class TaskGen(abc.ABC):
    """Base class of task generators: one template in, a list of tasks out.

    Examples: a rolling generator (template → one task per test window), a loss
    generator (template → one task per loss function).
    """

    @abc.abstractmethod
    def generate(self, task: Task) -> list[Task]:
        """Generate tasks from the template ``task``.

        Args:
            task: A task template; implementations must not modify it.

        Returns:
            The generated tasks.
        """

    def __call__(self, task: Task) -> list[Task]:
        """Same as :meth:`generate`."""
        return self.generate(task)


def _segments_node(task: Any, where: str = "task") -> Mapping[str, Any]:
    """Return ``task["dataset"]["kwargs"]["segments"]`` or raise naming the missing step."""
    node, path = task, where
    for key in _SEGMENTS_PATH:
        if not isinstance(node, Mapping) or key not in node:
            kind = "missing" if isinstance(node, Mapping) else (
                f"unreachable: {path} is a {type(node).__name__}, not a dict")
            raise TaskConfigError(
                f"{path}.{key}: {kind}; task generation needs dataset.kwargs.segments = "
                "{'train': (start, end), 'valid': (start, end), 'test': (start, end)}")
        node, path = node[key], f"{path}.{key}"
    if not isinstance(node, Mapping):
        raise TaskConfigError(f"{path}: must be a dict of (start, end) pairs, "
                              f"got {type(node).__name__}")
    return node


def _parse_segments(task: Any, required: Sequence[str],
                    where: str = "task") -> dict[str, Segment]:
    """Validate a task's raw segments and parse their bounds (not yet aligned).

    Raises:
        TaskConfigError: Missing path or key, a bound that is not a date, start after end.
    """
    node = _segments_node(task, where)
    base = f"{where}.{'.'.join(_SEGMENTS_PATH)}"
    for key in required:
        if key not in node:
            raise TaskConfigError(f"{base}.{key}: missing; segments has keys {sorted(node)}")
    parsed: dict[str, Segment] = {}
    for key, segment in node.items():
        path = f"{base}.{key}"
        if not isinstance(segment, (tuple, list)) or len(segment) != 2:
            raise TaskConfigError(f"{path}: must be a (start, end) pair, got {segment!r}")
        try:
            bounds = [None if bound is None else to_timestamp(bound, f"{path}[{position}]")
                      for position, bound in enumerate(segment)]
        except CalendarError as error:
            raise TaskConfigError(str(error)) from error
        start, end = bounds
        if start is not None and end is not None and start > end:
            raise TaskConfigError(f"{path}: start {start.date()} is after end {end.date()}")
        parsed[key] = (start, end)
    return parsed


def _align_segments(adjuster: TimeAdjuster, parsed: Mapping[str, Segment],
                    where: str = "task") -> dict[str, Segment]:
    """Align parsed segments onto the calendar; a segment left with no trading day is an error.

    Raises:
        CalendarError: A bound lies outside the calendar.
        TaskConfigError: A segment contains no trading day.
    """
    base = f"{where}.{'.'.join(_SEGMENTS_PATH)}"
    aligned: dict[str, Segment] = {}
    for key, segment in parsed.items():
        try:
            start, end = adjuster.align_seg(segment)
        except CalendarError as error:
            raise CalendarError(f"{base}.{key}: {error}") from error
        if start is not None and end is not None and start > end:
            raise TaskConfigError(f"{base}.{key}: {segment[0]}..{segment[1]} contains no "
                                  f"trading day of the calendar")
        aligned[key] = (start, end)
    return aligned


def _with_segments(task: Task, segments: Mapping[str, Segment]) -> None:
    """Put ``segments`` into ``task``, copying the dicts on the way so no template is touched."""
    dataset = task["dataset"]
    task["dataset"] = {**dataset, "kwargs": {**dataset["kwargs"], "segments": dict(segments)}}


def _handler_time(value: Any, path: str) -> pd.Timestamp:
    try:
        return to_timestamp(value, path)
    except CalendarError as error:
        raise TaskConfigError(str(error)) from error


def handler_mod(task: Task, rolling_gen: RollingGen) -> None:
    """Widen the data handler's own time range to cover the task's new segments.

    Changes ``task["dataset"]["kwargs"]["handler"]["kwargs"]`` (the dicts on that path
    are copied, so a template sharing them is not touched): ``end_time`` is moved to
    the test segment's end when it is earlier (or to ``None`` when the test end is
    unbounded), ``start_time`` to the train segment's start when that is earlier. A
    missing or ``None`` handler bound is already unbounded and stays as it is. Tasks
    whose handler is not a cfg dict (absent, an object, a file URI) are left alone.

    Args:
        task: A generated task, changed in place.
        rolling_gen: The generator; its ``test_key`` and ``train_key`` are used.

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
    path = "task.dataset.kwargs.handler.kwargs"
    updates: dict[str, Any] = {}
    test_segment = segments.get(rolling_gen.test_key)
    end_time = handler_kwargs.get("end_time")
    if isinstance(test_segment, (tuple, list)) and len(test_segment) == 2 and end_time is not None:
        test_end = test_segment[1]
        if test_end is None or _handler_time(end_time, f"{path}.end_time") < _handler_time(
                test_end, f"task.dataset.kwargs.segments.{rolling_gen.test_key}[1]"):
            updates["end_time"] = test_end
    train_segment = segments.get(rolling_gen.train_key)
    start_time = handler_kwargs.get("start_time")
    if (isinstance(train_segment, (tuple, list)) and len(train_segment) == 2
            and start_time is not None):
        train_start = train_segment[0]
        if train_start is None or _handler_time(start_time, f"{path}.start_time") > _handler_time(
                train_start, f"task.dataset.kwargs.segments.{rolling_gen.train_key}[0]"):
            updates["start_time"] = train_start
    if updates:
        assert isinstance(dataset, Mapping) and isinstance(kwargs, Mapping)
        assert isinstance(handler, Mapping)
        new_handler = {**handler, "kwargs": {**handler_kwargs, **updates}}
        task["dataset"] = {**dataset, "kwargs": {**kwargs, "handler": new_handler}}


def trunc_segments(ta: TimeAdjuster, segments: MutableMapping[str, Any], days: int,
                   test_key: str = "test") -> None:
    """Cut every non-test segment so it ends ``days`` trading days before the test start.

    Avoids leaking future information through labels; see :meth:`TimeAdjuster.truncate`.
    Changes ``segments`` **in place**, as Qlib.

    Args:
        ta: The calendar.
        segments: ``{name: (start, end)}``; must contain ``test_key``.
        days: Trading days between the end of train/valid and the test start.
        test_key: Name of the test segment.

    Raises:
        TaskConfigError: When the test segment is missing or fully unbounded.
        CalendarError: When a cut segment would start before the calendar.
    """
    test_segment = segments.get(test_key)
    bounds = [] if test_segment is None else [
        to_timestamp(bound, f"segments.{test_key}") for bound in test_segment if bound is not None]
    if not bounds:
        raise TaskConfigError(f"segments.{test_key}: a dated test segment is needed to truncate")
    test_start = min(bounds)
    for key in list(segments):
        if key != test_key:
            segments[key] = ta.truncate(segments[key], test_start, days)


def _adjuster(calendar: Any) -> TimeAdjuster:
    return calendar if isinstance(calendar, TimeAdjuster) else TimeAdjuster(calendar)


class RollingGen(TaskGen):
    """Generate rolling tasks: consecutive test windows of ``step`` trading days.

    From a template whose test segment starts at the first test day, :meth:`generate`
    makes the first task with test window ``step`` trading days from that day, then
    shifts every segment by ``step`` trading days per task until a test window would
    start after the template's test end (the calendar end when it is ``None``).
    Under ``ROLL_EX`` the train start is kept (expanding window); under ``ROLL_SD``
    train moves as a whole (sliding window); valid and test always slide.

    Differences from Qlib, on purpose: the last test window is clipped to the
    template's test end (and to the calendar end), so no window runs past the test
    period; every following test window is ``step`` days from its start (so a
    clipped window does not shorten later ones in :meth:`gen_following_tasks`); and
    the calendar is an argument instead of Qlib's data provider.

    Args:
        step: Trading days per test window and per shift.
        rtype: ``ROLL_EX`` (expanding) or ``ROLL_SD`` (sliding).
        ds_extra_mod_func: Called as ``func(task, self)`` on each generated task;
            the default, :func:`handler_mod`, widens the data handler's time range.
        test_key: Name of the test segment.
        train_key: Name of the train segment.
        trunc_days: When set, train/valid end that many trading days before the test
            start (Qlib's ``trunc_segments``) to avoid label leakage.
        task_copy_func: Copies the template for each task; the default deep copy can
            be replaced to share heavy objects (the segments and handler path are
            still copied, so the template is never changed).
        calendar: A :class:`TimeAdjuster`, dates or a :func:`load_calendar` source;
            ``None``: a weekday calendar 2000..2035.

    Raises:
        TaskConfigError: For a non-positive ``step``, an unknown ``rtype`` or a negative
            ``trunc_days``.
        CalendarError: When the calendar cannot be loaded.
    """

    ROLL_EX = TimeAdjuster.SHIFT_EX  # fixed start date, expanding end date
    ROLL_SD = TimeAdjuster.SHIFT_SD  # fixed segment size, slides from the start date

    def __init__(self, step: int = 40, rtype: str = ROLL_EX,
                 ds_extra_mod_func: Callable[[Task, RollingGen], None] | None = handler_mod,
                 test_key: str = "test", train_key: str = "train",
                 trunc_days: int | None = None,
                 task_copy_func: Callable[[Task], Task] = copy.deepcopy,
                 calendar: Any = None) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise TaskConfigError(f"RollingGen: step must be a positive int, got {step!r}")
        if rtype not in (self.ROLL_EX, self.ROLL_SD):
            raise TaskConfigError(
                f"RollingGen: rtype must be ROLL_EX ({self.ROLL_EX!r}) or ROLL_SD "
                f"({self.ROLL_SD!r}), got {rtype!r}")
        if trunc_days is not None and (isinstance(trunc_days, bool)
                                       or not isinstance(trunc_days, int) or trunc_days < 0):
            raise TaskConfigError(
                f"RollingGen: trunc_days must be None or an int >= 0, got {trunc_days!r}")
        self.step = step
        self.rtype = rtype
        self.ds_extra_mod_func = ds_extra_mod_func
        self.test_key = test_key
        self.train_key = train_key
        self.trunc_days = trunc_days
        self.task_copy_func = task_copy_func
        self.ta = _adjuster(calendar)

    def _update_task_segs(self, task: Task, segments: Mapping[str, Segment]) -> None:
        _with_segments(task, segments)
        if self.ds_extra_mod_func is not None:
            self.ds_extra_mod_func(task, self)

    def _test_window(self, start_idx: int, test_end: pd.Timestamp) -> Segment:
        """``step`` days from ``start_idx``, clipped to ``test_end`` and the calendar end."""
        end_idx = min(start_idx + self.step - 1, self.ta.align_idx(test_end, "end"),
                      len(self.ta.cals) - 1)
        return (self.ta.get(start_idx), self.ta.get(end_idx))

    def gen_following_tasks(self, task: Task, test_end: DateLike | None) -> list[Task]:
        """Generate the rolling tasks that follow ``task``, up to ``test_end``.

        Each next task shifts every segment of the previous one by ``step`` trading
        days (train expanding under ``ROLL_EX``); its test window is ``step`` days from
        the shifted start, clipped to ``test_end``. Generation stops when a test
        window would start after ``test_end`` or beyond the calendar. ``task`` may come
        back from a store (segments as lists of date strings).

        Args:
            task: The latest rolling task (e.g. the last one trained).
            test_end: The last test day to cover; ``None``: the calendar end.

        Returns:
            The following tasks, ``task`` itself excluded (empty when none fits).

        Raises:
            TaskConfigError: When ``task``'s segments are missing or malformed.
            CalendarError: When a date lies outside the calendar.
        """
        previous = _align_segments(self.ta, _parse_segments(task, (self.test_key,)))
        limit = self.ta.max() if test_end is None else self.ta.align_time(test_end, "end")
        following: list[Task] = []
        while True:
            test_start = previous[self.test_key][0]
            if test_start is None:
                raise TaskConfigError(
                    f"task.dataset.kwargs.segments.{self.test_key}: the test start is None")
            start_idx = self.ta.align_idx(test_start) + self.step
            new_start = self.ta.get(start_idx)
            if new_start is None or new_start > limit:
                break
            segments: dict[str, Segment] = {}
            try:
                for key, segment in previous.items():
                    if key == self.test_key:
                        segments[key] = self._test_window(start_idx, limit)
                        continue
                    expanding = key == self.train_key and self.rtype == self.ROLL_EX
                    rtype = self.ta.SHIFT_EX if expanding else self.ta.SHIFT_SD
                    segments[key] = self.ta.shift(segment, step=self.step, rtype=rtype)
            except KeyError:  # a segment left the calendar: no more rolling
                break
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
            ``pandas.Timestamp`` aligned to the calendar.

        Raises:
            TaskConfigError: When segments are missing or malformed (the message names
                the path, e.g. ``task.dataset.kwargs.segments.test``), or a segment
                holds no trading day.
            CalendarError: When a segment lies outside the calendar.
        """
        parsed = _parse_segments(task, (self.train_key, self.test_key))
        if parsed[self.test_key][0] is None:
            raise TaskConfigError(f"task.dataset.kwargs.segments.{self.test_key}[0]: the test "
                                  "start must be a date to roll from")
        segments = _align_segments(self.ta, parsed)
        test_start, test_end = segments[self.test_key]
        assert test_start is not None
        test_end = self.ta.max() if test_end is None else test_end
        segments[self.test_key] = self._test_window(self.ta.align_idx(test_start), test_end)
        if self.trunc_days is not None:
            trunc_segments(self.ta, segments, self.trunc_days, self.test_key)
        first = self.task_copy_func(task)
        self._update_task_segs(first, segments)
        return [first, *self.gen_following_tasks(first, test_end)]


class MultiHorizonGenBase(TaskGen):
    """Generate one task per label horizon, with train/valid cut to avoid label leakage.

    Subclasses implement :meth:`set_horizon` (e.g. change the label expression). For
    horizon ``hr`` every non-test segment ends ``hr + label_leak_n`` trading days
    before the test start (Qlib's ``trunc_segments``).

    Args:
        horizon: The horizons, one task each.
        label_leak_n: Trading days after the prediction day needed for a complete
            label (predict on ``T``, buy ``T+1``, sell ``T+2`` → 2).
        test_key: Name of the test segment.
        calendar: As in :class:`RollingGen`.

    Raises:
        TaskConfigError: For a negative horizon or ``label_leak_n``.
    """

    def __init__(self, horizon: Sequence[int] = (60,), label_leak_n: int = 2,
                 test_key: str = "test", calendar: Any = None) -> None:
        self.horizon = list(horizon)
        if any(isinstance(value, bool) or not isinstance(value, int) or value < 0
               for value in [*self.horizon, label_leak_n]):
            raise TaskConfigError(f"MultiHorizonGenBase: horizons and label_leak_n must be "
                                  f"ints >= 0, got {self.horizon!r} and {label_leak_n!r}")
        self.label_leak_n = label_leak_n
        self.test_key = test_key
        self.ta = _adjuster(calendar)

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
            segments = _align_segments(self.ta, _parse_segments(new_task, (self.test_key,)))
            trunc_segments(self.ta, segments, hr + self.label_leak_n, self.test_key)
            _with_segments(new_task, segments)
            tasks.append(new_task)
        return tasks
