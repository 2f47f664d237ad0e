"""Findings of a read-only attack on the SQLite pool, each kept as a regression test."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import pytest

from taskroll import TaskManager
from taskroll.errors import QueryError, TaskConfigError
from taskroll.manage import run_task


@pytest.fixture
def manager(tmp_path: Path) -> TaskManager:
    return TaskManager("review", store=f"sqlite:///{tmp_path / 'tasks.db'}", lease_seconds=5,
                       max_attempts=2)


def snapshot(manager: TaskManager) -> list[tuple[Any, ...]]:
    return sorted((task["_id"], task["status"], task["priority"], task["attempts"])
                  for task in manager.query())


def test_a_surrogate_in_an_exception_message_fails_only_that_task(manager: TaskManager) -> None:
    manager.create_task([{"index": index} for index in range(3)])

    def task(definition: dict[str, Any]) -> int:
        if definition["index"] == 0:
            raise ValueError("cannot parse " + os.fsdecode(b"x\xff.csv"))
        return int(definition["index"])

    for _ in range(2):
        run_task(task, manager, poll_interval=0.05)
    assert manager.task_stat() == {"done": 2, "failed": 1}
    failed = next(iter(manager.query({"status": "failed"})))
    assert failed["error"]["kind"] == "task raised"
    assert "cannot parse x" in failed["error"]["message"]


class Colour(enum.IntEnum):
    RED = 1
    HUGE = 2**63


def test_an_int_subclass_priority_is_checked_at_once(manager: TaskManager) -> None:
    manager.insert_task({"def": {"x": 1}, "priority": Colour.RED})
    assert [task["priority"] for task in manager.query()] == [1]
    before = snapshot(manager)
    with pytest.raises(TaskConfigError, match="priority"):
        manager.insert_task({"def": {"x": 2}, "priority": Colour.HUGE})
    assert snapshot(manager) == before


@pytest.mark.parametrize("value", [1e20, -1e20, 1e300, 2.0**63, 0.5])
def test_large_floats_are_plain_numbers(manager: TaskManager, value: float) -> None:
    [task_id] = manager.create_task([{"v": value}])
    assert [task["_id"] for task in manager.query({"filter.v": value})] == [task_id]
    assert [task["_id"] for task in manager.query({"filter.v": {"$gte": value}})] == [task_id]
    assert list(manager.query({"priority": {"$lt": 1e19}}))


@pytest.mark.parametrize(("call", "error"), [
    (lambda manager: manager.create_task([{"x": "\ud800"}]), TaskConfigError),
    (lambda manager: manager.create_task([{"\udfff": 1}]), TaskConfigError),
    (lambda manager: manager.create_task([{"ok": 1}, {"x": ["\udc80"]}]), TaskConfigError),
    (lambda manager: list(manager.query({"filter.a": "\ud800"})), QueryError),
    (lambda manager: list(manager.query({"filter.a": {"$in": ["a", "\ud800"]}})), QueryError),
], ids=["value", "key", "batch", "query", "query-in"])
def test_lone_surrogates_are_refused_and_change_nothing(manager: TaskManager, call: Any,
                                                        error: type[Exception]) -> None:
    manager.create_task([{"seed": 1}])
    before = snapshot(manager)
    with pytest.raises(error, match="surrogate"):
        call(manager)
    assert snapshot(manager) == before
    manager.create_task([{"after": 1}])  # the store is still usable


def test_a_corrupted_filter_column_stops_neither_workers_nor_queries(manager: TaskManager,
                                                                     tmp_path: Path) -> None:
    import sqlite3

    ids = manager.create_task([{"index": index} for index in range(2)])
    with sqlite3.connect(tmp_path / "tasks.db") as connection:
        connection.execute("UPDATE tasks SET filter = '{bad' WHERE id = ?", (ids[0],))
    assert len(list(manager.query())) == 2
    run_task(lambda definition: definition["index"], manager, poll_interval=0.05)
    assert manager.task_stat() == {"done": 2}
