"""OnlineManager: serve models online and replay history (Qlib's ``OnlineManager``).

Each :meth:`OnlineManager.routine` (run once a trading day, e.g. by cron)

1. asks every strategy for the tasks due (:meth:`OnlineStrategy.prepare_tasks`),
2. trains them with the trainer; a delayed trainer (``DelayTrainerR``/``RM``)
   fits the day's new tasks of all strategies together through ``end_train``,
3. switches the online models (:meth:`OnlineStrategy.prepare_online_models`),
4. extends the online models' predictions to the day without retraining
   (:meth:`OnlineToolR.update_online_pred`),
5. prepares the signals: the online models' predictions up to the day, merged
   per rolling chain and averaged over models (:class:`AverageEnsemble`), and
   appended to :attr:`OnlineManager.signals` without touching days already served.

:meth:`OnlineManager.simulate` replays that day by day over the trading calendar,
so the signal of each day only comes from models whose train and valid segments
ended before it; :attr:`OnlineManager.history` records the online models of each
day to check it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.collect.collector import Collector, MergeCollector
from taskroll.collect.ensemble import AverageEnsemble, flatten_dict
from taskroll.collect.group import RollingGroup
from taskroll.online.strategy import OnlineStrategy
from taskroll.task.calendar import DateLike, TimeAdjuster, to_timestamp
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import Trainer, TrainerR

_logger = logging.getLogger(__name__)

SignalFunction = Callable[[Mapping[Any, Any]], Any]


def _frame(signals: Any) -> pd.DataFrame:
    frame = signals.to_frame("score") if isinstance(signals, pd.Series) else signals
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the signal function returned {type(signals).__name__}, not a frame")
    if frame.index.nlevels == 2:
        frame.index = frame.index.set_names(["datetime", "instrument"])
    return frame


def _dates(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame.index.get_level_values(0))


class OnlineManager:
    """Manage online models of several strategies: train, switch, update, signal.

    Args:
        strategies: One :class:`OnlineStrategy` or several (unique ``name_id``).
        trainer: Trains the tasks; default :class:`TrainerR`.
        begin_time: First day served; default: the last calendar day up to today.
        freq: Data frequency (only ``"day"``).
        calendar: Trading calendar (a :class:`TimeAdjuster` or any ``load_calendar``
            source); default: the first strategy's (``strategy.calendar()``).

    Raises:
        ValueError: For no strategy, duplicated names or an unsupported ``freq``.
    """

    STATUS_SIMULATING = "simulating"
    STATUS_ONLINE = "online"

    def __init__(self, strategies: OnlineStrategy | Sequence[OnlineStrategy],
                 trainer: Trainer | None = None, begin_time: DateLike | None = None,
                 freq: str = "day", calendar: Any = None) -> None:
        self.strategies: list[OnlineStrategy] = (
            [strategies] if isinstance(strategies, OnlineStrategy) else list(strategies))
        if not self.strategies:
            raise ValueError("OnlineManager needs at least one strategy")
        names = [strategy.name_id for strategy in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        if freq != "day":
            raise ValueError(f"only freq='day' is supported, got {freq!r}")
        self.freq = freq
        if calendar is None:
            calendar_method = getattr(self.strategies[0], "calendar", None)
            calendar = calendar_method() if callable(calendar_method) else None
        self.ta = calendar if isinstance(calendar, TimeAdjuster) else TimeAdjuster(calendar)
        self.begin_time = (self.ta.align_time(pd.Timestamp.now().normalize(), "end")
                           if begin_time is None else to_timestamp(begin_time, "begin_time"))
        self.cur_time = self.begin_time
        self.trainer: Trainer = trainer if trainer is not None else TrainerR()
        self.signals: pd.DataFrame | None = None
        self.history: dict[pd.Timestamp, dict[str, list[str]]] = {}
        self.status = self.STATUS_ONLINE

    # -- training --------------------------------------------------------------------------

    def _train_all(self, tasks_per_strategy: Sequence[tuple[OnlineStrategy, list[Any]]],
                   model_kwargs: Mapping[str, Any]) -> None:
        """Train, finish (delayed trainers fit here, all strategies' tasks of the day), switch."""
        trained = [(strategy, self.trainer.train(tasks, experiment_name=strategy.name_id))
                   for strategy, tasks in tasks_per_strategy]
        for strategy, models in trained:
            if models:
                self.trainer.end_train(models, experiment_name=strategy.name_id)
            _logger.info("%s: trained %d models at %s", strategy.name_id, len(models),
                         self.cur_time.date())
        for strategy, models in trained:
            online = strategy.prepare_online_models(models, **model_kwargs)
            self.history.setdefault(self.cur_time, {})[strategy.name_id] = [
                recorder.id for recorder in online]

    def first_train(self, strategies: Sequence[OnlineStrategy] | None = None,
                    model_kwargs: Mapping[str, Any] | None = None) -> None:
        """Train each strategy's first tasks (test windows cut at the current time).

        Args:
            strategies: Default: all strategies of the manager.
            model_kwargs: Passed to ``prepare_online_models``.
        """
        chosen = self.strategies if strategies is None else list(strategies)
        self._train_all([(strategy, strategy.first_tasks(end_time=self.cur_time))
                         for strategy in chosen], model_kwargs or {})

    def routine(self, cur_time: DateLike | None = None,
                task_kwargs: Mapping[str, Any] | None = None,
                model_kwargs: Mapping[str, Any] | None = None,
                signal_kwargs: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one day: prepare and train tasks, switch models, update predictions, signal.

        Args:
            cur_time: The day; default: the last calendar day up to today.
            task_kwargs: Passed to ``prepare_tasks``.
            model_kwargs: Passed to ``prepare_online_models``.
            signal_kwargs: Passed to :meth:`prepare_signals`.

        Returns:
            The signals added by this routine.
        """
        day = (pd.Timestamp.now().normalize() if cur_time is None
               else to_timestamp(cur_time, "cur_time"))
        self.cur_time = self.ta.align_time(day, "end")
        tasks = [(strategy, strategy.prepare_tasks(self.cur_time, **(task_kwargs or {})))
                 for strategy in self.strategies]
        self._train_all(tasks, model_kwargs or {})
        for strategy in self.strategies:
            # The online models may have changed above, so predictions are updated last.
            update = getattr(strategy.tool, "update_online_pred", None)
            if callable(update):
                update(to_date=self.cur_time)
        return self.prepare_signals(**(signal_kwargs or {}))

    # -- signals ---------------------------------------------------------------------------

    def get_collector(self, **kwargs: Any) -> MergeCollector:
        """Return a :class:`MergeCollector` of every strategy's collector (keys ``(name_id, key)``).

        Args:
            **kwargs: Passed to each strategy's ``get_collector``.
        """
        collectors: dict[str, Collector] = {
            strategy.name_id: strategy.get_collector(**kwargs) for strategy in self.strategies}
        return MergeCollector(collectors, process_list=[])

    def _online_collector(self) -> MergeCollector:
        """Collect the online models' predictions, merged per rolling chain."""
        def online_of(strategy: OnlineStrategy) -> Callable[[], list[Recorder]]:
            return lambda: list(strategy.tool.online_models())

        return self.get_collector_of(
            {strategy.name_id: strategy.get_collector(process_list=[RollingGroup()],
                                                      experiment=online_of(strategy))
             for strategy in self.strategies})

    @staticmethod
    def get_collector_of(collectors: Mapping[str, Collector]) -> MergeCollector:
        """Merge named collectors as :meth:`get_collector` does."""
        return MergeCollector(dict(collectors), process_list=[])

    def prepare_signals(self, prepare_func: SignalFunction | None = None,
                        over_write: bool = False) -> pd.DataFrame:
        """Merge the online models' predictions up to the current day into the signals.

        Args:
            prepare_func: ``{key: prediction} -> signal``; default :class:`AverageEnsemble`.
            over_write: Replace the whole history instead of appending the new days.

        Returns:
            The new signals (days after the last day already served, up to the current day).
        """
        collected = flatten_dict(self._online_collector()())
        predictions = {key: value for key, value in collected.items()
                       if isinstance(value, (pd.DataFrame, pd.Series)) and len(value)}
        if not predictions:
            _logger.warning("prepare_signals: no online prediction at %s", self.cur_time.date())
            return pd.DataFrame(columns=["score"])
        signals = _frame((prepare_func or AverageEnsemble())(predictions))
        signals = signals[_dates(signals) <= self.cur_time]
        old = self.signals
        if old is not None and len(old) and not over_write:
            new = signals[_dates(signals) > _dates(old).max()]
            self.signals = pd.concat([old, new]).sort_index()
        else:
            new = signals
            self.signals = signals.sort_index()
        return new

    def get_signals(self) -> pd.DataFrame | None:
        """Return the signal history, a frame indexed by ``(datetime, instrument)``."""
        return self.signals

    # -- simulation ------------------------------------------------------------------------

    def simulate(self, end_time: DateLike, frequency: str = "day",
                 task_kwargs: Mapping[str, Any] | None = None,
                 model_kwargs: Mapping[str, Any] | None = None,
                 signal_kwargs: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
        """Replay history: first training at the begin time, then a routine per trading day.

        Args:
            end_time: Last day simulated.
            frequency: Only ``"day"``.
            task_kwargs: Passed to ``prepare_tasks``.
            model_kwargs: Passed to ``prepare_online_models``.
            signal_kwargs: Passed to :meth:`prepare_signals`.

        Returns:
            The signal history.

        Raises:
            ValueError: For another frequency or an end before the current time.
        """
        if frequency != "day":
            raise ValueError(f"only frequency='day' is supported, got {frequency!r}")
        end = to_timestamp(end_time, "end_time")
        if end < self.cur_time:
            raise ValueError(f"end_time {end.date()} is before {self.cur_time.date()}")
        calendar = self.ta.cals
        days = calendar[(calendar >= self.cur_time) & (calendar <= end)]
        self.status = self.STATUS_SIMULATING
        try:
            self.first_train()
            for day in days:
                _logger.info("simulating %s", day.date())
                self.routine(day, task_kwargs=task_kwargs, model_kwargs=model_kwargs,
                             signal_kwargs=signal_kwargs)
        finally:
            self.status = self.STATUS_ONLINE
        return self.get_signals()
