"""Whole-system tests of a shared task pool on PostgreSQL and MongoDB.

Real worker processes (``multiprocessing`` spawn, targets in :mod:`taskroll.testing`)
run :func:`taskroll.manage.run_task` against the loopback test servers of
``conftest.py``, and the tests prove, on each server-backed store:

* many workers run every task exactly once;
* a worker killed with SIGKILL mid-task loses nothing: its task comes back when the
  lease runs out and another worker finishes it;
* the database server restarting in the middle of a run loses nothing and runs nothing
  twice: workers reconnect and finish;
* two processes creating the same tasks at once store each task once.

(SQLite has the same checks in ``tests/manage/test_run_task.py``.)

Sizes: the exactly-once run is 8 workers x 5,000 tasks (40,000 claim+commits) on
PostgreSQL (about 40 s on 2 cores) and on a real MongoDB (``TASKROLL_TEST_MONGO_URL``).
The nx-27017 emulator is one Python process on SQLite whose claims slow down as the pool
grows (8 workers, 2 cores: 2,000 tasks in 14 s, 4,000 in 35 s, 8,000 in 137 s; 40,000
would take tens of minutes), so on it the run is 8 workers x 500 tasks (4,000
claim+commits, about 35 s): every worker still races for every claim.
``TASKROLL_TEST_CLUSTER_MONGO_TASKS`` sets another total for the emulator.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import ExternalServer

from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store
from taskroll.testing import check_concurrent_create, check_workers_exactly_once, run_worker_process

pytestmark = pytest.mark.slow

CONTEXT = multiprocessing.get_context("spawn")
WORKERS = 8
TASKS_PER_WORKER = 5_000
EMULATOR_TASKS_PER_WORKER = 500


@dataclass
class Cluster:
    """One server-backed store as the workers see it."""

    name: str
    url: str
    db_name: str | None
    server: Any

    @contextlib.contextmanager
    def manager(self, pool: str, **options: Any) -> Iterator[TaskManager]:
        """A manager of ``pool`` on its own store (closed afterwards)."""
        store: TaskStore = open_store(self.url, self.db_name)
        try:
            with TaskManager(pool, store=store, **options) as manager:
                yield manager
        finally:
            store.close()

    @property
    def emulated(self) -> bool:
        return self.name == "mongo" and not isinstance(self.server, ExternalServer)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mongo", marks=pytest.mark.mongo)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The store under test; Mongo tests get a database of their own, dropped afterwards."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        yield Cluster("postgres", server.url, None, server)
        return
    server = request.getfixturevalue("mongo_server")
    database = f"taskroll_cluster_{uuid.uuid4().hex[:8]}"
    yield Cluster("mongo", server.url, database, server)
    import pymongo

    client: Any = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=10_000)
    try:
        client.drop_database(database)
    finally:
        client.close()


def _fresh_pool(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _wait_until(condition: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def _executions(markers: Path) -> list[int]:
    """Task indexes in the order of the marker lines (one line per finished execution)."""
    return [int(line) for path in markers.glob("*.log")
            for line in path.read_text(encoding="utf-8").split()]


def _started(markers: Path) -> int:
    return sum(1 for _ in markers.glob("started-*"))


def _start_workers(cluster: Cluster, pool: str, markers: Path, count: int,
                   lease_seconds: float) -> list[Any]:
    processes = [CONTEXT.Process(target=run_worker_process,
                                 args=(cluster.url, pool, str(markers), lease_seconds, True,
                                       cluster.db_name))
                 for _ in range(count)]
    for process in processes:
        process.start()
    return processes


def _join(processes: list[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.1))
    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        process.kill()
        process.join()
    assert not alive, f"{len(alive)} worker(s) still running after {seconds:g} s"
    assert [process.exitcode for process in processes] == [0] * len(processes)


def test_workers_run_every_task_exactly_once(cluster: Cluster, tmp_path: Path) -> None:
    per_worker = TASKS_PER_WORKER
    if cluster.emulated:
        total = os.environ.get("TASKROLL_TEST_CLUSTER_MONGO_TASKS") or ""
        per_worker = int(total) // WORKERS if total else EMULATOR_TASKS_PER_WORKER
    check_workers_exactly_once(cluster.url, workers=WORKERS, tasks=WORKERS * per_worker,
                               marker_dir=tmp_path / "markers", db_name=cluster.db_name)


def test_concurrent_create_inserts_each_task_once(cluster: Cluster) -> None:
    check_concurrent_create(cluster.url, tasks=1000, db_name=cluster.db_name)


def test_sigkilled_worker_task_comes_back(cluster: Cluster, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    pool = _fresh_pool("killed")
    with cluster.manager(pool, lease_seconds=1.0) as manager:
        manager.create_task([{"index": 0, "sleep": 600}, {"index": 1, "sleep": 0}])
        [victim] = _start_workers(cluster, pool, markers, 1, lease_seconds=1.0)
        try:
            _wait_until(lambda: (markers / "started-0").exists(), 60,
                        "the worker never started the task")
            task = next(manager.query({"filter.index": 0}))
            assert task["status"] == "running" and task["attempts"] == 1
        finally:
            victim.kill()  # SIGKILL: no handler runs, the task stays claimed by a dead worker
            victim.join()
        assert victim.exitcode == -signal.SIGKILL

        # the lease runs out (nothing renews it) and a reaper takes the task back
        def returned() -> bool:
            manager.reap()
            return manager.task_stat({"filter.index": 0}) == {"waiting": 1}

        _wait_until(returned, 30, "the dead worker's task never came back")
        run_worker_process(cluster.url, pool, str(markers), 1.0, True, cluster.db_name)
        tasks = {task["def"]["index"]: task for task in manager.query()}
        assert tasks[0]["status"] == "done" and tasks[0]["attempts"] == 2
        assert tasks[0]["error"] is None  # a successful commit clears the reaper's note
        assert tasks[1]["status"] == "done" and tasks[1]["attempts"] == 1
        assert sorted(_executions(markers)) == [0, 1]
        manager.store.drop_pool(pool)


def test_server_restart_mid_run_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    """Restart the database while 4 workers run tasks: each task runs exactly once, none is lost.

    Asserted: when the workers exit (they stop when nothing is left waiting) every task
    is ``done``, ran exactly once, and holds its result. Why that holds:

    * While the server is away every store operation blocks and retries with backoff
      (``retry_seconds``, 30 s), the heartbeat included, which renews the lease as soon
      as the server is back. The lease (12 s) is far longer than the outage (about
      1.5-3 s), so no lease expires and no reaper takes a task from a live worker:
      nothing runs twice.
    * A commit whose reply was lost is retried, finds the task no longer ``running``
      for this worker, and changes nothing: the first try stored it.
    * A claim whose reply was lost would leave a task ``running`` under a lease nobody
      renews (it would come back, and run once, only after the lease). On PostgreSQL a
      fast shutdown lets a finished statement's reply out before the backend exits; on
      MongoDB the claim is tagged and its retry first looks for the tag (see
      :meth:`taskroll.store.mongo.MongoStore.fetch`; before that, about half the runs on
      nx-27017 ended with one such orphan). So no task is left ``running``.
    """
    if isinstance(cluster.server, ExternalServer):
        pytest.skip("cannot restart an external server")
    tasks = 800 if cluster.name == "postgres" else 400
    lease = 12.0
    markers = tmp_path / "markers"
    markers.mkdir()
    pool = _fresh_pool("restart")
    with cluster.manager(pool, lease_seconds=lease) as manager:
        manager.create_task([{"index": index, "sleep": 0.02} for index in range(tasks)])
        processes = _start_workers(cluster, pool, markers, 4, lease_seconds=lease)
        try:
            _wait_until(lambda: _started(markers) >= tasks // 4, 120,
                        "the workers did not get going")
            cluster.server.restart(down_seconds=1.0)
            assert _started(markers) < tasks, "the run ended before the restart"
            _join(processes, 300)
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
        assert manager.task_stat() == {"done": tasks}
        executions = _executions(markers)
        twice = sorted({index for index in executions if executions.count(index) > 1})
        assert sorted(executions) == list(range(tasks)), (
            f"{len(executions)} executions for {tasks} tasks; ran twice: {twice[:10]}")
        results = {task["def"]["index"]: (task["res"], task["attempts"])
                   for task in manager.query()}
        assert results == {index: ({"index": index}, 1) for index in range(tasks)}
        manager.store.drop_pool(pool)
