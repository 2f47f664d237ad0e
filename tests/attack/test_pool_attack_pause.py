"""A worker process paused (SIGSTOP) past its leases, on a real SQLite file.

The worker claims a batch of three and is frozen while it runs the first. The leases run
out; another worker reaps them and runs two of the queued tasks. When the frozen worker
resumes, it must not run those two again (their leases are gone), nor overwrite their
results; the task it was running when frozen went back to waiting and is run again, as
a lost lease promises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taskroll.manage import TaskManager

_WORKER = """
import sys
from taskroll.manage import TaskManager, run_task
from taskroll.testing import interruptible_task
with TaskManager("pool", store=sys.argv[1], lease_seconds=1.0) as manager:
    run_task(interruptible_task, manager, claim_batch=3, marker_dir=sys.argv[2])
"""


def _executions(markers: Path, name: str) -> list[int]:
    path = markers / name
    return sorted(int(line) for line in path.read_text(encoding="utf-8").split()) \
        if path.exists() else []


def test_a_paused_worker_does_not_rerun_the_queued_tasks_taken_over(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with TaskManager("pool", store=url, lease_seconds=30) as other:
        other.create_task([{"index": 0, "sleep": 2.0}, {"index": 1, "sleep": 0},
                           {"index": 2, "sleep": 0}])
        worker = subprocess.Popen([sys.executable, "-c", _WORKER, url, str(markers)])
        try:
            deadline = time.monotonic() + 60
            while not (markers / "started-0").exists():
                assert time.monotonic() < deadline, "the worker never started its batch"
                time.sleep(0.02)
            os.kill(worker.pid, signal.SIGSTOP)
            assert other.task_stat() == {"running": 3}  # one claim took the whole batch
            time.sleep(1.5)  # every lease of the frozen worker runs out
            assert other.reap() == 3
            taken = other.fetch_task({"filter.index": {"$in": [1, 2]}}, n=2)
            assert [task["def"]["index"] for task in taken] == [1, 2]
            for task in taken:
                assert other.commit_task_res(task, "taken over")
            os.kill(worker.pid, signal.SIGCONT)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                worker.kill()
                worker.wait()
        # task 0 ran twice: its lease was lost while frozen, so it went back and ran again
        executed = _executions(markers, f"{worker.pid}.log")
        assert executed == [0, 0], "the resumed worker ran a task another worker had taken"
        tasks = {task["def"]["index"]: task for task in other.query()}
        assert {index: (task["status"], task["res"], task["attempts"])
                for index, task in tasks.items()} == {
            0: ("done", {"index": 0}, 2), 1: ("done", "taken over", 2),
            2: ("done", "taken over", 2)}
