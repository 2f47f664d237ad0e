"""Whole-system checks shared by every backend's concurrency and fault tests.

Worker processes (``multiprocessing`` spawn) run :func:`~taskroll.manage.run_task` with
marker task functions that leave one line per execution, so a test can count how often
each task ran: :func:`check_workers_exactly_once`, :func:`check_concurrent_create`,
:func:`run_worker_process`. Re-exported by :mod:`taskroll.testing`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

from taskroll.store import open_store

spawn_context = multiprocessing.get_context("spawn")
"""The process context of every helper process (spawn: no inherited connections)."""


def fresh_pool() -> str:
    """A new, unique pool name."""
    return f"contract_{uuid.uuid4().hex[:12]}"


def gather_processes(target: Any, arguments_list: list[tuple[Any, ...]]) -> list[Any]:
    """Run one process per argument tuple; return what each put on the queue."""
    import queue as queue_module

    queue = spawn_context.Queue()
    processes = [spawn_context.Process(target=target, args=(*arguments, queue))
                 for arguments in arguments_list]
    for process in processes:
        process.start()
    results: list[Any] = []
    deadline = time.monotonic() + 600
    while len(results) < len(processes):
        try:
            results.append(queue.get(timeout=0.5))
        except queue_module.Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not crashed, f"helper process exited with {crashed}"
            assert time.monotonic() < deadline, "helper processes did not finish in 600 s"
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0, f"helper process exited with {process.exitcode}"
    return results


# -- whole-system checks shared by every backend's tests -----------------------------------
def _marker_task(task_def: dict[str, Any], marker_dir: str) -> dict[str, Any]:
    """A task function for the exactly-once checks: leaves one marker line per execution."""
    with open(Path(marker_dir) / f"{os.getpid()}.log", "a", encoding="utf-8") as handle:
        handle.write(f"{task_def['index']}\n")
    return {"index": task_def["index"]}


def interruptible_task(task_def: dict[str, Any], marker_dir: str) -> dict[str, Any]:
    """A task function for crash tests: its first execution announces itself and hangs.

    The first run of each ``index`` creates ``started-<index>`` in ``marker_dir`` and
    sleeps for ``task_def["sleep"]`` seconds (long enough to be killed); later runs
    return at once. Every run is logged like :func:`_marker_task`.
    """
    started = Path(marker_dir) / f"started-{task_def['index']}"
    first = not started.exists()
    started.touch()
    if first:
        time.sleep(float(task_def.get("sleep", 600)))
    return _marker_task(task_def, marker_dir)


def run_worker_process(url: str, pool: str, marker_dir: str, lease_seconds: float,
                       crashable: bool = False, db_name: str | None = None) -> None:
    """Process target: one ``run_task`` loop over ``pool`` with the marker task functions."""
    from taskroll.manage import TaskManager, run_task

    task_func = interruptible_task if crashable else _marker_task
    with TaskManager(pool, store=open_store(url, db_name), lease_seconds=lease_seconds) as manager:
        run_task(task_func, manager, marker_dir=marker_dir)
        manager.store.close()


def _run_worker(url: str, pool: str, marker_dir: str, db_name: str | None) -> None:
    from taskroll.manage import TaskManager, run_task

    with TaskManager(pool, store=open_store(url, db_name)) as manager:
        run_task(_marker_task, manager, marker_dir=marker_dir)
        manager.store.close()


def check_workers_exactly_once(url: str, workers: int, tasks: int, marker_dir: Path,
                               db_name: str | None = None) -> None:
    """Run ``workers`` processes of ``run_task`` over ``tasks`` tasks; assert each ran once.

    Raises:
        AssertionError: When a task ran twice, never, or is not ``done``.
    """
    from taskroll.manage import TaskManager

    pool = fresh_pool()
    marker_dir.mkdir(parents=True, exist_ok=True)
    with TaskManager(pool, store=open_store(url, db_name)) as manager:
        manager.create_task([{"index": index} for index in range(tasks)])
        processes = [spawn_context.Process(target=_run_worker, args=(url, pool, str(marker_dir), db_name))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=1200)
            assert process.exitcode == 0, f"worker exited with {process.exitcode}"
        runs = [int(line) for path in marker_dir.glob("*.log")
                for line in path.read_text(encoding="utf-8").split()]
        assert len(runs) == tasks, f"{len(runs)} executions for {tasks} tasks"
        assert sorted(runs) == list(range(tasks))
        assert manager.task_stat() == {"done": tasks}
        assert sorted(task["res"]["index"] for task in manager.query()) == list(range(tasks))
        manager.store.drop_pool(pool)
        manager.store.close()


def _create_worker(url: str, pool: str, count: int, db_name: str | None, queue: Any) -> None:
    from taskroll.manage import TaskManager

    with TaskManager(pool, store=open_store(url, db_name)) as manager:
        before = manager.task_stat().get("waiting", 0)
        ids = manager.create_task([{"index": index} for index in range(count)])
        queue.put((before, ids))
        manager.store.close()


def check_concurrent_create(url: str, tasks: int, db_name: str | None = None) -> None:
    """Two processes call ``create_task`` on the same definitions at once; each is stored once."""
    from taskroll.manage import TaskManager

    pool = fresh_pool()
    results = gather_processes(_create_worker, [(url, pool, tasks, db_name)] * 2)
    assert results[0][1] == results[1][1], "both creators must get the same ids"
    with TaskManager(pool, store=open_store(url, db_name)) as manager:
        assert manager.task_stat() == {"waiting": tasks}
        assert len({task["_id"] for task in manager.query()}) == tasks
        manager.store.drop_pool(pool)
        manager.store.close()


def make_record(number: int, **filter_extra: Any) -> dict[str, Any]:
    """Return a plain record for tests: id ``task-<number>``, a small JSON definition."""
    filter_value = {"number": number, "parity": "odd" if number % 2 else "even",
                    "model": {"class": "Linear" if number % 3 else "GBDT"},
                    "window": [number, number + 1], **filter_extra}
    return {"_id": f"task-{number:06d}", "def": f'{{"number": {number}}}',
            "def_encoding": "json", "filter": filter_value}
