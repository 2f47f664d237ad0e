"""OnlineManager: serve models online and replay history (Qlib's ``OnlineManager``).

Each :meth:`OnlineManager.routine` (once a trading day, e.g. by cron) extends the
calendars with the data's new days, marks runs left ``RUNNING`` by a killed process
``FAILED`` (:meth:`recover`), asks every strategy for the tasks due, trains them
(windows already trained are reused: :mod:`taskroll.online.models`; a delayed
trainer fits the day's new tasks of all strategies together through ``end_train``),
switches the online models, extends each model's predictions to the days it serves
and appends the signals of the days not served yet (:mod:`taskroll.online.signals`),
then fills in the labels realised since in the newest models' ``label.pkl``.

Every step can be run again after a crash at any point: no window is trained
twice, a reader never sees zero online models, and the signals are a function of
the trained models (:meth:`OnlineManager.rebuild_signals`). :meth:`simulate`
replays the routine day by day and gives the signals of any sequence of routines
over the same days, skipped days included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.collect.collector import Collector, MergeCollector
from taskroll.online.models import (
    OnlineModel,
    chains,
    fail_interrupted_runs,
    list_models,
    pending_models,
    trained_windows,
    window_key,
)
from taskroll.online.signals import SignalFunction, build_signals, chain_labels, extend_chain, fill_labels
from taskroll.online.strategy import OnlineStrategy, refresh_strategies
from taskroll.online.update import dates_of
from taskroll.serial import Serializable
from taskroll.task.calendar import DateLike, TimeAdjuster, to_timestamp
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import STATUS_END, STATUS_KEY, Trainer, TrainerR

_logger = logging.getLogger(__name__)

LABELLED_MODELS = 3
"""Newest models of each chain whose ``label.pkl`` each routine fills in (labels are
realised a few days after the day they label, after the model may have gone offline)."""


def _as_strategies(strategies: OnlineStrategy | Sequence[OnlineStrategy]) -> list[OnlineStrategy]:
    return [strategies] if isinstance(strategies, OnlineStrategy) else list(strategies)


class OnlineManager(Serializable):
    """Manage online models of several strategies: train, switch, update, signal.

    ``to_pickle(path)`` and ``OnlineManager.load(path)`` (:class:`Serializable`) save
    and restore the manager (strategies, trainer, signals, history).

    Args:
        strategies: One :class:`OnlineStrategy` or several (unique ``name_id``).
        trainer: Trains the tasks; default :class:`TrainerR`.
        begin_time: First day served; default: the last calendar day up to today.
        freq: Data frequency (only ``"day"``).
        calendar: Trading calendar (a :class:`TimeAdjuster` or any ``load_calendar``
            source); default: the first strategy's (``strategy.calendar()``).
        stale_after: Seconds after which a ``RUNNING`` run whose process cannot be
            checked from this host (another machine) counts as interrupted; ``None``:
            only runs of dead processes of this host are (see :meth:`recover`).

    Raises:
        ValueError: For no strategy, duplicated names or an unsupported ``freq``.
    """

    STATUS_SIMULATING = "simulating"
    STATUS_ONLINE = "online"

    def __init__(self, strategies: OnlineStrategy | Sequence[OnlineStrategy],
                 trainer: Trainer | None = None, begin_time: DateLike | None = None,
                 freq: str = "day", calendar: Any = None,
                 stale_after: float | None = None) -> None:
        self.strategies: list[OnlineStrategy] = _as_strategies(strategies)
        if not self.strategies:
            raise ValueError("OnlineManager needs at least one strategy")
        self._check_names(self.strategies)
        if freq != "day":
            raise ValueError(f"only freq='day' is supported, got {freq!r}")
        self.freq = freq
        if calendar is None:
            calendar_method = getattr(self.strategies[0], "calendar", None)
            calendar = calendar_method() if callable(calendar_method) else None
        self.ta = calendar if isinstance(calendar, TimeAdjuster) else TimeAdjuster(calendar)
        self.begin_time = (self._today() if begin_time is None
                           else to_timestamp(begin_time, "begin_time"))
        self.cur_time = self.begin_time
        self.trainer: Trainer = trainer if trainer is not None else TrainerR()
        self.stale_after = stale_after
        self.signals: pd.Series | None = None
        self.history: dict[pd.Timestamp, dict[str, list[str]]] = {}
        self.status = self.STATUS_ONLINE

    @staticmethod
    def _check_names(strategies: Sequence[OnlineStrategy]) -> None:
        names = [strategy.name_id for strategy in strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")

    def _today(self) -> pd.Timestamp:
        """The last calendar day up to today."""
        return self.ta.align_time(pd.Timestamp.now().normalize(), "end")

    def refresh(self) -> None:
        """Extend the calendars with the data's new days; name older versions' runs."""
        self.ta = refresh_strategies(self.strategies, self.ta)

    def _postpone_action(self) -> bool:
        """Whether ``end_train`` and the signals wait for :meth:`delay_prepare` (Qlib's rule)."""
        return self.status == self.STATUS_SIMULATING and self.trainer.is_delay()

    # -- recovery and training -------------------------------------------------------------

    def recover(self, stale_after: float | None = None) -> dict[str, list[str]]:
        """Mark the strategies' runs left ``RUNNING`` by a dead process ``FAILED``.

        Args:
            stale_after: Overrides the manager's ``stale_after``.

        Returns:
            ``{strategy name: [run ids marked FAILED]}``.
        """
        after = self.stale_after if stale_after is None else stale_after
        return {strategy.name_id: fail_interrupted_runs(strategy.name_id, after)
                for strategy in self.strategies}

    def _train(self, strategy: OnlineStrategy, tasks: list[Any]
               ) -> tuple[list[Recorder], list[Recorder]]:
        """Train the tasks whose window has no trained model yet; return (all, new) models."""
        if not tasks:
            return [], []
        test_key = getattr(getattr(strategy, "rg", None), "test_key", "test")
        # a delayed simulation reuses the runs it prepared and has not fitted yet, too
        existing = trained_windows(strategy.name_id, test_key, pending=self._postpone_action())
        windows = [window_key(task, test_key) for task in tasks]
        fresh_tasks = [task for task, window in zip(tasks, windows, strict=True)
                       if window not in existing]
        if len(fresh_tasks) < len(tasks):
            _logger.info("%s: %d of %d windows already trained; reused", strategy.name_id,
                         len(tasks) - len(fresh_tasks), len(tasks))
        fresh = (self.trainer.train(fresh_tasks, experiment_name=strategy.name_id)
                 if fresh_tasks else [])
        trained = iter(fresh)
        models = [existing[window] if window in existing else next(trained)
                  for window in windows]
        return models, list(fresh)

    def _train_all(self, tasks_per_strategy: Sequence[tuple[OnlineStrategy, list[Any]]],
                   model_kwargs: Mapping[str, Any]) -> None:
        """Train, finish (unless postponed), switch; record the online models of the day."""
        trained = [(strategy, *self._train(strategy, tasks))
                   for strategy, tasks in tasks_per_strategy]
        if not self._postpone_action():
            for strategy, models, fresh in trained:
                if fresh:
                    self.trainer.end_train(fresh, experiment_name=strategy.name_id)
                for recorder in models:
                    if recorder not in fresh and recorder.list_tags().get(STATUS_KEY) != STATUS_END:
                        recorder.set_tags(**{STATUS_KEY: STATUS_END})
                _logger.info("%s: %d models at %s (%d trained)", strategy.name_id, len(models),
                             self.cur_time.date(), len(fresh))
        for strategy, models, _ in trained:
            online = strategy.prepare_online_models(models, **model_kwargs)
            self.history.setdefault(self.cur_time, {})[strategy.name_id] = [
                recorder.id for recorder in online]

    def first_train(self, strategies: Sequence[OnlineStrategy] | None = None,
                    model_kwargs: Mapping[str, Any] | None = None) -> None:
        """Train each strategy's first tasks (test windows cut at the current time).

        Windows trained before (e.g. by a run that crashed) are reused.

        Args:
            strategies: Default: all strategies of the manager.
            model_kwargs: Passed to ``prepare_online_models``.
        """
        chosen = self.strategies if strategies is None else list(strategies)
        self._train_all([(strategy, strategy.first_tasks(end_time=self.cur_time))
                         for strategy in chosen], model_kwargs or {})

    def add_strategy(self, strategies: OnlineStrategy | Sequence[OnlineStrategy]) -> None:
        """Add strategies: train their first tasks, then serve them with the others.

        Raises:
            ValueError: When a name is already used.
        """
        added = _as_strategies(strategies)
        self._check_names(self.strategies + added)
        self.first_train(added)
        self.strategies.extend(added)

    def routine(self, cur_time: DateLike | None = None,
                task_kwargs: Mapping[str, Any] | None = None,
                model_kwargs: Mapping[str, Any] | None = None,
                signal_kwargs: Mapping[str, Any] | None = None) -> pd.Series:
        """Run one day: recover, prepare and train tasks, switch models, signal.

        Calling it again for the same day changes nothing; after days without a
        routine it serves all of them.

        Args:
            cur_time: The day; default: the last calendar day up to today.
            task_kwargs: Passed to ``prepare_tasks``.
            model_kwargs: Passed to ``prepare_online_models``.
            signal_kwargs: Passed to :meth:`prepare_signals`.

        Returns:
            The signals added by this routine (empty while a delayed simulation
            postpones them to :meth:`delay_prepare`).
        """
        day = (pd.Timestamp.now().normalize() if cur_time is None
               else to_timestamp(cur_time, "cur_time"))
        if self.status == self.STATUS_ONLINE:
            self.refresh()
        self.cur_time = self.ta.align_time(day, "end")
        if self.status == self.STATUS_ONLINE:
            self.recover()
        tasks = [(strategy, strategy.prepare_tasks(self.cur_time, **(task_kwargs or {})))
                 for strategy in self.strategies]
        self._train_all(tasks, model_kwargs or {})
        if self._postpone_action():
            return pd.Series(dtype=float, name="score")
        new = self.prepare_signals(**(signal_kwargs or {}))
        if self.status == self.STATUS_ONLINE:
            for strategy_chains in self.served_chains().values():
                for chain in strategy_chains.values():
                    fill_labels(chain, self.cur_time, LABELLED_MODELS)
        return new

    def delay_prepare(self, model_kwargs: Mapping[str, Any] | None = None,
                      signal_kwargs: Mapping[str, Any] | None = None) -> pd.Series:
        """Fit every model a delayed trainer has only prepared, in one batch, then signal.

        With a pool trainer (``DelayTrainerRM``) the whole batch sits in the pool at
        once, so any number of workers share it.

        Args:
            model_kwargs: Passed to the trainer's ``end_train``.
            signal_kwargs: Passed to :meth:`prepare_signals`.

        Returns:
            The signals added.
        """
        for strategy in self.strategies:
            pending = [model.recorder for model in pending_models(list_models(strategy.name_id))]
            if pending:
                _logger.info("%s: fitting %d delayed models", strategy.name_id, len(pending))
                self.trainer.end_train(pending, experiment_name=strategy.name_id,
                                       **(model_kwargs or {}))
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

    def served_chains(self) -> dict[str, dict[str, list[OnlineModel]]]:
        """Return ``{strategy: {chain label: trained models by test start}}``.

        For a :class:`RollingStrategy` only the chains of its templates, labelled by
        ``chain_labels()`` (model class, numbered in template order when repeated).
        """
        served = {}
        for strategy in self.strategies:
            test_key = getattr(getattr(strategy, "rg", None), "test_key", "test")
            grouped = chains(list_models(strategy.name_id, test_key))
            labels_of = getattr(strategy, "chain_labels", None)
            labels = labels_of() if callable(labels_of) else chain_labels(grouped)
            unknown = set(grouped) - set(labels)
            if unknown:
                _logger.info("%s: %d chains of models match no template; not served",
                             strategy.name_id, len(unknown))
            served[strategy.name_id] = {label: grouped[key] for key, label in labels.items()
                                        if key in grouped}
        return served

    def _last_served(self) -> pd.Timestamp | None:
        if self.signals is None or len(self.signals) == 0:
            return None
        return pd.Timestamp(dates_of(self.signals).max())

    def prepare_signals(self, prepare_func: SignalFunction | None = None,
                        over_write: bool = False) -> pd.Series:
        """Serve the days after the last served day up to the current day.

        Each model's predictions are first extended to the days it serves, so no day
        is left out whatever the calls of :meth:`routine` were.

        Args:
            prepare_func: ``{(strategy, chain): prediction} -> signal``; default
                :class:`~taskroll.collect.ensemble.AverageEnsemble`.
            over_write: Rebuild the whole history instead of appending the new days.

        Returns:
            The new signals (a ``score`` series indexed by ``(datetime, instrument)``).
        """
        since = None if over_write else self._last_served()
        served = self.served_chains()
        for strategy_chains in served.values():
            for chain in strategy_chains.values():
                extend_chain(chain, self.cur_time, since)
        new = build_signals(served, self.cur_time, since, prepare_func)
        if new is None:
            _logger.warning("prepare_signals: no new prediction up to %s", self.cur_time.date())
            new = pd.Series(dtype=float, name="score")
        if since is None:
            self.signals = new
        elif len(new):
            assert self.signals is not None
            self.signals = pd.concat([self.signals, new]).sort_index()
        _logger.info("prepare_signals: %d new rows up to %s", len(new), self.cur_time.date())
        return new

    def rebuild_signals(self, until: DateLike | None = None,
                        prepare_func: SignalFunction | None = None) -> pd.Series:
        """Rebuild the whole signal history from the trained models.

        Args:
            until: Last day (default: the current day).
            prepare_func: As in :meth:`prepare_signals`.

        Returns:
            The signals.
        """
        if until is not None:
            self.cur_time = self.ta.align_time(to_timestamp(until, "until"), "end")
        self.prepare_signals(prepare_func=prepare_func, over_write=True)
        return self.get_signals()

    def get_signals(self) -> pd.Series:
        """Return the signal history: a ``score`` series indexed by ``(datetime, instrument)``."""
        if self.signals is None:
            return pd.Series(dtype=float, name="score")
        return self.signals

    # -- simulation ------------------------------------------------------------------------

    def simulate(self, end_time: DateLike | None = None, frequency: str = "day",
                 task_kwargs: Mapping[str, Any] | None = None,
                 model_kwargs: Mapping[str, Any] | None = None,
                 signal_kwargs: Mapping[str, Any] | None = None) -> pd.Series:
        """Replay history: first training at the current time, then a routine per trading day.

        With a delayed trainer (``DelayTrainerR``/``RM``) the models are only prepared
        day by day and fitted in one batch at the end (:meth:`delay_prepare`), as Qlib.

        Args:
            end_time: Last day simulated; ``None``: the last calendar day up to today.
            frequency: Only ``"day"``.
            task_kwargs: Passed to ``prepare_tasks``.
            model_kwargs: Passed to ``prepare_online_models`` (``end_train`` for the
                delayed batch).
            signal_kwargs: Passed to :meth:`prepare_signals`.

        Returns:
            The signal history.

        Raises:
            ValueError: For another frequency or an end before the current time.
        """
        if frequency != "day":
            raise ValueError(f"only frequency='day' is supported, got {frequency!r}")
        self.refresh()
        end = self._today() if end_time is None else to_timestamp(end_time, "end_time")
        if end < self.cur_time:
            raise ValueError(f"end_time {end.date()} is before {self.cur_time.date()}")
        calendar = self.ta.cals
        days = calendar[(calendar >= self.cur_time) & (calendar <= end)]
        self.recover()
        self.status = self.STATUS_SIMULATING
        try:
            self.first_train()
            for day in days:
                _logger.info("simulating %s", day.date())
                self.routine(day, task_kwargs=task_kwargs, model_kwargs=model_kwargs,
                             signal_kwargs=signal_kwargs)
            if self._postpone_action():
                self.delay_prepare(signal_kwargs=signal_kwargs)
        finally:
            self.status = self.STATUS_ONLINE
        return self.get_signals()
