"""Online strategies: which tasks to train when, and which models to serve.

:class:`RollingStrategy` (Qlib's ``qlib.workflow.online.strategy.RollingStrategy``)
trains the rolling tasks of its templates first, then, each time the trading
calendar has passed the newest model's test window, generates the following
rolling tasks (:meth:`~taskroll.task.gen.RollingGen.gen_following_tasks`) and
puts the newest models online.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.collect.collector import Collector, RecorderCollector
from taskroll.collect.group import RollingGroup
from taskroll.online.models import chain_key
from taskroll.online.tool import OnlineToolR
from taskroll.task.calendar import DateLike, TimeAdjuster, to_timestamp
from taskroll.task.gen import RollingGen, Task, task_generator
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)


def task_segment(task: Mapping[str, Any], key: str) -> tuple[pd.Timestamp | None,
                                                             pd.Timestamp | None]:
    """Return ``task["dataset"]["kwargs"]["segments"][key]`` as Timestamps (``None`` kept).

    Raises:
        KeyError: When the task has no such segment.
        CalendarError: When a bound is not a date.
    """
    start, end = task["dataset"]["kwargs"]["segments"][key]
    return (None if start is None else to_timestamp(start, f"segments.{key}[0]"),
            None if end is None else to_timestamp(end, f"segments.{key}[1]"))


class OnlineStrategy:
    """Base of online strategies: first tasks, following tasks and online models.

    Args:
        name_id: Unique name of the strategy; also its experiment's name.
    """

    def __init__(self, name_id: str) -> None:
        self.name_id = name_id
        self.tool = OnlineToolR(name_id)

    def first_tasks(self, end_time: DateLike | None = None) -> list[Task]:
        """Return the tasks trained when the strategy starts (ending by ``end_time``)."""
        raise NotImplementedError

    def prepare_tasks(self, cur_time: DateLike, **kwargs: Any) -> list[Task]:
        """Return the tasks to train at ``cur_time`` (often none)."""
        raise NotImplementedError

    def prepare_online_models(self, trained_models: Sequence[Recorder],
                              cur_time: DateLike | None = None) -> list[Recorder]:
        """Choose the online models among the newly trained ones; return the online models.

        The default puts all newly trained models online (all others offline) and
        keeps the current ones when nothing was trained.
        """
        if not trained_models:
            return self.tool.online_models()
        self.tool.reset_online_tag(list(trained_models))
        return list(trained_models)

    def get_collector(self, **kwargs: Any) -> Collector:
        """Return a collector of this strategy's model artifacts."""
        raise NotImplementedError


