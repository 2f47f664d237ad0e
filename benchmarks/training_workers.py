"""1 vs 2 worker processes on one rolling training job through a SQLite task pool.

Run alone (``.venv/bin/python benchmarks/training_workers.py``) or from
``benchmarks/ensemble.py``. The same rolling tasks (LinearModel and LGBModel over a
synthetic market) are stored in two pools; one pool is worked by one process, the
other by two. The wall time of each includes process start and feature building, as
a user would see it. Target: 2 workers >= 1.8x faster than 1.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import taskroll
from taskroll.data import SyntheticMarket
from taskroll.manage import TaskManager
from taskroll.task.gen import RollingGen, task_generator
from taskroll.train.trainer import TrainerRM

CONTEXT = multiprocessing.get_context("spawn")


def rolling_tasks(path: Path, calendar: Any, step: int) -> list[dict[str, Any]]:
    """Rolling tasks for two model types over the market file at ``path``."""
    handler = {"class": "Alpha158", "module_path": "taskroll.data.handler",
               "kwargs": {"start_time": "2014-01-01", "end_time": "2020-12-31",
                          "fit_start_time": "2014-01-01", "fit_end_time": "2017-12-31",
                          "windows": [5, 10, 20, 60],
                          "data_loader": {"class": "FileLoader",
                                          "module_path": "taskroll.data.loader",
                                          "kwargs": {"path": str(path)}}}}
    template = {
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                    "kwargs": {"handler": handler,
                               "segments": {"train": ("2014-01-01", "2017-12-31"),
                                            "valid": ("2018-01-01", "2018-06-30"),
                                            "test": ("2018-07-01", "2020-12-31")}}},
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }
    models = [{"class": "LinearModel", "module_path": "taskroll.models.linear", "kwargs": {}},
              {"class": "LGBModel", "module_path": "taskroll.models.gbdt",
               "kwargs": {"num_boost_round": 80, "early_stopping_rounds": 80}}]
    tasks = []
    for model in models:
        with_model = {**copy.deepcopy(template), "model": model}
        tasks.extend(task_generator([with_model], RollingGen(step=step, calendar=calendar)))
    return tasks


def timed_workers(trainer: TrainerRM, tasks: list[dict[str, Any]], workers: int) -> float:
    """Store ``tasks`` in the trainer's pool and time ``workers`` processes draining it."""
    assert trainer.task_pool is not None
    with TaskManager(trainer.task_pool) as manager:
        manager.create_task(tasks)
    began = time.perf_counter()
    processes = [CONTEXT.Process(target=trainer.worker) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    elapsed = time.perf_counter() - began
    with TaskManager(trainer.task_pool) as manager:
        assert manager.task_stat() == {"done": len(tasks)}, manager.task_stat()
    return elapsed


def measure(instruments: int = 120, step: int = 80) -> list[tuple[str, float, float]]:
    """Return ``(label, seconds, speed-up)`` rows for 1 and 2 workers."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        taskroll.init(task_url=f"sqlite:///{root / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
        market = SyntheticMarket(seed=11, n_instruments=instruments, start="2014-01-01",
                                 end="2020-12-31")
        path = market.save(root / "bars.parquet")
        tasks = rolling_tasks(path, market.calendar, step)
        one = timed_workers(TrainerRM("one_worker", "one_worker"), tasks, 1)
        two = timed_workers(TrainerRM("two_workers", "two_workers"), tasks, 2)
    return [(f"rolling training, {len(tasks)} tasks, 1 worker", one, 1.0),
            (f"rolling training, {len(tasks)} tasks, 2 workers", two, one / two)]


def print_rows(rows: list[tuple[str, float, float]]) -> None:
    """Print the measured rows as a table."""
    header = f"{'operation':<46}{'seconds':>10}{'speed-up':>10}{'target':>10}"
    print(header)
    print("-" * len(header))
    for label, seconds, speed_up in rows:
        target = ">= 1.8x" if "2 workers" in label else ""
        print(f"{label:<46}{seconds:>10.1f}{speed_up:>9.2f}x{target:>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=120)
    parser.add_argument("--step", type=int, default=80)
    arguments = parser.parse_args()
    print_rows(measure(arguments.instruments, arguments.step))
