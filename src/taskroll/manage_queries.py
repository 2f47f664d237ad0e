"""Reading a task pool: queries, counts, resets and waiting (the base of ``TaskManager``).

:class:`PoolQueries` holds the methods of :class:`~taskroll.manage.TaskManager` that read
and count tasks, reset their status or priority, take back expired leases and wait for a
pool to finish; :mod:`taskroll.manage_pool` adds creation and claiming on top of it.
Import ``TaskManager`` from :mod:`taskroll.manage`; this module is not used on its own.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tqdm.auto import tqdm

from taskroll.config import get_settings
from taskroll.errors import TaskConfigError
from taskroll.manage_checks import check_seconds, check_settled_status
from taskroll.manage_failure import parse_error, retry_fields
from taskroll.status import Status, to_status
from taskroll.store import Condition, TaskStore, open_store, parse_query
from taskroll.store.base import Record
from taskroll.store.codec import decode
from taskroll.store.values import check_priority

logger = logging.getLogger("taskroll.manage")
_TIME_FIELDS = ("created", "started", "finished", "lease_until")


def list_configured_pools() -> builtins.list[str]:
    """Return the task pools of the store configured with :func:`taskroll.init`.

    Raises:
        StoreError: When the store cannot be opened or read.
    """
    settings = get_settings()
    with open_store(settings.resolved_task_url(), settings.task_db_name) as store:
        return store.list_pools()


class _PoolLister:
    """``TaskManager.list``: static as in Qlib, and a method of each manager.

    ``TaskManager.list()`` lists the pools (collections) of the configured store (Qlib's
    ``@staticmethod``); ``manager.list()`` lists those of the manager's own store, which
    may be another one (``TaskManager(pool, store=url)``).
    """

    def __get__(self, manager: PoolQueries | None,
                owner: type | None = None) -> Callable[[], builtins.list[str]]:
        if manager is None:
            return list_configured_pools
        return manager.store.list_pools


class PoolQueries:
    """Queries, counts, resets and waiting over one task pool; the base of ``TaskManager``.

    :class:`~taskroll.manage.TaskManager` sets the attributes below in its constructor;
    its docstring describes the task documents these methods return.

    Attributes:
        store: The store holding the pool.
        task_pool: Name of the pool.
        worker: This manager's name as a lease owner.
        allow_pickle: Whether pickled values may be decoded.
        lease_seconds: Claim length of a fetched task without heartbeat.
        max_attempts: Failed attempts after which a task is ``failed``.
    """

    STATUS_WAITING = Status.WAITING.value
    STATUS_RUNNING = Status.RUNNING.value
    STATUS_PART_DONE = Status.PART_DONE.value
    STATUS_DONE = Status.DONE.value
    STATUS_FAILED = Status.FAILED.value

    store: TaskStore
    task_pool: str
    worker: str
    allow_pickle: bool
    lease_seconds: float
    max_attempts: int
    _last_reap: float

    list = _PoolLister()

    # -- decoding ------------------------------------------------------------------------
    def _decode_task(self, record: Record) -> dict[str, Any]:
        task = dict(record)
        task["def"] = decode(record.get("def_encoding"), record.get("def"), self.allow_pickle)
        task["res"] = decode(record.get("res_encoding"), record.get("res"), self.allow_pickle)
        for name in _TIME_FIELDS:
            if task.get(name) is not None:
                task[name] = dt.datetime.fromtimestamp(float(task[name]), dt.UTC)
        task["error"] = parse_error(record.get("error"))
        for name in ("def_encoding", "res_encoding", "claimed_from"):
            task.pop(name, None)
        return task

    @staticmethod
    def _conditions(query: Mapping[str, Any] | None) -> builtins.list[Condition]:
        """Parse a query; the parser refuses operands no store can hold (beyond 64 bits).

        Raises:
            QueryError: For an unknown field or operator, or an operand no store can hold.
        """
        return parse_query(query)

    @staticmethod
    def _id_of(task: Mapping[str, Any] | str) -> str:
        if isinstance(task, str):
            return task
        if "_id" not in task:
            raise TaskConfigError("the task has no '_id'; pass a task returned by this manager")
        return str(task["_id"])

    # -- leases and resets ---------------------------------------------------------------
    def reap(self) -> int:
        """Return tasks whose lease expired to their previous status (or ``failed``)."""
        self._last_reap = time.monotonic()
        moved = self.store.reap(self.task_pool, self.max_attempts)
        if moved:
            logger.warning("%s: %d task(s) with an expired lease were taken back", self, moved)
        return moved

    def retry_failed(self, query: Mapping[str, Any] | None = None) -> int:
        """Put matching ``failed`` tasks back for another round of attempts.

        Each goes back to ``part_done`` when it failed from there, else to ``waiting``, with
        ``attempts`` reset to 0; its last failure moves into ``error["history"]`` and
        ``error["kind"]`` becomes ``None``.

        Args:
            query: Filter; any ``status`` in it is replaced by ``failed``.

        Returns:
            How many tasks were put back.

        Raises:
            QueryError: For a malformed query (nothing is changed then).
        """
        conditions = [condition for condition in self._conditions(query)
                      if condition.field != "status"]
        conditions += parse_query({"status": self.STATUS_FAILED})
        count = 0
        for record in builtins.list(self.store.find(self.task_pool, conditions)):
            count += self.store.update(self.task_pool, record["_id"], retry_fields(record),
                                       expected_status=self.STATUS_FAILED)
        logger.info("%s: %d failed task(s) put back", self, count)
        return count

    def running_elsewhere(self, query: Mapping[str, Any] | None = None,
                          status: str = STATUS_WAITING) -> int:
        """Count matching tasks fetched from ``status`` that other workers are running.

        Their leases may end (a killed worker) and send them back to ``status``.
        """
        conditions = [condition for condition in self._conditions(query)
                      if condition.field not in ("status", "claimed_from", "worker")]
        conditions += parse_query({"status": self.STATUS_RUNNING,
                                   "claimed_from": to_status(status).value,
                                   "worker": {"$ne": self.worker}})
        return sum(self.store.count_by_status(self.task_pool, conditions).values())

    # -- queries -------------------------------------------------------------------------
    def query(self, query: Mapping[str, Any] | None = None,
              decode: bool = True) -> Iterator[dict[str, Any]]:
        """Yield tasks matching a Mongo-style query (see :mod:`taskroll.store.query`).

        Args:
            query: Filter such as ``{"filter.model.class": "LinearModel"}``.
            decode: Decode ``def``/``res``; with ``False`` the stored records are yielded.
        """
        for record in self.store.find(self.task_pool, self._conditions(query)):
            yield self._decode_task(record) if decode else record

    def re_query(self, _id: str) -> dict[str, Any] | None:
        """Return the current state of one task by id, or ``None``."""
        record = self.store.get(self.task_pool, _id)
        return None if record is None else self._decode_task(record)

    def remove(self, query: Mapping[str, Any] | None = None) -> int:
        """Delete matching tasks (all of the pool for an empty query); return the count."""
        return self.store.delete_many(self.task_pool, self._conditions(query))

    def task_stat(self, query: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Count matching tasks per status (counted in the database)."""
        return self.store.count_by_status(self.task_pool, self._conditions(query))

    def reset_status(self, query: Mapping[str, Any] | None, status: str) -> int:
        """Set the status of every matching task, dropping leases; return the count.

        Raises:
            StatusTransitionError: For ``running`` (only a fetch makes a task running, with
                a lease) or an unknown status; nothing is changed then.
            QueryError: For a malformed query.
        """
        return self.store.update_many(self.task_pool, self._conditions(query),
                                      {"status": check_settled_status(status), "worker": None,
                                       "lease_until": None})

    def reset_waiting(self, query: Mapping[str, Any] | None = None) -> int:
        """Set matching tasks back to ``waiting`` (only ``running`` ones unless ``status`` is given)."""
        query = dict(query or {})
        query.setdefault("status", self.STATUS_RUNNING)
        return self.reset_status(query, self.STATUS_WAITING)

    def prioritize(self, task: Mapping[str, Any] | str, priority: int) -> bool:
        """Set a task's priority (higher is fetched first).

        Raises:
            TaskConfigError: When ``priority`` is not a whole number within 64 bits.
        """
        priority = check_priority(priority)
        return self.store.update(self.task_pool, self._id_of(task), {"priority": priority})

    @staticmethod
    def _get_undone_n(task_stat: Mapping[str, int]) -> int:
        # part_done tasks still have their second half to run (Qlib counts them too)
        return sum(task_stat.get(status.value, 0)
                   for status in (Status.WAITING, Status.RUNNING, Status.PART_DONE))

    @staticmethod
    def _get_total(task_stat: Mapping[str, int]) -> int:
        return sum(task_stat.values())

    def wait(self, query: Mapping[str, Any] | None = None, poll_interval: float = 1.0,
             timeout: float | None = None, progress: bool = True) -> dict[str, int]:
        """Block until no matching task is ``waiting``, ``running`` or ``part_done``.

        As in Qlib, a ``part_done`` task is undone: the delayed trainers leave tasks there
        until their second half has run. To wait for the first half only, filter on the
        status: ``wait({"status": {"$in": ["waiting", "running"]}})``. A progress bar shows
        the matching tasks that are done or failed.

        Expired leases are reaped while waiting, so tasks of crashed workers come back for
        the remaining workers instead of blocking forever.

        Returns:
            The final ``task_stat``.

        Raises:
            TimeoutError: When ``timeout`` seconds pass first.
            TaskConfigError: When ``poll_interval`` is not finite and > 0, or ``timeout`` is
                not ``None`` or finite and >= 0.
        """
        poll_interval = check_seconds(poll_interval, "poll_interval")
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout", zero=True)
        self._conditions(query)  # a bad query fails before anything waits
        deadline = None if timeout is None else time.monotonic() + timeout
        self.reap()
        stat = self.task_stat(query)
        undone = self._get_undone_n(stat)
        if undone == 0:
            return stat
        logger.warning("Waiting for %d undone tasks. Please make sure they are running.", undone)
        total = self._get_total(stat)
        with tqdm(total=total, initial=total - undone, disable=not progress,
                  desc=f"wait {self.task_pool}") as bar:
            while undone:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{self}: {undone} task(s) still undone after {timeout} s")
                time.sleep(poll_interval)
                self.reap()
                stat = self.task_stat(query)
                now_undone = self._get_undone_n(stat)
                bar.update(undone - now_undone)
                undone = now_undone
        return stat
