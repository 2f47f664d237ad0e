"""A Dask worker process SIGKILLed while its loop runs a task: nothing is lost or committed twice.

The killed process is the Dask worker process that placed the loop (not its nanny, which
starts a new one); the loop's own process, its child, ends with it. Dask runs the lost
loop again; the task the dead loop held stays ``running``
until its lease (2 s here) ends, and the loops drain, waiting for it, so it is run again
and committed once. This module has a cluster of its own (the kill disturbs it).
"""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path

import pytest
from dask_cluster import (
    DaskCluster,
    create_held_pool,
    log_lines,
    loops_running,
    processes_ended,
    wait_for_marker,
)

from taskroll.manage import TaskManager


@pytest.mark.slow
def test_sigkilled_dask_worker_loses_no_task_and_commits_each_once(
        cluster: DaskCluster, tmp_path: Path) -> None:
    url, log, marker = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log", tmp_path / "held"
    create_held_pool(url, 10, log, marker, sleep=0.2)  # task 10 holds the loop that takes it
    with loops_running(cluster, url, tmp_path) as command:
        victim, loop = wait_for_marker(command, marker)
        nannies = {process.pid for process in cluster.processes.values()}
        assert victim not in nannies  # the worker process, not a `dask worker` nanny
        os.kill(victim, signal.SIGKILL)
        assert processes_ended([loop], 10), "the loop's process outlived its Dask worker"
        stdout, stderr = command.communicate(timeout=240)
    assert command.returncode == 0, stdout + stderr
    lines = [line for line in stdout.splitlines() if line.startswith("worker")]
    assert len(lines) == 2, stdout
    # the killed loop had committed nothing (the held task was its first): the two
    # summaries that came back account for every commit, each task once
    assert sum(int(line.split("): ")[1].split()[0]) for line in lines) == 11, stdout
    counts = log_lines(log)
    assert counts["end"] == collections.Counter(range(11))
    assert counts["start"] == collections.Counter({**dict.fromkeys(range(10), 1), 10: 2})
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": 11}
        tasks = {task["def"]["index"]: task for task in manager.query()}
    assert tasks[10]["attempts"] == 2 and tasks[10]["res"]["pid"] != loop
    assert all(tasks[index]["attempts"] == 1 for index in range(10))
