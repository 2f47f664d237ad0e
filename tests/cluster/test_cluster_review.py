"""Review of issue 13's placement: the ways worker loops on Dask (and here) went wrong.

Each test reproduces one defect found in review (it failed before the fix):

* a relative SQLite URL opened another file in the Dask worker's working directory,
  and the command said "0 task(s) done" and exited 0 with the pool untouched;
* ``--resources`` that no worker offers waited forever (a log line, no end);
* a lost scheduler ended in "unexpected FuturesCancelledError";
* Ctrl-C / SIGTERM left the loops running on the cluster until the pool was drained
  (and SIGTERM left local worker processes running as orphans);
* ``TrainerRM(workers=..., task_manager_kwargs=...)`` ignored the manager's store URL
  (the trainer then waited forever) and ``allow_pickle`` (pickled tasks failed);
* URLs with passwords appeared in the ``repr`` of the loop's arguments, which Dask logs;
* ``--on`` accepted ports out of range and ``inproc://``, and its error showed another
  address than the one given; ``--gpus a`` was accepted (CUDA then shows no device).

The module's cluster (``cluster`` fixture) has ``cpu-worker`` and ``gpu-worker``
(``GPU=1``); one more cluster, of its own, loses its scheduler.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dask_cluster import (
    FUNC,
    DaskCluster,
    clean_environment,
    create_pool,
    dask_cluster,
    log_lines,
)

import taskroll
from taskroll.cli import main
from taskroll.cluster import DaskWorkers, LoopOptions, LoopSettings, run_loop
from taskroll.cluster.gpus import parse_gpus
from taskroll.config import Settings
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager
from taskroll.train.trainer import TrainerRM

#: Task functions of this module, importable as ``review_tasks:NAME`` by the Dask workers
#: (written into the cluster's tasks folder) and by local worker processes.
REVIEW_TASKS = '''
import os
import time


def _append(path, line):
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def slow_task(task, **kwargs):
    """Log "start"/"end" lines (same format as scale_tasks) around a sleep; no Dask needed."""
    _append(task["log"], f"start {task['index']} local {os.getpid()}\\n")
    time.sleep(task.get("sleep", 0.0))
    _append(task["log"], f"end {task['index']} local {os.getpid()}\\n")
    return {"index": task["index"], "pid": os.getpid()}
'''


@pytest.fixture(scope="module")
def review_tasks(cluster: DaskCluster) -> Iterator[Path]:
    """The folder of ``review_tasks.py``: on the Dask workers' path and this process's."""
    (cluster.tasks_folder / "review_tasks.py").write_text(REVIEW_TASKS)
    sys.path.insert(0, str(cluster.tasks_folder))
    try:
        yield cluster.tasks_folder
    finally:
        sys.path.remove(str(cluster.tasks_folder))


def taskroll_worker(*arguments: str, cwd: Path, timeout: float = 120,
                    **environment: str) -> subprocess.CompletedProcess[str]:
    """``taskroll worker ARGUMENTS`` in a subprocess, ``TASKROLL_*`` only from ``environment``."""
    return subprocess.run([sys.executable, "-m", "taskroll", "worker", *arguments], cwd=cwd,
                          env=clean_environment(**environment), capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_worker(*arguments: str, cwd: Path, **environment: str) -> subprocess.Popen[str]:
    """``taskroll worker ARGUMENTS`` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "taskroll", "worker", *arguments], cwd=cwd,
                            env=clean_environment(**environment), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_ends(log: Path, count: int, command: subprocess.Popen[str]) -> None:
    """Wait until ``log`` has ``count`` "end" lines (the command must still run)."""
    deadline = time.monotonic() + 90
    while not log.exists() or sum(log_lines(log)["end"].values()) < count:
        assert command.poll() is None, command.communicate()
        assert time.monotonic() < deadline, "the loops did not start"
        time.sleep(0.1)


def settle(url: str, pool: str, seconds: float = 60) -> dict[str, int]:
    """The pool's counts once no task is running (the loops have ended)."""
    deadline = time.monotonic() + seconds
    with TaskManager(pool, store=url) as manager:
        while manager.task_stat().get("running") and time.monotonic() < deadline:
            time.sleep(0.2)
        return manager.task_stat()


