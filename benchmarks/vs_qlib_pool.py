"""The task pool row of ``vs_qlib.py``: create N tasks, fetch+commit them all, task_stat.

Parameters (``params``): ``store`` (taskroll: ``sqlite``, ``postgres``, ``wire``; Qlib:
``mongomock``, ``wire``), ``url`` (the server's URL; unused for ``sqlite`` and
``mongomock``) and ``tasks`` (N).

Qlib's ``TaskManager`` is set up the way its documentation says: ``qlib.init(mongo=
{"task_url": ..., "task_db_name": ...})`` (``C["mongo"]``), read by
``qlib.workflow.task.utils.get_mongodb``. For the in-memory MongoDB that function's
``MongoClient`` is replaced by ``mongomock.MongoClient`` for the run.

On the nx-27017 wire server Qlib's ``create_task`` fails: its duplicate check
``find_one({"filter": task})`` compares a whole embedded document, which the emulator
refuses (``OperationFailure``). The error is recorded, and the tasks are inserted with
Qlib's own ``insert_task_def`` (what ``create_task`` calls for each new task, without
the duplicate check); the table marks that figure.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

from vs_qlib_side import timed


def task_definitions(count: int) -> list[dict[str, Any]]:
    """Return ``count`` distinct small task definitions (same for both libraries)."""
    return [{"model": {"class": "LinearModel", "module_path": "qlib.contrib.model.linear",
                       "kwargs": {"alpha": index}}, "index": index} for index in range(count)]


def run_qlib(params: dict[str, Any]) -> dict[str, Any]:
    """Measure Qlib's ``TaskManager`` on mongomock or the wire server."""
    from unittest import mock

    import pymongo.errors
    import qlib
    from qlib.workflow.task import utils

    in_memory = params["store"] == "mongomock"
    url = "mongodb://localhost:27017/" if in_memory else params["url"]
    qlib.init(mongo={"task_url": url, "task_db_name": "vs_qlib"}, logging_level=logging.WARNING)
    from qlib.workflow.task.manage import TaskManager

    patch: Any = (mock.patch.object(utils, "MongoClient", mongomock_client()) if in_memory
                  else contextlib.nullcontext())
    count = int(params["tasks"])
    definitions = task_definitions(count)
    with patch:
        manager = TaskManager(f"bench_{uuid.uuid4().hex[:8]}")
        error = None
        try:
            create_seconds, _ = timed(lambda: manager.create_task(definitions))
        except pymongo.errors.OperationFailure as failure:
            error = str(failure).split(", full error")[0]
            manager.remove()

            def insert_each() -> None:
                for definition in definitions:
                    manager.insert_task_def(definition)

            create_seconds, _ = timed(insert_each)
        fetch_seconds, fetched = timed(lambda: _fetch_commit_all(manager))
        stat_seconds, stat = timed(manager.task_stat)
        manager.task_pool.drop()
    if fetched != count or stat != {"done": count}:
        raise RuntimeError(f"Qlib pool: fetched {fetched} of {count}, task_stat {stat}")
    return {"create": create_seconds, "create_error": error, "fetch_commit": fetch_seconds,
            "task_stat": stat_seconds, "tasks": count}


def mongomock_client() -> Any:
    """Return ``mongomock.MongoClient`` (imported here: only the Qlib side has it)."""
    import mongomock

    return mongomock.MongoClient


def run_taskroll(params: dict[str, Any]) -> dict[str, Any]:
    """Measure taskroll's ``TaskManager`` on an SQLite file, PostgreSQL or the wire server."""
    from taskroll.manage import TaskManager

    count = int(params["tasks"])
    definitions = task_definitions(count)
    with tempfile.TemporaryDirectory(prefix="vs-qlib-pool-") as folder:
        url = (f"sqlite:///{Path(folder) / 'pool.db'}" if params["store"] == "sqlite"
               else params["url"])
        pool = f"bench_{uuid.uuid4().hex[:8]}"
        with TaskManager(pool, store=url) as manager:
            create_seconds, _ = timed(lambda: manager.create_task(definitions))
            fetch_seconds, fetched = timed(lambda: _fetch_commit_all(manager))
            stat_seconds, stat = timed(manager.task_stat)
            manager.store.drop_pool(pool)
        with TaskManager(f"{pool}_batch", store=url) as manager:  # claims of BATCH at once
            manager.create_task(definitions)
            batch_seconds, batched = timed(lambda: _fetch_commit_batches(manager))
            manager.store.drop_pool(f"{pool}_batch")
    if fetched != count or stat != {"done": count} or batched != count:
        raise RuntimeError(f"taskroll pool: fetched {fetched} (batched {batched}) of {count}, "
                           f"task_stat {stat}")
    return {"create": create_seconds, "create_error": None, "fetch_commit": fetch_seconds,
            "fetch_commit_batch": batch_seconds, "task_stat": stat_seconds, "tasks": count}


BATCH = 16
"""Tasks per claim in the batched row (``fetch_task(n=16)``, as ``run_task(claim_batch=16)``)."""


def _fetch_commit_batches(manager: Any) -> int:
    """Claim :data:`BATCH` tasks at a time and commit each until none is left."""
    done = 0
    while tasks := manager.fetch_task(n=BATCH):
        for task in tasks:
            manager.commit_task_res(task, None)
            done += 1
    return done


def _fetch_commit_all(manager: Any) -> int:
    """Fetch tasks one at a time and commit each (result ``None``) until none is left."""
    done = 0
    while (task := manager.fetch_task()) is not None:
        manager.commit_task_res(task, None)
        done += 1
    return done
