"""Worker loops placed on a real Dask cluster (scheduler and worker processes on loopback).

The pool is a SQLite file in ``tmp_path`` (everything on one machine). Task functions
log a "start" and an "end" line per run with O_APPEND, so a run that happened twice, or
a task never run, shows in the log.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dask_cluster import FUNC, DaskCluster, clean_environment, create_pool, log_lines

from taskroll.cluster import DaskWorkers, LoopOptions
from taskroll.config import Settings
from taskroll.data import SyntheticMarket
from taskroll.manage import TaskManager
from taskroll.train.trainer import DelayTrainerRM, TrainerRM


def taskroll_worker(*arguments: str, cwd: Path, url: str,
                    **environment: str) -> subprocess.CompletedProcess[str]:
    """``taskroll worker ARGUMENTS`` in a subprocess on the pool at ``url``."""
    return subprocess.run([sys.executable, "-m", "taskroll", "worker", *arguments], cwd=cwd,
                          env=clean_environment(TASKROLL_TASK_URL=url, **environment),
                          capture_output=True, text=True, timeout=240, check=False)


def test_cli_places_loops_on_two_dask_workers_and_runs_every_task_once(
        cluster: DaskCluster, tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "numbers", 12, log, sleep=0.3)
    result = taskroll_worker("-t", "numbers", "-n", "2", "--func", FUNC, "--on", cluster.url,
                             "--until-pool-done", cwd=tmp_path, url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("worker")]
    assert len(lines) == 2 and all("dask worker" in line for line in lines), lines
    assert sum(int(line.split("): ")[1].split()[0]) for line in lines) == 12
    counts = log_lines(log)
    assert counts["start"] == counts["end"] == collections.Counter(range(12))
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": 12}
        workers = {task["res"]["worker"] for task in manager.query()}
        assert all(task["attempts"] == 1 and task["error"] is None
                   for task in manager.query())
    assert workers == {"cpu-worker", "gpu-worker"}  # without resources, both take work


def test_loops_that_need_a_gpu_run_only_on_the_gpu_worker(
        cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings) -> None:
    log = tmp_path / "runs.log"
    create_pool(isolated_settings.resolved_task_url(), "gpu_pool", 8, log, sleep=0.1)
    client = cluster.client()
    try:
        summaries = DaskWorkers(client, n=2, resources={"GPU": 1}).run_loops(
            LoopOptions(task_pool="gpu_pool", func=FUNC))
    finally:
        client.close()
    assert [summary.error for summary in summaries] == [None, None]
    assert all("dask worker gpu-worker" in summary.where for summary in summaries)
    assert sum(summary.done for summary in summaries) == 8
    with TaskManager("gpu_pool") as manager:
        assert manager.task_stat() == {"done": 8}
        assert {task["res"]["worker"] for task in manager.query()} == {"gpu-worker"}
    assert log_lines(log)["end"] == collections.Counter(range(8))


def test_a_loop_that_cannot_import_its_function_fails_the_command(
        cluster: DaskCluster, tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "numbers", 2, log)
    result = taskroll_worker("-t", "numbers", "--func", "scale_tasks:missing", "--on",
                             cluster.url, cwd=tmp_path, url=url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "worker 0: stopped:" in result.stdout and "has no 'missing'" in result.stdout
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"waiting": 2}


def _training_task(path: Path, window: int) -> dict[str, Any]:
    """A small LinearModel task on the market file at ``path``; ``window`` shifts its test."""
    handler = {"class": "Alpha158", "module_path": "taskroll.data.handler",
               "kwargs": {"start_time": "2018-01-01", "end_time": "2020-03-31",
                          "fit_start_time": "2018-01-01", "fit_end_time": "2019-06-30",
                          "windows": [5, 10],
                          "data_loader": {"class": "FileLoader",
                                          "module_path": "taskroll.data.loader",
                                          "kwargs": {"path": str(path)}}}}
    test = [("2019-10-01", "2019-12-31"), ("2020-01-01", "2020-03-31")][window]
    return {"model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                      "kwargs": {"alpha": 1.0}},
            "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                        "kwargs": {"handler": handler,
                                   "segments": {"train": ("2018-01-01", "2019-06-30"),
                                                "valid": ("2019-07-01", "2019-09-20"),
                                                "test": test}}},
            "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                        "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}]}


@pytest.mark.parametrize("trainer_class", [TrainerRM, DelayTrainerRM])
def test_pool_trainers_train_through_loops_on_the_cluster(
        cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings,
        trainer_class: type[TrainerRM]) -> None:
    market = SyntheticMarket(seed=3, n_instruments=20, start="2018-01-01", end="2020-03-31")
    path = market.save(tmp_path / "bars.parquet")
    tasks = [_training_task(path, window) for window in (0, 1)]
    trainer = trainer_class("dask_rolling", workers=DaskWorkers(cluster.address, n=2))
    recorders = trainer.end_train(trainer.train(tasks))  # the delayed one fits in end_train
    assert len(recorders) == 2
    for recorder, task in zip(recorders, tasks, strict=True):
        prediction = recorder.load_object("pred.pkl")
        assert isinstance(prediction, (pd.Series, pd.DataFrame)) and len(prediction) > 0
        dates = prediction.index.get_level_values("datetime")
        start, end = task["dataset"]["kwargs"]["segments"]["test"]
        assert dates.min() >= pd.Timestamp(start) and dates.max() <= pd.Timestamp(end)
    with TaskManager("dask_rolling") as manager:
        assert manager.task_stat() == {"done": 2}


@pytest.mark.parametrize("options, message", [
    (["--gpus", "0"], "--gpus places local processes"),
    (["--on", "http://host:1"], "--on takes a Dask scheduler"),
    (["--resources", "GPU"], "NAME=AMOUNT"),
])
def test_bad_dask_options_are_one_line_errors(tmp_path: Path, options: list[str],
                                              message: str) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    create_pool(url, "numbers", 1, tmp_path / "runs.log")
    arguments = ["-t", "numbers", *options]
    if "--on" not in options:
        arguments += ["--on", "dask://127.0.0.1:1"]
    result = taskroll_worker(*arguments, cwd=tmp_path, url=url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
