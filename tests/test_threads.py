"""Thread caps: the environment real spawned worker processes see (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskroll.manage import TaskManager
from taskroll.threads import (
    THREAD_VARIABLES,
    available_cores,
    cap_threads,
    capped_environment,
    threads_per_worker,
)

REPORT_MODULE = '''
import os

NAMES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def report_environment(task, **kwargs):
    """A pool task: what this worker process's environment says about threads."""
    import time

    time.sleep(0.2)
    return {"pid": os.getpid(), "env": {name: os.environ.get(name) for name in NAMES}}
'''


def _clean_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if not key.startswith("TASKROLL_") and key not in THREAD_VARIABLES}


def _run_workers(tmp_path: Path, *options: str,
                 extra: dict[str, str] | None = None) -> list[dict[str, object]]:
    """Run ``taskroll worker -n 2`` on 4 tasks; return what each task's worker reported."""
    (tmp_path / "thread_report.py").write_text(REPORT_MODULE)
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("threads", store=url) as manager:
        manager.create_task([{"x": number} for number in range(4)])
    environment = {**_clean_environment(), "TASKROLL_TASK_URL": url, **(extra or {})}
    result = subprocess.run(
        [sys.executable, "-m", "taskroll", "worker", "-t", "threads", "-n", "2",
         "--func", "thread_report:report_environment", *options],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180,
        check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with TaskManager("threads", store=url) as manager:
        assert manager.task_stat() == {"done": 4}
        return [task["res"] for task in manager.query()]


def test_threads_per_worker_divides_the_cores_and_keeps_one() -> None:
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(4, cores=2) == 1
    assert threads_per_worker(1) == available_cores() >= 1


def test_each_spawned_worker_gets_cores_divided_by_workers(tmp_path: Path) -> None:
    reports = _run_workers(tmp_path)
    expected = str(threads_per_worker(2))
    for report in reports:
        assert report["env"] == {name: expected for name in THREAD_VARIABLES}


def test_threads_option_overrides_the_default(tmp_path: Path) -> None:
    reports = _run_workers(tmp_path, "--threads", "3")
    for report in reports:
        assert report["env"] == {name: "3" for name in THREAD_VARIABLES}


def test_a_variable_the_user_set_wins(tmp_path: Path) -> None:
    reports = _run_workers(tmp_path, "--threads", "3", extra={"OMP_NUM_THREADS": "5"})
    for report in reports:
        assert report["env"] == {"OMP_NUM_THREADS": "5", "OPENBLAS_NUM_THREADS": "3",
                                 "MKL_NUM_THREADS": "3", "NUMEXPR_NUM_THREADS": "3"}


def test_cap_threads_sets_unset_variables_in_a_fresh_process() -> None:
    code = ("import json, os; from taskroll.threads import cap_threads; "
            "set_now = cap_threads(2); "
            "print(json.dumps([set_now, {name: os.environ.get(name) for name in "
            "('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}]))")
    environment = {**_clean_environment(), "MKL_NUM_THREADS": "7"}
    result = subprocess.run([sys.executable, "-c", code], env=environment,
                            capture_output=True, text=True, timeout=60, check=True)
    set_now, seen = json.loads(result.stdout)
    assert set_now == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                       "NUMEXPR_NUM_THREADS": "2"}
    assert seen == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "7"}


def test_capped_environment_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "9")
    with capped_environment(4) as values:
        assert values == {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4",
                          "NUMEXPR_NUM_THREADS": "4"}
        assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["MKL_NUM_THREADS"] == "9"
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "9"


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"), capped_environment(0):
        pass
    with pytest.raises(ValueError, match="at least 1"):
        cap_threads(0)
