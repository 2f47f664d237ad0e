"""Failure kinds, history, retry_failed, backoff, settings checks and the drain rule."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import taskroll
from taskroll import config
from taskroll.errors import StoreError, TaskConfigError
from taskroll.manage import TaskManager, run_task
from taskroll.manage_failure import (
    HISTORY_LIMIT,
    Backoff,
    error_text,
    failure_fields,
    parse_error,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def always_fails(task_def: dict[str, Any]) -> None:
    raise RuntimeError(f"task {task_def['index']} is broken")


def test_failures_build_a_history_and_retry_failed_resets_attempts(url: str) -> None:
    with TaskManager("pool", store=url, max_attempts=2) as manager:
        manager.create_task([{"index": 0}, {"index": 1}])
        run_task(always_fails, manager, query={"filter.index": 0})
        task = next(manager.query({"filter.index": 0}))
        assert (task["status"], task["attempts"]) == ("failed", 2)
        assert task["error"]["kind"] == "task raised"
        assert [entry["attempt"] for entry in task["error"]["history"]] == [1]
        assert manager.retry_failed() == 1
        task = next(manager.query({"filter.index": 0}))
        assert (task["status"], task["attempts"], task["error"]["kind"]) == ("waiting", 0, None)
        assert [entry["attempt"] for entry in task["error"]["history"]] == [1, 2]
        run_task(always_fails, manager, query={"filter.index": 0})
        task = next(manager.query({"filter.index": 0}))
        assert task["status"] == "failed" and len(task["error"]["history"]) == 3
        assert manager.retry_failed({"filter.index": 1}) == 0
        assert manager.task_stat() == {"failed": 1, "waiting": 1}


def test_retry_command_line(url: str) -> None:
    with TaskManager("pool", store=url, max_attempts=1) as manager:
        manager.create_task([{"index": 0}, {"index": 1}])
        run_task(always_fails, manager)
        assert manager.task_stat() == {"failed": 2}
    for module, arguments in (("taskroll.manage", ["-t", "pool", "retry", '{"filter.index": 0}']),
                              ("taskroll", ["retry", "-t", "pool"])):
        result = subprocess.run([sys.executable, "-m", module, "--url", url, *arguments],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0 and "1 failed task(s) put back" in result.stdout
    with TaskManager("pool", store=url) as manager:
        assert manager.task_stat() == {"waiting": 2}


def test_parse_error_reads_every_form() -> None:
    assert parse_error(None) is None
    lost = parse_error("lease expired: worker w stopped renewing it during attempt 1 of 3")
    assert lost is not None and lost["kind"] == "worker lost" and lost["history"] == []
    old = parse_error("Traceback (most recent call last):\n  ...\nValueError: bad")
    assert old is not None and (old["kind"], old["message"]) == ("task raised", "ValueError: bad")
    text = error_text("store error", "StoreError: full", None, 2, previous="lease expired: x")
    parsed = parse_error(text)
    assert parsed is not None and parsed["kind"] == "store error"
    assert [entry["kind"] for entry in parsed["history"]] == ["worker lost"]
    for _ in range(HISTORY_LIMIT + 5):
        text = error_text("task raised", "again", None, 1, previous=text)
    assert len(json.loads(text)["history"]) == HISTORY_LIMIT


def test_failure_fields_count_only_the_tasks_fault() -> None:
    raised = failure_fields(ValueError("x"), "task raised", 3, 3, "waiting")
    assert raised["status"] == "failed" and "attempts" not in raised
    store = failure_fields(StoreError("locked"), "store error", 3, 3, "waiting")
    assert (store["status"], store["attempts"]) == ("waiting", 2)
    poison = failure_fields("cannot decode", "undecodable", 1, 3, "failed")
    assert poison["status"] == "failed"


def test_backoff_is_bounded_and_retries_only_store_errors() -> None:
    assert Backoff().waits() == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreError("locked")
        return "ok"

    assert Backoff(first=0.001, tries=3).call(flaky, "testing") == "ok"
    with pytest.raises(StoreError):
        Backoff(first=0.001, tries=2).call(lambda: (_ for _ in ()).throw(StoreError("down")), "x")
    with pytest.raises(ValueError):
        Backoff(first=0.001).call(lambda: (_ for _ in ()).throw(ValueError("not retried")), "x")


@pytest.mark.parametrize(("arguments", "fragment"), [
    ({"lease_seconds": 0}, "lease_seconds"), ({"lease_seconds": float("nan")}, "nan"),
    ({"lease_seconds": float("inf")}, "inf"), ({"max_attempts": 0}, "max_attempts"),
])
def test_settings_are_checked_where_they_enter(isolated_settings: config.Settings, url: str,
                                               arguments: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TaskConfigError, match=fragment):
        TaskManager("pool", store=url, **arguments)
    with pytest.raises(TaskConfigError, match=fragment):
        taskroll.init(**arguments)
    assert config.get_settings() == isolated_settings


def test_environment_is_checked_when_used(isolated_settings: config.Settings, url: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKROLL_LEASE_SECONDS", "nan")
    monkeypatch.setattr(config._SettingsHolder, "current", config._from_environment())
    with pytest.raises(TaskConfigError, match=r"TASKROLL_LEASE_SECONDS.*'nan'"):
        TaskManager("pool", store=url)
    with TaskManager("pool", store=url, lease_seconds=5) as manager:  # an argument wins
        assert manager.lease_seconds == 5.0
    monkeypatch.setenv("TASKROLL_LEASE_SECONDS", " 7.5 ")
    monkeypatch.setattr(config._SettingsHolder, "current", config._from_environment())
    with TaskManager("pool", store=url) as manager:
        assert manager.lease_seconds == 7.5


def test_worker_drains_running_tasks_of_others_unless_once(url: str) -> None:
    with TaskManager("pool", store=url, lease_seconds=0.3) as dead, \
            TaskManager("pool", store=url, lease_seconds=0.3) as worker:
        dead.create_task([{"index": 0}, {"index": 1}])
        assert dead.fetch_task({"filter.index": 0}) is not None
        assert worker.running_elsewhere() == 1 and dead.running_elsewhere() == 0
        assert worker.running_elsewhere(status="part_done") == 0
        assert run_task(lambda task: task["index"], worker, once=True)
        assert worker.task_stat() == {"done": 1, "running": 1}
        begun = time.monotonic()
        assert run_task(lambda task: task["index"], worker)
        assert time.monotonic() - begun >= 0.2  # it waited for the lease to end
        assert worker.task_stat() == {"done": 2}