class RollingStrategy(OnlineStrategy):
    """Roll the templates' models forward along the trading calendar.

    Args:
        name_id: Strategy name and experiment name.
        task_template: One task template or several; each test segment says where
            rolling starts (its end may be ``None``).
        rolling_gen: The :class:`RollingGen`; its calendar (``rolling_gen.ta``) is the
            strategy's trading calendar.
    """

    def __init__(self, name_id: str, task_template: Task | Sequence[Task],
                 rolling_gen: RollingGen) -> None:
        super().__init__(name_id)
        self.exp_name = name_id
        templates = [task_template] if isinstance(task_template, Mapping) else task_template
        self.task_template: list[Task] = [copy.deepcopy(dict(task)) for task in templates]
        self.rg = rolling_gen
        self.ta: TimeAdjuster = rolling_gen.ta

    def calendar(self) -> pd.DatetimeIndex:
        """Return the strategy's trading calendar."""
        return self.ta.cals

    def first_tasks(self, end_time: DateLike | None = None) -> list[Task]:
        """Generate the rolling tasks of the templates.

        Args:
            end_time: When given (the manager's begin time), every test window is cut
                at this day and templates whose test starts later are skipped, so no
                model of the first training sees the future.

        Returns:
            The rolling tasks, template by template, in time order.
        """
        templates = self.task_template
        if end_time is not None:
            limit = self.ta.align_time(end_time, "end")
            templates = []
            for template in self.task_template:
                start, end = task_segment(template, self.rg.test_key)
                if start is not None and start > limit:
                    _logger.warning("%s: a template's test starts %s, after %s; skipped",
                                    self.name_id, start.date(), limit.date())
                    continue
                clipped = copy.deepcopy(template)
                new_end = limit if end is None else min(end, limit)
                clipped["dataset"]["kwargs"]["segments"][self.rg.test_key] = (start, new_end)
                templates.append(clipped)
        return task_generator(templates, self.rg)

    def chain_keys(self) -> set[str]:
        """Return the chains of the templates (see :func:`taskroll.online.models.chain_key`)."""
        return {chain_key(template) for template in self.task_template}

    def _latest_per_chain(self, recorders: Sequence[Recorder]) -> list[tuple[Recorder, Task]]:
        """The recorders whose test starts latest in each chain, with their tasks."""
        latest: dict[str, tuple[pd.Timestamp, list[tuple[Recorder, Task]]]] = {}
        for recorder in recorders:
            task = recorder.load_object("task")
            start = task_segment(task, self.rg.test_key)[0]
            if start is None:
                continue
            chain = chain_key(task)
            best = latest.get(chain)
            if best is None or start > best[0]:
                latest[chain] = (start, [(recorder, task)])
            elif start == best[0] and all(item.id != recorder.id for item, _ in best[1]):
                best[1].append((recorder, task))
        return [item for chain in sorted(latest) for item in latest[chain][1]]

    def _list_latest(self, recorders: Sequence[Recorder]
                     ) -> tuple[list[tuple[Recorder, Task]], pd.Timestamp | None]:
        """The newest recorders of each chain with their tasks, and the latest test start."""
        latest = self._latest_per_chain(recorders)
        if not latest:
            return [], None
        starts = [task_segment(task, self.rg.test_key)[0] for _, task in latest]
        return latest, max(start for start in starts if start is not None)

    def prepare_tasks(self, cur_time: DateLike, **kwargs: Any) -> list[Task]:
        """Generate the rolling tasks following the newest online model of each chain.

        Nothing is generated while ``cur_time`` (aligned on the calendar) is within
        the newest online model's test window, nor before the next window's start
        (``step`` trading days after the newest test start); the new tasks' test
        windows end at ``cur_time`` at the latest. After days without a routine, every
        window started meanwhile is generated.

        Args:
            cur_time: The current day.
            **kwargs: Ignored (Qlib's ``task_kwargs``).

        Returns:
            The new tasks (empty when no online model exists or none is due).
        """
        latest, _ = self._list_latest(self.tool.online_models())
        if not latest:
            _logger.warning("%s: no online model; call first_train first", self.name_id)
            return []
        calendar_latest = self.ta.align_time(cur_time, "end")
        new_tasks: list[Task] = []
        for _, task in latest:
            test_end = task_segment(task, self.rg.test_key)[1]
            if test_end is not None and test_end >= calendar_latest:
                continue
            for new_task in self.rg.gen_following_tasks(task, calendar_latest):
                if new_task not in new_tasks:
                    new_tasks.append(new_task)
        return new_tasks

    def prepare_online_models(self, trained_models: Sequence[Recorder],
                              cur_time: DateLike | None = None) -> list[Recorder]:
        """Put the newest model of each chain online (every other model offline).

        The candidates are the newly trained models and the models online now, so
        several models trained at once (the first training, or a routine after missed
        days) put only each chain's newest online, and a switch cut short (two models
        of a chain online) is completed. Tags are written only when the set changes.

        Returns:
            The online models.
        """
        current = self.tool.online_models()
        candidates = list(trained_models) + [recorder for recorder in current
                                             if recorder not in trained_models]
        online = [recorder for recorder, _ in self._latest_per_chain(candidates)]
        if {recorder.id for recorder in online} != {recorder.id for recorder in current}:
            self.tool.reset_online_tag(online)
        return online

    def get_collector(self, process_list: Sequence[Callable[..., Any]] | None = None,
                      rec_key_func: Callable[[Recorder], Any] | None = None,
                      rec_filter_func: Callable[[Recorder], bool] | None = None,
                      artifacts_key: str | Sequence[str] | None = None,
                      **kwargs: Any) -> RecorderCollector:
        """Return a :class:`RecorderCollector` over the strategy's experiment.

        Args:
            process_list: Default ``[RollingGroup()]``: one merged prediction per model.
            rec_key_func: Default ``(model class, test segment)``.
            rec_filter_func: Keep only recorders for which it is true.
            artifacts_key: Artifacts to collect (default ``pred``).
            **kwargs: More :class:`RecorderCollector` arguments (e.g. ``experiment`` to
                collect from given recorders).
        """
        processors = [RollingGroup()] if process_list is None else list(process_list)
        experiment = kwargs.pop("experiment", self.exp_name)
        return RecorderCollector(experiment, process_list=processors, rec_key_func=rec_key_func,
                                 rec_filter_func=rec_filter_func, artifacts_key=artifacts_key,
                                 **kwargs)
