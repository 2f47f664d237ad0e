"""The TaskStore contract suite, shipped so every backend (and third-party ones) can run it.

Use it by subclassing :class:`TaskStoreContract` in a pytest module and providing a
``store_url`` fixture (a URL :func:`taskroll.store.open_store` accepts; every test
uses its own fresh pool, so one database may serve the whole suite)::

    class TestMyStore(TaskStoreContract):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"sqlite:///{tmp_path / 'tasks.db'}"

The whole-system checks used by the concurrency and fault tests of every backend
(:func:`check_workers_exactly_once`, :func:`check_concurrent_create`, the worker process
targets) live in :mod:`taskroll.testing_system` and are re-exported here.
"""

from __future__ import annotations

import os
import pickle
import reprlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskroll.errors import QueryError, StatusTransitionError, TaskConfigError
from taskroll.store import TaskStore, open_store, parse_query
from taskroll.store.base import NOW
from taskroll.store.query import MAX_AND_DEPTH, matches
from taskroll.testing_pages import ClaimAndPageContract
from taskroll.testing_system import (
    _marker_task,
    check_concurrent_create,
    check_workers_exactly_once,
    fresh_pool,
    gather_processes,
    interruptible_task,
    make_record,
    run_worker_process,
)

__all__ = [
    "BAD_PRIORITIES", "TaskStoreContract", "_marker_task", "check_concurrent_create",
    "check_workers_exactly_once", "interruptible_task", "make_record", "nested_and",
    "nested_list", "run_worker_process",
]

#: Queries whose results every backend must give exactly as :func:`matches` does.
REFERENCE_QUERIES: tuple[dict[str, Any], ...] = (
    {},
    {"filter.number": 3},
    {"filter.number": 3.0},
    {"filter.parity": "odd"},
    {"filter.model.class": "GBDT"},
    {"filter.model.class": {"$in": ["GBDT", "Nope"]}},
    {"filter.model.class": {"$nin": ["GBDT"]}},
    {"filter.number": {"$ne": 4}},
    {"filter.number": {"$gte": 5, "$lt": 8}},
    {"filter.number": {"$gt": 2}, "filter.parity": "even"},
    {"filter.window": [4, 5]},
    {"filter.extra": {"$exists": True}},
    {"filter.extra": {"$exists": False}},
    {"filter.extra": None},
    {"filter.extra.deep": 1},
    {"filter.extra": {"$ne": None}},
    {"filter.missing": {"$nin": [1, 2]}},
    {"filter.missing": {"$in": [1, 2]}},
    {"_id": "task-000002"},
    {"_id": {"$in": ["task-000001", "task-000009", "task-999999"]}},
    {"status": "waiting"},
    {"status": {"$in": ["running", "done"]}},
    {"priority": {"$gt": 0}},
    {"worker": {"$exists": False}},
    {"$and": [{"filter.number": {"$lt": 6}}, {"filter.parity": "odd"}]},
    {"priority": "3"},
    {"priority": {"$in": [3, "0", None]}},
    {"status": {"$nin": ["waiting", 7]}},
    {"filter.number": {"$in": list(range(-2000, 4000, 3))}},
    {"filter.parity": {"$nin": [f"value-{index}" for index in range(3000)]}},
    {"_id": {"$in": [f"task-{index:06d}" for index in range(0, 6000, 2)]}},
    {"filter.number": {"$lt": 2**63 - 1, "$gt": -(2**63)}},
    {"filter.model.class": {"$gt": "\u00e9"}},
    {"$and": [{"$and": [{"$and": [{"filter.number": {"$gte": 2}}]}]}, {"filter.number": 4}]},
)

def nested_and(depth: int) -> dict[str, Any]:
    """Return a query of ``depth`` nested ``$and`` lists around ``{"status": "waiting"}``."""
    query: dict[str, Any] = {"status": "waiting"}
    for _ in range(depth):
        query = {"$and": [query]}
    return query


