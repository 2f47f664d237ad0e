"""A two-thread Dask worker process SIGKILLed while two loops run in it (a child process each).

Both loops' processes end with their Dask worker; its nanny starts a new one, the
scheduler runs both lost loops again, the tasks they held come back when their leases
(2 s here) end, and every task is committed once. This module has a cluster of its own
(the kill disturbs it).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dask_cluster import (
    DaskCluster,
    create_held_pool,
    dask_cluster,
    log_lines,
    loops_running,
    processes_ended,
    wait_for_marker,
)

from taskroll.manage import TaskManager

COUNT = 10


@pytest.fixture(scope="module")
def killed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and one worker process with two threads, to be killed."""
    with dask_cluster(tmp_path_factory.mktemp("dask-kill-threads"),
                      [("two-threads", ["--nthreads", "2"])]) as started:
        yield started


def _loop_processes(worker: int) -> set[int]:
    """The pids of the loops' processes that Dask worker process ``worker`` started."""
    return {child.pid for child in psutil.Process(worker).children()
            if "taskroll.cluster.loop_process" in " ".join(child.cmdline())}


def test_both_loop_processes_end_with_their_dask_worker_and_each_task_is_committed_once(
        killed_cluster: DaskCluster, tmp_path: Path) -> None:
    url, log, marker = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log", tmp_path / "held"
    create_held_pool(url, COUNT, log, marker, sleep=0.5)  # task COUNT holds its loop
    with loops_running(killed_cluster, url, tmp_path) as command:
        # one loop holds, the other works: wait until the worker process runs both
        worker, _ = wait_for_marker(command, marker,
                                    ready=lambda worker: len(_loop_processes(worker)) == 2)
        loops = _loop_processes(worker)
        assert worker not in {process.pid for process in killed_cluster.processes.values()}
        psutil.Process(worker).send_signal(signal.SIGKILL)
        assert processes_ended(loops, 10), "a loop's process outlived its Dask worker"
        stdout, stderr = command.communicate(timeout=240)
    assert command.returncode == 0, stdout + stderr
    assert len([line for line in stdout.splitlines() if line.startswith("worker")]) == 2, stdout
    counts = log_lines(log)
    assert counts["end"] == collections.Counter(range(COUNT + 1))  # each finished once
    assert counts["start"][COUNT] == 2 and max(counts["start"].values()) <= 2
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": COUNT + 1}
        attempts = {task["def"]["index"]: task["attempts"] for task in manager.query()}
    # a claim counts an attempt; the kill may come before the task function logged its start
    assert all(counts["start"][index] <= attempts[index] <= 2 for index in range(COUNT + 1))
