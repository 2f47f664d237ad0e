"""Several loops in one Dask worker process (``dask worker --nthreads 2``, Dask's usual setup).

A Dask worker started without ``--nthreads 1`` runs as many tasks at once as it has
threads, so two loops (of one submitter, or of two with different settings) can share
one process. Each must still train and record as if it had the process to itself: its
own active run, its own tracking store and pool, no task failed for the other's sake.
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

import psutil
import pytest
from dask_cluster import (
    FUNC,
    DaskCluster,
    clean_environment,
    create_held_pool,
    create_pool,
    dask_cluster,
    log_lines,
    loops_running,
    processes_ended,
    wait_for_marker,
)
from test_dask_workers import _training_task

from taskroll.cluster import DaskWorkers, LoopOptions
from taskroll.config import Settings
from taskroll.data import SyntheticMarket
from taskroll.errors import TaskrollError
from taskroll.manage import TaskManager
from taskroll.train.trainer import TrainerRM


@pytest.fixture(scope="module")
def threaded_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and one worker process with two threads."""
    with dask_cluster(tmp_path_factory.mktemp("dask-threads"),
                      [("two-threads", ["--nthreads", "2"])]) as started:
        yield started


def _tasks(folder: Path, count: int) -> list[dict[str, Any]]:
    market = SyntheticMarket(seed=5, n_instruments=12, start="2018-01-01", end="2020-03-31")
    path = market.save(folder / "bars.parquet")
    tasks = []
    for index in range(count):
        task = _training_task(path, index % 2)
        task["model"]["kwargs"]["alpha"] = 1.0 + index  # a distinct task each
        tasks.append(task)
    return tasks


def test_two_loops_in_one_worker_process_each_record_their_own_runs(
        threaded_cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings) -> None:
    tasks = _tasks(tmp_path, 6)
    trainer = TrainerRM("threads", workers=DaskWorkers(threaded_cluster.address, n=2))
    recorders = trainer.train(tasks)
    with TaskManager("threads") as manager:
        assert manager.task_stat() == {"done": 6}
        pool = manager.query()
        assert [task["attempts"] for task in pool] == [1] * 6
        assert all(task["error"] is None for task in pool)
    assert len(recorders) == 6
    alphas = sorted(recorder.load_object("task")["model"]["kwargs"]["alpha"]
                    for recorder in recorders)
    assert alphas == [1.0 + index for index in range(6)]  # each run holds its own task
    for recorder in recorders:
        assert recorder.load_object("pred.pkl") is not None


