"""The demo's rolling tasks with 2 worker loops: local processes vs a 2-worker Dask cluster.

``taskroll worker -t POOL -n 2`` (two spawned processes here) against
``taskroll worker -t POOL -n 2 --on dask://...`` on a cluster of ``dask scheduler`` and two
``dask worker --nthreads 1`` processes on this machine, started (and warmed: taskroll
imported) before the clock starts, as a team's cluster would already be running. Both
runs train the same tasks (``training_workers.rolling_tasks``: LinearModel and LGBModel
over the synthetic market, 16 tasks by default) through their own SQLite pool with their
own empty feature cache and threads capped at cores // 2. The wall time includes the
command's start. Each configuration runs ``--repeat`` times, alternating; the table gives
the median and the ratio Dask / local (1.0 = no overhead).

    .venv/bin/python benchmarks/cluster.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import taskroll
from taskroll.data import SyntheticMarket
from taskroll.manage import TaskManager
from taskroll.threads import threads_per_worker
from training_workers import rolling_tasks

DASK = Path(sys.executable).with_name("dask")
LOOPS = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = LOOPS) -> Iterator[str]:
    """Start a scheduler and ``workers`` one-thread Dask workers on loopback; yield its address."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (folder / "dask.log").open("wb")
    processes = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                                   str(port), "--no-dashboard"], stdout=log, stderr=log,
                                  start_new_session=True)]
    processes += [subprocess.Popen([str(DASK), "worker", address, "--nworkers", "1",
                                    "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                   stdout=log, stderr=log, start_new_session=True)
                  for _ in range(workers)]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(address, timeout="5s")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(workers, timeout=120)
            client.run(__import__, "taskroll.cluster.dask_workers")
        yield address
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def timed_command(pool: str, tasks: list[dict[str, object]], cache: Path,
                  *options: str) -> float:
    """Fill ``pool``, time ``taskroll worker -t pool -n 2 OPTIONS``, check every task is done."""
    with TaskManager(pool) as manager:
        manager.create_task(tasks)
    environment = {**os.environ, "TASKROLL_FEATURE_CACHE": str(cache)}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "taskroll", "worker", "-t", pool, "-n", str(LOOPS),
                    "--threads", str(threads_per_worker(LOOPS)), *options],
                   env=environment, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    with TaskManager(pool) as manager:
        stat = manager.task_stat()
    assert stat == {"done": len(tasks)}, stat
    return elapsed


def measure(instruments: int, step: int, repeat: int) -> list[tuple[str, float, float]]:
    """Return ``(label, median seconds, ratio to local)`` rows."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        taskroll.init(task_url=f"sqlite:///{root / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
        market = SyntheticMarket(seed=11, n_instruments=instruments, start="2014-01-01",
                                 end="2020-12-31")
        tasks = rolling_tasks(market.save(root / "bars.parquet"), market.calendar, step)
        local: list[float] = []
        on_dask: list[float] = []
        with dask_cluster(root) as address:
            for run in range(repeat):
                local.append(timed_command(f"local_{run}", tasks, root / f"cache_local_{run}"))
                on_dask.append(timed_command(f"dask_{run}", tasks, root / f"cache_dask_{run}",
                                             "--on", "dask://" + address.removeprefix("tcp://")))
    one, two = statistics.median(local), statistics.median(on_dask)
    return [(f"{len(tasks)} tasks, -n {LOOPS} local processes", one, 1.0),
            (f"{len(tasks)} tasks, -n {LOOPS} loops on {LOOPS} Dask workers", two, two / one)]


def print_rows(rows: list[tuple[str, float, float]], repeat: int) -> None:
    """Print the measured rows as a table."""
    header = f"{'configuration':<48}{'seconds':>10}{'ratio':>9}"
    print(f"median of {repeat} run(s); ratio = seconds / local seconds")
    print(header)
    print("-" * len(header))
    for label, seconds, ratio in rows:
        print(f"{label:<48}{seconds:>10.1f}{ratio:>8.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=120)
    parser.add_argument("--step", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    parser.add_argument("--quick", action="store_true",
                        help="a small market and few windows (to check the script runs)")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.instruments, arguments.step = 20, 250
    print_rows(measure(arguments.instruments, arguments.step, arguments.repeat),
               arguments.repeat)
