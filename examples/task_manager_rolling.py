"""Rolling tasks trained through a task pool, then collected (Qlib's ``task_manager_rolling.py``).

The same steps as Qlib's example, with taskroll: generate rolling tasks from task
dicts in Qlib's shape, train them (in this process with ``TrainerR``, or through a
task pool with ``TrainerRM`` that any number of ``worker`` processes share), and
collect the LightGBM models' rolling predictions.

Run (the defaults write a demo market in Qlib's layout and keep everything in
``./rolling_example``)::

    python examples/task_manager_rolling.py main
    python examples/task_manager_rolling.py main --task-pool rolling_task   # TrainerRM
    python examples/task_manager_rolling.py worker --task-pool rolling_task  # more workers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from pprint import pprint
from typing import Any

import taskroll
from taskroll import R, RecorderCollector, RollingGen, RollingGroup, TaskManager, task_generator
from taskroll.collect import model_and_test_segment_key
from taskroll.manage import run_task
from taskroll.train.trainer import TrainerR, TrainerRM, task_train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qlib_config import (  # the examples folder is not a package: found via sys.path
    CSI100_RECORD_LGB_TASK_CONFIG,
    CSI100_RECORD_LINEAR_TASK_CONFIG,
    demo_provider,
)


class RollingTaskExample:
    """Generate, train and collect rolling tasks.

    Args:
        provider_uri: A Qlib data folder (default: a demo market written in ``workdir``).
        workdir: Where the task pool (SQLite) and the MLflow store live.
        experiment_name: The MLflow experiment.
        task_pool: A pool name to train through ``TrainerRM``; ``None``: ``TrainerR``.
        task_config: Task templates (default: LightGBM and Linear on CSI100).
        rolling_step: Trading days per test window.
        rolling_type: ``RollingGen.ROLL_SD`` (sliding, Qlib's default here) or ``ROLL_EX``.
    """

    def __init__(self, provider_uri: str | None = None, workdir: str = "rolling_example",
                 experiment_name: str = "rolling_exp", task_pool: str | None = None,
                 task_config: list[dict[str, Any]] | None = None, rolling_step: int = 80,
                 rolling_type: str = RollingGen.ROLL_SD) -> None:
        folder = Path(workdir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        provider = provider_uri or str(demo_provider(folder / "qlib_data"))
        taskroll.init(provider_uri=provider, region="cn",
                      mongo={"task_url": f"sqlite:///{folder / 'tasks.db'}",
                             "task_db_name": "rolling_db"},
                      tracking_uri=f"sqlite:///{folder / 'mlruns.db'}")
        self.experiment_name = experiment_name
        self.task_pool = task_pool
        self.trainer: TrainerR | TrainerRM = (
            TrainerR(experiment_name=experiment_name) if task_pool is None
            else TrainerRM(experiment_name, task_pool))
        self.task_config = task_config or [CSI100_RECORD_LINEAR_TASK_CONFIG,
                                           CSI100_RECORD_LGB_TASK_CONFIG]
        self.rolling_gen = RollingGen(step=rolling_step, rtype=rolling_type)

    def reset(self) -> None:
        """Remove the pool's tasks and the experiment's runs (careful with real results)."""
        print("========== reset ==========")
        if self.task_pool is not None:
            TaskManager(task_pool=self.task_pool).remove()
        experiment = R.get_exp(experiment_name=self.experiment_name)
        for recorder_id in experiment.list_recorders():
            experiment.delete_recorder(recorder_id)

    def task_generating(self) -> list[dict[str, Any]]:
        """Roll the templates over the data's calendar."""
        print("========== task_generating ==========")
        tasks = task_generator(tasks=self.task_config, generators=self.rolling_gen)
        pprint([task["dataset"]["kwargs"]["segments"]["test"] for task in tasks])
        return tasks

    def task_training(self, tasks: list[dict[str, Any]]) -> None:
        """Train every task (through the pool when there is one)."""
        print("========== task_training ==========")
        self.trainer.end_train(self.trainer.train(tasks))

    def worker(self) -> None:
        """Train the pool's waiting tasks in this process (start as many as you like)."""
        print("========== worker ==========")
        if self.task_pool is None:
            raise SystemExit("worker needs --task-pool")
        run_task(task_train, self.task_pool, experiment_name=self.experiment_name)

    def task_collecting(self) -> dict[str, Any]:
        """Collect the LightGBM models' predictions, rolled into one per model."""
        print("========== task_collecting ==========")

        def only_lgb(recorder: Any) -> bool:
            return bool(model_and_test_segment_key(recorder)[0] == "LGBModel")

        collector = RecorderCollector(experiment=self.experiment_name,
                                      process_list=RollingGroup(),
                                      rec_key_func=model_and_test_segment_key,
                                      rec_filter_func=only_lgb)
        collected = collector()
        print(collected)
        return collected

    def main(self) -> dict[str, Any]:
        """Reset, generate, train, collect."""
        self.reset()
        tasks = self.task_generating()
        self.task_training(tasks)
        return self.task_collecting()


def main(argv: list[str] | None = None) -> int:
    """Run a step of the example from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["main", "worker", "reset"])
    parser.add_argument("--provider-uri", default=None)
    parser.add_argument("--workdir", default="rolling_example")
    parser.add_argument("--task-pool", default=None)
    parser.add_argument("--rolling-step", type=int, default=80)
    arguments = parser.parse_args(argv)
    example = RollingTaskExample(arguments.provider_uri, arguments.workdir,
                                 task_pool=arguments.task_pool,
                                 rolling_step=arguments.rolling_step)
    getattr(example, arguments.step)()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
