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

from taskroll.collect.collector import Collector, RecorderCollector, model_and_test_segment_key
from taskroll.collect.group import RollingGroup
from taskroll.online.models import CHAIN_FIELD, chain_key, model_class, name_unmarked_runs
from taskroll.online.tool import OnlineToolR
from taskroll.task.calendar import DateLike, TimeAdjuster, to_timestamp
from taskroll.task.gen import RollingGen, Task, task_generator
from taskroll.task.spec import init_instance_by_config, task_id
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


def data_days(template: Mapping[str, Any]) -> pd.DatetimeIndex | None:
    """Return the days the template's data loader can serve now, or ``None`` when unknown.

    The handler is built without loading data (``init_data=False``); a handler or
    loader that cannot say (no ``calendar()``, no data source) gives ``None``.
    """
    try:
        handler = init_instance_by_config(template["dataset"]["kwargs"]["handler"],
                                          where="task.dataset.kwargs.handler",
                                          init_data=False)
        calendar = getattr(getattr(handler, "data_loader", None), "calendar", None)
        return pd.DatetimeIndex(calendar()) if callable(calendar) else None
    except Exception as error:  # the routine itself reports data errors when it trains
        _logger.debug("the data calendar of a template cannot be read (%s: %s)",
                      type(error).__name__, error)
        return None


