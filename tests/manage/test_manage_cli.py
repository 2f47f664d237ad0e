"""The pool command line, run as a real subprocess against a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskroll.manage import TaskManager


def cli(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskroll.manage", "--url", url, *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    address = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("models", store=address) as manager:
        manager.create_task([{"index": index, "model": "A" if index < 3 else "B"}
                             for index in range(5)])
        task = manager.fetch_task({"filter.model": "B"})
        assert task is not None
    return address


def test_list_and_task_stat(url: str) -> None:
    assert cli(url, "list").stdout.split() == ["models"]
    result = cli(url, "-t", "models", "task_stat")
    assert result.returncode == 0 and json.loads(result.stdout) == {"running": 1, "waiting": 4}
    filtered = cli(url, "-t", "models", "task_stat", "--query", '{"filter.model": "A"}')
    assert json.loads(filtered.stdout) == {"waiting": 3}


def test_query_prints_json_lines(url: str) -> None:
    result = cli(url, "-t", "models", "query", '{"filter.index": {"$in": [0, 4]}}')
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["def"]["index"] for line in lines] == [0, 4]
    assert lines[0]["status"] == "waiting"


def test_reset_prioritize_remove(url: str) -> None:
    assert "1 task(s) reset" in cli(url, "-t", "models", "reset_waiting").stdout
    with TaskManager("models", store=url) as manager:
        first = next(manager.query({"filter.index": 2}))
        assert cli(url, "-t", "models", "prioritize", first["_id"], "7").returncode == 0
        assert manager.re_query(first["_id"])["priority"] == 7  # type: ignore[index]
        refused = cli(url, "-t", "models", "remove")
        assert refused.returncode == 2 and "--all" in refused.stderr
        assert "2 task(s) removed" in cli(url, "-t", "models", "remove",
                                          '{"filter.model": "B"}').stdout
        assert manager.task_stat() == {"waiting": 3}


def test_wait_with_timeout(url: str) -> None:
    result = cli(url, "-t", "models", "wait", "--timeout", "0.3", "--poll-interval", "0.1")
    assert result.returncode == 2 and "still undone" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("-t", "nope", "task_stat"), "unknown task pool 'nope'"),
        (("-t", "models", "query", "{not json"), "not valid JSON"),
        (("-t", "models", "remove", '{"filter.index": {"$regex": "1"}}'), "unsupported operator"),
        (("-t", "models", "reset_waiting", '{"colour": "red"}'), "unknown query field"),
        (("task_stat",), "-t POOL"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
        url: str, arguments: tuple[str, ...], message: str) -> None:
    result = cli(url, *arguments)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    with TaskManager("models", store=url) as manager:
        assert manager.task_stat() == {"running": 1, "waiting": 4}
