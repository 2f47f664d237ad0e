"""The TaskStore contract every backend implements.

A store keeps named task pools of plain records. It never sees Python task
objects: definitions and results arrive already encoded by
:mod:`taskroll.store.codec`. One store object owns one client/connection
factory and is closed with :meth:`TaskStore.close` (or ``with``).

A record is a dict with these keys (times are float UNIX seconds taken from
the **database clock**; absent values are ``None``):

``_id`` (str)            SHA-256 of the task's canonical JSON; unique in a pool.
``def`` / ``def_encoding``   encoded definition (``str`` for json, ``bytes`` for pickle).
``filter`` (dict)        canonical JSON copy of the definition, queried by ``filter.*``.
``status`` (str)         ``waiting | running | part_done | done | failed``.
``priority`` (int)       higher is fetched first; default 0.
``res`` / ``res_encoding``   encoded result or ``None``.
``created`` ``started`` ``finished`` (float)   life-cycle stamps.
``worker`` (str)         owner of the current claim.
``lease_until`` (float)  claim expiry; renewed by :meth:`heartbeat`.
``attempts`` (int)       number of fetches so far.
``error`` (str)          last failure's traceback text.
``claimed_from`` (str)   status the task had when fetched (where an expired lease returns it).

Invariants every implementation must keep (checked by :mod:`taskroll.testing`):

1. :meth:`insert_many` inserts each id at most once per pool, also under concurrent
   callers in several processes, and returns only the ids it inserted.
2. :meth:`fetch` is one atomic conditional update: two concurrent fetches never
   return the same task (nor do two :meth:`fetch_many`, which claims in this order).
   Order: highest ``priority`` first, then oldest ``created``
   (insertion order within one call).
3. A fetch sets ``status=running``, ``worker``, ``started=now``,
   ``lease_until=now+lease_seconds``, ``attempts+=1``, ``claimed_from=<old status>``.
4. :meth:`reap` moves every ``running`` task whose ``lease_until < now`` back to its
   ``claimed_from`` status, or to ``failed`` (with an ``error`` text) when
   ``attempts >= max_attempts``, and returns how many it moved.
5. Writes guarded by ``expected_worker`` / ``expected_status`` change nothing and
   return ``False`` when the guard does not hold.
6. Queries use :func:`taskroll.store.query.parse_query` semantics in every backend.
7. Unknown pools read as empty; :meth:`list_pools` lists pools that hold or held
   tasks and were not dropped.
8. :meth:`find_page` returns what sorting every match (missing values lowest, then
   insertion order) and slicing ``[skip:skip + limit]`` would return.
9. A write that raises changes nothing and leaves no transaction or lock behind, whatever
   the exception. Values are checked by :mod:`taskroll.store.values` before anything is
   written: a priority is an ``int`` in the signed 64-bit range, a status a
   :class:`~taskroll.status.Status` name, a ``filter`` plain JSON without NUL characters
   (:class:`~taskroll.errors.TaskConfigError` / :class:`~taskroll.errors.StatusTransitionError`
   otherwise), so every backend stores the same values or refuses the same ones.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from taskroll.errors import TaskConfigError
from taskroll.store.query import Condition


class _Now:
    """Sentinel: "the database clock at the moment of this write"."""

    def __repr__(self) -> str:
        return "NOW"


#: Use as a field value in :meth:`TaskStore.update` to stamp the database clock.
NOW: Final = _Now()

#: Fields :meth:`TaskStore.update` and :meth:`TaskStore.update_many` may set.
WRITABLE_FIELDS: Final = frozenset(
    {"def", "def_encoding", "filter", "status", "priority", "res", "res_encoding", "started",
     "finished", "worker", "lease_until", "attempts", "error", "claimed_from"}
)

#: Every field of a record, in a fixed order.
RECORD_FIELDS: Final = (
    "_id", "def", "def_encoding", "filter", "status", "priority", "res", "res_encoding",
    "created", "started", "finished", "worker", "lease_until", "attempts", "error",
    "claimed_from",
)

Record = dict[str, Any]

#: Fields :meth:`TaskStore.find_page` sorts by (``created`` is insertion order).
SORT_FIELDS: Final = ("created", "started", "finished", "priority", "attempts", "status",
                      "worker", "lease_until", "_id")
#: Most records one page may hold.
MAX_PAGE_SIZE: Final = 10_000
#: A sort order: ``(field, 1)`` ascending or ``(field, -1)`` descending, most significant first.
SortOrder = Sequence[tuple[str, int]]


def check_page(sort: SortOrder, skip: int, limit: int) -> tuple[list[tuple[str, int]], int, int]:
    """Return ``(sort, skip, limit)`` checked for :meth:`TaskStore.find_page`.

    Raises:
        TaskConfigError: For a field outside :data:`SORT_FIELDS`, a direction other than
            1 / -1, a ``skip`` below 0 or a ``limit`` outside 1 .. :data:`MAX_PAGE_SIZE`.
    """
    checked: list[tuple[str, int]] = []
    for item in sort:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TaskConfigError(f"a sort key is a (field, direction) pair, got {item!r}")
        field, direction = item
        if field not in SORT_FIELDS:
            raise TaskConfigError(f"cannot sort by {field!r}; choose one of {list(SORT_FIELDS)}")
        if isinstance(direction, bool) or direction not in (1, -1):
            raise TaskConfigError(f"a sort direction is 1 or -1, got {direction!r}")
        checked.append((str(field), int(direction)))
    for name, value, lowest in (("skip", skip, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise TaskConfigError(f"{name} must be a whole number >= {lowest}, got {value!r}")
    if limit > MAX_PAGE_SIZE:
        raise TaskConfigError(f"limit must be at most {MAX_PAGE_SIZE}, got {limit}")
    return checked, skip, limit


def sort_records(records: Sequence[Record], sort: SortOrder) -> list[Record]:
    """Sort records (given in insertion order) as :meth:`TaskStore.find_page` does.

    Missing values sort lowest (first ascending, last descending), ties keep insertion
    order; ``created`` sorts by insertion order.
    """
    ordered = list(records)
    for field, direction in reversed(list(sort)):
        if field == "created":
            if direction == -1:
                ordered.reverse()
            continue
        present = [record for record in ordered if record.get(field) is not None]
        missing = [record for record in ordered if record.get(field) is None]
        present.sort(key=lambda record: record[field], reverse=direction == -1)
        # a stable descending sort keeps ties in insertion order
        ordered = present + missing if direction == -1 else missing + present
    return ordered


def read_in_pages(read_page: Callable[[int, int], Sequence[Sequence[Any]]], limit: int | None,
                  page_size: int = 1000) -> Iterator[Sequence[Any]]:
    """Yield the rows of a keyset-paginated query, so no read transaction stays open.

    Args:
        read_page: ``(after_seq, count) -> rows`` returning up to ``count`` rows whose
            first column is the insertion sequence, ascending, all after ``after_seq``.
        limit: Most rows to yield in all; ``None`` for every row.
        page_size: Rows read per call.
    """
    last_seq, remaining = -1, limit
    while remaining is None or remaining > 0:
        page = page_size if remaining is None else min(page_size, remaining)
        rows = read_page(last_seq, page)
        yield from rows
        if len(rows) < page:
            return
        last_seq = rows[-1][0]
        if remaining is not None:
            remaining -= len(rows)


def check_claim_count(count: int) -> int:
    """Return ``count`` when it is a whole number >= 1 (how many tasks one claim may take).

    Raises:
        TaskConfigError: Otherwise.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TaskConfigError(f"the number of tasks to claim must be a whole number >= 1, "
                              f"got {count!r}")
    return count


