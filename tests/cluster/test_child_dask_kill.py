"""A two-thread Dask worker process SIGKILLed while two loops run in it (a child process each).

Both loops' processes end with their Dask worker; its nanny starts a new one, the
scheduler runs both lost loops again, the tasks they held come back when their leases
(2 s here) end, and every task is committed once. This module has a cluster of its own
(the kill disturbs it).
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dask_cluster import FUNC, DaskCluster, clean_environment, create_pool, dask_cluster, log_lines

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


def _all_gone(pids: set[int], seconds: float) -> bool:
    """Whether every process of ``pids`` has ended (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_both_loop_processes_end_with_their_dask_worker_and_each_task_is_committed_once(
        killed_cluster: DaskCluster, tmp_path: Path) -> None:
    url, log, marker = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "runs.log", tmp_path / "held"
    create_pool(url, "numbers", COUNT, log, sleep=0.5, marker=str(marker))
    with TaskManager("numbers", store=url) as manager:
        held = manager.create_task([{"index": COUNT, "log": str(log), "hold": 600,
                                     "marker": str(marker)}])[0]
        manager.prioritize(manager.re_query(held), 10)
    command = subprocess.Popen(
        [sys.executable, "-m", "taskroll", "worker", "-t", "numbers", "-n", "2", "--func", FUNC,
         "--on", killed_cluster.url, "--until-pool-done"],
        cwd=tmp_path, env=clean_environment(TASKROLL_TASK_URL=url, TASKROLL_LEASE_SECONDS="2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, loops = time.monotonic() + 120, set()
        while not marker.exists() or len(loops) < 2:  # one loop holds, the other works
            assert command.poll() is None, command.communicate()
            assert time.monotonic() < deadline, "the two loops did not both start"
            time.sleep(0.1)
            if marker.exists():
                worker = int(marker.read_text().split()[0])
                loops = _loop_processes(worker)
        assert worker not in {process.pid for process in killed_cluster.processes.values()}
        psutil.Process(worker).send_signal(signal.SIGKILL)
        assert _all_gone(loops, 10), "a loop's process outlived its Dask worker"
        stdout, stderr = command.communicate(timeout=240)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
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
