"""``taskroll worker -n N --gpus ...``: the environment each real spawned worker process sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskroll.cluster.gpus import DEVICE_VARIABLE, parse_gpus, worker_environments
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager
from taskroll.threads import THREAD_VARIABLES, threads_per_worker

#: Each task waits until every worker process holds one, so each process runs exactly one.
REPORT_MODULE = '''
import os
import time

NAMES = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
         "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def report_environment(task, **kwargs):
    folder = task["folder"]
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < task["workers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"pid": os.getpid(), "env": {name: os.environ.get(name) for name in NAMES}}
'''


def _run_workers(tmp_path: Path, workers: int, *options: str,
                 inherited: dict[str, str] | None = None) -> tuple[str, dict[int, dict[str, str]]]:
    """Run ``taskroll worker -n workers OPTIONS``; return its output and ``{pid: environment}``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "gpu_report.py").write_text(REPORT_MODULE)
    (tmp_path / "held").mkdir()
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("gpus", store=url) as manager:
        manager.create_task([{"index": index, "folder": str(tmp_path / "held"),
                              "workers": workers} for index in range(workers)])
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_") and key not in THREAD_VARIABLES
                   and key != DEVICE_VARIABLE}
    environment.update({"TASKROLL_TASK_URL": url, **(inherited or {})})
    result = subprocess.run(
        [sys.executable, "-m", "taskroll", "worker", "-t", "gpus", "-n", str(workers),
         "--func", "gpu_report:report_environment", *options],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with TaskManager("gpus", store=url) as manager:
        assert manager.task_stat() == {"done": workers}
        reports = {task["res"]["pid"]: task["res"]["env"] for task in manager.query()}
    assert len(reports) == workers  # one task in each process
    return result.stdout, reports


def _pid_of_worker(stdout: str) -> dict[int, int]:
    """``{worker number: pid}`` from the lines ``worker N (pid P): ...``."""
    pids = {}
    for line in stdout.splitlines():
        if line.startswith("worker "):
            number, _, rest = line.removeprefix("worker ").partition(" (pid ")
            pids[int(number)] = int(rest.partition(")")[0])
    return pids


def test_each_worker_process_gets_its_gpu_round_robin_and_its_threads(tmp_path: Path) -> None:
    stdout, reports = _run_workers(tmp_path, 3, "--gpus", "0,1")
    pids = _pid_of_worker(stdout)
    assert sorted(pids) == [0, 1, 2]
    threads = str(threads_per_worker(3))
    for number, pid in pids.items():
        assert reports[pid] == {DEVICE_VARIABLE: ["0", "1"][number % 2],
                                **dict.fromkeys(THREAD_VARIABLES, threads)}


def test_gpus_win_over_an_inherited_device_and_without_gpus_it_is_kept(tmp_path: Path) -> None:
    _, reports = _run_workers(tmp_path / "with", 2, "--gpus", "GPU-a,GPU-b", "--threads", "1",
                              inherited={DEVICE_VARIABLE: "7"})
    assert sorted(report[DEVICE_VARIABLE] for report in reports.values()) == ["GPU-a", "GPU-b"]
    _, reports = _run_workers(tmp_path / "without", 2, inherited={DEVICE_VARIABLE: "7"})
    assert [report[DEVICE_VARIABLE] for report in reports.values()] == ["7", "7"]


def test_worker_environments() -> None:
    values = worker_environments(4, 2, ["0", "1", "2"], environment={"MKL_NUM_THREADS": "5"})
    assert [value[DEVICE_VARIABLE] for value in values] == ["0", "1", "2", "0"]
    assert values[0] == {DEVICE_VARIABLE: "0", "OMP_NUM_THREADS": "2",
                         "OPENBLAS_NUM_THREADS": "2", "NUMEXPR_NUM_THREADS": "2"}
    assert all(DEVICE_VARIABLE not in value for value in worker_environments(2, 1, None, {}))
    with pytest.raises(TaskConfigError, match="-n"):
        worker_environments(0, 1)
    with pytest.raises(TaskConfigError, match="--threads"):
        worker_environments(1, 0)


def test_parse_gpus() -> None:
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus(" 0, 0 ,1") == ["0", "0", "1"]
    assert parse_gpus([2, "MIG-x"]) == ["2", "MIG-x"]
    for bad in ("", "0,,1", "0, 1 2", []):
        with pytest.raises(TaskConfigError, match="--gpus"):
            parse_gpus(bad)
