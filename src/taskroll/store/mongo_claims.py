"""Claims of the MongoDB store: fetch one or a batch, heartbeats, reaping expired leases.

:class:`MongoClaims` is a base of :class:`taskroll.store.mongo.MongoStore`, which gives
it the pool collections (``_collection``, ``_ensure_pool``) and the reads (``_find``).

Claim order: highest ``priority`` first, then oldest. The claim sorts on ``priority``
and ``reverse_seq`` (``-seq``, written once at insert), both descending, so that one
index serves it walked in one direction. An index with mixed directions (priority
descending, ``seq`` ascending) serves MongoDB as well, but nx-27017 builds every index
ascending, and with a mixed sort it sorted all waiting tasks at every claim. The status
is matched with ``$eq``, which it turns into an indexed comparison; a bare value also
matches inside arrays there, which scanned the whole pool.

The order reads ``priority`` itself, so a priority set by any writer (Qlib's
``prioritize``, an older taskroll) counts at once. Tasks without ``reverse_seq`` come last
among those of their priority: Qlib's (no ``seq`` at all), and those an older taskroll
inserts while this version works the pool, the newest anyway. Tasks an older taskroll
inserted earlier get theirs at the first claim of each process and pool.

A fetch is one ``find_one_and_update`` (in claim order), tagged with a
fresh ``claim`` token: when the reply is lost (server restarted after applying it; a
standalone server has no retryable writes), the retry first finds the task by its
token instead of claiming a second one and leaving the first orphaned until its lease
runs out. :meth:`reap` updates each expired task with ``update_one`` guarded by the
values it read (status, lease, worker, attempts), so a heartbeat or fetch racing with
it wins and nothing is lost.

A batch claim (:meth:`MongoStore.fetch_many`) is three commands whatever its size: a
``find`` of the best candidates' ids, one ``update_many`` over them guarded by the
claimed status and stamping a fresh claim token, and a ``find`` of the documents that
carry the token. Each document is updated atomically, so a task taken by another worker
between the first two commands is simply not claimed here.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from taskroll.store.base import RECORD_FIELDS, Record, TaskStore, check_claim_count
from taskroll.store.mongo_connection import MongoConnection
from taskroll.store.mongo_query import Filter, MongoQuery
from taskroll.store.query import Condition
from taskroll.store.values import check_claim, check_lease, check_max_attempts

CLAIM_ORDER: list[tuple[str, int]] = [("priority", -1), ("reverse_seq", -1)]
"""Highest priority first, then oldest: the claim index's order (see the module docs)."""
_BATCH_TRIES = 8  # batch claims that found candidates but lost them all before one at a time
_BULK = 1000  # updates per bulk_write when older tasks get their reverse_seq


def to_record(document: Mapping[str, Any]) -> Record:
    """The store's record of a pool document (internal fields left out)."""
    record: Record = {field: document.get(field) for field in RECORD_FIELDS}
    for name in ("def", "res"):
        if isinstance(record[name], (bytearray, memoryview)):
            record[name] = bytes(record[name])
    return record


