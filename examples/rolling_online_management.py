"""Online serving with rolling models, step by step (Qlib's ``rolling_online_management.py``).

Four steps, each a separate run of this script that saves the ``OnlineManager`` to a
file and loads it back, as a daily job would: ``first_run`` (train the first rolling
models and put the newest online), ``routine`` (train what is due, switch, extend
predictions, prepare signals), ``add_strategy`` (a second strategy joins with its own
first training), and ``routine`` again. ``main`` runs the four in a row.

Run::

    python examples/rolling_online_management.py main
    python examples/rolling_online_management.py routine      # e.g. once a day
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

import taskroll
from taskroll import R, RollingGen, TaskManager
from taskroll.online import OnlineManager, RollingStrategy
from taskroll.train.trainer import DelayTrainerR, DelayTrainerRM, Trainer, TrainerR, TrainerRM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qlib_config import (  # the examples folder is not a package: found via sys.path
    CSI100_RECORD_LGB_TASK_CONFIG_ONLINE,
    CSI100_RECORD_LINEAR_TASK_CONFIG_ONLINE,
    demo_provider,
)

TRAINERS = {"TrainerR": TrainerR, "TrainerRM": TrainerRM, "DelayTrainerR": DelayTrainerR,
            "DelayTrainerRM": DelayTrainerRM}


class RollingOnlineExample:
    """First training, routines and an added strategy, the manager saved between steps.

    Args:
        provider_uri: A Qlib data folder (default: a demo market written in ``workdir``).
        workdir: Where the task pools, the MLflow store and the saved manager live.
        trainer: ``TrainerR``, ``TrainerRM``, ``DelayTrainerR`` or ``DelayTrainerRM``
            (Qlib's example default).
        rolling_step: Trading days per test window.
        tasks: The first strategies' templates (one strategy per model class).
        add_tasks: The templates of the strategies added later.
    """

    def __init__(self, provider_uri: str | None = None, workdir: str = "rolling_online",
                 trainer: str = "DelayTrainerRM", rolling_step: int = 80,
                 tasks: list[dict[str, Any]] | None = None,
                 add_tasks: list[dict[str, Any]] | None = None) -> None:
        self.folder = Path(workdir).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        provider = provider_uri or str(demo_provider(self.folder / "qlib_data"))
        taskroll.init(provider_uri=provider, region="cn",
                      task_url=f"sqlite:///{self.folder / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{self.folder / 'mlruns.db'}")
        self.tasks = tasks or [CSI100_RECORD_LINEAR_TASK_CONFIG_ONLINE]
        self.add_tasks = add_tasks or [CSI100_RECORD_LGB_TASK_CONFIG_ONLINE]
        self.rolling_step = rolling_step
        if trainer not in TRAINERS:
            raise SystemExit(f"trainer must be one of {sorted(TRAINERS)}")
        # one experiment and one pool per strategy, named after its model class (as Qlib)
        self.trainer: Trainer = TRAINERS[trainer]()
        self.manager_path = self.folder / "rolling_online_manager.pkl"
        self.rolling_online_manager = OnlineManager(self._strategies(self.tasks),
                                                    trainer=self.trainer)

    def _strategies(self, tasks: list[dict[str, Any]]) -> list[RollingStrategy]:
        return [RollingStrategy(task["model"]["class"], task,
                                RollingGen(step=self.rolling_step, rtype=RollingGen.ROLL_SD))
                for task in tasks]

    def worker(self) -> None:
        """Train the pools' tasks in this process (pool trainers only)."""
        print("========== worker ==========")
        if isinstance(self.trainer, TrainerRM):
            for task in self.tasks + self.add_tasks:
                self.trainer.worker(experiment_name=task["model"]["class"])
        else:
            print(f"{type(self.trainer).__name__} is not supported for worker.")

    def reset(self) -> None:
        """Remove the pools, the experiments' runs and the saved manager."""
        for task in self.tasks + self.add_tasks:
            name_id = task["model"]["class"]
            TaskManager(task_pool=name_id).remove()
            experiment = R.get_exp(experiment_name=name_id)
            for recorder_id in experiment.list_recorders():
                experiment.delete_recorder(recorder_id)
        self.manager_path.unlink(missing_ok=True)

    def first_run(self) -> None:
        """Reset, train the first strategies, save the manager."""
        print("========== reset ==========")
        self.reset()
        print("========== first_run ==========")
        self.rolling_online_manager.first_train()
        print("========== collect results ==========")
        print(self.rolling_online_manager.get_collector()())
        print("========== dump ==========")
        self.rolling_online_manager.to_pickle(self.manager_path)

    def routine(self) -> pd.Series:
        """Load the manager, run today's routine, save it; return the signals."""
        print("========== load ==========")
        self.rolling_online_manager = OnlineManager.load(self.manager_path)
        print("========== routine ==========")
        self.rolling_online_manager.routine()
        print("========== collect results ==========")
        print(self.rolling_online_manager.get_collector()())
        print("========== signals ==========")
        signals = self.rolling_online_manager.get_signals()
        print(signals)
        print("========== dump ==========")
        self.rolling_online_manager.to_pickle(self.manager_path)
        return signals

    def add_strategy(self) -> None:
        """Load the manager, add the strategies of ``add_tasks`` (first training), save."""
        print("========== load ==========")
        self.rolling_online_manager = OnlineManager.load(self.manager_path)
        print("========== add strategy ==========")
        self.rolling_online_manager.add_strategy(strategies=self._strategies(self.add_tasks))
        print("========== dump ==========")
        self.rolling_online_manager.to_pickle(self.manager_path)

    def main(self) -> pd.Series:
        """The four steps in a row."""
        self.first_run()
        self.routine()
        self.add_strategy()
        return self.routine()


def main(argv: list[str] | None = None) -> int:
    """Run a step of the example from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["main", "first_run", "routine", "add_strategy",
                                         "worker", "reset"])
    parser.add_argument("--provider-uri", default=None)
    parser.add_argument("--workdir", default="rolling_online")
    parser.add_argument("--trainer", default="DelayTrainerRM", choices=sorted(TRAINERS))
    arguments = parser.parse_args(argv)
    example = RollingOnlineExample(arguments.provider_uri, arguments.workdir,
                                   trainer=arguments.trainer)
    getattr(example, arguments.step)()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
