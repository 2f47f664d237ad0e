"""Keywords of ``run_task`` reach the task function, as in Qlib, on a real SQLite file.

Qlib's ``run_task(task_func, task_pool, query={}, force_release=False, before_status=...,
after_status=..., **kwargs)`` passes every extra keyword to ``task_func``. taskroll's own
worker options are keyword-only with names a task function is unlikely to use: a task
function expecting ``batch`` receives it, while ``claim_batch`` sets how many tasks one
claim takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskroll.manage import TaskManager, run_task


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def _recording_task(observer: TaskManager, calls: list[tuple[int, int, dict[str, int]]]) -> Any:
    """A task function that records its ``batch`` keyword and the pool as it starts."""

    def task(task_def: dict[str, Any], batch: int) -> dict[str, int]:
        calls.append((int(task_def["index"]), batch, observer.task_stat()))
        return {"index": int(task_def["index"]), "batch": batch}

    return task


def test_batch_keyword_reaches_the_task_function_and_claim_batch_claims(url: str) -> None:
    calls: list[tuple[int, int, dict[str, int]]] = []
    with TaskManager("pool", store=url) as manager, \
            TaskManager("pool", store=url) as observer:
        manager.create_task([{"index": index} for index in range(4)])
        assert run_task(_recording_task(observer, calls), manager, batch=7, claim_batch=4)
        assert manager.task_stat() == {"done": 4}
        results = sorted((task["res"]["index"], task["res"]["batch"])
                         for task in manager.query())
    assert results == [(0, 7), (1, 7), (2, 7), (3, 7)]
    assert [(index, batch) for index, batch, _ in calls] == [(0, 7), (1, 7), (2, 7), (3, 7)]
    # one claim took all four tasks: none was waiting when the first one ran
    assert calls[0][2] == {"running": 4}
    assert [stat for _, _, stat in calls[1:]] == [
        {"done": 1, "running": 3}, {"done": 2, "running": 2}, {"done": 3, "running": 1}]


def test_batch_keyword_does_not_change_claiming(url: str) -> None:
    calls: list[tuple[int, int, dict[str, int]]] = []
    with TaskManager("pool", store=url) as manager, \
            TaskManager("pool", store=url) as observer:
        manager.create_task([{"index": index} for index in range(3)])
        assert run_task(_recording_task(observer, calls), manager, batch=16)
        assert manager.task_stat() == {"done": 3}
    assert [batch for _, batch, _ in calls] == [16, 16, 16]
    # claim_batch defaults to 1: one task is claimed at a time, the others wait
    assert [stat for _, _, stat in calls] == [
        {"running": 1, "waiting": 2}, {"done": 1, "running": 1, "waiting": 1},
        {"done": 2, "running": 1}]


def test_qlib_positional_call_passes_batch_through(url: str) -> None:
    seen: list[int] = []

    def task(task_def: dict[str, Any], batch: int) -> int:
        seen.append(batch)
        return int(task_def["index"]) * batch

    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": index} for index in range(2)])
        assert run_task(task, manager, {}, False, TaskManager.STATUS_WAITING,
                        TaskManager.STATUS_DONE, batch=3)
        assert sorted(task["res"] for task in manager.query()) == [0, 3]
    assert seen == [3, 3]


def test_claim_batch_is_keyword_only(url: str) -> None:
    with TaskManager("pool", store=url) as manager:
        manager.create_task([{"index": 0}])
        # Qlib's six positional parameters, then a seventh: not taken as claim_batch
        positional: tuple[Any, ...] = (lambda task_def: None, manager, {}, False,
                                       TaskManager.STATUS_WAITING, TaskManager.STATUS_DONE, 4)
        with pytest.raises(TypeError):
            run_task(*positional)
        assert manager.task_stat() == {"waiting": 1}
