"""``taskroll online {routine,simulate,rebuild,report} --config online.yaml``.

``routine`` is meant to run once a trading day (cron, a Kubernetes CronJob): the
state (which models exist and which are online) lives in the MLflow store, so each
call marks runs of killed processes ``FAILED``, trains the windows that are due
(reusing any already trained), switches models, extends predictions and appends the
new signals to ``OUTPUT/signals.parquet`` (replaced atomically). The first call (no
online model yet) trains the first rolling tasks. A routine can be killed at any
point: the next one recovers (see :mod:`taskroll.online.manager`). ``simulate``
replays the history day by day from ``begin_time`` to ``--end-time``; ``rebuild``
rewrites the signal file from the trained models; ``report`` evaluates the served
signals against the labels realised since (``OUTPUT/report/``).

Example ``online.yaml`` (relative paths are read from the config's folder)::

    experiment: rolling_linear            # the strategy name and MLflow experiment
    task_url: sqlite:///tasks.db          # optional, passed to taskroll.init
    tracking_uri: sqlite:///mlruns.db     # optional, passed to taskroll.init
    trainer: TrainerRM                    # TrainerR | TrainerRM | DelayTrainerR | DelayTrainerRM
    task_pool: rolling_linear_pool        # optional, for the pool trainers
    # task_db_name, artifact_root: optional, passed to taskroll.init
    # provider_uri: ~/.qlib/qlib_data/cn_data    # optional: a Qlib data folder (and region: cn)
    begin_time: 2019-08-01
    report: {topk: 50}                    # optional, for `online report`
    rolling:
      step: 20                            # trading days, or W / M / Q / Y (calendar periods)
      rtype: expanding                    # or sliding
      calendar: bars.parquet              # a file of dates / a bar panel, or e.g. XSHG
      # trunc_days: derived from the handler's label horizon (label_horizon: to set it);
      # refit_per_roll: true (fit ranges follow each train segment)
    task_template:
      model: {class: LinearModel, module_path: taskroll.models.linear}
      dataset:
        class: DatasetH
        module_path: taskroll.data.dataset
        kwargs:
          handler:
            class: Alpha158
            module_path: taskroll.data.handler
            kwargs:
              start_time: 2018-01-01
              end_time: 2019-07-31
              fit_start_time: 2018-01-01
              fit_end_time: 2019-03-29
              windows: [5, 10]
              data_loader: {class: FileLoader, kwargs: {path: bars.parquet}}
          segments:
            train: [2018-01-01, 2019-03-29]
            valid: [2019-04-01, 2019-06-28]
            test: [2019-07-01, null]
      record:
        - {class: SignalRecord, kwargs: {model: <MODEL>, dataset: <DATASET>}}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import taskroll
from taskroll.errors import TaskrollError
from taskroll.online.config import OnlineConfigError as OnlineConfigError  # re-exported
from taskroll.online.config import load_config as load_config  # re-exported
from taskroll.online.config_schema import TRAINERS
from taskroll.online.files import SIGNALS_FILE, read_signals, routine_lock, write_signals
from taskroll.online.manager import OnlineManager
from taskroll.online.report import served_report
from taskroll.online.strategy import RollingStrategy
from taskroll.task.gen import RollingGen
from taskroll.train.trainer import DelayTrainerR, DelayTrainerRM, Trainer, TrainerR, TrainerRM


def add_online_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``online`` command (``routine``, ``simulate``, ``rebuild``, ``report``).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The ``online`` parser; its sub-command is stored in ``online_command``.
    """
    online = subparsers.add_parser("online", help="serve rolling models online or simulate it")
    commands = online.add_subparsers(dest="online_command", required=True)
    routine = commands.add_parser("routine", help="run one day's routine (e.g. from cron)")
    simulate = commands.add_parser("simulate", help="replay history day by day")
    rebuild = commands.add_parser("rebuild", help=f"rebuild {SIGNALS_FILE} from the models")
    report = commands.add_parser("report", help="IC and top-k long-short of served signals")
    for parser in (routine, simulate, rebuild, report):
        parser.add_argument("--config", required=True, type=Path, help="online YAML config")
        parser.add_argument("--output", type=Path, default=Path("online_output"),
                            help=f"folder of {SIGNALS_FILE} (default: online_output)")
    routine.add_argument("--cur-time", default=None,
                         help="the day of the routine (default: last calendar day to today)")
    for parser in (routine, rebuild):
        parser.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                            help="a RUNNING run of another host older than this is marked "
                                 "FAILED (default: only dead processes of this host)")
    simulate.add_argument("--end-time", default=None,
                          help="last day simulated (default: last calendar day to today)")
    rebuild.add_argument("--until", default=None,
                         help="last day (default: the last day of the current signal file, "
                              "else the last calendar day to today)")
    report.add_argument("--topk", type=int, default=None,
                        help="instruments per side of the long-short book (default: the "
                             "config's report.topk, else 50)")
    return online  # type: ignore[no-any-return]


