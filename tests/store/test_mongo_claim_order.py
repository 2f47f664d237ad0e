"""The MongoDB store's claim order (``priority``, then age) against every writer.

Claims sort on ``priority`` and ``reverse_seq = -seq``, a field only this taskroll writes
(once, at insert). These tests write the pool the ways other writers do (Qlib's ``TaskManager``, an older
taskroll, both talking to the collection directly, as in a shared ``task_db_name``),
before and after a worker's first claim, and check that claims still follow the
priorities a reader sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from servers import require_module

from conftest import record
from taskroll.manage import TaskManager
from taskroll.store import parse_query
from taskroll.store.base import RECORD_FIELDS

pytestmark = pytest.mark.mongo
require_module("pymongo", "mongo")  # skipped locally, a failure with CI=true
import pymongo  # noqa: E402

from taskroll.store.mongo import _PAGE, MongoStore  # noqa: E402


@pytest.fixture(scope="module")
def database(mongo_url: str) -> Iterator[str]:
    """A database of its own for this module, dropped at the end."""
    name = f"taskroll_order_{uuid.uuid4().hex[:8]}"
    yield name
    client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    client.drop_database(name)
    client.close()


@pytest.fixture
def store(mongo_url: str, database: str) -> Iterator[MongoStore]:
    """A store on the module's database."""
    with MongoStore(mongo_url, database, retry_seconds=20) as opened:
        yield opened


@pytest.fixture
def pool(store: MongoStore) -> Iterator[str]:
    """A fresh pool name, dropped after the test."""
    name = f"pool_{uuid.uuid4().hex[:8]}"
    yield name
    store.drop_pool(name)


@pytest.fixture
def collection(mongo_url: str, database: str, pool: str) -> Iterator[Any]:
    """The pool's collection through a client of its own: another program writing it."""
    client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    yield client[database][pool]
    client.close()


def qlib_task(name: str, **extra: Any) -> dict[str, Any]:
    """A task as Qlib's ``TaskManager.create_task`` inserts it: no priority, no ``seq``."""
    return {"_id": name, "def": "{}", "def_encoding": "json", "filter": {"name": name},
            "status": "waiting", **extra}


def old_taskroll_task(name: str, priority: int, seq: int) -> dict[str, Any]:
    """A task as taskroll before the claim-order change inserted it (no ``reverse_seq``)."""
    return {**dict.fromkeys(RECORD_FIELDS), **qlib_task(name), "priority": priority,
            "created": 1.0e9 + seq, "attempts": 0, "seq": seq}


def store_records(mongo_url: str, database: str, pool: str) -> list[dict[str, Any]]:
    """Every task of ``pool`` as the store reads it, oldest first."""
    with MongoStore(mongo_url, database, retry_seconds=20) as reader:
        return list(reader.find(pool, []))


def claim_order(store: MongoStore, pool: str, query: dict[str, Any] | None = None) -> list[str]:
    """Ids of the tasks ``store`` claims one at a time until none is left."""
    conditions = parse_query(query or {})
    order = []
    while (task := store.fetch(pool, conditions, "waiting", "w", 30)) is not None:
        order.append(task["_id"])
    return order


def expected_order(store: MongoStore, pool: str) -> list[str]:
    """Waiting ids by the priority a reader sees (missing = 0) then age: the documented order."""
    waiting = store.find(pool, parse_query({"status": "waiting"}))
    ranked = sorted(enumerate(waiting), key=lambda pair: (-(pair[1]["priority"] or 0), pair[0]))
    return [task["_id"] for _, task in ranked]


