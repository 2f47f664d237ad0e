"""Task generator base: :class:`TaskGen`, :func:`task_generator` and segment helpers.

The helpers read, align, truncate and write back a task's
``dataset.kwargs.segments``; :mod:`taskroll.task.gen` and
:mod:`taskroll.task.rolling` build their generators on them. Import the public
names from :mod:`taskroll.task.gen`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TypeAlias

from taskroll.errors import CalendarError, TaskConfigError
from taskroll.task.calendar import Segment, TimeAdjuster, to_timestamp

Task: TypeAlias = dict[str, Any]
"""A task: ``{"model": cfg, "dataset": cfg, "record": [cfg, ...], ...}``."""

SEGMENTS_PATH = ("dataset", "kwargs", "segments")
SEGMENTS_WHERE = "task." + ".".join(SEGMENTS_PATH)


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


def make_adjuster(calendar: Any) -> TimeAdjuster:
    """Return ``calendar`` when it is a :class:`TimeAdjuster`, else a new one built from it."""
    return calendar if isinstance(calendar, TimeAdjuster) else TimeAdjuster(calendar)


def _segments_node(task: Any, where: str = "task") -> Mapping[str, Any]:
    """Return ``task["dataset"]["kwargs"]["segments"]`` or raise naming the missing step."""
    node, path = task, where
    for key in SEGMENTS_PATH:
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


def parse_segments(task: Any, required: Sequence[str], where: str = "task") -> dict[str, Segment]:
    """Validate a task's raw segments and parse their bounds (not yet aligned).

    Args:
        task: The task.
        required: Segment names that must be present.
        where: Name of the task in error messages.

    Returns:
        ``{name: (start, end)}`` with ``Timestamp`` or ``None`` bounds.

    Raises:
        TaskConfigError: Missing path or key, a bound that is not a date, start after end.
    """
    node = _segments_node(task, where)
    base = f"{where}.{'.'.join(SEGMENTS_PATH)}"
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


def align_segments(adjuster: TimeAdjuster, parsed: Mapping[str, Segment],
                   where: str = "task") -> dict[str, Segment]:
    """Align parsed segments onto the calendar; a segment left with no trading day is an error.

    Args:
        adjuster: The calendar.
        parsed: The output of :func:`parse_segments`.
        where: Name of the task in error messages.

    Returns:
        A new dict of aligned segments.

    Raises:
        CalendarError: A bound lies outside the calendar.
        TaskConfigError: A segment contains no trading day.
    """
    base = f"{where}.{'.'.join(SEGMENTS_PATH)}"
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


def with_segments(task: Task, segments: Mapping[str, Segment]) -> None:
    """Put ``segments`` into ``task``, copying the dicts on the way so no template is touched.

    Args:
        task: The task, changed in place (only its ``dataset`` entry is replaced).
        segments: The new segments.
    """
    dataset = task["dataset"]
    task["dataset"] = {**dataset, "kwargs": {**dataset["kwargs"], "segments": dict(segments)}}


def trunc_segments(ta: TimeAdjuster, segments: MutableMapping[str, Any], days: int,
                   test_key: str = "test") -> None:
    """Cut every non-test segment so it ends ``days`` trading days before the test start.

    Avoids leaking future information through labels; see :meth:`TimeAdjuster.truncate`.
    Changes ``segments`` **in place**, as Qlib. :func:`gap_segments` is stricter: it
    cuts each segment relative to the next segment, not only relative to the test.

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


def gap_segments(ta: TimeAdjuster, segments: Mapping[str, Segment], days: int,
                 test_key: str = "test", where: str = SEGMENTS_WHERE) -> dict[str, Segment]:
    """Cut every non-test segment so that ``days`` trading days separate it from the next one.

    The *next* segment of ``key`` is the one with the earliest start strictly after
    ``key``'s start (any start is after an unbounded one). ``key``'s end index becomes
    ``min(end index, index(next start) - days)``, as :meth:`TimeAdjuster.truncate`; an
    unbounded end becomes that limit. A segment with no later segment is kept. With
    ``days = label horizon + 1`` the last label of a segment only uses bars from
    before the next segment starts.

    Args:
        ta: The calendar.
        segments: Aligned segments ``{name: (start, end)}``; not changed.
        days: The gap in trading days (``>= 0``).
        test_key: Name of the test segment, which is never cut.
        where: Path of the segments in error messages.

    Returns:
        A new dict of segments.

    Raises:
        TaskConfigError: When a cut segment would hold no trading day (the message
            names it, the next segment and the gap).
    """
    result = dict(segments)
    for key, (start, end) in segments.items():
        if key == test_key:
            continue
        later = [(other_start, other) for other, (other_start, _) in segments.items()
                 if other != key and other_start is not None
                 and (start is None or other_start > start)]
        if not later:
            continue
        next_start, next_key = min(later)
        limit = ta.align_idx(next_start, "start") - days
        end_idx = limit if end is None else min(ta.align_idx(end, "end"), limit)
        start_idx = 0 if start is None else ta.align_idx(start, "start")
        if end_idx < start_idx:
            begins = "the calendar's start" if start is None else str(start.date())
            raise TaskConfigError(
                f"{where}.{key}: empty after truncation: a gap of {days} trading days before "
                f"{next_key!r} starts on {next_start.date()} leaves no trading day from "
                f"{begins}; lengthen the segment or move {next_key!r} later")
        result[key] = (start, ta.get(end_idx))
    return result
