"""``find_page`` and ``live_workers`` on every store (SQLite file, PostgreSQL, MongoDB server).

The reference is the contract itself: sort every match in Python with missing values
lowest and ties in insertion order (:func:`taskroll.store.base.sort_records`), then slice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import record
from taskroll.errors import TaskConfigError
from taskroll.store import TaskStore, parse_query
from taskroll.store.base import MAX_PAGE_SIZE, sort_records
from taskroll.store.sqlite import SQLiteStore

STATUSES = ("waiting", "done", "failed", "waiting", "part_done")
SORTS: list[list[tuple[str, int]]] = [
    [], [("created", -1)], [("created", 1)], [("priority", -1)], [("priority", 1)],
    [("status", 1), ("priority", -1)], [("started", -1)], [("started", 1)],
    [("finished", 1), ("_id", -1)], [("worker", 1)], [("attempts", -1), ("created", -1)],
    [("lease_until", -1)], [("_id", 1)],
]
QUERIES: list[dict[str, Any]] = [
    {}, {"status": "waiting"}, {"status": {"$in": ["failed", "running"]}},
    {"filter.group": {"$gte": 2}}, {"filter.none": None}, {"filter.tags": ["x"]},
]


def _open_sqlite(tmp_path: Path) -> TaskStore:
    return SQLiteStore(tmp_path / "tasks.db")


@pytest.fixture(params=["sqlite", "postgresql", "mongodb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TaskStore]]:
    """A factory of stores of each kind, all opening the same database."""
    if request.param == "sqlite":
        yield lambda: _open_sqlite(tmp_path)
    elif request.param == "postgresql":
        from taskroll.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        yield lambda: PostgresStore(url, retry_seconds=20)
    else:
        from taskroll.store.mongo import MongoStore

        url = request.getfixturevalue("mongo_url")
        database = f"paging_{uuid.uuid4().hex[:8]}"
        yield lambda: MongoStore(url, database, retry_seconds=20)


@pytest.fixture
def filled(make_store: Callable[[], TaskStore]) -> Iterator[tuple[TaskStore, str]]:
    """A pool of 40 tasks: mixed statuses, priorities (with ties), workers, stamps, leases."""
    store = make_store()
    pool = f"paging_{uuid.uuid4().hex[:8]}"
    records = [record(f"t{index:02d}", group=index % 4, tags=["x"] if index % 5 == 0 else ["y"],
                      **({"none": None} if index % 3 == 0 else {}))
               for index in range(40)]
    store.insert_many(pool, records[:20])
    store.insert_many(pool, records[20:])
    for index in range(40):
        fields: dict[str, Any] = {"priority": (index * 7) % 5 - 2,
                                  "status": STATUSES[index % len(STATUSES)]}
        if index % 4 == 1:
            fields.update(started=1000.0 + (index % 6), finished=2000.0 + index)
        store.update(pool, f"t{index:02d}", fields)
    for worker in ("w2", "w1", "w1"):  # three live leases held by two workers
        assert store.fetch(pool, parse_query({"status": "waiting"}), "waiting", worker, 600)
    assert store.fetch(pool, [], "waiting", "gone", 0.0)  # expires at once
    yield store, pool
    store.drop_pool(pool)
    store.close()


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [item["_id"] for item in records]


@pytest.mark.parametrize("sort", SORTS, ids=[str(sort) for sort in SORTS])
def test_pages_match_the_reference_order(filled: tuple[TaskStore, str],
                                         sort: list[tuple[str, int]]) -> None:
    store, pool = filled
    for query in QUERIES:
        conditions = parse_query(query)
        everything = list(store.find(pool, conditions))
        expected = _ids(sort_records(everything, sort))
        assert len(expected) == sum(store.count_by_status(pool, conditions).values())
        for skip, limit in ((0, 7), (7, 7), (35, 10), (0, MAX_PAGE_SIZE), (100, 5)):
            page = store.find_page(pool, conditions, sort, skip, limit)
            assert _ids(page) == expected[skip:skip + limit], (query, skip, limit)
        # the default implementation (every store's fallback) gives the same pages
        assert _ids(TaskStore.find_page(store, pool, conditions, sort, 3, 11)) == expected[3:14]


def test_orders_by_hand(filled: tuple[TaskStore, str]) -> None:
    store, pool = filled
    newest = store.find_page(pool, [], [("created", -1)], 0, 3)
    assert _ids(newest) == ["t39", "t38", "t37"]
    by_priority = store.find_page(pool, [], [("priority", -1)], 0, 40)
    priorities = [item["priority"] for item in by_priority]
    assert priorities == sorted(priorities, reverse=True)
    top = [item["_id"] for item in by_priority if item["priority"] == 2]
    assert top == sorted(top)  # ties in insertion order
    started = store.find_page(pool, [], [("started", 1)], 0, 40)
    assert started[0]["started"] is None and started[-1]["started"] is not None
    started = store.find_page(pool, [], [("started", -1)], 0, 40)
    assert started[0]["started"] is not None and started[-1]["started"] is None


def test_live_workers_counts_unexpired_leases_once(filled: tuple[TaskStore, str]) -> None:
    store, pool = filled
    time.sleep(0.05)
    assert store.live_workers(pool) == ["w1", "w2"]
    assert TaskStore.live_workers(store, pool) == ["w1", "w2"]
    assert store.count_by_status(pool, parse_query({"status": "running"}))["running"] == 4
    assert store.live_workers(f"missing_{uuid.uuid4().hex[:6]}") == []


@pytest.mark.parametrize(("sort", "skip", "limit"), [
    ([("filter", 1)], 0, 10), ([("priority", 0)], 0, 10), ([("priority", True)], 0, 10),
    (["priority"], 0, 10), ([], -1, 10), ([], 0, 0), ([], 0, MAX_PAGE_SIZE + 1),
    ([], 0.5, 10), ([], 0, "10"),
])
def test_bad_pages_are_refused(tmp_path: Path, sort: Any, skip: Any, limit: Any) -> None:
    with _open_sqlite(tmp_path) as store:
        with pytest.raises(TaskConfigError):
            store.find_page("pool", [], sort, skip, limit)
        with pytest.raises(TaskConfigError):
            TaskStore.find_page(store, "pool", [], sort, skip, limit)
