"""Simulate online serving over history, then backtest the signals (Qlib's ``online_management_simulate.py``).

An ``OnlineManager`` with a ``RollingStrategy`` replays the routine day by day from
``start_time`` to ``end_time``: each model is trained when its window starts, serves
only days after its training and validation ended, and the signals are the daily
average of the rolling chains. The signals then run through a top-k dropout
backtest with trading costs against a benchmark, and ``risk_analysis`` reports the
excess return with and without cost, as in Qlib.

Run::

    python examples/online_management_simulate.py main
    python examples/online_management_simulate.py main --trainer TrainerRM   # pool + workers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from pprint import pprint
from typing import Any

import pandas as pd

import taskroll
from taskroll import R, RollingGen, TaskManager
from taskroll.backtest import Exchange, TopkDropoutStrategy, backtest_daily, risk_analysis
from taskroll.data import QlibDataLoader
from taskroll.online import OnlineManager, RollingStrategy
from taskroll.train.trainer import DelayTrainerR, DelayTrainerRM, Trainer, TrainerR, TrainerRM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qlib_config import (  # the examples folder is not a package: found via sys.path
    CSI100_BENCH,
    CSI100_RECORD_LGB_TASK_CONFIG_ONLINE,
    CSI100_RECORD_LINEAR_TASK_CONFIG_ONLINE,
    demo_provider,
)

TRAINERS = {"TrainerR": TrainerR, "TrainerRM": TrainerRM, "DelayTrainerR": DelayTrainerR,
            "DelayTrainerRM": DelayTrainerRM}


class OnlineSimulationExample:
    """Simulate an online rolling strategy and backtest what it served.

    Args:
        provider_uri: A Qlib data folder (default: a demo market written in ``workdir``).
        workdir: Where the task pool (SQLite) and the MLflow store live.
        exp_name: The experiment (and strategy) name.
        task_pool: The pool of the pool trainers.
        rolling_step: Trading days per test window.
        start_time: First day simulated.
        end_time: Last day simulated.
        tasks: Task templates (default: Linear and LightGBM on CSI100).
        trainer: ``TrainerR``, ``TrainerRM``, ``DelayTrainerR`` or ``DelayTrainerRM``.
    """

    def __init__(self, provider_uri: str | None = None, workdir: str = "online_example",
                 exp_name: str = "rolling_exp", task_pool: str = "rolling_task",
                 rolling_step: int = 40, start_time: str = "2019-03-01",
                 end_time: str = "2019-06-28", tasks: list[dict[str, Any]] | None = None,
                 trainer: str = "TrainerR") -> None:
        folder = Path(workdir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.provider_uri = provider_uri or str(demo_provider(folder / "qlib_data"))
        taskroll.init(provider_uri=self.provider_uri, region="cn",
                      task_url=f"sqlite:///{folder / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{folder / 'mlruns.db'}")
        self.exp_name = exp_name
        self.task_pool = task_pool
        self.start_time = start_time
        self.end_time = end_time
        self.tasks = tasks or [CSI100_RECORD_LINEAR_TASK_CONFIG_ONLINE,
                               CSI100_RECORD_LGB_TASK_CONFIG_ONLINE]
        # the handler's end time follows each window (taskroll's default), so no model
        # loads data beyond its test segment
        self.rolling_gen = RollingGen(step=rolling_step, rtype=RollingGen.ROLL_SD)
        if trainer not in TRAINERS:
            raise SystemExit(f"trainer must be one of {sorted(TRAINERS)}")
        self.trainer: Trainer = (TRAINERS[trainer](exp_name, task_pool) if trainer.endswith("RM")
                                 else TRAINERS[trainer](exp_name))
        self.rolling_online_manager = OnlineManager(
            RollingStrategy(exp_name, task_template=self.tasks, rolling_gen=self.rolling_gen),
            trainer=self.trainer, begin_time=self.start_time)

    def reset(self) -> None:
        """Remove the pool's tasks and the experiment's runs."""
        if isinstance(self.trainer, TrainerRM):
            TaskManager(self.task_pool).remove()
        experiment = R.get_exp(experiment_name=self.exp_name)
        for recorder_id in experiment.list_recorders():
            experiment.delete_recorder(recorder_id)

    def main(self) -> pd.DataFrame:
        """Reset, simulate, collect, and backtest the signals; return the risk analysis."""
        print("========== reset ==========")
        self.reset()
        print("========== simulate ==========")
        self.rolling_online_manager.simulate(end_time=self.end_time)
        print("========== collect results ==========")
        print(self.rolling_online_manager.get_collector()())
        print("========== signals ==========")
        signals = self.rolling_online_manager.get_signals()
        print(signals)
        days = signals.index.get_level_values("datetime")
        bars = QlibDataLoader(self.provider_uri).load("all", days.min(), days.max())
        strategy = TopkDropoutStrategy(topk=10, n_drop=2)
        report, _ = backtest_daily(signals, Exchange(bars), strategy,
                                   start_time=days.min(), end_time=days.max(),
                                   benchmark=CSI100_BENCH)
        excess = report["return"] - report["bench"]
        analysis = pd.concat({"excess_return_without_cost": risk_analysis(excess),
                              "excess_return_with_cost": risk_analysis(excess - report["cost"])})
        pprint(analysis)
        return analysis

    def worker(self) -> None:
        """Train the pool's tasks in this process (pool trainers only)."""
        print("========== worker ==========")
        if isinstance(self.trainer, TrainerRM):
            self.trainer.worker()
        else:
            print(f"{type(self.trainer).__name__} is not supported for worker.")


def main(argv: list[str] | None = None) -> int:
    """Run a step of the example from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["main", "worker", "reset"])
    parser.add_argument("--provider-uri", default=None)
    parser.add_argument("--workdir", default="online_example")
    parser.add_argument("--trainer", default="TrainerR", choices=sorted(TRAINERS))
    parser.add_argument("--start-time", default="2019-03-01")
    parser.add_argument("--end-time", default="2019-06-28")
    arguments = parser.parse_args(argv)
    example = OnlineSimulationExample(arguments.provider_uri, arguments.workdir,
                                      start_time=arguments.start_time,
                                      end_time=arguments.end_time, trainer=arguments.trainer)
    getattr(example, arguments.step)()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
