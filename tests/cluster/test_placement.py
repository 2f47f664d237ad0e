"""Placement pieces without a cluster: addresses, resources, the optional Dask import, settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskroll.cluster import LocalWorkers, LoopOptions, LoopSettings, LoopSummary, WorkerPlacement
from taskroll.cluster.dask_workers import DaskWorkers, parse_resources, scheduler_address
from taskroll.cluster.placement import WorkerLoopError, raise_for_stopped
from taskroll.config import Settings
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager


def test_scheduler_address() -> None:
    assert scheduler_address("dask://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert scheduler_address("tls://head:8786/") == "tls://head:8786"
    for bad in ("http://head:8786", "dask://head", "dask://:8786", "head:8786"):
        with pytest.raises(TaskConfigError, match="dask://HOST:PORT"):
            scheduler_address(bad)


def test_parse_resources() -> None:
    assert parse_resources(["GPU=1", "MEMORY=4e9"]) == {"GPU": 1.0, "MEMORY": 4e9}
    assert parse_resources("GPU=1,FOO=0.5") == {"GPU": 1.0, "FOO": 0.5}
    assert parse_resources({"GPU": 2}) == {"GPU": 2.0} and parse_resources(None) == {}
    for bad in ("GPU", "GPU=0", "=1", "GPU=x", "GPU=inf"):
        with pytest.raises(TaskConfigError, match="NAME=AMOUNT"):
            parse_resources(bad)


def test_both_placements_are_worker_placements() -> None:
    assert isinstance(LocalWorkers(2), WorkerPlacement)
    assert isinstance(DaskWorkers("dask://127.0.0.1:1", n=3), WorkerPlacement)
    with pytest.raises(TaskConfigError, match="-n"):
        DaskWorkers("dask://127.0.0.1:1", n=0)


def test_importing_taskroll_imports_no_dask() -> None:
    code = ("import sys, taskroll, taskroll.cli, taskroll.cluster, taskroll.train.trainer; "
            "print(sorted(name for name in sys.modules if name.split('.')[0] in "
            "('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_without_dask_the_command_says_what_to_install(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("numbers", store=url) as manager:
        manager.create_task([{"x": 1}])
    code = ("import sys; sys.modules['distributed'] = None; from taskroll.cli import main; "
            f"raise SystemExit(main(['worker', '-t', 'numbers', '--url', {url!r}, "
            "'--on', 'dask://127.0.0.1:1']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert 'pip install "taskroll[dask]"' in result.stderr


def test_loop_settings_carry_resolved_urls(isolated_settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", "taskroll.,mylab")
    settings = LoopSettings.current()
    assert settings.task_url == isolated_settings.resolved_task_url()
    assert settings.tracking_uri == isolated_settings.resolved_tracking_uri()
    assert settings.environment["TASKROLL_ALLOWED_MODULES"] == "taskroll.,mylab"


def test_raise_for_stopped_names_each_stopped_loop() -> None:
    raise_for_stopped([LoopSummary(0, where="pid 1", done=3)])
    with pytest.raises(WorkerLoopError, match=r"1 of 2 .*worker 1: stopped: KilledWorker"):
        raise_for_stopped([LoopSummary(0, done=1), LoopSummary(1, error="KilledWorker: x")])


def test_local_workers_run_loops_with_the_settings_in_force(isolated_settings: Settings) -> None:
    with TaskManager("numbers") as manager:
        manager.create_task([{"x": number} for number in range(4)])
    summaries = LocalWorkers(2, threads=1).run_loops(
        LoopOptions(task_pool="numbers", func="taskroll.demo:double_task"))
    assert [summary.error for summary in summaries] == [None, None]
    assert sum(summary.done for summary in summaries) == 4
    with TaskManager("numbers") as manager:
        assert manager.task_stat() == {"done": 4}


def test_a_local_loop_that_raises_reports_the_exception_in_one_line(
        isolated_settings: Settings) -> None:
    with TaskManager("numbers") as manager:
        manager.create_task([{"x": 1}])
    # threads=0 passes no check on this side and makes the loop's cap raise ValueError there
    [summary] = LocalWorkers(1, threads=1).run_loops(
        LoopOptions(task_pool="numbers", func="taskroll.demo:double_task", threads=0))
    assert summary.error is not None and "\n" not in summary.error
    assert "ValueError" in summary.error and "at least 1" in summary.error, summary.error
    with TaskManager("numbers") as manager:
        assert manager.task_stat() == {"waiting": 1}