# -- properties kept ---------------------------------------------------------------------
def test_every_taskroll_priority_write_keeps_the_claim_order(store: MongoStore,
                                                             pool: str) -> None:
    """insert_many, update, update_many (server and residual filters), both claim paths."""
    store.insert_many(pool, [{**record(f"t{index}", tags=["x"] if index % 2 else ["y"]),
                              "priority": index % 3} for index in range(8)])
    assert store.update(pool, "t0", {"priority": 9}, expected_status="waiting")
    assert store.update_many(pool, parse_query({"filter.name": {"$in": ["t1", "t2"]}}),
                             {"priority": -4}) == 2
    assert store.update_many(pool, parse_query({"filter.tags": ["x"]}), {"priority": 5}) == 4
    expected = expected_order(store, pool)
    assert expected[:5] == ["t0", "t1", "t3", "t5", "t7"]
    residual = [task for task in expected if task in {"t1", "t3", "t5", "t7"}]
    assert claim_order(store, pool, {"filter.tags": ["x"]}) == residual
    batch = store.fetch_many(pool, [], "waiting", "w", 30, 3)
    assert [task["_id"] for task in batch] == [task for task in expected
                                               if task not in residual][:3]
    shown = [*batch, store.get(pool, "t0"), *store.find_page(pool, [], (("priority", -1),))]
    assert all(task is not None and "priority" in task
               and not set(task) & {"reverse_seq", "claim"} for task in shown)


def test_a_second_store_object_claims_what_the_first_reprioritised(
        store: MongoStore, pool: str, mongo_url: str, database: str) -> None:
    store.insert_many(pool, [record("a"), record("b"), record("c")])
    with MongoStore(mongo_url, database, retry_seconds=20) as other:
        assert other.fetch(pool, parse_query({"_id": "a"}), "waiting", "w", 30) is not None
        store.update(pool, "c", {"priority": 1})
        assert claim_order(other, pool) == ["c", "b"]


def test_pool_dropped_and_refilled_by_taskroll_elsewhere(
        store: MongoStore, pool: str, mongo_url: str, database: str) -> None:
    store.insert_many(pool, [record("old")])
    assert claim_order(store, pool) == ["old"]
    with MongoStore(mongo_url, database, retry_seconds=20) as other:
        other.drop_pool(pool)
        other.insert_many(pool, [record("low"), {**record("high"), "priority": 2}])
    assert claim_order(store, pool) == ["high", "low"]


# -- other writers after this process's first claim --------------------------------------
def test_qlib_task_created_after_the_first_claim_waits_its_turn(
        store: MongoStore, pool: str, collection: Any) -> None:
    """A worker polls before Qlib's ``create_task`` fills the pool (or adds to it)."""
    store.insert_many(pool, [{**record("urgent"), "priority": 5}, record("plain")])
    assert store.fetch(pool, parse_query({"_id": "plain"}), "waiting", "w", 30) is not None
    collection.insert_one(qlib_task("from_qlib"))  # priority 0 for every reader
    assert expected_order(store, pool) == ["urgent", "from_qlib"]
    assert claim_order(store, pool) == ["urgent", "from_qlib"]


def test_worker_started_on_an_empty_pool_claims_qlib_tasks_by_priority(
        store: MongoStore, pool: str, collection: Any) -> None:
    """The usual start-up: workers first, then Qlib creates and prioritises the tasks."""
    assert store.fetch(pool, [], "waiting", "w", 30) is None
    collection.insert_many([qlib_task("first"), qlib_task("second")])
    collection.update_one({"_id": "second"}, {"$set": {"priority": 3}})  # Qlib's prioritize
    assert expected_order(store, pool) == ["second", "first"]
    assert claim_order(store, pool) == ["second", "first"]


def test_worker_claims_by_priority_during_a_rolling_upgrade(
        store: MongoStore, pool: str, collection: Any) -> None:
    """A worker of this version polls; a ``create_task`` of the previous version fills the pool."""
    manager = TaskManager(pool, store, lease_seconds=30)
    assert manager.fetch_task() is None
    collection.insert_many([old_taskroll_task("low", -1, 1), old_taskroll_task("mid", 0, 2),
                            old_taskroll_task("high", 4, 3)])
    assert [task["_id"] for task in manager.fetch_task(n=2)] == ["high", "mid"]


