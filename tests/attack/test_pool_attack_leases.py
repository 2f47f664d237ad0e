"""Leases against the worker loop: a lost lease, an interrupted batch, a status no lease covers.

Each property runs on SQLite, PostgreSQL and MongoDB (the loopback test servers of
``tests/store/servers.py``). A lease can be lost while its worker still holds the task
(the process was paused, SIGSTOP, past the lease end): another worker reaps the task and
runs it. The paused worker must not run it again when it resumes, nor overwrite the
other worker's result. Tasks of a batch that never started are given back without an
attempt counted against them. No call may leave a task ``running`` without a lease, where
no reaper would ever take it back.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from servers import MongoServer, PostgresServer, Server, session_server

from taskroll.errors import StatusTransitionError
from taskroll.manage import TaskManager, run_task

Opener = Callable[..., TaskManager]


@pytest.fixture(scope="module")
def postgres_lease_server() -> Iterator[Server]:
    yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                              PostgresServer)


@pytest.fixture(scope="module")
def mongo_lease_server() -> Iterator[Server]:
    yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mongo", marks=pytest.mark.mongo)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens managers of one fresh pool on one kind of store (each its own connection)."""
    pool = f"lease_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_lease_server").url
    else:
        url = request.getfixturevalue("mongo_lease_server").url
    opened: list[TaskManager] = []

    def open_manager(**options: Any) -> TaskManager:
        manager = TaskManager(pool, store=url, **options)
        opened.append(manager)
        return manager

    yield open_manager
    opened[0].store.drop_pool(pool)
    for manager in opened:
        manager.close()


def test_a_batch_task_whose_lease_was_lost_is_not_run_again(opener: Opener) -> None:
    """The worker paused past its leases; another worker took a queued task and ran it."""
    worker, thief = opener(lease_seconds=60), opener(lease_seconds=60)
    ids = worker.create_task([{"index": index} for index in range(3)])
    runs: Counter[int] = Counter()

    def work(task_def: dict[str, Any]) -> str:
        runs[task_def["index"]] += 1
        if task_def["index"] == 0:  # meanwhile the lease on task 1 ran out and was reaped
            assert thief.store.update(thief.task_pool, ids[1], {"lease_until": 0.0})
            assert thief.reap() == 1
            stolen = thief.fetch_task({"_id": ids[1]})
            assert stolen is not None
            runs[stolen["def"]["index"]] += 1
            assert thief.commit_task_res(stolen, "thief")
        return "worker"

    assert run_task(work, worker, claim_batch=3)
    assert runs == {0: 1, 1: 1, 2: 1}, "a task ran twice"
    tasks = {task["def"]["index"]: task for task in worker.query()}
    assert {index: task["res"] for index, task in tasks.items()} == {
        0: "worker", 1: "thief", 2: "worker"}
    assert {index: task["attempts"] for index, task in tasks.items()} == {0: 1, 1: 2, 2: 1}
    assert worker.task_stat() == {"done": 3}


def test_a_late_commit_does_not_overwrite_the_new_owner(opener: Opener) -> None:
    """A single claim: the lease ran out, another worker re-ran and committed the task."""
    late, other = opener(lease_seconds=60), opener(lease_seconds=60)
    (task_id,) = late.create_task([{"index": 0}])
    task = late.fetch_task()
    assert task is not None
    assert other.store.update(other.task_pool, task_id, {"lease_until": 0.0})
    assert other.reap() == 1
    again = other.fetch_task()
    assert again is not None and again["attempts"] == 2
    assert other.commit_task_res(again, "second")
    assert not late.commit_task_res(task, "first")
    assert late.fail_task(task, ValueError("late")) in ("waiting", "failed")
    assert not late.heartbeat(task)
    stored = late.re_query(task_id)
    assert stored is not None
    assert (stored["status"], stored["res"], stored["attempts"], stored["error"]) == (
        "done", "second", 2, None)