def _worker(cluster: DaskCluster, folder: Path, pool: str) -> subprocess.Popen[str]:
    """``taskroll worker`` for ``pool`` with a pool and tracking store of its own in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = clean_environment(TASKROLL_TASK_URL=f"sqlite:///{folder / 'tasks.db'}",
                                    TASKROLL_TRACKING_URI=f"sqlite:///{folder / 'mlruns.db'}")
    return subprocess.Popen([sys.executable, "-m", "taskroll", "worker", "-t", pool,
                             "--on", cluster.url, "--until-pool-done"],
                            cwd=folder, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_submitters_with_other_stores_share_a_worker_process_without_mixing(
        threaded_cluster: DaskCluster, tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, 4)
    folders = {"left": tmp_path / "left", "right": tmp_path / "right"}
    for name, folder in folders.items():
        folder.mkdir()
        with TaskManager(name, store=f"sqlite:///{folder / 'tasks.db'}") as manager:
            manager.create_task(tasks)
    workers = {name: _worker(threaded_cluster, folder, name) for name, folder in folders.items()}
    outputs = {name: worker.communicate(timeout=300)[0] for name, worker in workers.items()}
    for name, folder in folders.items():
        assert workers[name].returncode == 0, outputs[name]
        with TaskManager(name, store=f"sqlite:///{folder / 'tasks.db'}") as manager:
            assert manager.task_stat() == {"done": 4}, outputs[name]
            references = [task["res"] for task in manager.query()]
        for reference in references:
            assert str(folder / "mlruns.db") in str(reference), (name, reference)


def test_each_loop_has_a_process_of_its_own_with_the_threads_asked_for(
        threaded_cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings) -> None:
    with TaskManager("environment") as manager:
        manager.create_task([{"index": index} for index in range(6)])
    summaries = DaskWorkers(threaded_cluster.address, n=2, threads=3).run_loops(
        LoopOptions(task_pool="environment", func="scale_tasks:report_environment"))
    assert [summary.error for summary in summaries] == [None, None]
    with TaskManager("environment") as manager:
        results = [task["res"] for task in manager.query()]
    assert len(results) == 6 and {result["worker"] for result in results} == {"two-threads"}
    loops = {result["pid"] for result in results}
    parents = {result["parent"] for result in results}
    assert len(parents) == 1 and not loops & parents  # children of the one worker process
    assert {summary.where.rsplit("pid ", 1)[1] for summary in summaries} >= {
        str(pid) for pid in loops}
    # asked for explicitly, the cap wins over the 1 thread Dask gives its worker processes
    assert all(set(result["env"].values()) == {"3"} for result in results)


def test_a_module_uploaded_to_the_workers_is_importable_in_the_loops(
        threaded_cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings) -> None:
    module = tmp_path / "uploaded_tasks.py"
    module.write_text("def double(task, **kwargs):\n    return task['value'] * 2\n")
    with TaskManager("uploaded") as manager:
        manager.create_task([{"value": value} for value in range(4)])
    client = threaded_cluster.client()
    try:
        client.upload_file(str(module))  # on the workers' sys.path, not their PYTHONPATH
        summaries = DaskWorkers(client, n=2).run_loops(
            LoopOptions(task_pool="uploaded", func="uploaded_tasks:double"))
    finally:
        client.close()
    assert [summary.error for summary in summaries] == [None, None]
    with TaskManager("uploaded") as manager:
        assert sorted(task["res"] for task in manager.query()) == [0, 2, 4, 6]


def test_a_killed_loop_process_is_reported_and_its_task_finished_by_the_other(
        threaded_cluster: DaskCluster, tmp_path: Path) -> None:
    url, log, marker = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log", tmp_path / "held"
    create_held_pool(url, 6, log, marker, sleep=0.2)  # task 6 holds the loop that takes it
    with loops_running(threaded_cluster, url, tmp_path) as command:
        worker, loop = wait_for_marker(command, marker)
        os.kill(loop, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
        stdout, stderr = command.communicate(timeout=240)
    assert command.returncode == 1, stdout + stderr
    lines = [line for line in stdout.splitlines() if line.startswith("worker")]
    assert len(lines) == 2 and sum("its process exited with status -9 (SIGKILL)" in line
                                   for line in lines) == 1, stdout
    assert sum("dask worker two-threads" in line and f"pid {loop}" in line
               for line in lines) == 1, stdout  # where to look for its output
    os.kill(worker, 0)  # the Dask worker process lives on
    counts = log_lines(log)
    assert counts["end"] == collections.Counter(range(7))
    assert counts["start"] == collections.Counter({**dict.fromkeys(range(6), 1), 6: 2})
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": 7}
        assert {task["def"]["index"]: task["attempts"] for task in manager.query()} == {
            **dict.fromkeys(range(6), 1), 6: 2}


REFUSED_TASKS = """
import os

if "TASKROLL_DASK_WORKER" in os.environ:  # in a loop's process, not in the Dask worker
    with open({log!r}, "a") as log:
        log.write("refused\\n")
    raise ImportError("refused in a loop's process")


def double(task, **kwargs):
    return task["value"] * 2
