"""1 vs 2 worker processes on one rolling training job through a SQLite task pool.

Run alone (``.venv/bin/python benchmarks/training_workers.py``) or from
``benchmarks/ensemble.py``. The same rolling tasks (LinearModel and LGBModel over a
synthetic market) are stored in two pools; one pool is worked by one process, the
other by two. The wall time of each includes process start and feature building, as
a user would see it. Target: 2 workers >= 1.8x faster than 1.

Each run starts with an empty on-disk feature store of its own
(:mod:`taskroll.data.feature_store`), so each computes the features once, and its
worker processes start with BLAS/OpenMP threads capped at cores // workers
(:mod:`taskroll.threads`). ``--baseline`` turns both off (the store ``off``, threads
uncapped): the behaviour before the store existed, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import taskroll
from taskroll.data import SyntheticMarket, feature_store
from taskroll.manage import TaskManager
from taskroll.task.gen import RollingGen, task_generator
from taskroll.threads import capped_environment, threads_per_worker
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


def timed_workers(trainer: TrainerRM, tasks: list[dict[str, Any]], workers: int,
                  cache: Path | None, threads: int | None = None) -> float:
    """Store ``tasks`` in the trainer's pool and time ``workers`` processes draining it.

    ``cache``: the feature store folder the workers use (``None``: the store off and
    threads uncapped, as before the store existed); ``threads``: per worker (default
    cores // workers; 0: uncapped).
    """
    assert trainer.task_pool is not None
    with TaskManager(trainer.task_pool) as manager:
        manager.create_task(tasks)
    previous = os.environ.get(feature_store.ENVIRONMENT_VARIABLE)
    os.environ[feature_store.ENVIRONMENT_VARIABLE] = str(cache) if cache else "off"
    try:
        return _drain(trainer, tasks, workers, cache, threads)
    finally:
        if previous is None:
            os.environ.pop(feature_store.ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[feature_store.ENVIRONMENT_VARIABLE] = previous


def _drain(trainer: TrainerRM, tasks: list[dict[str, Any]], workers: int,
           cache: Path | None, threads: int | None) -> float:
    """Start the worker processes (thread caps with a store), wait, return the seconds."""
    assert trainer.task_pool is not None
    per_worker = threads_per_worker(workers) if threads is None else threads
    caps = capped_environment(per_worker) if cache and per_worker > 0 \
        else contextlib.nullcontext({})
    began = time.perf_counter()
    processes = [CONTEXT.Process(target=trainer.worker) for _ in range(workers)]
    with caps:
        for process in processes:
            process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    elapsed = time.perf_counter() - began
    with TaskManager(trainer.task_pool) as manager:
        assert manager.task_stat() == {"done": len(tasks)}, manager.task_stat()
    return elapsed


def measure(instruments: int = 120, step: int = 80, baseline: bool = False,
            threads: int | None = None) -> list[tuple[str, float, float]]:
    """Return ``(label, seconds, speed-up)`` rows for 1 and 2 workers.

    ``baseline``: run without the feature store and without thread caps; ``threads``:
    BLAS/OpenMP threads per worker with the store (default cores // workers; 0: uncapped).
    """
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        taskroll.init(task_url=f"sqlite:///{root / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
        market = SyntheticMarket(seed=11, n_instruments=instruments, start="2014-01-01",
                                 end="2020-12-31")
        path = market.save(root / "bars.parquet")
        tasks = rolling_tasks(path, market.calendar, step)
        one = timed_workers(TrainerRM("one_worker", "one_worker"), tasks, 1,
                            None if baseline else root / "cache_one", threads)
        two = timed_workers(TrainerRM("two_workers", "two_workers"), tasks, 2,
                            None if baseline else root / "cache_two", threads)
    mode = "baseline" if baseline else ("store" if threads == 0 else "store+caps")
    return [(f"{mode}, {len(tasks)} tasks, 1 worker", one, 1.0),
            (f"{mode}, {len(tasks)} tasks, 2 workers", two, one / two)]


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
    parser.add_argument("--baseline", action="store_true",
                        help="no feature store, no thread caps (the behaviour before them)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker with the store (cores // workers; 0: no cap)")
    arguments = parser.parse_args()
    print_rows(measure(arguments.instruments, arguments.step, arguments.baseline,
                       arguments.threads))
