"""The MongoDB store: one collection per pool (as in Qlib), claims with ``find_one_and_update``.

Schema, in database ``db_name`` (Qlib's ``task_db_name``)::

    <pool>                      one collection per pool; documents:
        {_id: task id (str, so the primary key makes ids unique), def, def_encoding,
         filter: {...subdocument...}, status, priority, res, res_encoding,
         created, started, finished, lease_until: float UNIX seconds (server clock),
         worker, attempts, error, claimed_from, seq: int,
         claim: token of the fetch call that claimed it (internal),
         reverse_seq: -seq (internal: the claim order, see mongo_claims)}
        index (status, priority -1, reverse_seq -1)  claim order
        index (seq)                                  find order and paging
        index (status, lease_until)                  reap
    _taskroll_counters          {_id: pool, seq: last seq handed out}; not a pool, but
                                marks the pools taskroll created (see list_pools)

``seq`` comes from a per-pool counter taken at insert time, so it orders tasks by
creation like SQLite's rowid (``created`` has the server clock's millisecond
resolution and ties within one call). Payloads are ``str`` (json) or BSON binary
(pickle). Times are float seconds on the server's clock without a round trip of their
own: the offset between the server clock (``hello``'s ``localTime``) and the local one is
measured once per client (per process, and again after a reconnect), refreshed every
:data:`CLOCK_REFRESH_SECONDS`, and a write stamps local time plus that offset. Update
pipelines with ``$$NOW`` would let the server stamp its own time, but the nx-27017 test
server has no pipelines (a write using them fails there), so one code path serves both.
:meth:`MongoStore.now` always asks the server. A claim is thus one command and a commit
one more; reaping is a separate ``find`` that the manager runs at most once a second.

Queries become MongoDB filters in :mod:`taskroll.store.mongo_query` with the semantics
of :func:`taskroll.store.query.matches`. Conditions the server cannot decide exactly
are "residual" and checked in Python; operations with residual conditions act on the
ids found (each write still guarded in the database).

Claims (the claim order and its index, batches, heartbeats, reaping) are in
:mod:`taskroll.store.mongo_claims`; connections, the clock offset and the error boundary
in :mod:`taskroll.store.mongo_connection`. A retried insert reports ids it had already
inserted as existing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from taskroll.errors import StoreError
from taskroll.store.base import (
    NOW,
    RECORD_FIELDS,
    WRITABLE_FIELDS,
    Record,
    SortOrder,
    check_page,
)
from taskroll.store.mongo_claims import CLAIM_ORDER, MongoClaims, to_record
from taskroll.store.mongo_query import Filter, MongoQuery
from taskroll.store.query import Condition
from taskroll.store.values import (
    check_fields,
    check_pool,
    check_records,
)

COUNTERS = "_taskroll_counters"
_INTERNAL_PREFIXES = ("_taskroll", "system.")
_PAGE = 1000


class MongoStore(MongoClaims):
    """Task store in a MongoDB database: one collection per pool, as in Qlib."""

    scheme = "mongodb"

    def __init__(self, url: str, db_name: str = "taskroll", retry_seconds: float = 30.0,
                 server_selection_timeout_ms: int = 5000,
                 client_options: Mapping[str, Any] | None = None) -> None:
        """Connect and check that the server answers.

        Args:
            url: ``mongodb://[user:password@]host[:port][/?options]`` (Qlib's ``task_url``).
            db_name: Database holding the pools (Qlib's ``task_db_name``).
            retry_seconds: How long an operation keeps retrying network errors before failing.
            server_selection_timeout_ms: How long one attempt waits for a usable server.
            client_options: More keyword arguments for ``MongoClient`` (e.g. TLS settings,
                ``event_listeners``).

        Raises:
            MissingDependencyError: When pymongo is not installed.
            StoreConnectionError: When the server cannot be reached within ``retry_seconds``.
        """
        self._init_connection(url, db_name, retry_seconds, server_selection_timeout_ms,
                              client_options)
        self._run(lambda: self._database().command("ping"))

    @classmethod
    def from_url(cls, url: str, db_name: str = "taskroll") -> MongoStore:
        """Open the store a ``mongodb://`` URL and database name give."""
        return cls(url, db_name)

    def __repr__(self) -> str:
        return f"MongoStore({self.safe_url!r}, {self.db_name!r})"

    def _collection(self, pool: str) -> Any:
        check_pool(pool)
        if pool.startswith(_INTERNAL_PREFIXES) or "$" in pool or "\0" in pool:
            raise StoreError(f"invalid pool name {pool!r} for MongoDB (no '$', not '_taskroll*')")
        try:
            return self._database()[pool]
        except self._pymongo.errors.InvalidName as error:  # e.g. "a..b", ".a", "a."
            raise StoreError(f"invalid pool name {pool!r} for MongoDB: {error}") from error

    def _ensure_pool(self, pool: str) -> Any:
        collection = self._collection(pool)
        if pool not in self._ready_pools:
            collection.create_index([("status", 1), *CLAIM_ORDER], name="taskroll_claim")
            collection.create_index([("seq", 1)], name="taskroll_order")
            collection.create_index([("status", 1), ("lease_until", 1)], name="taskroll_lease")
            self._ready_pools.add(pool)
        return collection

    def _matching_ids(self, pool: str, query: MongoQuery, *extra: Filter) -> list[str]:
        return [record["_id"] for record in self._find(pool, query, None, *extra)]

    # -- pools ---------------------------------------------------------------------------
    def list_pools(self) -> list[str]:
        """Return the pools in the database, sorted: collections that hold or held tasks.

        A collection counts when it has a sequence counter (taskroll inserted into it) or
        holds documents (e.g. written by Qlib); empty collections that a server created
        as a side effect of reading (nx-27017 does) are left out.
        """
        def operation() -> list[str]:
            database = self._database()
            counted = {item["_id"] for item in database[COUNTERS].find({}, {"_id": 1})}
            return sorted(
                name for name in database.list_collection_names()
                if not name.startswith(_INTERNAL_PREFIXES)
                and (name in counted or database[name].find_one({}, {"_id": 1}) is not None))
        return self._run(operation)

    def drop_pool(self, pool: str) -> None:
        """Drop a pool's collection and its counter (no error if absent)."""
        def operation() -> None:
            self._collection(pool).drop()
            self._database()[COUNTERS].delete_one({"_id": pool})
        self._run(operation)
        self._ready_pools.discard(pool)
        self._claim_ready_pools.discard(pool)

    # -- writes --------------------------------------------------------------------------
    def insert_many(self, pool: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Insert tasks whose ids are new (unique ``_id``); return those this call inserted.

        Raises:
            StoreError: When a record lacks ``_id``, ``def``, ``def_encoding`` or ``filter``.
            TaskConfigError: For a value no store can hold (see :mod:`taskroll.store.values`).
        """
        self._collection(pool)  # checks the name before anything is written
        records = check_records(records)
        collection = self._run(self._ensure_pool, pool)
        first = self._run(self._reserve, pool, len(records))  # also registers the pool
        if not records:
            return []
        now = self._run(self._clock)
        documents = [
            {**dict.fromkeys(RECORD_FIELDS), "_id": record["_id"], "def": record["def"],
             "def_encoding": record["def_encoding"], "filter": dict(record["filter"]),
             "status": record["status"], "priority": record["priority"],
             "created": now, "attempts": 0, "seq": first + index, "reverse_seq": -first - index}
            for index, record in enumerate(records)
        ]
        return self._run(lambda: self._insert(collection, documents))

    def _reserve(self, pool: str, count: int) -> int:
        counters = self._database()[COUNTERS]
        for _ in range(3):  # concurrent first upserts of one counter may collide once
            try:
                reply = counters.find_one_and_update(
                    {"_id": pool}, {"$inc": {"seq": count}}, upsert=True,
                    return_document=self._pymongo.ReturnDocument.AFTER)
                return int(reply["seq"]) - count + 1
            except self._pymongo.errors.DuplicateKeyError:
                continue
        raise StoreError(f"cannot reserve sequence numbers for pool {pool!r}")

    def _insert(self, collection: Any, documents: list[Filter]) -> list[str]:
        errors = self._pymongo.errors
        try:
            collection.insert_many(documents, ordered=False)
            failed: set[int] = set()
        except errors.BulkWriteError as error:
            write_errors = error.details.get("writeErrors", [])
            if any(item.get("code") != 11000 for item in write_errors):
                raise
            failed = {int(item["index"]) for item in write_errors}
        return [document["_id"] for index, document in enumerate(documents)
                if index not in failed]

    def _setter(self, fields: Mapping[str, Any]) -> Filter:
        values: Filter = {}
        now: float | None = None
        for name, value in check_fields(fields, WRITABLE_FIELDS, NOW).items():
            if value is NOW:
                now = self._clock() if now is None else now
                value = now
            elif isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            values[name] = value
        return {"$set": values}

    def update(self, pool: str, task_id: str, fields: Mapping[str, Any],
               expected_status: str | None = None, expected_worker: str | None = None) -> bool:
        """Set fields of one task if it exists and the optional status/worker guards hold."""
        self._collection(pool)
        if fields:
            check_fields(fields, WRITABLE_FIELDS, NOW)  # before anything else: a clear error
        guard: Filter = {"_id": task_id}
        if expected_status is not None:
            guard["status"] = expected_status
        if expected_worker is not None:
            guard["worker"] = expected_worker
        if not fields:
            return self._run(lambda: self._collection(pool).find_one(guard, {"_id": 1})) is not None
        return bool(self._run(lambda: self._collection(pool).update_one(
            guard, self._setter(fields)).matched_count) > 0)

    def update_many(self, pool: str, conditions: Sequence[Condition],
                    fields: Mapping[str, Any]) -> int:
        """Set fields on every matching task; return how many matched."""
        query = MongoQuery(conditions)
        if not fields:
            return sum(self.count_by_status(pool, conditions).values())
        if not query.residual:
            return int(self._run(lambda: self._collection(pool).update_many(
                query.filter(), self._setter(fields)).matched_count))
        update = self._run(self._setter, fields)
        collection, matched = self._collection(pool), 0
        for chunk in _chunks(self._matching_ids(pool, query)):
            selector = query.filter({"_id": {"$in": chunk}})
            matched += self._run(
                lambda chosen: int(collection.update_many(chosen, update).matched_count), selector)
        return matched

    def delete_many(self, pool: str, conditions: Sequence[Condition]) -> int:
        """Delete every matching task; return how many were deleted."""
        query = MongoQuery(conditions)
        if not query.residual:
            return int(self._run(
                lambda: self._collection(pool).delete_many(query.filter()).deleted_count))
        collection, deleted = self._collection(pool), 0
        for chunk in _chunks(self._matching_ids(pool, query)):
            selector = query.filter({"_id": {"$in": chunk}})
            deleted += self._run(
                lambda chosen: int(collection.delete_many(chosen).deleted_count), selector)
        return deleted

    # -- reads ---------------------------------------------------------------------------
    def _find(self, pool: str, query: MongoQuery, limit: int | None, *extra: Filter,
              sort: list[tuple[str, int]] | None = None) -> Iterator[Record]:
        """Yield records the server filter and residual both keep, in pages by ``(seq, _id)``."""
        collection = self._collection(pool)
        sort = sort or [("seq", 1)]
        if sort != [("seq", 1)]:  # a claim scan: one pass, each claim re-checked by the server
            cursor = self._run(lambda: list(collection.find(query.filter(*extra), sort=sort)))
            yield from (record for record in map(to_record, cursor) if query.keeps(record))
            return
        last: tuple[Any, str] | None = None  # (seq, _id) of the page's last task
        remaining = limit
        while remaining is None or remaining > 0:
            after: list[Filter] = [] if last is None else [_after(*last)]
            page = self._run(lambda chosen: list(collection.find(
                chosen, sort=[("seq", 1), ("_id", 1)], limit=_PAGE)), query.filter(*extra, *after))
            for document in page:
                record = to_record(document)
                if query.keeps(record):
                    yield record
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            return
            if len(page) < _PAGE:
                return
            last = (page[-1].get("seq"), page[-1]["_id"])

    def find(self, pool: str, conditions: Sequence[Condition],
             limit: int | None = None) -> Iterator[Record]:
        """Yield matching records oldest first."""
        return self._find(pool, MongoQuery(conditions), limit)

    def find_page(self, pool: str, conditions: Sequence[Condition], sort: SortOrder = (),
                  skip: int = 0, limit: int = 100) -> list[Record]:
        """One page with ``find(sort, skip, limit)``; residual conditions sift in Python."""
        sort, skip, limit = check_page(sort, skip, limit)
        query = MongoQuery(conditions)
        order = [("seq" if field == "created" else field, direction) for field, direction in sort]
        order += [] if any(field == "seq" for field, _ in order) else [("seq", 1)]
        if query.residual:  # sift in Python, reading only as far as the page goes
            from itertools import islice

            def sifted() -> list[Record]:
                with self._collection(pool).find(query.filter(), sort=order) as cursor:
                    kept = (record for record in map(to_record, cursor) if query.keeps(record))
                    return list(islice(kept, skip, skip + limit))

            return self._run(sifted)
        documents = self._run(lambda: list(self._collection(pool).find(
            query.filter(), sort=order, skip=skip, limit=limit)))
        return [to_record(document) for document in documents]

    def count_by_status(self, pool: str, conditions: Sequence[Condition]) -> dict[str, int]:
        """Count matching tasks per status with a ``$group`` aggregation."""
        query = MongoQuery(conditions)
        if query.residual:
            counts: dict[str, int] = {}
            for record in self._find(pool, query, None):
                counts[record["status"]] = counts.get(record["status"], 0) + 1
            return counts
        rows = self._run(lambda: list(self._collection(pool).aggregate([
            {"$match": query.filter()}, {"$group": {"_id": "$status", "count": {"$sum": 1}}}])))
        return {row["_id"]: int(row["count"]) for row in rows}

    def now(self) -> float:
        """Return the server's clock as UNIX seconds (millisecond resolution), asking it."""
        return self._run(self._server_clock)


def _after(seq: Any, task_id: str) -> Filter:
    """Tasks after ``(seq, _id)`` in find order. Tasks without ``seq`` (written by Qlib)
    sort first; ``$exists`` rather than ``$ne: None``, which nx-27017 also lets match a
    missing field."""
    if seq is None:
        return {"$or": [{"seq": None, "_id": {"$gt": task_id}}, {"seq": {"$exists": True}}]}
    return {"$or": [{"seq": seq, "_id": {"$gt": task_id}}, {"seq": {"$gt": seq}}]}


def _chunks(ids: list[str], size: int = _PAGE) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]