class MongoClaims(MongoConnection, TaskStore):
    """The claim operations of :class:`~taskroll.store.mongo.MongoStore`."""

    @abstractmethod
    def _collection(self, pool: str) -> Any:
        """The pool's collection (the name checked)."""

    @abstractmethod
    def _ensure_pool(self, pool: str) -> Any:
        """The pool's collection, its indexes made once per process."""

    @abstractmethod
    def _find(self, pool: str, query: MongoQuery, limit: int | None, *extra: Filter,
              sort: list[tuple[str, int]] | None = None) -> Iterator[Record]:
        """Records the server filter and the residual conditions both keep."""

    def _claims_ready(self, pool: str) -> None:
        """Once per process and pool: give tasks with a ``seq`` but no ``reverse_seq``
        (inserted by taskroll 0.1) theirs, so that they keep their age among equals.

        One ``find_one`` when every such task has it. Each write is guarded by the field's
        absence, and ``seq`` never changes, so a racing process writes the same value.
        """
        if pool in self._claim_ready_pools:
            return
        collection = self._collection(pool)
        older = {"reverse_seq": {"$exists": False}, "seq": {"$exists": True}}
        if collection.find_one(older, {"_id": 1}) is not None:
            self._ensure_pool(pool)  # a pool from an older version lacks the claim index
            updates = [self._pymongo.UpdateOne(
                {"_id": document["_id"], "reverse_seq": {"$exists": False}},
                {"$set": {"reverse_seq": -document["seq"]}})
                for document in collection.find(older, {"seq": 1})
                if isinstance(document.get("seq"), int)]
            for start in range(0, len(updates), _BULK):
                collection.bulk_write(updates[start:start + _BULK], ordered=False)
        self._claim_ready_pools.add(pool)

    # -- claims --------------------------------------------------------------------------
    def fetch(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
              lease_seconds: float) -> Record | None:
        """Claim the highest-priority, oldest matching task with one ``find_one_and_update``."""
        status, worker, lease_seconds = check_claim(status, worker, lease_seconds)
        self._run(self._claims_ready, pool)
        query = MongoQuery(conditions)
        sort = CLAIM_ORDER

        def claimer(selector: Filter) -> Callable[[], Record | None]:
            """One claim, safe to retry: it is tagged, and a retry first looks for its tag."""
            token, sent = uuid.uuid4().hex, False

            def claim() -> Record | None:
                nonlocal sent
                collection = self._collection(pool)
                if sent:  # the reply to an earlier try may be what the network lost
                    document = collection.find_one(
                        {"status": "running", "worker": worker, "claim": token})
                    if document is not None:
                        return to_record(document)
                sent = True
                now = self._clock()
                document = collection.find_one_and_update(
                    selector,
                    {"$set": {"status": "running", "worker": worker, "started": now,
                              "lease_until": now + float(lease_seconds),
                              "claimed_from": status, "claim": token},
                     "$inc": {"attempts": 1}},
                    sort=sort, return_document=self._pymongo.ReturnDocument.AFTER)
                return None if document is None else to_record(document)
            return claim

        if not query.residual:
            return self._run(claimer(query.filter({"status": {"$eq": status}})))
        for record in self._find(pool, query, None, {"status": {"$eq": status}}, sort=sort):
            claimed = self._run(claimer(query.filter({"_id": record["_id"],
                                                      "status": {"$eq": status}})))
            if claimed is not None:
                return claimed
        return None

    def fetch_many(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
                   lease_seconds: float, count: int) -> list[Record]:
        """Claim up to ``count`` matching tasks, best first, in three commands (see above).

        When every candidate was taken by other workers between the ``find`` and the
        ``update_many``, the next best are tried (then, after a few such rounds, tasks
        are claimed one at a time). With conditions the server cannot decide
        exactly, or ``count == 1``, tasks are claimed one at a time with :meth:`fetch`.

        Raises:
            TaskConfigError: When ``count`` is not a whole number >= 1.
        """
        count = check_claim_count(count)
        status, worker, lease_seconds = check_claim(status, worker, lease_seconds)
        query = MongoQuery(conditions)
        if count == 1 or query.residual:
            return super().fetch_many(pool, conditions, status, worker, lease_seconds, count)
        self._run(self._claims_ready, pool)
        selector = query.filter({"status": {"$eq": status}})
        sort = CLAIM_ORDER
        for _ in range(_BATCH_TRIES):
            candidates = self._run(lambda: [document["_id"] for document in self._collection(
                pool).find(selector, {"_id": 1}, sort=sort, limit=count)])
            if not candidates:
                return []
            token = uuid.uuid4().hex

            def claim(chosen: list[str] = candidates, token: str = token) -> None:
                now = self._clock()  # a retry after a lost reply matches nothing new
                self._collection(pool).update_many(
                    {"$and": [selector, {"_id": {"$in": chosen}}]},
                    {"$set": {"status": "running", "worker": worker, "started": now,
                              "lease_until": now + float(lease_seconds),
                              "claimed_from": status, "claim": token},
                     "$inc": {"attempts": 1}})

            self._run(claim)
            claimed = self._run(lambda token=token: list(self._collection(pool).find(
                {"claim": token, "worker": worker, "status": "running"}, sort=sort)))
            if claimed:
                return [to_record(document) for document in claimed]
        # others keep taking every candidate first (heavy contention): one at a time
        return super().fetch_many(pool, conditions, status, worker, lease_seconds, count)

    def heartbeat(self, pool: str, task_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a running task still owned by ``worker``."""
        lease_seconds = check_lease(lease_seconds)
        self._collection(pool)

        def operation() -> bool:
            lease_until = self._clock() + float(lease_seconds)
            return bool(self._collection(pool).update_one(
                {"_id": task_id, "status": "running", "worker": worker},
                {"$set": {"lease_until": lease_until}}).matched_count > 0)
        return self._run(operation)

    def reap(self, pool: str, max_attempts: int) -> int:
        """Return expired leases to their previous status, or fail them after max_attempts."""
        max_attempts = check_max_attempts(max_attempts)
        self._collection(pool)

        def operation() -> int:
            collection = self._collection(pool)
            now = self._clock()
            moved = 0
            expired = list(collection.find(
                {"status": {"$eq": "running"}, "lease_until": {"$lt": now}},
                {"worker": 1, "attempts": 1, "claimed_from": 1, "lease_until": 1}))
            for document in expired:
                attempts = int(document.get("attempts") or 0)
                worker = document.get("worker")
                failed = attempts >= max_attempts
                values: Filter = {
                    "status": "failed" if failed else document.get("claimed_from") or "waiting",
                    "error": f"lease expired: worker {worker or '?'} stopped renewing it "
                             f"during attempt {attempts} of {max_attempts}",
                    "worker": None, "lease_until": None,
                }
                if failed:
                    values["finished"] = now
                guard = {"_id": document["_id"], "status": "running", "worker": worker,
                         "attempts": document.get("attempts"),
                         "lease_until": document["lease_until"]}
                moved += collection.update_one(guard, {"$set": values}).modified_count
            return moved
        return self._run(operation)