def nested_list(depth: int) -> Any:
    """Return a value of ``depth`` nested lists (for depth-limit checks)."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: Queries every backend refuses with :class:`~taskroll.errors.QueryError`, touching nothing.
HOSTILE_QUERIES: tuple[Any, ...] = (
    [("status", "waiting")],
    "status",
    {"filter.a\"b": 1},
    {"filter.a\\b": 1},
    {"filter.a\x00b": 1},
    {"filter.name": "a\x00b"},
    {"_id": {"$in": ["task-000001", "\x00"]}},
    {"filter.number": 2**64},
    {"priority": {"$gt": -(2**63) - 1}},
    {"filter.deep": {"$eq": nested_list(100)}},
    {"filter.deep": {"$in": [nested_list(10_000)]}},
    {"$and": {"status": "waiting"}},
    {"$or": [{"status": "waiting"}]},
    {"status": {"$regex": "w.*"}},
)


#: Priorities every backend refuses (``TaskConfigError``) before writing anything.
BAD_PRIORITIES: tuple[Any, ...] = (True, False, 1.7, 2.0, float("nan"), "high", "1", b"1",
                                   2**63, -(2**63) - 1, 2**70, [1], {"p": 1})


def _insert_worker(url: str, pool: str, count: int, queue: Any) -> None:
    with open_store(url) as store:
        inserted = store.insert_many(pool, [make_record(number) for number in range(count)])
    queue.put(inserted)


def _fetch_worker(url: str, pool: str, queue: Any) -> None:
    claimed = []
    with open_store(url) as store:
        while True:
            record = store.fetch(pool, [], "waiting", f"worker-{os.getpid()}", 60.0)
            if record is None:
                break
            claimed.append(record["_id"])
    queue.put(claimed)


class TaskStoreContract(ClaimAndPageContract):
    """Pytest mixin: every invariant of :class:`taskroll.store.base.TaskStore`.

    Batch claims, pages and live workers are checked by the part it inherits
    (:class:`taskroll.testing_pages.ClaimAndPageContract`).
    """

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[TaskStore]:
        """An open store; closed after the test."""
        with open_store(store_url) as store:
            yield store

    @pytest.fixture
    def pool(self, store: TaskStore) -> Iterator[str]:
        """A fresh pool name, dropped after the test."""
        name = fresh_pool()
        yield name
        store.drop_pool(name)

    # -- inserts ---------------------------------------------------------------------------
    def test_insert_returns_new_ids_only(self, store: TaskStore, pool: str) -> None:
        records = [make_record(number) for number in range(5)]
        assert store.insert_many(pool, records) == [record["_id"] for record in records]
        assert store.insert_many(pool, [*records[:3], make_record(7)]) == ["task-000007"]
        assert store.insert_many(pool, [make_record(8), make_record(8)]) == ["task-000008"]
        assert len(list(store.find(pool, []))) == 7

    def test_record_fields_after_insert(self, store: TaskStore, pool: str) -> None:
        before = store.now()
        store.insert_many(pool, [make_record(1)])
        record = store.get(pool, "task-000001")
        assert record is not None
        assert record["status"] == "waiting" and record["priority"] == 0
        assert record["attempts"] == 0 and record["worker"] is None
        assert record["def"] == '{"number": 1}' and record["def_encoding"] == "json"
        assert record["filter"] == make_record(1)["filter"]
        assert record["res"] is None and record["error"] is None
        assert before - 1 <= record["created"] <= store.now() + 1

    def test_payloads_round_trip(self, store: TaskStore, pool: str) -> None:
        blob = pickle.dumps({"bytes": bytes(range(256))})
        store.insert_many(pool, [{**make_record(1), "def": blob, "def_encoding": "pickle"}])
        assert store.update(pool, "task-000001", {"res": blob, "res_encoding": "pickle"})
        record = store.get(pool, "task-000001")
        assert record is not None
        assert bytes(record["def"]) == blob and bytes(record["res"]) == blob

    def test_find_is_oldest_first_with_limit(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in (5, 1, 3)])
        assert [r["_id"] for r in store.find(pool, [])] == ["task-000005", "task-000001",
                                                              "task-000003"]
        assert [r["_id"] for r in store.find(pool, [], limit=2)] == ["task-000005", "task-000001"]
        assert store.get(pool, "nope") is None

    def test_unknown_pool_reads_empty(self, store: TaskStore) -> None:
        pool = fresh_pool()
        assert list(store.find(pool, [])) == []
        assert store.count_by_status(pool, []) == {}
        assert store.fetch(pool, [], "waiting", "w", 10) is None
        assert pool not in store.list_pools()

    def test_list_and_drop_pools(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(1)])
        assert pool in store.list_pools()
        store.drop_pool(pool)
        assert pool not in store.list_pools()
        assert list(store.find(pool, [])) == []

    # -- fetch and leases ------------------------------------------------------------------
    def test_fetch_order_priority_then_age(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(4)])
        assert store.update(pool, "task-000002", {"priority": 5})
        assert store.update(pool, "task-000003", {"priority": -1})
        order = []
        while (record := store.fetch(pool, [], "waiting", "w", 30)) is not None:
            order.append(record["_id"])
        assert order == ["task-000002", "task-000000", "task-000001", "task-000003"]

    def test_fetch_order_follows_priorities_set_in_bulk(self, store: TaskStore,
                                                        pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(5)])
        odd = parse_query({"filter.number": {"$in": [1, 3]}})
        assert store.update_many(pool, odd, {"priority": 4}) == 2
        assert store.update_many(pool, parse_query({"_id": "task-000003"}), {"priority": 9}) == 1
        order = []
        while (record := store.fetch(pool, [], "waiting", "w", 30)) is not None:
            order.append(record["_id"])
        assert order == ["task-000003", "task-000001", "task-000000", "task-000002",
                         "task-000004"]

    def test_fetch_stamps_the_claim(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(1)])
        before = store.now()
        record = store.fetch(pool, [], "waiting", "worker-a", 30.0)
        assert record is not None
        assert record["status"] == "running" and record["worker"] == "worker-a"
        assert record["attempts"] == 1 and record["claimed_from"] == "waiting"
        assert before - 1 <= record["started"] <= before + 5
        assert 29.0 <= record["lease_until"] - record["started"] <= 31.0
        stored = store.get(pool, "task-000001")
        assert stored is not None and stored["status"] == "running"
        assert store.fetch(pool, [], "waiting", "worker-b", 30.0) is None

    def test_fetch_with_conditions_and_status(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(6)])
        store.update(pool, "task-000004", {"status": "part_done"})
        conditions = parse_query({"filter.parity": "even"})
        record = store.fetch(pool, conditions, "part_done", "w", 30)
        assert record is not None and record["_id"] == "task-000004"
        assert record["claimed_from"] == "part_done"
        claimed = []
        while (record := store.fetch(pool, conditions, "waiting", "w", 30)) is not None:
            claimed.append(record["_id"])
        assert claimed == ["task-000000", "task-000002"]

    def test_guarded_update(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(1)])
        store.fetch(pool, [], "waiting", "owner", 30)
        assert not store.update(pool, "task-000001", {"status": "done"}, expected_worker="thief")
        assert not store.update(pool, "task-000001", {"status": "done"}, expected_status="waiting")
        assert store.update(pool, "task-000001", {"status": "done", "finished": NOW},
                            expected_status="running", expected_worker="owner")
        record = store.get(pool, "task-000001")
        assert record is not None and record["status"] == "done"
        assert abs(record["finished"] - store.now()) < 5
        assert not store.update(pool, "missing", {"status": "done"})

    def test_heartbeat_extends_only_the_owners_lease(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(1)])
        first = store.fetch(pool, [], "waiting", "owner", 1.0)
        assert first is not None
        assert store.heartbeat(pool, "task-000001", "owner", 100.0)
        assert not store.heartbeat(pool, "task-000001", "other", 100.0)
        record = store.get(pool, "task-000001")
        assert record is not None and record["lease_until"] - first["lease_until"] > 50

    def test_reap_returns_expired_leases(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(3)])
        store.update(pool, "task-000002", {"status": "part_done"})
        store.fetch(pool, parse_query({"_id": "task-000000"}), "waiting", "dead", 0.2)
        store.fetch(pool, [], "part_done", "dead", 0.2)
        store.fetch(pool, parse_query({"_id": "task-000001"}), "waiting", "alive", 60)
        time.sleep(0.6)
        assert store.reap(pool, max_attempts=3) == 2
        statuses = {r["_id"]: (r["status"], r["worker"]) for r in store.find(pool, [])}
        assert statuses == {"task-000000": ("waiting", None), "task-000001": ("running", "alive"),
                            "task-000002": ("part_done", None)}
        record = store.get(pool, "task-000000")
        assert record is not None and "lease expired" in (record["error"] or "")
        assert store.reap(pool, max_attempts=3) == 0

    def test_reap_fails_after_max_attempts(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(1)])
        for _ in range(2):
            assert store.fetch(pool, [], "waiting", "dead", 0.1) is not None
            time.sleep(0.3)
            assert store.reap(pool, max_attempts=2) == 1
        record = store.get(pool, "task-000001")
        assert record is not None and record["status"] == "failed" and record["attempts"] == 2
        assert "lease expired" in (record["error"] or "")

    # -- queries ---------------------------------------------------------------------------
    @pytest.mark.parametrize("query", REFERENCE_QUERIES,
                             ids=[reprlib.repr(q) for q in REFERENCE_QUERIES])
    def test_query_matches_reference(self, store: TaskStore, pool: str,
                                     query: dict[str, Any]) -> None:
        records = [make_record(number) for number in range(10)]
        records[4]["filter"]["extra"] = None
        records[6]["filter"]["extra"] = {"deep": 1}
        records[7]["filter"]["extra"] = "x"
        store.insert_many(pool, records)
        store.update(pool, "task-000001", {"priority": 3})
        store.fetch(pool, parse_query({"_id": "task-000005"}), "waiting", "w", 60)
        store.update(pool, "task-000008", {"status": "done"})
        everything = list(store.find(pool, []))
        conditions = parse_query(query)
        expected = [record["_id"] for record in everything if matches(record, conditions)]
        assert [record["_id"] for record in store.find(pool, conditions)] == expected
        counts: dict[str, int] = {}
        for record in everything:
            if matches(record, conditions):
                counts[record["status"]] = counts.get(record["status"], 0) + 1
        assert store.count_by_status(pool, conditions) == counts

    def test_update_many_and_delete_many(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(6)])
        odd = parse_query({"filter.parity": "odd"})
        assert store.update_many(pool, odd, {"status": "done", "finished": NOW}) == 3
        assert store.count_by_status(pool, []) == {"done": 3, "waiting": 3}
        assert store.delete_many(pool, parse_query({"status": "done"})) == 3
        assert sorted(r["_id"] for r in store.find(pool, [])) == [
            "task-000000", "task-000002", "task-000004"]

    # -- hostile input: refused with a clear error, nothing written, store still usable ---
    @staticmethod
    def _assert_unchanged_and_usable(store: TaskStore, pool: str,
                                     before: list[dict[str, Any]]) -> None:
        assert list(store.find(pool, [])) == before
        probe = make_record(999_999)
        assert store.insert_many(pool, [probe]) == [probe["_id"]]
        assert store.delete_many(pool, parse_query({"_id": probe["_id"]})) == 1

    @pytest.mark.parametrize("priority", BAD_PRIORITIES, ids=[repr(p) for p in BAD_PRIORITIES])
    def test_bad_priority_is_refused(self, store: TaskStore, pool: str, priority: Any) -> None:
        store.insert_many(pool, [make_record(1)])
        before = list(store.find(pool, []))
        with pytest.raises(TaskConfigError, match="priority"):
            store.insert_many(pool, [make_record(2), {**make_record(3), "priority": priority}])
        with pytest.raises(TaskConfigError, match="priority"):
            store.update(pool, "task-000001", {"status": "done", "priority": priority})
        with pytest.raises(TaskConfigError, match="priority"):
            store.update_many(pool, [], {"priority": priority})
        self._assert_unchanged_and_usable(store, pool, before)
        new_pool = fresh_pool()  # a refused insert does not create its pool either
        with pytest.raises(TaskConfigError, match="priority"):
            store.insert_many(new_pool, [{**make_record(1), "priority": priority}])
        assert new_pool not in store.list_pools()

    def test_priority_limits_are_64_bit(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [{**make_record(1), "priority": -(2**63)},
                                 {**make_record(2), "priority": 2**63 - 1}, make_record(3)])
        order = [store.fetch(pool, [], "waiting", "w", 30) for _ in range(3)]
        assert [(r["_id"], r["priority"]) for r in order if r] == [
            ("task-000002", 2**63 - 1), ("task-000003", 0), ("task-000001", -(2**63))]

    @pytest.mark.parametrize("status", ["bogus", "", "WAITING", 1, None])
    def test_bad_status_is_refused(self, store: TaskStore, pool: str, status: Any) -> None:
        store.insert_many(pool, [make_record(1)])
        before = list(store.find(pool, []))
        if status is not None:  # None is "the default" on insert
            with pytest.raises(StatusTransitionError):
                store.insert_many(pool, [{**make_record(2), "status": status}])
        with pytest.raises(StatusTransitionError):
            store.update(pool, "task-000001", {"status": status})
        with pytest.raises(StatusTransitionError):
            store.fetch(pool, [], status, "w", 30)
        self._assert_unchanged_and_usable(store, pool, before)

    @pytest.mark.parametrize("filter_value", [
        {"n": 2**64}, {"n": float("nan")}, {"n": float("inf")}, {"n": "a\x00b"}, {"a\x00": 1},
        {"n": nested_list(80)}, {1: "int key"}, {"n": object()}, "not a dict",
    ], ids=["int65", "nan", "inf", "nul-value", "nul-key", "deep", "int-key", "object", "str"])
    def test_unstorable_filter_is_refused(self, store: TaskStore, pool: str,
                                          filter_value: Any) -> None:
        store.insert_many(pool, [make_record(1)])
        before = list(store.find(pool, []))
        with pytest.raises(TaskConfigError):
            store.insert_many(pool, [make_record(2), {**make_record(3), "filter": filter_value}])
        with pytest.raises(TaskConfigError):
            store.update(pool, "task-000001", {"filter": filter_value})
        self._assert_unchanged_and_usable(store, pool, before)
        assert pool in store.list_pools()

    @pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=[reprlib.repr(q) for q in HOSTILE_QUERIES])
    def test_hostile_query_is_refused(self, store: TaskStore, pool: str, query: Any) -> None:
        with pytest.raises(QueryError):
            parse_query(query)

    @pytest.mark.parametrize("depth", [MAX_AND_DEPTH, MAX_AND_DEPTH + 1, 1000, 100_000])
    def test_nested_and_has_a_depth_limit(self, store: TaskStore, pool: str,
                                          depth: int) -> None:
        store.insert_many(pool, [make_record(1)])
        if depth > MAX_AND_DEPTH:
            with pytest.raises(QueryError, match=f"deeper than {MAX_AND_DEPTH}"):
                parse_query(nested_and(depth))
        else:
            assert len(list(store.find(pool, parse_query(nested_and(depth))))) == 1

    def test_unusual_keys_and_values_agree(self, store: TaskStore, pool: str) -> None:
        extras = [{"it's": 1, "ü key": "é", " ": 2**62}, {"it's": 2, "ü key": "e", " ": -(2**63)},
                  {"a[0]": [1, {"b": None}], "*": True}]
        store.insert_many(pool, [make_record(index, **extra) for index, extra in enumerate(extras)])
        everything = list(store.find(pool, []))
        for query in ({"filter.it's": 1}, {"filter.ü key": {"$gte": "é"}}, {"filter. ": 2**62},
                      {"filter. ": {"$lt": 0}}, {"filter.a[0]": [1, {"b": None}]},
                      {"filter.*": True}, {"filter.it's": {"$in": [2, 3]}}):
            conditions = parse_query(query)
            expected = [r["_id"] for r in everything if matches(r, conditions)]
            assert [r["_id"] for r in store.find(pool, conditions)] == expected, query

    def test_clock_is_sane(self, store: TaskStore) -> None:
        assert abs(store.now() - time.time()) < 30

    # -- concurrency -----------------------------------------------------------------------
    def test_threads_never_claim_twice(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(200)])
        claimed: list[str] = []
        lock = threading.Lock()

        def claim() -> None:
            while (record := store.fetch(pool, [], "waiting", threading.current_thread().name,
                                         60)) is not None:
                with lock:
                    claimed.append(record["_id"])

        threads = [threading.Thread(target=claim) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(claimed) == sorted(make_record(n)["_id"] for n in range(200))

    def test_processes_never_claim_twice(self, store: TaskStore, store_url: str,
                                         pool: str) -> None:
        store.insert_many(pool, [make_record(number) for number in range(300)])
        results = gather_processes(_fetch_worker, [(store_url, pool)] * 3)
        claimed = [task for result in results for task in result]
        assert sorted(claimed) == sorted(make_record(n)["_id"] for n in range(300))

    def test_concurrent_inserts_insert_once(self, store: TaskStore, store_url: str,
                                            pool: str) -> None:
        results = gather_processes(_insert_worker, [(store_url, pool, 300)] * 2)
        inserted = [task for result in results for task in result]
        assert sorted(inserted) == sorted(make_record(n)["_id"] for n in range(300))
        assert store.count_by_status(pool, []) == {"waiting": 300}
