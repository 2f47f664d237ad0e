"""The worker loop: :func:`run_task` (import it from :mod:`taskroll.manage`).

Drain rule: a worker takes tasks until none is waiting, then keeps polling while a
matching task that was fetched from the same status is running under another worker's
lease, because that worker may have been killed and its task comes back when the lease
ends. It exits once nothing matching is waiting or running (``once=True``: as soon as
nothing is waiting).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from taskroll.errors import StoreError, TaskConfigError
from taskroll.manage_checks import check_seconds, check_settled_status
from taskroll.manage_failure import STORE_ERROR, TASK_RAISED, Backoff, describe
from taskroll.manage_pool import TaskManager
from taskroll.status import to_status
from taskroll.store.base import check_claim_count

logger = logging.getLogger("taskroll.manage")


class _Heartbeat:
    """Renews, from one background thread, the leases of the claimed tasks not yet finished."""

    def __init__(self, manager: TaskManager, tasks: Sequence[Mapping[str, Any]]) -> None:
        self._manager = manager
        self._pending = {str(task["_id"]): task for task in tasks}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskroll-heartbeat", daemon=True)

    def finished(self, task: Mapping[str, Any]) -> None:
        """Stop renewing ``task``'s lease (it was committed, failed or given back)."""
        with self._guard:
            self._pending.pop(str(task["_id"]), None)

    def _run(self) -> None:
        interval = self._manager.lease_seconds / 3
        while not self._stop.wait(interval):
            with self._guard:
                pending = list(self._pending.values())
            for task in pending:
                try:
                    if not self._manager.heartbeat(task):
                        self.finished(task)
                        logger.warning("%s: lease on task %s was lost", self._manager,
                                       task["_id"])
                except Exception as error:  # a heartbeat must never kill the worker
                    logger.warning("%s: heartbeat failed: %s", self._manager, describe(error))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _call_in_fresh_process(task_func: Any, param: Any, kwargs: Mapping[str, Any]) -> Any:
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        return executor.submit(task_func, param, **kwargs).result()


def _record_failure(manager: TaskManager, task: Mapping[str, Any], error: BaseException,
                    before: str, kind: str, backoff: Backoff) -> None:
    """Record a failure, retrying store errors; a store that stays down raises."""
    status = backoff.call(lambda: manager.fail_task(task, error, status=before, kind=kind),
                          f"recording the failure of task {task['_id']}")
    logger.warning("%s: task %s failed (%s, attempt %s), now %s: %s", manager, task["_id"],
                   kind, task.get("attempts"), status, describe(error))


def _run_one(task_func: Callable[..., Any], manager: TaskManager, task: Mapping[str, Any],
             before: str, after: str, force_release: bool, backoff: Backoff,
             kwargs: Mapping[str, Any]) -> StoreError | None:
    """Run one fetched task (its lease renewed by the caller) and record its outcome.

    Returns:
        The store error that outlasted the backoff while committing (the task was given
        back uncounted), or ``None``.
    """
    logger.info("%s: running task %s", manager, task["_id"])
    param = task["def"] if before == TaskManager.STATUS_WAITING else task["res"]
    try:
        if force_release:
            result = _call_in_fresh_process(task_func, param, kwargs)
        else:
            result = task_func(param, **kwargs)
    except Exception as error:
        _record_failure(manager, task, error, before, TASK_RAISED, backoff)
        return None
    try:
        backoff.call(lambda: manager.commit_task_res(task, result, status=after),
                     f"committing task {task['_id']}")
    except StoreError as error:  # the database failed, not the task: the attempt is not counted
        _record_failure(manager, task, error, before, STORE_ERROR, backoff)
        return error
    except Exception as error:  # a result that cannot be stored is this task's failure
        _record_failure(manager, task, error, before, TASK_RAISED, backoff)
    return None


def _claim(manager: TaskManager, query: Mapping[str, Any] | None, before: str,
           claim_batch: int) -> list[dict[str, Any]]:
    if claim_batch == 1:  # the single claim every store serves in one command
        task = manager.fetch_task(query=query, status=before)
        return [] if task is None else [task]
    return manager.fetch_task(query=query, status=before, n=claim_batch)


def _run_batch(task_func: Callable[..., Any], manager: TaskManager,
               tasks: list[dict[str, Any]], before: str, after: str, force_release: bool,
               backoff: Backoff, kwargs: Mapping[str, Any]) -> None:
    """Run claimed tasks one after another, renewing the leases of those not yet done.

    Raises:
        StoreError: When a commit outlasted the backoff (the rest are given back first).
        BaseException: Whatever stopped the loop; the unfinished tasks are given back.
    """
    unfinished = list(tasks)
    started = False  # whether unfinished[0] has started
    with _Heartbeat(manager, tasks) as heartbeat:
        try:
            while unfinished:
                task = unfinished[0]
                if task is not tasks[0] and not _still_ours(manager, task, backoff):
                    heartbeat.finished(unfinished.pop(0))
                    continue
                started = True
                store_error = _run_one(task_func, manager, task, before, after, force_release,
                                       backoff, kwargs)
                heartbeat.finished(unfinished.pop(0))
                started = False
                if store_error is not None:  # the store is down: stop rather than spin on it
                    raise store_error
        except (Exception, KeyboardInterrupt):
            for index, task in enumerate(unfinished):
                # best effort: a task not given back returns at lease end; one never
                # started goes back without its fetch counted as an attempt
                logger.info("Returning task %s before raising error", task["_id"])
                with contextlib.suppress(Exception):
                    manager.return_task(task, status=before, started=started and index == 0)
            raise