"""


def test_a_loop_whose_process_raises_is_retried_by_dask_then_reported_in_one_line(
        threaded_cluster: DaskCluster, tmp_path: Path, isolated_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "refused.log"
    module = threaded_cluster.tasks_folder / "refused_tasks.py"
    module.write_text(REFUSED_TASKS.format(log=str(log)))
    monkeypatch.syspath_prepend(str(threaded_cluster.tasks_folder))
    import refused_tasks  # here and in the Dask worker it imports; in the loop's process not

    with TaskManager("refused") as manager:
        manager.create_task([{"value": 1}])
    try:
        summaries = DaskWorkers(threaded_cluster.address, n=1, retries=1).run_loops(
            LoopOptions(task_pool="refused", func=refused_tasks.double))
    finally:
        sys.modules.pop("refused_tasks", None)
    assert log.read_text().splitlines() == ["refused"] * 2  # run once, re-run once (retries)
    [summary] = summaries
    assert summary.error is not None and "\n" not in summary.error
    assert summary.error.startswith(TaskrollError.__name__)
    assert "ImportError: refused in a loop's process" in summary.error
    with TaskManager("refused") as manager:
        assert manager.task_stat() == {"waiting": 1}


def _reaped(worker: int, seconds: float) -> bool:
    """Whether Dask worker process ``worker`` has no loop process left, nor a zombie."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = []
        for child in psutil.Process(worker).children():
            try:
                if "taskroll.cluster.loop_process" in " ".join(child.cmdline()):
                    left.append(child)
            except psutil.ZombieProcess:  # ended, not yet waited for
                left.append(child)
            except psutil.NoSuchProcess:
                pass
        if not left:
            return True
        time.sleep(0.1)
    return False


def test_a_submitter_stopped_by_sigterm_leaves_no_loop_process_and_no_task_half_done(
        threaded_cluster: DaskCluster, tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log"
    create_pool(url, "stopped", 8, log, sleep=3)
    command = subprocess.Popen(
        [sys.executable, "-m", "taskroll", "worker", "-t", "stopped", "-n", "2", "--func", FUNC,
         "--on", threaded_cluster.url, "--until-pool-done"], cwd=tmp_path,
        env=clean_environment(TASKROLL_TASK_URL=url), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline, loops = time.monotonic() + 120, set()
        while len(loops) < 2:  # both loops run a task
            assert command.poll() is None, command.communicate()
            assert time.monotonic() < deadline, "the two loops did not both start a task"
            time.sleep(0.1)
            lines = log.read_text().splitlines() if log.exists() else []
            loops = {int(line.split()[3]) for line in lines if line.startswith("start")}
        workers = {psutil.Process(pid).ppid() for pid in loops}
        command.send_signal(signal.SIGTERM)
        stdout, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert command.returncode == 130, stdout + stderr
    assert processes_ended(loops, 60), "a loop's process outlived the stopped submitter"
    assert len(workers) == 1  # both in the one Dask worker process, which lives on
    [worker] = workers
    assert _reaped(worker, 30), "the Dask worker process has loop processes left (or zombies)"
    counts = log_lines(log)
    assert counts["start"] == counts["end"]  # each started task finished, none twice
    assert set(counts["start"].values()) == {1}
    with TaskManager("stopped", store=url) as manager:
        done = len(counts["end"])
        assert 2 <= done < 8  # each loop finished its task, then took no new one
        assert manager.task_stat() == {"done": done, "waiting": 8 - done}


def test_force_release_runs_each_task_in_a_fresh_process_of_the_loops_process(
        threaded_cluster: DaskCluster, isolated_settings: Settings) -> None:
    # a Dask worker process is daemonic (no children of its own); the loop's process is not
    with TaskManager("fresh") as manager:
        manager.create_task([{"index": index} for index in range(3)])
    [summary] = DaskWorkers(threaded_cluster.address, n=1).run_loops(
        LoopOptions(task_pool="fresh", func="scale_tasks:report_environment",
                    force_release=True))
    assert summary.error is None and (summary.done, summary.failed) == (3, 0)
    with TaskManager("fresh") as manager:
        results = [task["res"] for task in manager.query()]
    assert len({result["pid"] for result in results}) == 3  # a fresh process each
    [loop] = {result["parent"] for result in results}
    assert summary.where.endswith(f"pid {loop}")