def _trainer(config: Mapping[str, Any]) -> Trainer:
    spec = config.get("trainer", "TrainerR")
    options: dict[str, Any] = dict(spec) if isinstance(spec, Mapping) else {"class": spec}
    name = options.pop("class", "TrainerR")
    if name not in TRAINERS:
        raise OnlineConfigError(f"trainer must be one of {sorted(TRAINERS)}, got {name!r}")
    experiment = str(config["experiment"])
    pool = options.pop("task_pool", config.get("task_pool"))
    if name == "TrainerRM":
        return TrainerRM(experiment_name=experiment, task_pool=pool)
    if name == "DelayTrainerRM":
        return DelayTrainerRM(experiment_name=experiment, task_pool=pool)
    if name == "DelayTrainerR":
        return DelayTrainerR(experiment_name=experiment)
    return TrainerR(experiment_name=experiment)


def build_manager(config: Mapping[str, Any], begin_time: Any = None) -> OnlineManager:
    """Build the :class:`OnlineManager` of a loaded config (calls :func:`taskroll.init`).

    Raises:
        OnlineConfigError: For an unknown trainer or rolling type.
        TaskConfigError: For a bad rolling step.
        CalendarError: When the calendar cannot be loaded.
    """
    taskroll.init(task_url=config.get("task_url"), tracking_uri=config.get("tracking_uri"),
                  task_db_name=config.get("task_db_name"),
                  artifact_root=config.get("artifact_root"),
                  provider_uri=config.get("provider_uri"),
                  region=config.get("region"))
    rolling = config["rolling"]
    rtype = rolling.get("rtype", "expanding")
    types = {"expanding": RollingGen.ROLL_EX, "sliding": RollingGen.ROLL_SD}
    if rtype not in types:
        raise OnlineConfigError(f"rolling.rtype must be 'expanding' or 'sliding', got {rtype!r}")
    generator = RollingGen(step=rolling.get("step", 40), rtype=types[rtype],
                           trunc_days=rolling.get("trunc_days"),
                           calendar=rolling.get("calendar"),
                           label_horizon=rolling.get("label_horizon"),
                           allow_label_leak=bool(rolling.get("allow_label_leak", False)),
                           refit_per_roll=bool(rolling.get("refit_per_roll", True)))
    strategy = RollingStrategy(str(config["experiment"]), config["task_template"], generator)
    begin = begin_time if begin_time is not None else config.get("begin_time")
    return OnlineManager(strategy, trainer=_trainer(config), begin_time=begin)


def _summary(manager: OnlineManager, new: pd.Series | None) -> str:
    signals = manager.get_signals()
    if len(signals) == 0:
        return "no signals"
    dates = signals.index.get_level_values(0)
    online = {strategy.name_id: len(strategy.tool.online_models())
              for strategy in manager.strategies}
    added = 0 if new is None else len(new)
    return (f"signals: {len(signals)} rows, {dates.nunique()} days "
            f"{pd.Timestamp(dates.min()).date()}..{pd.Timestamp(dates.max()).date()}; "
            f"new rows: {added}; online models: {online}")