def _still_ours(manager: TaskManager, task: Mapping[str, Any], backoff: Backoff) -> bool:
    """Renew the lease of a queued task of a batch just before it starts; ``False`` if lost.

    While the worker ran the tasks before it, the lease may have run out (the process
    was paused past it) and another worker taken the task, or someone reset or removed
    it: it must not run a second time.
    """
    if backoff.call(lambda: manager.heartbeat(task), f"renewing the lease of task {task['_id']}"):
        return True
    logger.warning("%s: lease on queued task %s was lost before it started; skipped", manager,
                   task["_id"])
    return False


def run_task(task_func: Callable[..., Any], task_pool: str | TaskManager,
             query: Mapping[str, Any] | None = None, force_release: bool = False,
             before_status: str = TaskManager.STATUS_WAITING,
             after_status: str = TaskManager.STATUS_DONE, *, once: bool = False,
             backoff: Backoff | None = None, poll_interval: float | None = None,
             claim_batch: int = 1, **kwargs: Any) -> bool:
    """Worker loop: fetch tasks in ``before_status`` and run ``task_func`` on each.

    ``task_func`` receives ``task["def"]`` for tasks coming from ``waiting`` and
    ``task["res"]`` for tasks coming from ``part_done`` (plus ``**kwargs``); its return
    value is committed with ``after_status``. While it runs, a heartbeat renews the
    lease. An exception in ``task_func`` (or a result that cannot be stored) is recorded
    in the task's ``error`` with kind ``"task raised"`` and the task goes back to
    ``before_status`` for another attempt, or to ``failed`` after ``max_attempts``. A
    task whose definition cannot be decoded is ``failed`` at once (kind ``"undecodable"``).
    The loop goes on with the next task. A store error (fetching, committing, recording a
    failure) is retried with ``backoff``; when committing still fails, the task goes back
    with kind ``"store error"``, the attempt not counted, and the loop stops with the
    :class:`~taskroll.errors.StoreError` (a worker cannot work without its store). A
    KeyboardInterrupt gives the task back (with ``claim_batch``, every claimed task not
    yet finished) and stops the loop.

    When nothing is waiting, the loop keeps polling (every ``poll_interval`` seconds)
    while a matching task fetched from ``before_status`` runs under another worker's
    lease, so the task of a killed worker is finished once its lease ends; it returns
    when nothing matching is waiting or running.

    Args:
        task_func: Callable run on each task (module-level when ``force_release``).
        task_pool: Pool name (store from settings) or a :class:`TaskManager`.
        query: Mongo-style filter restricting which tasks this worker takes.
        force_release: Run each task in a fresh process so its memory is given back.
        before_status: ``waiting`` or ``part_done``.
        after_status: Status committed with the result.
        once: Return as soon as nothing is waiting, without waiting for running tasks.
        backoff: Retry policy for store errors (default :class:`Backoff`: 0.1 s doubling
            up to 5 s, 8 tries).
        poll_interval: Seconds between polls while draining (default: a quarter of the
            lease, at most 1 s).
        claim_batch: Tasks claimed at once (:meth:`TaskManager.fetch_task` with ``n``), run one
            after another, each committed as it finishes; the leases of those not yet run
            are renewed meanwhile, and if the worker dies they expire and the tasks come
            back. Each queued task's lease is renewed just before it starts; one whose
            lease was lost meanwhile (the worker was paused past it, someone reset the
            task) is skipped, not run a second time. Queued tasks given back after an
            interrupt or a store error keep their attempt uncounted. Choose 8-32 for
            short tasks (milliseconds), where claiming is a large share of the work;
            keep 1 (the default) for long tasks such as training, so that a claimed task
            never waits behind another while a worker is idle.
        **kwargs: Passed to ``task_func`` as they are (e.g. a ``batch=`` keyword reaches
            the task function); only the keyword-only names above belong to the loop.

    Returns:
        Whether any task was run.

    Raises:
        TaskConfigError: When ``before_status`` is neither ``waiting`` nor ``part_done``,
            ``poll_interval`` is not a finite number > 0, or ``claim_batch`` not a whole
            number >= 1.
        StatusTransitionError: When ``after_status`` is ``running`` or no status.
        StoreError: When the store stays down through every retry.
    """
    before = to_status(before_status).value
    if before not in (TaskManager.STATUS_WAITING, TaskManager.STATUS_PART_DONE):
        raise TaskConfigError("The fetched task must be `waiting` or `part_done`!")
    after = check_settled_status(after_status)
    if poll_interval is not None:
        poll_interval = check_seconds(poll_interval, "poll_interval")
    claim_batch = check_claim_count(claim_batch)
    backoff = backoff or Backoff()
    manager = task_pool if isinstance(task_pool, TaskManager) else TaskManager(task_pool)
    poll = poll_interval or max(0.05, min(1.0, manager.lease_seconds / 4))
    ever_run = False
    try:
        while True:
            tasks = backoff.call(lambda: _claim(manager, query, before, claim_batch),
                                 "fetching tasks")
            if not tasks:
                if once or not backoff.call(lambda: manager.running_elsewhere(query, before),
                                            "counting running tasks"):
                    break
                time.sleep(poll)
                continue
            _run_batch(task_func, manager, tasks, before, after, force_release, backoff, kwargs)
            ever_run = True
    finally:
        if manager is not task_pool:
            manager.close()
    return ever_run
