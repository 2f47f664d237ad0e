"""A real Dask cluster on loopback for the tests: ``dask scheduler`` and ``dask worker`` processes.

Each process runs in a session of its own (its own process group), so stopping the
cluster kills the nanny and the worker process it started. Worker processes get
``PYTHONPATH`` set to a folder of task functions written by the tests (Dask imports a
loop's task function by name where the loop runs).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taskroll.manage import TaskManager

DASK = Path(sys.executable).with_name("dask")
STARTUP_SECONDS = 90.0

#: Task functions the Dask workers import as ``scale_tasks:NAME``.
TASKS_MODULE = '''
import os
import time


def _append(path, line):
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def record_task(task, **kwargs):
    """Log "start"/"end" lines with the Dask worker's name and the loop's pid; hold once if asked.

    The loop runs in a child process of the Dask worker process: the marker of a held
    task holds both pids ("DASK_WORKER_PID LOOP_PID").
    """
    name = os.environ["TASKROLL_DASK_WORKER"]
    _append(task["log"], f"start {task['index']} {name} {os.getpid()}\\n")
    hold = task.get("hold")
    if hold and not os.path.exists(task["marker"]):
        with open(task["marker"] + ".tmp", "w") as marker:
            marker.write(f"{os.getppid()} {os.getpid()}")
        os.rename(task["marker"] + ".tmp", task["marker"])
        time.sleep(hold)
    time.sleep(task.get("sleep", 0.0))
    _append(task["log"], f"end {task['index']} {name} {os.getpid()}\\n")
    return {"index": task["index"], "worker": name, "pid": os.getpid()}


def report_environment(task, **kwargs):
    """The loop's Dask worker, pid, parent pid and thread variables."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
    return {"worker": os.environ["TASKROLL_DASK_WORKER"], "pid": os.getpid(),
            "parent": os.getppid(), "env": {name: os.environ.get(name) for name in names}}
'''


FUNC = "scale_tasks:record_task"


def create_pool(url: str, pool: str, count: int, log: Path, **extra: Any) -> None:
    """``count`` tasks for ``scale_tasks:record_task`` that log to ``log``."""
    with TaskManager(pool, store=url) as manager:
        manager.create_task([{"index": index, "log": str(log), **extra}
                             for index in range(count)])


def create_held_pool(url: str, count: int, log: Path, marker: Path, sleep: float) -> None:
    """``count`` tasks that sleep ``sleep`` s, plus task ``count``, which holds its loop.

    The held task has the highest priority, so the first loop to claim takes it; it
    writes ``marker`` ("DASK_WORKER_PID LOOP_PID") and then sleeps for 10 minutes.
    """
    create_pool(url, "numbers", count, log, sleep=sleep, marker=str(marker))
    with TaskManager("numbers", store=url) as manager:
        held = manager.create_task([{"index": count, "log": str(log), "hold": 600,
                                     "marker": str(marker)}])[0]
        manager.prioritize(manager.re_query(held), 10)


@contextlib.contextmanager
def loops_running(cluster: DaskCluster, url: str, folder: Path) -> Iterator[subprocess.Popen[str]]:
    """``taskroll worker -n 2 --on CLUSTER --until-pool-done`` on pool ``numbers`` at ``url``,
    with leases of 2 s and its output piped; killed on leaving the block if still running."""
    command = subprocess.Popen(
        [sys.executable, "-m", "taskroll", "worker", "-t", "numbers", "-n", "2", "--func", FUNC,
         "--on", cluster.url, "--until-pool-done"],
        cwd=folder, env=clean_environment(TASKROLL_TASK_URL=url, TASKROLL_LEASE_SECONDS="2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield command
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()


def wait_for_marker(command: subprocess.Popen[str], marker: Path,
                    ready: Callable[[int], bool] = lambda worker: True,
                    seconds: float = 120.0) -> tuple[int, int]:
    """Wait until the held task wrote ``marker`` and ``ready(dask worker pid)`` holds.

    Returns:
        ``(Dask worker pid, loop pid)`` from the marker.
    """
    deadline = time.monotonic() + seconds
    while True:
        assert command.poll() is None, command.communicate()
        if marker.exists():
            worker, loop = (int(pid) for pid in marker.read_text().split())
            if ready(worker):
                return worker, loop
        assert time.monotonic() < deadline, "no loop started the held task"
        time.sleep(0.1)


def processes_ended(pids: Iterable[int], seconds: float) -> bool:
    """Whether every process of ``pids`` has ended (or is a zombie) within ``seconds``."""
    import psutil

    def alive(pid: int) -> bool:
        try:
            return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def log_lines(log: Path) -> dict[str, collections.Counter[int]]:
    """``{"start": Counter(index), "end": Counter(index)}`` from a task log."""
    counts: dict[str, collections.Counter[int]] = {"start": collections.Counter(),
                                                   "end": collections.Counter()}
    for line in log.read_text().splitlines():
        event, index, _, _ = line.split()
        counts[event][int(index)] += 1
    return counts


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without ``TASKROLL_*`` settings, plus ``extra``."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    environment.update(extra)
    return environment


@dataclass
class DaskCluster:
    """A scheduler and its workers, started as processes."""

    address: str
    tasks_folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The scheduler as ``taskroll worker --on`` takes it."""
        return "dask://" + self.address.removeprefix("tcp://")

    def client(self) -> Any:
        """A ``distributed.Client`` of this cluster (close it)."""
        from distributed import Client

        return Client(self.address, timeout="30s")

    def stop(self) -> None:
        """Kill every process group of the cluster."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


def _scheduler_failed(message: str) -> None:
    """A scheduler that cannot start fails the test in CI and skips it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: Sequence[tuple[str, Sequence[str]]]) -> Iterator[DaskCluster]:
    """Start ``dask scheduler`` and one ``dask worker`` per ``(name, extra options)``.

    Workers have one process and one thread each (``--nworkers 1 --nthreads 1``), no
    dashboard, and the folder of :data:`TASKS_MODULE` on their ``PYTHONPATH``. Yields
    once every worker has registered with the scheduler.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scale_tasks.py").write_text(TASKS_MODULE)
    port = free_port()
    cluster = DaskCluster(address=f"tcp://127.0.0.1:{port}", tasks_folder=folder)
    environment = clean_environment(PYTHONPATH=str(folder))
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    try:
        cluster.processes["scheduler"] = subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], cwd=folder, env=environment, start_new_session=True,
            stdout=(logs / "scheduler.log").open("wb"), stderr=subprocess.STDOUT)
        for name, options in workers:
            cluster.processes[name] = subprocess.Popen(
                [str(DASK), "worker", cluster.address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1", "--name", name, *options],
                cwd=folder, env=environment, start_new_session=True,
                stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        _wait_for_workers(cluster, len(workers), logs)
        yield cluster
    finally:
        cluster.stop()


def _wait_for_workers(cluster: DaskCluster, count: int, logs: Path) -> None:
    """Wait until ``count`` workers are registered; warm them (import taskroll's loop)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    client = None
    while client is None:
        if cluster.processes["scheduler"].poll() is not None or time.monotonic() > deadline:
            _scheduler_failed("the Dask scheduler did not start: "
                              + (logs / "scheduler.log").read_text()[-2000:])
        try:
            client = cluster.client()
        except OSError:
            time.sleep(0.5)
    try:
        client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
        client.run(importlib.import_module, "taskroll.cluster.dask_workers")
    finally:
        client.close()