def extend_calendar(adjuster: TimeAdjuster, days: pd.DatetimeIndex) -> TimeAdjuster | None:
    """Return a calendar of ``adjuster``'s days and those of ``days`` after its last one.

    Returns:
        The new :class:`TimeAdjuster`, or ``None`` when ``days`` has none after it.
    """
    added = pd.DatetimeIndex(days).normalize()
    added = added[added > adjuster.cals.max()].unique().sort_values()
    return TimeAdjuster(calendar=adjuster.cals.append(added)) if len(added) else None


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

    def refresh_calendar(self) -> int:
        """Append to the calendar the days the templates' data gained after its last day.

        The calendar is loaded once, when the :class:`RollingGen` is built; a manager
        kept in a long-running process or pickled (``to_pickle``/``load``, as Qlib's
        daily script) would otherwise never see a day after it, and every later
        routine would serve nothing. Days before the calendar's end are never changed.

        Returns:
            The number of days added.
        """
        known = [days for days in map(data_days, self.task_template) if days is not None]
        extended = extend_calendar(self.ta, pd.DatetimeIndex(known[0].append(known[1:]))) if known else None
        if extended is None:
            return 0
        added = len(extended.cals) - len(self.ta.cals)
        self.rg.ta = self.ta = extended
        _logger.info("%s: calendar extended by %d days to %s", self.name_id, added,
                     extended.cals.max().date())
        return added

    def name_unmarked_runs(self) -> list[str]:
        """Name the chain in the tasks of runs an older taskroll trained for the templates.

        Such runs are then reused and served like the runs of this version
        (:func:`~taskroll.online.models.name_unmarked_runs`); templates that differ
        only in their segments shared one chain then, so their runs are left unnamed.

        Returns:
            The ids of the runs named.
        """
        legacy: dict[str, list[str]] = {}
        for template in self.marked_templates():
            unmarked = {key: value for key, value in template.items() if key != CHAIN_FIELD}
            legacy.setdefault(chain_key(unmarked), []).append(template[CHAIN_FIELD])
        unique = {key: chains[0] for key, chains in legacy.items() if len(chains) == 1}
        return name_unmarked_runs(self.name_id, unique, self.rg.test_key)

    def marked_templates(self) -> list[Task]:
        """Return copies of the templates, each naming its chain (:data:`CHAIN_FIELD`).

        The chain is the id of the template as it is now (segments included): editing a
        template starts a new chain, whose models replace the old chain's.
        """
        marked = []
        for template in self.task_template:
            copied = copy.deepcopy(dict(template))
            copied.pop(CHAIN_FIELD, None)
            copied[CHAIN_FIELD] = task_id(copied)
            marked.append(copied)
        return marked

    def chain_keys(self) -> list[str]:
        """Return the chains of the templates, in template order."""
        return [template[CHAIN_FIELD] for template in self.marked_templates()]

    def chain_labels(self) -> dict[str, str]:
        """Name each template's chain: its model class, numbered when classes repeat."""
        marked = self.marked_templates()
        classes = [model_class(template) or "model" for template in marked]
        return {template[CHAIN_FIELD]: name if classes.count(name) == 1
                else f"{name}#{classes[:index + 1].count(name)}"
                for index, (template, name) in enumerate(zip(marked, classes, strict=True))}

    def _template_tasks(self, template: Task, end_time: DateLike | None) -> list[Task]:
        """The rolling tasks of one marked template, test windows cut at ``end_time``."""
        if end_time is not None:
            limit = self.ta.align_time(end_time, "end")
            start, end = task_segment(template, self.rg.test_key)
            if start is not None and start > limit:
                _logger.info("%s: a template's test starts %s, after %s; not yet",
                             self.name_id, start.date(), limit.date())
                return []
            template = copy.deepcopy(template)
            new_end = limit if end is None else min(end, limit)
            template["dataset"]["kwargs"]["segments"][self.rg.test_key] = (start, new_end)
        return task_generator([template], self.rg)

    def first_tasks(self, end_time: DateLike | None = None) -> list[Task]:
        """Generate the rolling tasks of the templates.

        Args:
            end_time: When given (the manager's begin time), every test window is cut
                at this day and templates whose test starts later are left for a later
                routine (:meth:`prepare_tasks`), so no model sees the future.

        Returns:
            The rolling tasks, template by template, in time order; each names its
            chain in :data:`CHAIN_FIELD`.
        """
        return [task for template in self.marked_templates()
                for task in self._template_tasks(template, end_time)]

    def _latest_per_chain(self, recorders: Sequence[Recorder]
                          ) -> dict[str, list[tuple[Recorder, Task]]]:
        """The recorders whose test starts latest in each of the templates' chains."""
        chains = set(self.chain_keys())
        latest: dict[str, tuple[pd.Timestamp, list[tuple[Recorder, Task]]]] = {}
        for recorder in recorders:
            task = recorder.load_object("task")
            start = task_segment(task, self.rg.test_key)[0]
            chain = chain_key(task)
            if start is None or chain not in chains:
                continue
            best = latest.get(chain)
            if best is None or start > best[0]:
                latest[chain] = (start, [(recorder, task)])
            elif start == best[0] and all(item.id != recorder.id for item, _ in best[1]):
                best[1].append((recorder, task))
        return {chain: items for chain, (_, items) in latest.items()}

    def _list_latest(self, recorders: Sequence[Recorder]
                     ) -> tuple[list[tuple[Recorder, Task]], pd.Timestamp | None]:
        """The newest recorders of each chain with their tasks, and the latest test start."""
        latest = [item for items in self._latest_per_chain(recorders).values() for item in items]
        if not latest:
            return [], None
        starts = [task_segment(task, self.rg.test_key)[0] for _, task in latest]
        return latest, max(start for start in starts if start is not None)

    def prepare_tasks(self, cur_time: DateLike, **kwargs: Any) -> list[Task]:
        """Generate the tasks due at ``cur_time``: each chain rolled forward to that day.

        A chain with an online model rolls from its newest one: nothing while
        ``cur_time`` (aligned on the calendar) is within that model's test window or
        before the next window's start (``step`` trading days after its test start);
        after days without a routine, every window started meanwhile. A template's
        chain with no online model yet (its test started after the first training, or
        the template was added or edited) starts from the template, as
        :meth:`first_tasks` would. The new tasks' test windows end at ``cur_time`` at
        the latest. (Qlib's ``prepare_tasks`` only follows online models.)

        Args:
            cur_time: The current day.
            **kwargs: Ignored (Qlib's ``task_kwargs``).

        Returns:
            The new tasks (windows already trained come back too; the manager reuses them).
        """
        latest = self._latest_per_chain(self.tool.online_models())
        calendar_latest = self.ta.align_time(cur_time, "end")
        new_tasks: list[Task] = []
        for template in self.marked_templates():
            chain = template[CHAIN_FIELD]
            if chain not in latest:
                following = self._template_tasks(template, calendar_latest)
            else:
                following = []
                for _, task in latest[chain]:
                    test_end = task_segment(task, self.rg.test_key)[1]
                    if test_end is None or test_end < calendar_latest:
                        following.extend(self.rg.gen_following_tasks(task, calendar_latest))
            new_tasks.extend(task for task in following if task not in new_tasks)
        return new_tasks

    def prepare_online_models(self, trained_models: Sequence[Recorder],
                              cur_time: DateLike | None = None) -> list[Recorder]:
        """Put the newest model of each template's chain online (every other model offline).

        The candidates are the newly trained models and the models online now, so
        several models trained at once (the first training, or a routine after missed
        days) put only each chain's newest online, a switch cut short (two models of a
        chain online) is completed, and models of a chain no template names any more
        (an edited template) go offline. Tags are written only when the set changes.

        Returns:
            The online models.
        """
        current = self.tool.online_models()
        candidates = list(trained_models) + [recorder for recorder in current
                                             if recorder not in trained_models]
        online = [recorder for items in self._latest_per_chain(candidates).values()
                  for recorder, _ in items]
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
            rec_key_func: Default ``(model class, test segment)``
                (:func:`~taskroll.collect.collector.model_and_test_segment_key`, as Qlib's
                ``RollingStrategy``).
            rec_filter_func: Keep only recorders for which it is true.
            artifacts_key: Artifacts to collect (default ``pred``).
            **kwargs: More :class:`RecorderCollector` arguments (e.g. ``experiment`` to
                collect from given recorders).
        """
        processors = [RollingGroup()] if process_list is None else list(process_list)
        experiment = kwargs.pop("experiment", self.exp_name)
        return RecorderCollector(experiment, process_list=processors,
                                 rec_key_func=rec_key_func or model_and_test_segment_key,
                                 rec_filter_func=rec_filter_func, artifacts_key=artifacts_key,
                                 **kwargs)


def refresh_strategies(strategies: Sequence[OnlineStrategy],
                       adjuster: TimeAdjuster) -> TimeAdjuster:
    """Bring rolling strategies up to date, then extend ``adjuster`` with their new days.

    Each :class:`RollingStrategy` names the chains of runs an older taskroll trained
    (:meth:`RollingStrategy.name_unmarked_runs`) and extends its calendar with the
    data's new days (:meth:`RollingStrategy.refresh_calendar`).

    Args:
        strategies: The strategies.
        adjuster: A manager's calendar.

    Returns:
        ``adjuster``, or a new one with the days after its end that a strategy's
        calendar has.
    """
    for strategy in strategies:
        if isinstance(strategy, RollingStrategy):
            strategy.name_unmarked_runs()
            strategy.refresh_calendar()
            adjuster = extend_calendar(adjuster, strategy.calendar()) or adjuster
    return adjuster