def _day(manager: OnlineManager, text: str | None) -> pd.Timestamp:
    return manager.ta.align_time(text if text is not None else pd.Timestamp.now().normalize(),
                                 "end")


def _routine(config: Mapping[str, Any], arguments: argparse.Namespace) -> None:
    manager = build_manager(config)
    manager.stale_after = arguments.stale_after
    output: Path = arguments.output
    day = _day(manager, arguments.cur_time)
    with routine_lock(output):
        manager.cur_time = day
        manager.recover()
        manager.refresh()  # runs of an older version are reused, not trained again
        manager.signals = read_signals(output, set_aside=True)  # None: rebuilt below
        waiting = [strategy for strategy in manager.strategies
                   if not strategy.tool.online_models()]
        if waiting:
            manager.first_train(waiting)
        new = manager.routine(day)
        if len(manager.get_signals()):
            write_signals(manager.get_signals(), output)
    print(f"routine {day.date()}: {_summary(manager, new)}")


def _simulate(config: Mapping[str, Any], arguments: argparse.Namespace) -> None:
    manager = build_manager(config)
    output: Path = arguments.output
    with routine_lock(output):
        signals = manager.simulate(arguments.end_time)
        write_signals(signals, output)
    served = {recorder_id for day in manager.history.values() for ids in day.values()
              for recorder_id in ids}
    print(f"simulate {manager.begin_time.date()}..{manager.cur_time.date()}: "
          f"{_summary(manager, signals)}; {len(manager.history)} routines, {len(served)} "
          f"models served; written to {output / SIGNALS_FILE}")


def _rebuild(config: Mapping[str, Any], arguments: argparse.Namespace) -> None:
    manager = build_manager(config)
    manager.stale_after = arguments.stale_after
    output: Path = arguments.output
    with routine_lock(output):
        manager.recover()
        until = arguments.until
        if until is None:
            current = read_signals(output, set_aside=True)
            until = (current.index.get_level_values(0).max() if current is not None
                     and len(current) else None)
        signals = manager.rebuild_signals(_day(manager, until))
        if len(signals):
            write_signals(signals, output)
    print(f"rebuild: {_summary(manager, signals)}; written to {output / SIGNALS_FILE}")


def _report(config: Mapping[str, Any], arguments: argparse.Namespace) -> None:
    manager = build_manager(config)
    output: Path = arguments.output
    signals = read_signals(output)
    if signals is None or len(signals) == 0:
        raise OnlineConfigError(f"no signals in {output / SIGNALS_FILE}; run routine, "
                                "simulate or rebuild first")
    topk = arguments.topk
    if topk is None:
        topk = int(dict(config.get("report") or {}).get("topk", 50))
    report = served_report(manager, signals, topk=topk)
    paths = report.save(output / "report")
    print(report.to_text())
    print("written: " + ", ".join(str(path) for path in paths.values()))


_COMMANDS = {"routine": _routine, "simulate": _simulate, "rebuild": _rebuild,
             "report": _report}


def run_online(arguments: argparse.Namespace) -> int:
    """Run ``online routine|simulate|rebuild|report`` from parsed arguments.

    Returns:
        0 on success, 2 for a bad config, a taskroll error or a system error such as a
        full disk (one line on stderr; the signal file is then left as it was).
    """
    try:
        command = _COMMANDS.get(arguments.online_command)
        if command is None:
            raise OnlineConfigError(f"unknown online command {arguments.online_command!r}")
        command(load_config(arguments.config), arguments)
    except (TaskrollError, ValueError, OSError) as error:  # OSError: a full disk, a lost mount
        print(f"taskroll online: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m taskroll.online.cli online ...``."""
    parser = argparse.ArgumentParser(prog="taskroll")
    add_online_parser(parser.add_subparsers(dest="command", required=True))
    return run_online(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