def test_relative_sqlite_url_is_the_same_file_in_the_dask_worker(
        cluster: DaskCluster, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    create_pool(f"sqlite:///{tmp_path / 'tasks.db'}", "numbers", 4, log)
    assert Path(cluster.tasks_folder).resolve() != tmp_path.resolve()  # other cwd
    result = taskroll_worker("-t", "numbers", "-n", "2", "--func", FUNC, "--on", cluster.url,
                             cwd=tmp_path, TASKROLL_TASK_URL="sqlite:///tasks.db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert log_lines(log)["end"] == collections.Counter(range(4))
    with TaskManager("numbers", store=f"sqlite:///{tmp_path / 'tasks.db'}") as manager:
        assert manager.task_stat() == {"done": 4}
    assert not (cluster.tasks_folder / "tasks.db").exists()


def test_loop_settings_carry_absolute_paths(isolated_settings: Settings, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    taskroll.init(task_url="sqlite:///pool.db?file_mode=0640", tracking_uri="sqlite:///runs.db",
                  artifact_root="artifacts")
    settings = LoopSettings.current()
    assert settings.task_url == f"sqlite:///{tmp_path / 'pool.db'}?file_mode=0640"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'runs.db'}"
    assert settings.artifact_root == str(tmp_path / "artifacts")


def test_a_loop_whose_store_lacks_the_pool_stops_with_an_error(
        isolated_settings: Settings, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    summary = run_loop(0, LoopOptions(task_pool="numbers", func=dict, task_url=other))
    assert summary.error is not None and "'numbers' is not in" in summary.error
    assert summary.done == 0


def test_urls_with_passwords_are_masked_in_what_dask_logs() -> None:
    url = "postgresql://alice:s3cret@db.example:5432/tasks"
    settings = LoopSettings(task_url=url, task_db_name="taskroll",
                            tracking_uri="postgresql+psycopg://bob:hunter2@db/mlflow",
                            environment={"TASKROLL_ALLOWED_TRACKING_URIS":
                                         "postgresql://bob:hunter2@db/mlflow"})
    options = LoopOptions(task_pool="numbers", task_url="mongodb://carol:pa55@mongo/db")
    shown = repr(settings) + repr(options)
    assert not any(secret in shown for secret in ("s3cret", "hunter2", "pa55"))
    assert "alice:***@db.example" in shown and "carol:***@mongo" in shown


@pytest.mark.parametrize("resources", ["FOO=1", "GPU=2"])
def test_resources_no_worker_offers_end_with_a_one_line_error(
        cluster: DaskCluster, tmp_path: Path, resources: str) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    create_pool(url, "numbers", 2, tmp_path / "runs.log")
    result = taskroll_worker("-t", "numbers", "--func", FUNC, "--on", cluster.url,
                             "--resources", resources, "--wait-for-workers", "1",
                             cwd=tmp_path, timeout=60, TASKROLL_TASK_URL=url)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"offers {resources}" in errors[0], result.stderr
    assert "--resources " + resources in errors[0]
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"waiting": 2}
        assert all(task["attempts"] == 0 for task in manager.query())


@pytest.mark.parametrize("address", ["dask://", "tcp://", "dask://127.0.0.1",
                                     "dask://:8786", "dask://127.0.0.1:99999",
                                     "dask://127.0.0.1:0", "inproc://scheduler:1",
                                     "http://127.0.0.1:8786", "127.0.0.1:8786"])
def test_bad_on_addresses_are_one_line_errors_that_leave_the_pool(
        isolated_settings: Settings, capsys: pytest.CaptureFixture[str],
        address: str) -> None:
    create_pool(isolated_settings.resolved_task_url(), "numbers", 2, Path("unused.log"))
    status = main(["worker", "-t", "numbers", "--func", FUNC, "--on", address])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1, error
    assert "--on takes a Dask scheduler" in error and repr(address) in error
    with TaskManager("numbers") as manager:
        assert manager.task_stat() == {"waiting": 2}


@pytest.mark.parametrize("gpus", ["", "a", "0,,1", " ", "GPU-", "0 1", "-1", "0,cuda:1"])
def test_bad_gpu_lists_are_one_line_errors(
        isolated_settings: Settings, capsys: pytest.CaptureFixture[str], gpus: str) -> None:
    create_pool(isolated_settings.resolved_task_url(), "numbers", 1, Path("unused.log"))
    status = main(["worker", "-t", "numbers", "-n", "2", "--gpus", gpus])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "--gpus takes" in error, error
    with TaskManager("numbers") as manager:
        assert manager.task_stat() == {"waiting": 1}


def test_good_gpu_lists_keep_devices_and_repeats() -> None:
    assert parse_gpus("0,0,1") == ["0", "0", "1"]
    assert parse_gpus(" GPU-8f2a-11 , MIG-4b1c/1/0 ") == ["GPU-8f2a-11", "MIG-4b1c/1/0"]
    with pytest.raises(TaskConfigError):
        parse_gpus([])


def test_sigterm_stops_the_loops_on_dask(cluster: DaskCluster, review_tasks: Path,
                                         tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "numbers", 40, log, sleep=0.4)
    command = start_worker("-t", "numbers", "-n", "2", "--func", "review_tasks:slow_task",
                           "--on", cluster.url, cwd=tmp_path, TASKROLL_TASK_URL=url)
    try:
        wait_for_ends(log, 2, command)
        command.send_signal(signal.SIGTERM)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert command.returncode == 130 and "error: interrupted" in stderr, stderr
    counts = settle(url, "numbers")  # each loop ends after the task it was running
    started = sum(log_lines(log)["start"].values())
    time.sleep(1.0)  # no loop goes on claiming
    assert sum(log_lines(log)["start"].values()) == started
    assert counts.get("waiting", 0) > 0 and "running" not in counts, counts
    assert counts.get("done", 0) + counts["waiting"] == 40
    assert log_lines(log)["start"] == log_lines(log)["end"]  # nothing cut short
    assert max(log_lines(log)["end"].values()) == 1


def test_sigterm_gives_local_workers_tasks_back(review_tasks: Path, tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "numbers", 40, log, sleep=0.4)
    command = start_worker("-t", "numbers", "-n", "2", "--func", "review_tasks:slow_task",
                           cwd=tmp_path, TASKROLL_TASK_URL=url, PYTHONPATH=str(review_tasks))
    try:
        wait_for_ends(log, 2, command)
        command.send_signal(signal.SIGTERM)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert command.returncode == 130 and "error: interrupted" in stderr, stderr
    with TaskManager("numbers", store=url) as manager:  # given back, not left to the lease
        counts = manager.task_stat()
        assert "running" not in counts and counts.get("waiting", 0) > 0, counts
        given_back = [task for task in manager.query({"status": "waiting"})
                      if task["attempts"]]
    started = sum(log_lines(log)["start"].values())
    time.sleep(1.0)  # no orphaned process goes on claiming
    assert sum(log_lines(log)["start"].values()) == started
    assert all(task["error"] is None or "interrupt" in str(task["error"]).lower()
               for task in given_back)


def _trainer_tasks(log: Path) -> list[dict[str, Any]]:
    # the numpy array has no JSON form: the pool stores these tasks pickled
    return [{"index": index, "weights": np.arange(3) * index, "log": str(log)}
            for index in range(3)]


@pytest.mark.timeout(180)
def test_trainer_loops_use_the_managers_store_and_pickle_opt_in(
        cluster: DaskCluster, isolated_settings: Settings, tmp_path: Path) -> None:
    from taskroll.train.task_run import begin_task_train

    store = f"sqlite:///{tmp_path / 'team_pool.db'}"  # not the settings' store
    trainer = TrainerRM("review", train_func=begin_task_train,
                        task_manager_kwargs={"store": store, "allow_pickle": True,
                                             "max_attempts": 1},
                        workers=DaskWorkers(cluster.address, n=2))
    tasks = _trainer_tasks(tmp_path / "unused.log")
    recorders = trainer.train(tasks)
    assert len(recorders) == 3
    for recorder, task in zip(recorders, tasks, strict=True):  # in task order
        saved = recorder.load_object("task")
        assert saved["index"] == task["index"]
        assert np.array_equal(saved["weights"], task["weights"])
    with TaskManager("review", store=store, allow_pickle=True) as manager:
        assert manager.task_stat() == {"done": 3}
        assert all(task["attempts"] == 1 for task in manager.query())
    with TaskManager("review") as manager:  # the settings' store never got the pool
        assert "review" not in manager.list()


def test_trainer_with_workers_refuses_a_store_object(isolated_settings: Settings) -> None:
    with TaskManager("review") as manager, pytest.raises(TaskConfigError, match="as a URL"):
        TrainerRM("review", task_manager_kwargs={"store": manager.store},
                  workers=DaskWorkers("dask://127.0.0.1:8786"))


@pytest.mark.timeout(180)
def test_a_lost_scheduler_ends_the_command_with_one_line(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "numbers", 40, log, sleep=0.5)
    with dask_cluster(tmp_path / "dask", [("lonely-worker", [])]) as lonely:
        command = start_worker("-t", "numbers", "--func", FUNC, "--on", lonely.url,
                               cwd=tmp_path, TASKROLL_TASK_URL=url)
        try:
            wait_for_ends(log, 1, command)
            os.killpg(lonely.processes["scheduler"].pid, signal.SIGKILL)
            stdout, stderr = command.communicate(timeout=120)
        finally:
            if command.poll() is None:
                command.kill()
                command.communicate()
    assert command.returncode == 2, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "were cancelled" in errors[0], stderr
    assert "scheduler-connection-lost" in errors[0]
    assert "unexpected" not in errors[0]
    with TaskManager("numbers", store=url) as manager:  # nothing committed twice
        assert all(task["attempts"] <= 1 for task in manager.query({"status": "done"}))
