"""The store restarts while a worker runs a batch: every task runs once and is committed once.

PostgreSQL and MongoDB (loopback test servers of ``tests/store/servers.py``, started for
this module so that restarting them disturbs no other test). A worker claims tasks in
batches; while it runs one, the server stops for a moment and comes back. The worker's
heartbeats, commits and next claims meet the outage; the store's reconnect and the
worker's backoff must carry it through with no task lost, run twice or charged an extra
attempt.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from servers import ExternalServer, MongoServer, PostgresServer, Server, session_server

from taskroll.manage import TaskManager, run_task

TASKS = 24


@pytest.fixture(scope="module", params=[pytest.param("postgres", marks=pytest.mark.postgres),
                                        pytest.param("mongo", marks=pytest.mark.mongo)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server of this module's own, which the test may restart."""
    if request.param == "postgres":
        yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                                  PostgresServer)
    else:
        yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)


@pytest.mark.parametrize("claim_batch", [1, 5])
def test_a_restart_mid_batch_loses_and_repeats_nothing(server: Server, claim_batch: int) -> None:
    if isinstance(server, ExternalServer):
        pytest.skip("cannot restart an external server")
    pool = f"restart_{uuid.uuid4().hex[:8]}"
    runs: Counter[int] = Counter()
    restarts: list[threading.Thread] = []
    with TaskManager(pool, store=server.url, lease_seconds=30) as manager:
        manager.create_task([{"index": index} for index in range(TASKS)])

        def work(task_def: dict[str, Any]) -> int:
            runs[task_def["index"]] += 1
            if task_def["index"] == 7:  # the commit of this task meets the outage
                restart = threading.Thread(target=server.restart,
                                           kwargs={"down_seconds": 1.0})
                restart.start()
                restarts.append(restart)
                restart.join(0.3)
            return int(task_def["index"]) * 2

        try:
            assert run_task(work, manager, claim_batch=claim_batch)
        finally:
            for restart in restarts:
                restart.join()
        assert len(restarts) == 1
        assert runs == dict.fromkeys(range(TASKS), 1)
        assert manager.task_stat() == {"done": TASKS}
        tasks = list(manager.query())
        assert sorted(task["res"] for task in tasks) == [index * 2 for index in range(TASKS)]
        assert {task["attempts"] for task in tasks} == {1}
        manager.store.drop_pool(pool)