class TaskStore(abc.ABC):
    """Abstract task database holding named pools of plain records."""

    #: URL scheme this store serves (``sqlite``, ``postgresql``, ``mongodb``).
    scheme: str = ""

    # -- pools ---------------------------------------------------------------------------
    @abc.abstractmethod
    def list_pools(self) -> list[str]:
        """Return the names of the pools in this store, sorted."""

    @abc.abstractmethod
    def drop_pool(self, pool: str) -> None:
        """Delete a pool and all its tasks (no error if absent)."""

    # -- writes --------------------------------------------------------------------------
    @abc.abstractmethod
    def insert_many(self, pool: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Insert new tasks, skipping ids already present; race-safe across processes.

        Each record needs ``_id``, ``def``, ``def_encoding``, ``filter``; ``status``
        defaults to ``waiting`` and ``priority`` to 0. ``created`` is stamped by the
        database clock, in list order.

        Returns:
            The ids actually inserted by this call, in input order.
        """

    @abc.abstractmethod
    def update(self, pool: str, task_id: str, fields: Mapping[str, Any],
               expected_status: str | None = None, expected_worker: str | None = None) -> bool:
        """Set fields of one task (values may be :data:`NOW`), guarded by optional expectations.

        Returns:
            ``True`` when the task exists, the guards hold, and the write happened.
        """

    @abc.abstractmethod
    def update_many(self, pool: str, conditions: Sequence[Condition],
                    fields: Mapping[str, Any]) -> int:
        """Set fields on every matching task; return how many matched."""

    @abc.abstractmethod
    def delete_many(self, pool: str, conditions: Sequence[Condition]) -> int:
        """Delete every matching task; return how many were deleted."""

    # -- claims --------------------------------------------------------------------------
    @abc.abstractmethod
    def fetch(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
              lease_seconds: float) -> Record | None:
        """Atomically claim the best matching task in ``status``; see invariants 2-3."""

    def fetch_many(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
                   lease_seconds: float, count: int) -> list[Record]:
        """Claim up to ``count`` matching tasks in ``status``, best first; see invariants 2-3.

        Each claimed task gets its own lease, renewed by :meth:`heartbeat` and reaped on
        its own. This default claims one task at a time with :meth:`fetch` (so a store
        need not override it); a store that can claim several in one atomic statement
        overrides it.

        Raises:
            TaskConfigError: When ``count`` is not a whole number >= 1.
        """
        records: list[Record] = []
        for _ in range(check_claim_count(count)):
            record = self.fetch(pool, conditions, status, worker, lease_seconds)
            if record is None:
                break
            records.append(record)
        return records

    @abc.abstractmethod
    def heartbeat(self, pool: str, task_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a running task owned by ``worker``; ``False`` if lost."""

    @abc.abstractmethod
    def reap(self, pool: str, max_attempts: int) -> int:
        """Return expired leases to their previous status or fail them; see invariant 4."""

    # -- reads ---------------------------------------------------------------------------
    @abc.abstractmethod
    def find(self, pool: str, conditions: Sequence[Condition],
             limit: int | None = None) -> Iterator[Record]:
        """Yield matching records, oldest first."""

    def get(self, pool: str, task_id: str) -> Record | None:
        """Return one record by id, or ``None``."""
        for record in self.find(pool, [Condition("_id", (), "$eq", task_id)], limit=1):
            return record
        return None

    def find_page(self, pool: str, conditions: Sequence[Condition], sort: SortOrder = (),
                  skip: int = 0, limit: int = 100) -> list[Record]:
        """Return one page of matching records, for views that page through a large pool.

        Args:
            pool: The pool.
            conditions: Parsed query (:func:`taskroll.store.query.parse_query`).
            sort: ``(field, 1 | -1)`` pairs over :data:`SORT_FIELDS`; missing values sort
                lowest (first ascending, last descending, as in MongoDB); ties, and an empty
                ``sort``, fall back to insertion order.
            skip: Matching records to skip first.
            limit: Most records to return (1 .. :data:`MAX_PAGE_SIZE`).

        Count the matches with :meth:`count_by_status`. This default reads every match;
        the stores override it with one sorted, limited query in the database.

        Raises:
            TaskConfigError: For a malformed ``sort``, ``skip`` or ``limit``.
        """
        sort, skip, limit = check_page(sort, skip, limit)
        return sort_records(list(self.find(pool, conditions)), sort)[skip:skip + limit]

    def live_workers(self, pool: str) -> list[str]:
        """Return the workers holding an unexpired lease in the pool, sorted, each once.

        A lease is live while ``lease_until`` is after :meth:`now` (the database clock).
        This default reads the running tasks; SQL stores override it with one query.
        """
        conditions = [Condition("status", (), "$eq", "running"),
                      Condition("lease_until", (), "$gt", self.now())]
        return sorted({str(record["worker"]) for record in self.find(pool, conditions)
                       if record.get("worker") is not None})

    @abc.abstractmethod
    def count_by_status(self, pool: str, conditions: Sequence[Condition]) -> dict[str, int]:
        """Count matching tasks per status, in the database."""

    @abc.abstractmethod
    def now(self) -> float:
        """Return the database clock as UNIX seconds."""

    # -- lifetime ------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