def test_priority_set_by_qlib_after_the_first_claim_is_honoured(
        store: MongoStore, pool: str, collection: Any) -> None:
    store.insert_many(pool, [record("a"), record("b"), record("c")])
    assert store.fetch(pool, parse_query({"_id": "a"}), "waiting", "w", 30) is not None
    collection.update_one({"_id": "c"}, {"$set": {"priority": 7}})  # Qlib's prioritize
    assert expected_order(store, pool) == ["c", "b"]
    assert claim_order(store, pool) == ["c", "b"]


def test_batch_claim_after_qlib_wrote_more_tasks(
        store: MongoStore, pool: str, collection: Any) -> None:
    store.insert_many(pool, [{**record(f"t{index}"), "priority": 1} for index in range(3)])
    assert len(store.fetch_many(pool, [], "waiting", "w", 30, 1)) == 1
    collection.insert_many([qlib_task(f"q{index}") for index in range(3)])
    claimed = store.fetch_many(pool, [], "waiting", "w", 30, 2)
    assert [task["_id"] for task in claimed] == ["t1", "t2"]


# -- pools first claimed by this version -------------------------------------------------
def test_pool_with_non_integer_priorities_claims_by_priority(
        store: MongoStore, pool: str, collection: Any) -> None:
    """Qlib stores whatever number ``prioritize`` was given; the old sort honoured it."""
    collection.insert_many([qlib_task("zero", priority=0), qlib_task("half", priority=0.5),
                            qlib_task("five", priority=5.0), qlib_task("one", priority=1)])
    assert claim_order(store, pool) == ["five", "one", "half", "zero"]


class _WriteAfterDistinct(pymongo.monitoring.CommandListener):
    """Runs ``write`` once, right after the first ``distinct`` reply: another writer's turn."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def started(self, event: Any) -> None:
        """Nothing to do when a command starts."""

    def succeeded(self, event: Any) -> None:
        """Write once after the ``distinct`` that lists the priorities to convert."""
        if event.command_name == "distinct" and self.write is not None:
            write, self.write = self.write, None
            write()

    def failed(self, event: Any) -> None:
        """Nothing to do when a command fails."""


def test_task_written_while_the_pool_is_readied_keeps_its_priority(
        mongo_url: str, database: str, pool: str, collection: Any) -> None:
    """An older taskroll inserts a priority-7 task between ``distinct`` and the catch-all."""
    collection.insert_many([{**qlib_task(f"old{index}", priority=1), "seq": index}
                            for index in range(2)])
    listener = _WriteAfterDistinct(
        lambda: collection.insert_one({**qlib_task("late", priority=7), "seq": 3}))
    with MongoStore(mongo_url, database, retry_seconds=20,
                    client_options={"event_listeners": [listener]}) as store:
        order = claim_order(store, pool)
    # whether or not this version has a pass that lets another writer in between: every
    # task there is was claimed, by priority (a stable sort keeps ``seq`` order within one)
    claimed = sorted(store_records(mongo_url, database, pool), key=lambda task: -task["priority"])
    assert order == [task["_id"] for task in claimed]
    assert listener.write is None or order == ["old0", "old1"]


# -- pools without ``seq`` (pre-existing) ---------------------------------------------------
def test_qlib_pool_larger_than_a_page_reads_and_counts(
        store: MongoStore, pool: str, collection: Any) -> None:
    """Qlib writes no ``seq``: paging by ``seq`` must still get past the first page."""
    collection.insert_many([qlib_task(f"q{index:05d}", filter={"tag": ["x"], "index": index})
                            for index in range(_PAGE + 1)])
    assert len(list(store.find(pool, []))) == _PAGE + 1
    assert store.count_by_status(pool, parse_query({"filter.tag": ["x"]})) == {
        "waiting": _PAGE + 1}
