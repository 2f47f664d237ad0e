"""Batch claims in the manager and the worker loop, on a real SQLite file.

``TaskManager.fetch_task(n=...)`` returns a list; ``run_task(claim_batch=...)`` claims up to
``claim_batch`` tasks, commits each as it finishes, renews the leases of those still queued,
gives the queued ones back when interrupted, and loses none when the worker dies: their
leases expire and they come back. Several worker processes with batch claims run every
task exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager, run_task
from taskroll.manage_failure import parse_error


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def test_fetch_task_with_n_returns_a_list_best_first(url: str) -> None:
    with TaskManager("pool", store=url) as manager:
        ids = manager.create_task([{"index": index} for index in range(5)])
        manager.prioritize(ids[4], 3)
        tasks = manager.fetch_task(n=3)
        assert [task["_id"] for task in tasks] == [ids[4], ids[0], ids[1]]
        assert [task["def"]["index"] for task in tasks] == [4, 0, 1]
        assert all(task["status"] == "running" and task["worker"] == manager.worker
                   for task in tasks)
        assert [task["def"]["index"] for task in manager.fetch_task(n=10)] == [2, 3]
        assert manager.fetch_task(n=10) == []
        assert manager.fetch_task() is None
        with pytest.raises(TaskConfigError, match="whole number >= 1"):
            manager.fetch_task(n=0)


def test_poison_task_in_a_batch_is_failed_and_the_rest_returned(url: str) -> None:
    with TaskManager("pool", store=url) as manager:
        ids = manager.create_task([{"index": index} for index in range(3)])
        manager.store.update("pool", ids[1], {"def": "{not json", "def_encoding": "json"})
        tasks = manager.fetch_task(n=3)
        assert [task["def"]["index"] for task in tasks] == [0, 2]
        poison = manager.store.get("pool", ids[1])  # the raw record: its def cannot decode
        assert poison is not None and poison["status"] == "failed"
        assert parse_error(poison["error"])["kind"] == "undecodable"


def double(task_def: dict[str, Any], factor: int = 2) -> dict[str, Any]:
    if task_def["index"] == 3:
        raise ValueError("index 3 is broken")
    return {"value": task_def["index"] * factor}


def test_run_task_with_batch_runs_every_task_and_records_failures(url: str) -> None:
    with TaskManager("pool", store=url, max_attempts=2) as manager:
        manager.create_task([{"index": index} for index in range(12)])
        assert run_task(double, manager, claim_batch=5, factor=10)
        assert manager.task_stat() == {"done": 11, "failed": 1}
        results = {task["def"]["index"]: task["res"]["value"]
                   for task in manager.query({"status": "done"})}
        assert results == {index: index * 10 for index in range(12) if index != 3}
        failed = next(manager.query({"status": "failed"}))
        assert failed["attempts"] == 2 and failed["error"]["kind"] == "task raised"
        with pytest.raises(TaskConfigError, match="whole number >= 1"):
            run_task(double, manager, claim_batch=0)


def test_each_task_is_committed_as_it_finishes(url: str) -> None:
    seen: list[dict[str, int]] = []
    with TaskManager("pool", store=url) as manager, \
            TaskManager("pool", store=url) as observer:
        manager.create_task([{"index": index} for index in range(4)])

        def record_progress(task_def: dict[str, Any]) -> int:
            seen.append(observer.task_stat())
            return int(task_def["index"])

        run_task(record_progress, manager, claim_batch=4)
    # one claim took all four; before each task ran, those before it were already done
    assert seen == [{"running": 4}, {"done": 1, "running": 3}, {"done": 2, "running": 2},
                    {"done": 3, "running": 1}]


def test_heartbeat_keeps_every_claimed_task_of_a_batch(url: str) -> None:
    with TaskManager("pool", store=url, lease_seconds=0.3) as worker, \
            TaskManager("pool", store=url) as reaper:
        worker.create_task([{"index": index} for index in range(3)])

        def slow(task_def: dict[str, Any]) -> str:
            for _ in range(4):  # 0.8 s per task: the queued ones outlive their first lease
                time.sleep(0.2)
                reaper.reap()
            return "finished"

        run_task(slow, worker, claim_batch=3)
        tasks = list(worker.query())
        assert [(task["status"], task["attempts"]) for task in tasks] == [("done", 1)] * 3


def test_keyboard_interrupt_gives_the_unfinished_tasks_back(url: str) -> None:
    def interrupted_at_one(task_def: dict[str, Any]) -> int:
        if task_def["index"] == 1:
            raise KeyboardInterrupt
        return int(task_def["index"])

    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index} for index in range(4)])
        with pytest.raises(KeyboardInterrupt):
            run_task(interrupted_at_one, manager, claim_batch=4)
        statuses = {task["def"]["index"]: task["status"] for task in manager.query()}
        assert statuses == {0: "done", 1: "waiting", 2: "waiting", 3: "waiting"}


_WORKER = """
import sys
from taskroll.manage import TaskManager, run_task
from taskroll.manage_failure import parse_error
from taskroll.testing import {function}
with TaskManager("pool", store=sys.argv[1], lease_seconds=float(sys.argv[3])) as manager:
    run_task({function}, manager, claim_batch=int(sys.argv[4]), marker_dir=sys.argv[2])
"""


def _executions(markers: Path) -> list[int]:
    return sorted(int(line) for path in markers.glob("*.log")
                  for line in path.read_text(encoding="utf-8").split())


def _worker(function: str, url: str, markers: Path, lease: float,
            batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _WORKER.format(function=function), url,
                             str(markers), str(lease), str(batch)])


@pytest.mark.slow
def test_worker_killed_mid_batch_loses_no_task(url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskManager("pool", store=url, lease_seconds=1.0) as manager:
        manager.create_task([{"index": 0, "sleep": 600}]
                            + [{"index": index, "sleep": 0} for index in range(1, 4)])
        victim = _worker("interruptible_task", url, markers, 1.0, 4)
        deadline = time.monotonic() + 60
        while not (markers / "started-0").exists():
            assert time.monotonic() < deadline, "the worker never started the batch"
            time.sleep(0.05)
        assert manager.task_stat() == {"running": 4}  # one claim took the whole batch
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while manager.task_stat() != {"waiting": 4}:  # every lease ends, every task returns
            assert time.monotonic() < deadline, "the dead worker's batch never came back"
            manager.reap()
            time.sleep(0.2)
        survivor = _worker("interruptible_task", url, markers, 1.0, 4)
        assert survivor.wait(timeout=120) == 0
        assert manager.task_stat() == {"done": 4}
        assert [task["attempts"] for task in manager.query()] == [2, 2, 2, 2]
    assert _executions(markers) == [0, 1, 2, 3]


@pytest.mark.slow
def test_three_workers_with_batches_run_three_thousand_tasks_exactly_once(
        url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    tasks = 3000
    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index} for index in range(tasks)])
        workers = [_worker("_marker_task", url, markers, 30.0, batch) for batch in (16, 16, 5)]
        assert [worker.wait(timeout=600) for worker in workers] == [0, 0, 0]
        assert manager.task_stat() == {"done": tasks}
        assert sorted(task["res"]["index"] for task in manager.query()) == list(range(tasks))
        assert all(task["attempts"] == 1 for task in manager.query())
    assert _executions(markers) == list(range(tasks))
    assert len(list(markers.glob("*.log"))) >= 2, "more than one worker took tasks"
