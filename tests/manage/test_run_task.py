"""run_task: the worker loop, on a real SQLite file, with real worker processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager, run_task
from taskroll.testing import (
    _marker_task,
    check_concurrent_create,
    check_workers_exactly_once,
    run_worker_process,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def double(task_def: dict[str, Any], factor: int = 2) -> dict[str, Any]:
    if task_def["index"] == 3:
        raise ValueError("index 3 is broken")
    return {"value": task_def["index"] * factor}


def test_run_task_runs_every_task_and_records_failures(url: str) -> None:
    with TaskManager("pool", store=url, max_attempts=2) as manager:
        manager.create_task([{"index": index} for index in range(5)])
        assert run_task(double, manager, factor=10)
        assert manager.task_stat() == {"done": 4, "failed": 1}
        results = {t["def"]["index"]: t["res"] for t in manager.query({"status": "done"})}
        assert results == {0: {"value": 0}, 1: {"value": 10}, 2: {"value": 20}, 4: {"value": 40}}
        failed = next(manager.query({"status": "failed"}))
        assert failed["attempts"] == 2
        error = failed["error"]
        assert error["kind"] == "task raised" and error["attempt"] == 2
        assert error["message"] == "ValueError: index 3 is broken"
        assert "Traceback" in error["traceback"]
        assert [entry["kind"] for entry in error["history"]] == ["task raised"]
        assert not run_task(double, manager)


def test_failed_task_is_retried_until_it_succeeds(url: str, tmp_path: Path) -> None:
    flaky_marker = tmp_path / "flaky"

    def flaky(task_def: dict[str, Any]) -> str:
        if not flaky_marker.exists():
            flaky_marker.touch()
            raise RuntimeError("first attempt fails")
        return "ok"

    with TaskManager("pool", store=url, max_attempts=3) as manager:
        manager.create_task([{"index": 0}])
        run_task(flaky, manager)
        task = next(manager.query())
        assert (task["status"], task["res"], task["attempts"]) == ("done", "ok", 2)
        assert task["error"] is None


def test_part_done_flow(url: str) -> None:
    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index} for index in range(3)])
        run_task(lambda d: {"half": d["index"]}, manager, after_status="part_done")
        assert manager.task_stat() == {"part_done": 3}
        run_task(lambda res: {"whole": res["half"] * 2}, manager, before_status="part_done")
        assert sorted(t["res"]["whole"] for t in manager.query()) == [0, 2, 4]
        with pytest.raises(TaskConfigError):
            run_task(double, manager, before_status="done")


def test_query_restricts_the_worker(url: str) -> None:
    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index, "kind": index % 2} for index in range(4)])
        run_task(lambda d: d["index"], manager, query={"filter.kind": 1})
        assert manager.task_stat() == {"done": 2, "waiting": 2}
        assert manager.task_stat({"filter.kind": 0}) == {"waiting": 2}


def test_force_release_runs_each_task_in_a_fresh_process(url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index} for index in range(2)])
        assert run_task(_marker_task, manager, force_release=True, marker_dir=str(markers))
        assert manager.task_stat() == {"done": 2}
    process_ids = {int(path.stem) for path in markers.glob("*.log")}
    assert len(process_ids) == 2 and os.getpid() not in process_ids


def test_heartbeat_keeps_a_long_task(url: str) -> None:
    with TaskManager("pool", store=url, lease_seconds=0.3) as worker, \
            TaskManager("pool", store=url) as reaper:
        worker.create_task([{"index": 0}])

        def slow(task_def: dict[str, Any]) -> str:
            for _ in range(8):
                time.sleep(0.2)
                reaper.reap()  # a reaper elsewhere must not take a live task back
            return "finished"

        run_task(slow, worker)
        task = next(worker.query())
        assert (task["status"], task["attempts"], task["res"]) == ("done", 1, "finished")


def test_keyboard_interrupt_gives_the_task_back(url: str) -> None:
    def interrupted(task_def: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": 0}])
        with pytest.raises(KeyboardInterrupt):
            run_task(interrupted, manager)
        assert manager.task_stat() == {"waiting": 1}


def test_unstorable_result_is_a_task_failure(url: str) -> None:
    with TaskManager("pool", store=url, max_attempts=1) as manager:
        manager.create_task([{"index": 0}])
        run_task(lambda d: object(), manager)
        task = next(manager.query())
        assert task["status"] == "failed" and "allow_pickle=True" in task["error"]["message"]


@pytest.mark.slow
def test_four_workers_two_thousand_tasks_exactly_once(url: str, tmp_path: Path) -> None:
    check_workers_exactly_once(url, workers=4, tasks=2000, marker_dir=tmp_path / "markers")


@pytest.mark.slow
def test_eight_workers_five_thousand_tasks_exactly_once(url: str, tmp_path: Path) -> None:
    check_workers_exactly_once(url, workers=8, tasks=5000, marker_dir=tmp_path / "markers")


@pytest.mark.slow
def test_concurrent_create_inserts_once(url: str) -> None:
    check_concurrent_create(url, tasks=1000)


@pytest.mark.slow
def test_sigkilled_worker_task_comes_back(url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskManager("pool", store=url, lease_seconds=1.0) as manager:
        manager.create_task([{"index": 0, "sleep": 600}, {"index": 1, "sleep": 0}])
        context = multiprocessing.get_context("spawn")
        victim = context.Process(target=run_worker_process,
                                 args=(url, "pool", str(markers), 1.0, True))
        victim.start()
        deadline = time.monotonic() + 60
        while not (markers / "started-0").exists():
            assert time.monotonic() < deadline, "the worker never started the task"
            time.sleep(0.05)
        assert next(manager.query({"filter.index": 0}))["status"] == "running"
        os.kill(victim.pid or 0, signal.SIGKILL)
        victim.join()
        assert victim.exitcode == -signal.SIGKILL
        # the lease runs out; a surviving worker waits for it and finishes the task
        deadline = time.monotonic() + 30
        while manager.task_stat({"filter.index": 0}) != {"waiting": 1}:
            assert time.monotonic() < deadline, "the dead worker's task never came back"
            manager.reap()
            time.sleep(0.2)
        run_worker_process(url, "pool", str(markers), 1.0, True)
        tasks = {task["def"]["index"]: task for task in manager.query()}
        assert tasks[0]["status"] == "done" and tasks[0]["attempts"] == 2
        assert tasks[1]["status"] == "done"
        executions = sorted(int(line) for path in markers.glob("*.log")
                            for line in path.read_text().split())
        assert executions == [0, 1]