def test_an_interrupted_batch_gives_its_unstarted_tasks_back_uncounted(opener: Opener) -> None:
    """Tasks never started keep no attempt; the interrupted one keeps its own."""
    manager = opener(max_attempts=1)
    manager.create_task([{"index": index} for index in range(4)])

    def interrupted_at_one(task_def: dict[str, Any]) -> int:
        if task_def["index"] == 1:
            raise KeyboardInterrupt
        return int(task_def["index"])

    with pytest.raises(KeyboardInterrupt):
        run_task(interrupted_at_one, manager, claim_batch=4)
    tasks = {task["def"]["index"]: task for task in manager.query()}
    assert {index: (task["status"], task["attempts"]) for index, task in tasks.items()} == {
        0: ("done", 1), 1: ("waiting", 1), 2: ("waiting", 0), 3: ("waiting", 0)}
    assert run_task(lambda task_def: task_def["index"], manager, claim_batch=4)
    assert manager.task_stat() == {"done": 4}
    assert {task["def"]["index"]: task["attempts"] for task in manager.query()} == {
        0: 1, 1: 2, 2: 1, 3: 1}


@pytest.mark.parametrize("make_running", [
    pytest.param(lambda manager, task_id: manager.reset_status({"_id": task_id}, "running"),
                 id="reset_status"),
    pytest.param(lambda manager, task_id: manager.replace_task(task_id, {"status": "running"}),
                 id="replace_task"),
    pytest.param(lambda manager, task_id: manager.insert_task(
        {"def": {"index": 99}, "status": "running"}), id="insert_task"),
])
def test_no_call_leaves_a_task_running_without_a_lease(opener: Opener,
                                                       make_running: Callable[..., Any]) -> None:
    """Such a task is never reaped: ``wait`` and draining workers would wait forever."""
    manager = opener()
    (task_id,) = manager.create_task([{"index": 0}])
    before = [dict(task) for task in manager.query(decode=False)]
    with pytest.raises(StatusTransitionError, match="fetch"):
        make_running(manager, task_id)
    assert [dict(task) for task in manager.query(decode=False)] == before
    assert manager.task_stat() == {"waiting": 1}


def test_a_queued_task_reset_by_hand_runs_once(opener: Opener) -> None:
    """Someone put a queued task of a batch back to waiting: it runs once, not twice."""
    worker, admin = opener(lease_seconds=60), opener(lease_seconds=60)
    ids = worker.create_task([{"index": index} for index in range(3)])
    runs: Counter[int] = Counter()

    def work(task_def: dict[str, Any]) -> int:
        runs[task_def["index"]] += 1
        if task_def["index"] == 0:
            assert admin.reset_waiting({"_id": ids[2]}) == 1
        return int(task_def["index"])

    assert run_task(work, worker, claim_batch=3)
    assert runs == {0: 1, 1: 1, 2: 1}, "a task ran twice"
    assert worker.task_stat() == {"done": 3}
    assert {task["def"]["index"]: task["attempts"] for task in worker.query()} == {
        0: 1, 1: 1, 2: 2}


def test_run_task_refuses_running_as_the_status_after(opener: Opener) -> None:
    manager = opener()
    manager.create_task([{"index": 0}])
    with pytest.raises(StatusTransitionError, match="fetch"):
        run_task(lambda task_def: 1, manager, after_status="running")
    with pytest.raises(StatusTransitionError, match="fetch"):
        manager.commit_task_res("no such task", 1, status="running")
    assert manager.task_stat() == {"waiting": 1}


def test_a_running_task_cannot_be_claimed_from_its_worker(opener: Opener) -> None:
    """Claiming from ``running`` took a live worker's task; reaped, it stayed running forever."""
    owner, intruder = opener(lease_seconds=60), opener(lease_seconds=60)
    owner.create_task([{"index": 0}])
    task = owner.fetch_task()
    assert task is not None
    with pytest.raises(StatusTransitionError, match="running"):
        intruder.fetch_task(status="running")
    with pytest.raises(StatusTransitionError, match="running"):
        intruder.fetch_task(status="running", n=2)
    with pytest.raises(StatusTransitionError, match="running"):
        intruder.store.fetch(intruder.task_pool, [], "running", intruder.worker, 60)
    with pytest.raises(StatusTransitionError, match="running"):
        intruder.store.fetch_many(intruder.task_pool, [], "running", intruder.worker, 60, 2)
    stored = owner.re_query(task["_id"])
    assert stored is not None and (stored["worker"], stored["attempts"]) == (owner.worker, 1)
    assert owner.commit_task_res(task, "mine")
    assert owner.task_stat() == {"done": 1}
