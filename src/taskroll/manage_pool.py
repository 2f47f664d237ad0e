"""TaskManager: a named task pool in a database, with Qlib's method names.

Import it as ``from taskroll.manage import TaskManager`` (this module sits below
:mod:`taskroll.manage`, which also holds the worker loop and the command line). Creating,
claiming, committing and failing tasks are here; queries, counts, resets and ``wait``
come from its base class :class:`~taskroll.manage_queries.PoolQueries`, and
:func:`list_configured_pools` is re-exported from there.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, overload

from taskroll.config import check_lease_seconds, check_max_attempts, get_settings
from taskroll.errors import TaskConfigError
from taskroll.manage_checks import check_settled_status
from taskroll.manage_failure import (
    STORE_ERROR,
    TASK_RAISED,
    UNDECODABLE,
    describe,
    failure_fields,
)
from taskroll.manage_queries import PoolQueries, list_configured_pools
from taskroll.status import Status
from taskroll.store import NOW, TaskStore, open_store
from taskroll.store.base import Record, check_claim_count
from taskroll.store.codec import decode, encode
from taskroll.store.values import check_claim, check_priority
from taskroll.task.spec import normalise, task_id

__all__ = ["TaskManager", "list_configured_pools"]

logger = logging.getLogger("taskroll.manage")


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class TaskManager(PoolQueries):
    """Manage one task pool: create, fetch, commit, query, reset and wait for tasks.

    Args:
        task_pool: Name of the pool (a table partition / collection).
        store: A :class:`TaskStore`, a store URL, or ``None`` for the URL in
            :func:`taskroll.config.get_settings` (``sqlite:///taskroll.db`` by default).
        allow_pickle: Store values JSON cannot hold with pickle, and unpickle such values
            when reading. Leave ``False`` for pools other people can write to.
        lease_seconds: Claim length of a fetched task without heartbeat (settings default).
        max_attempts: Failed attempts after which a task is ``failed`` (settings default).

    Raises:
        TaskConfigError: For an empty pool name, or a ``lease_seconds`` / ``max_attempts``
            (argument, :func:`taskroll.init` or environment) that is not a finite number > 0
            / a whole number >= 1.

    A task document, as returned by :meth:`fetch_task` and :meth:`query`::

        {"_id": str, "def": <task definition>, "filter": <canonical JSON of def>,
         "status": "waiting" | "running" | "part_done" | "done" | "failed",
         "priority": int, "res": <result or None>,
         "created" / "started" / "finished" / "lease_until": datetime (UTC) or None,
         "worker": str | None, "attempts": int, "error": dict | None}

    ``error`` is the last failure and the ones before it::

        {"kind": "task raised" | "worker lost" | "store error" | "undecodable" | None,
         "message": "ValueError: index 3 is broken", "traceback": str | None,
         "attempt": int | None, "history": [{"kind", "message", "traceback", "attempt"}, ...]}

    ``attempts`` counts fetches, less those given back after a ``store error`` and those
    given back unstarted (``return_task(..., started=False)``: the queued tasks of an
    interrupted batch); ``task raised`` and ``worker lost`` count against
    ``max_attempts``, an ``undecodable`` task is ``failed`` at once, and ``kind`` is
    ``None`` after :meth:`retry_failed`. The kinds and the stored form are described in
    :mod:`taskroll.manage_failure`.

    Queries, counts, resets, :meth:`reap`, :meth:`retry_failed` and :meth:`wait` are
    inherited from :class:`~taskroll.manage_queries.PoolQueries`.
    """

    ENCODE_FIELDS_PREFIX = ["def", "res"]

    def __init__(self, task_pool: str, store: TaskStore | str | None = None, *,
                 allow_pickle: bool = False, lease_seconds: float | None = None,
                 max_attempts: int | None = None) -> None:
        if not isinstance(task_pool, str) or not task_pool:
            raise TaskConfigError(f"task_pool must be a non-empty string, got {task_pool!r}")
        settings = get_settings()
        self.lease_seconds = (settings.checked_lease_seconds() if lease_seconds is None
                              else check_lease_seconds(lease_seconds))
        self.max_attempts = (settings.checked_max_attempts() if max_attempts is None
                             else check_max_attempts(max_attempts))
        self.task_pool = task_pool
        self._owns_store = not isinstance(store, TaskStore)
        if isinstance(store, TaskStore):
            self.store = store
        else:
            self.store = open_store(store or settings.resolved_task_url(), settings.task_db_name)
        self.allow_pickle = allow_pickle
        self.worker = _worker_name()
        self._last_reap = 0.0

    def __str__(self) -> str:
        return f"TaskManager({self.task_pool})"

    __repr__ = __str__

    def close(self) -> None:
        """Close the store if this manager opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- encoding ------------------------------------------------------------------------
    def _encode_new(self, task_def: Any, status: str = Status.WAITING.value,
                    priority: int = 0) -> dict[str, Any]:
        if not isinstance(task_def, Mapping):
            raise TaskConfigError(f"a task definition must be a dict, got {type(task_def).__name__}")
        encoding, payload = encode(task_def, self.allow_pickle)
        return {"_id": task_id(task_def), "def": payload, "def_encoding": encoding,
                "filter": normalise(task_def), "status": check_settled_status(status),
                "priority": check_priority(priority)}

    # -- creation ------------------------------------------------------------------------
    def insert_task(self, task: Mapping[str, Any]) -> str:
        """Insert one task document (``def`` required; ``status``/``priority`` optional).

        Returns:
            The task id (the existing one when the same definition is already in the pool).
        """
        record = self._encode_new(task["def"], task.get("status", self.STATUS_WAITING),
                                  task.get("priority", 0))
        self.store.insert_many(self.task_pool, [record])
        return str(record["_id"])

    def insert_task_def(self, task_def: Mapping[str, Any]) -> str:
        """Insert one task definition as ``waiting``; return its id."""
        return self.insert_task({"def": task_def})

    def create_task(self, task_def_l: Iterable[Mapping[str, Any]], dry_run: bool = False,
                    print_nt: bool = False) -> builtins.list[str]:
        """Insert the definitions not yet in the pool; idempotent and race-safe.

        Args:
            task_def_l: Task definitions.
            dry_run: Only report what is new; insert nothing.
            print_nt: Print the new definitions.

        Returns:
            One id per definition, in order (existing tasks give their id); ``[]`` on dry run,
            as in Qlib.
        """
        records = [self._encode_new(task_def) for task_def in task_def_l]
        if dry_run:
            ids = [str(record["_id"]) for record in records]
            existing = {
                record["_id"] for record in self.store.find(
                    self.task_pool, self._conditions({"_id": {"$in": ids}}))
            }
            new = [record for record in records if record["_id"] not in existing]
        else:
            inserted = set(self.store.insert_many(self.task_pool, records))
            new = [record for record in records if record["_id"] in inserted]
        logger.info("Total Tasks: %d, New Tasks: %d", len(records), len(new))
        if print_nt:
            for record in new:
                print(decode(record["def_encoding"], record["def"], self.allow_pickle))
        return [] if dry_run else [str(record["_id"]) for record in records]

    def replace_task(self, task: Mapping[str, Any] | str, new_task: Mapping[str, Any]) -> bool:
        """Replace a task's definition (and status/priority/res if given), keeping its id.

        Raises:
            StatusTransitionError: For a ``status`` of ``running`` (only a fetch makes a
                task running, with a lease) or an unknown one; nothing is changed then.
        """
        fields: dict[str, Any] = {}
        if "def" in new_task:
            encoded = self._encode_new(new_task["def"])
            fields.update({"def": encoded["def"], "def_encoding": encoded["def_encoding"],
                           "filter": encoded["filter"]})
        if "status" in new_task:
            fields["status"] = check_settled_status(new_task["status"])
        if "priority" in new_task:
            fields["priority"] = check_priority(new_task["priority"])
        if "res" in new_task:
            fields["res_encoding"], fields["res"] = encode(new_task["res"], self.allow_pickle)
        return self.store.update(self.task_pool, self._id_of(task), fields)

    # -- claiming ------------------------------------------------------------------------
    def _reap_now_and_then(self) -> None:
        if time.monotonic() - self._last_reap >= min(1.0, self.lease_seconds / 4):
            self.reap()

    @overload
    def fetch_task(self, query: Mapping[str, Any] | None = None,
                   status: str = Status.WAITING.value, n: None = None) -> dict[str, Any] | None: ...

    @overload
    def fetch_task(self, query: Mapping[str, Any] | None = None,
                   status: str = Status.WAITING.value, *, n: int) -> builtins.list[dict[str, Any]]: ...

    def fetch_task(self, query: Mapping[str, Any] | None = None, status: str = Status.WAITING.value,
                   n: int | None = None
                   ) -> dict[str, Any] | builtins.list[dict[str, Any]] | None:
        """Atomically claim one task in ``status`` (highest priority, then oldest), or ``n``.

        The task becomes ``running`` with a lease owned by this manager; renew it with
        :meth:`heartbeat` for work longer than ``lease_seconds``. A claimed task whose
        definition (or, from ``part_done``, result) cannot be decoded is a poison task: it
        goes to ``failed`` at once with kind ``undecodable`` and the next task is claimed.

        With ``n``, up to ``n`` tasks are claimed at once (one statement on SQLite) and a
        list is returned, best first, empty when none matches. Each has its own lease:
        commit each as it finishes and keep heartbeating the ones not yet done (a worker
        that dies leaves them to expire and come back). Choose ``n`` > 1 for short tasks
        (milliseconds: claiming is then a large share of the work; e.g. 8-32) and leave it
        unset for long ones (training), so idle workers can take the tasks one waits on.

        Returns:
            The decoded task, or ``None`` when no task matches; with ``n``, a list.

        Raises:
            QueryError: For a malformed query.
            StatusTransitionError: For ``running`` (a running task belongs to its worker
                until its lease ends) or an unknown status.
            TaskConfigError: When ``n`` is not a whole number >= 1.
            StoreError: When the store fails.
        """
        conditions = [condition for condition in self._conditions(query)
                      if condition.field != "status"]
        status = check_claim(status, self.worker, self.lease_seconds)[0]
        count = None if n is None else check_claim_count(n)
        self._reap_now_and_then()
        while True:
            if count is None:
                record = self.store.fetch(self.task_pool, conditions, status, self.worker,
                                          self.lease_seconds)
                records = [] if record is None else [record]
            else:
                records = self.store.fetch_many(self.task_pool, conditions, status,
                                                self.worker, self.lease_seconds, count)
            if not records:
                return None if count is None else []
            tasks = []
            for record in records:
                try:
                    tasks.append(self._decode_task(record))
                except Exception as error:  # any decode failure makes the task poison
                    self._fail_undecodable(record, error)
            if tasks:
                return tasks[0] if count is None else tasks

    def _fail_undecodable(self, record: Record, error: Exception) -> None:
        fields = failure_fields(f"cannot decode the stored task: {describe(error)}", UNDECODABLE,
                                int(record.get("attempts") or 0), self.max_attempts,
                                self.STATUS_FAILED, previous=record.get("error"), cause=error)
        logger.warning("%s: task %s cannot be decoded, failed at once: %s", self,
                       record["_id"], describe(error))
        self.store.update(self.task_pool, record["_id"], {**fields, "lease_until": None},
                          expected_status=self.STATUS_RUNNING, expected_worker=self.worker)

    @contextlib.contextmanager
    def safe_fetch_task(self, query: Mapping[str, Any] | None = None,
                        status: str = Status.WAITING.value) -> Iterator[dict[str, Any] | None]:
        """Fetch a task; on any exception (KeyboardInterrupt too) give it back to ``status``."""
        task = self.fetch_task(query=query, status=status)
        try:
            yield task
        except (Exception, KeyboardInterrupt):
            if task is not None:
                logger.info("Returning task %s before raising error", task["_id"])
                self.return_task(task, status=status)
            raise

    def task_fetcher_iter(self, query: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield fetched waiting tasks until none is left (each under ``safe_fetch_task``)."""
        while True:
            with self.safe_fetch_task(query) as task:
                if task is None:
                    break
                yield task

    def heartbeat(self, task: Mapping[str, Any] | str) -> bool:
        """Renew this manager's lease on a running task; ``False`` when the lease was lost."""
        return self.store.heartbeat(self.task_pool, self._id_of(task), self.worker,
                                    self.lease_seconds)

    def _release(self, task: Mapping[str, Any] | str, fields: dict[str, Any]) -> bool:
        guard = (
            self.worker
            if isinstance(task, Mapping) and task.get("worker") == self.worker else None
        )
        fields = {"lease_until": None, **fields}
        done = self.store.update(self.task_pool, self._id_of(task), fields,
                                 expected_status=self.STATUS_RUNNING if guard else None,
                                 expected_worker=guard)
        if not done:
            logger.warning("%s: task %s was not updated: its lease was lost or it is gone",
                           self, self._id_of(task))
        return done

    def commit_task_res(self, task: Mapping[str, Any] | str, res: Any,
                        status: str = Status.DONE.value) -> bool:
        """Store a result and set the status (``done`` by default).

        A task fetched by this manager is only updated while this manager still owns its
        lease, so a worker that lost its lease cannot overwrite the new owner's work.

        Returns:
            Whether the task was updated.

        Raises:
            StatusTransitionError: For ``running`` or an unknown status.
        """
        encoding, payload = encode(res, self.allow_pickle)
        return self._release(task, {"res": payload, "res_encoding": encoding,
                                    "status": check_settled_status(status), "finished": NOW,
                                    "error": None})

    def return_task(self, task: Mapping[str, Any] | str, status: str = Status.WAITING.value,
                    *, started: bool = True) -> bool:
        """Put a task back into ``status`` (``waiting`` by default) and drop its lease.

        Args:
            task: The task as fetched, or its id.
            status: Where the task goes (any status but ``running``).
            started: ``False`` for a task fetched but never started (a queued task of a
                batch): its fetch is then not counted as an attempt (``attempts`` goes back
                down by one; needs the task as fetched).

        Returns:
            Whether the task was updated (``False`` when this manager lost its lease).

        Raises:
            StatusTransitionError: For ``running`` or an unknown status.
        """
        fields: dict[str, Any] = {"status": check_settled_status(status), "worker": None}
        if not started and isinstance(task, Mapping):
            fields["attempts"] = max(int(task.get("attempts") or 0) - 1, 0)
        return self._release(task, fields)

    def fail_task(self, task: Mapping[str, Any], error: str | BaseException,
                  status: str = Status.WAITING.value, kind: str = TASK_RAISED) -> str:
        """Record a failure; retry (back to ``status``) or mark ``failed`` after max_attempts.

        Args:
            task: The task as fetched (its ``attempts`` and ``error`` are read).
            error: The exception, or a text (a traceback's last line is its message).
            status: Where the task goes for another attempt.
            kind: ``"task raised"`` (counts against ``max_attempts``) or ``"store error"``
                (the attempt is not counted: the task goes back with ``attempts`` lowered).

        Returns:
            The status the task now has.

        Raises:
            TaskConfigError: For another kind.
        """
        if kind not in (TASK_RAISED, STORE_ERROR):
            raise TaskConfigError(f"fail_task records 'task raised' or 'store error', not {kind!r}")
        fields = failure_fields(error, kind, int(task.get("attempts") or 0), self.max_attempts,
                                check_settled_status(status), previous=task.get("error"))
        self._release(task, fields)
        return str(fields["status"])
