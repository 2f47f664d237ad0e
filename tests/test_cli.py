"""The ``taskroll`` command, run as ``python -m taskroll`` in subprocesses on a real SQLite pool."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskroll.cli import build_parser, load_function
from taskroll.config import Settings
from taskroll.errors import TaskrollError
from taskroll.manage import TaskManager


def taskroll_command(*arguments: str, cwd: Path, url: str | None = None,
                     timeout: float = 180) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    if url is not None:
        environment["TASKROLL_TASK_URL"] = url
    return subprocess.run([sys.executable, "-m", "taskroll", *arguments], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def pool(tmp_path: Path) -> tuple[str, str]:
    """A pool ``numbers`` of 6 tasks for :func:`taskroll.demo.double_task`."""
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("numbers", store=url) as manager:
        manager.create_task([{"x": number, "sleep": 0.2} for number in range(6)])
    return url, "numbers"


def test_list_and_task_stat_with_options_before_and_after(tmp_path: Path,
                                                          pool: tuple[str, str]) -> None:
    url, name = pool
    listed = taskroll_command("--url", url, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [name]

    before = taskroll_command("-t", name, "--url", url, "task_stat", cwd=tmp_path)
    after = taskroll_command("task_stat", "-t", name, "--url", url, cwd=tmp_path)
    from_environment = taskroll_command("task_stat", "-t", name, cwd=tmp_path, url=url)
    for result in (before, after, from_environment):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"waiting": 6}


def test_unknown_pool_is_a_one_line_error(tmp_path: Path, pool: tuple[str, str]) -> None:
    url, _ = pool
    for command in (("task_stat", "-t", "nope"), ("worker", "-t", "nope")):
        result = taskroll_command(*command, "--url", url, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0
        assert "unknown task pool 'nope'" in result.stderr and "numbers" in result.stderr
        assert "Traceback" not in result.stderr


def test_worker_processes_do_every_task(tmp_path: Path, pool: tuple[str, str]) -> None:
    url, name = pool
    result = taskroll_command("worker", "-t", name, "-n", "2", "--url", url,
                              "--func", "taskroll.demo:double_task", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("worker")]
    assert len(lines) == 2
    done = sum(int(line.split(": ")[1].split()[0]) for line in lines)
    assert done == 6
    with TaskManager(name, store=url) as manager:
        assert manager.task_stat() == {"done": 6}
        results = sorted(task["res"]["double"] for task in manager.query())
    assert results == [2 * number for number in range(6)]


def test_worker_serves_a_pickled_pool_only_with_allow_pickle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("pickled", store=url, allow_pickle=True) as manager:
        manager.create_task([{"x": number, "weights": np.arange(3)} for number in range(3)])
    refused = taskroll_command("worker", "-t", "pickled", "--url", url, "--once",
                               "--func", "taskroll.demo:double_task", cwd=tmp_path)
    assert refused.returncode == 0 and "Traceback" not in refused.stderr
    with TaskManager("pickled", store=url, allow_pickle=True) as manager:  # the test trusts it
        assert manager.task_stat() == {"failed": 3}  # at once: nothing of the tasks ran
        errors = [task["error"] for task in manager.query()]
        assert all(error["kind"] == "undecodable" and "--allow-pickle" in error["message"]
                   for error in errors), errors
        assert manager.retry_failed() == 3
    served = taskroll_command("worker", "-t", "pickled", "--url", url, "--allow-pickle",
                              "--func", "taskroll.demo:double_task", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    with TaskManager("pickled", store=url, allow_pickle=True) as manager:
        assert manager.task_stat() == {"done": 3}
        assert sorted(task["res"]["double"] for task in manager.query()) == [0, 2, 4]


def test_worker_with_a_query_takes_only_matching_tasks(tmp_path: Path,
                                                       pool: tuple[str, str]) -> None:
    url, name = pool
    result = taskroll_command("-t", name, "--url", url, "worker", "--func",
                              "taskroll.demo:double_task", "--query", '{"filter.x": 3}',
                              cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with TaskManager(name, store=url) as manager:
        assert manager.task_stat() == {"done": 1, "waiting": 5}


def test_bad_func_and_missing_pool_exit_2(tmp_path: Path, pool: tuple[str, str]) -> None:
    url, name = pool
    bad = taskroll_command("worker", "-t", name, "--url", url, "--func", "taskroll.demo:nope",
                           cwd=tmp_path)
    assert bad.returncode == 2 and "has no 'nope'" in bad.stderr
    missing = taskroll_command("worker", "--url", url, cwd=tmp_path)
    assert missing.returncode == 2 and "-t POOL" in missing.stderr


def test_parser_wiring() -> None:
    parser = build_parser()
    arguments = parser.parse_args(["-t", "a", "task_stat"])
    assert arguments.task_pool == "a" and arguments.command == "task_stat"
    arguments = parser.parse_args(["query", "-t", "b", "--limit", "3"])
    assert arguments.task_pool == "b" and arguments.limit == 3
    arguments = parser.parse_args(["worker", "-t", "c", "--before-status", "part_done"])
    assert arguments.before_status == "part_done" and arguments.workers == 1
    arguments = parser.parse_args(["demo", "--quick", "--output", "x"])
    assert arguments.quick and arguments.output == "x"
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert {"list", "task_stat", "worker", "demo", "online"} <= set(commands.choices)


def test_worker_placement_options() -> None:
    parser = build_parser()
    arguments = parser.parse_args(["worker", "-t", "p", "-n", "4", "--until-pool-done",
                                   "--gpus", "0,1", "--threads", "2"])
    assert arguments.until_pool_done and not arguments.once
    assert (arguments.workers, arguments.gpus, arguments.threads) == (4, "0,1", 2)
    arguments = parser.parse_args(["worker", "-t", "p", "--on", "dask://h:8786",
                                   "--resources", "GPU=1", "--resources", "MEMORY=4e9"])
    assert arguments.on == "dask://h:8786" and arguments.resources == ["GPU=1", "MEMORY=4e9"]
    with pytest.raises(SystemExit):  # drain or not: one or the other
        parser.parse_args(["worker", "-t", "p", "--once", "--until-pool-done"])


def test_until_pool_done_drains_and_once_does_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("numbers", store=url, lease_seconds=10.0) as holder:
        holder.create_task([{"x": 0}, {"x": 1}])
        held = holder.fetch_task()  # "another worker" holds it, then dies (never commits)
        assert held is not None
    once = taskroll_command("worker", "-t", "numbers", "--url", url, "--once",
                            "--func", "taskroll.demo:double_task", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": 1, "running": 1}
    drained = taskroll_command("worker", "-t", "numbers", "--url", url, "--until-pool-done",
                               "--func", "taskroll.demo:double_task", cwd=tmp_path)
    assert drained.returncode == 0, drained.stderr
    with TaskManager("numbers", store=url) as manager:
        assert manager.task_stat() == {"done": 2}  # waited for the lease, then ran it
        assert next(manager.query({"filter.x": held["def"]["x"]}))["attempts"] == 2


def test_load_function() -> None:
    from taskroll.train.trainer import task_train

    assert load_function("taskroll.train.trainer:task_train") is task_train
    for spec in ("no_colon", "taskroll.nope:func", "taskroll:__version__"):
        with pytest.raises(TaskrollError):
            load_function(spec)


def test_missing_or_broken_online_module_leaves_the_rest_working(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, isolated_settings: Settings) -> None:
    import importlib

    from taskroll import cli

    real_import = importlib.import_module

    def missing(name: str, package: str | None = None) -> object:
        if name == "taskroll.online.cli":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, package)

    def broken(name: str, package: str | None = None) -> object:
        if name == "taskroll.online.cli":
            raise SyntaxError("half-written")
        return real_import(name, package)

    for fake, reason in ((missing, "missing"), (broken, "half-written")):
        monkeypatch.setattr(cli.importlib, "import_module", fake)
        assert cli.main(["online", "simulate", "--config", "x"]) == 2
        assert reason in capsys.readouterr().err
        assert cli.main(["--url", f"sqlite:///{tmp_path / 'empty.db'}", "list"]) == 0


def test_worker_records_a_task_that_imports_broken_code(tmp_path: Path) -> None:
    (tmp_path / "broken_model.py").write_text("def fit(:\n")
    (tmp_path / "my_tasks.py").write_text(
        "import importlib\n\n\n"
        "def run(task, **options):\n"
        "    return importlib.import_module(task['module_path']).__name__\n")
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("broken", store=url, max_attempts=1) as manager:
        manager.create_task([{"module_path": "broken_model"}, {"module_path": "json"}])
    result = subprocess.run(
        [sys.executable, "-m", "taskroll", "worker", "-t", "broken", "--url", url,
         "--func", "my_tasks:run", "--once"], cwd=tmp_path, capture_output=True, text=True,
        timeout=180, check=False,
        env={**{key: value for key, value in os.environ.items()
                if not key.startswith("TASKROLL_")}, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "1 task(s) done, 3 failed" in result.stdout  # three attempts, the default
    assert "Traceback" not in result.stderr
    with TaskManager("broken", store=url) as manager:
        failed = next(manager.query({"status": "failed"}))
        assert failed["error"]["kind"] == "task raised"
        assert failed["error"]["message"].startswith("SyntaxError")
        assert "broken_model.py" in failed["error"]["traceback"]


def test_worker_reports_a_store_that_fails_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-db"
    broken.write_bytes(b"\x00" * 4096)
    result = taskroll_command("worker", "-t", "x", "--url", f"sqlite:///{broken}", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not-a-db" in result.stderr
