"""Session fixtures: PostgreSQL and MongoDB test servers on loopback (see ``servers.py``).

``postgres_url`` / ``mongo_url`` give the URL of a server started once per session (or
of ``TASKROLL_TEST_POSTGRES_URL`` / ``TASKROLL_TEST_MONGO_URL`` when set);
``postgres_server`` / ``mongo_server`` give the server object, whose ``restart()`` the
reconnection tests use. Tests skip with an install hint when the binaries are missing,
and fail instead when ``CI=true`` (see ``servers.unavailable``).
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskroll.errors import StoreError
from taskroll.store import NOW, TaskStore, parse_query
from taskroll.store.base import RECORD_FIELDS
from taskroll.store.query import Condition, matches
from taskroll.task.spec import task_id

sys.path.insert(0, str(Path(__file__).parent))

from servers import (
    ExternalServer,
    MongoServer,
    PostgresServer,
    Server,
    session_server,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A running PostgreSQL server for this test session."""
    yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                              PostgresServer)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: Server) -> str:
    """URL of the session's PostgreSQL database."""
    return postgres_server.url


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[Server]:
    """A running MongoDB wire-protocol server (nx-27017, or the external one) for the session."""
    yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)


@pytest.fixture(scope="session")
def mongo_url(mongo_server: Server) -> str:
    """URL of the session's MongoDB server."""
    return mongo_server.url


# -- a query corpus shared by the backend tests ------------------------------------------
class StrictBool:
    """A bool that equals only bools: JSON/MongoDB/SQL typing, where ``true != 1``."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StrictBool) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("bool", self.value))

    def __repr__(self) -> str:
        return f"StrictBool({self.value})"


def strict(value: object) -> object:
    """Return ``value`` with every bool wrapped in :class:`StrictBool` (for ``matches``)."""
    if isinstance(value, bool):
        return StrictBool(value)
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    return value


CORPUS_FILTERS: list[dict[str, object]] = [
    {"model": {"class": "Linear", "kwargs": {"alpha": 1}}, "step": 20, "tags": ["a", "b"],
     "name": "x", "flag": True, "none": None},
    {"model": {"class": "LGBM", "kwargs": {"alpha": 0.5}}, "step": 40, "tags": ["b"],
     "name": "y", "flag": False},
    {"model": "plain", "step": 20.5, "tags": "a", "name": "z", "flag": 1, "none": 0},
    {"model": [{"class": "Linear"}], "step": "20", "name": "\u00c4",
     "nested": {"a": {"b": [1, 2]}}},
    {"model": {"class": "Linear", "kwargs": {}}, "step": 1, "flag": 0, "0": {"1": "x"},
     "dotted.key": 1, "tags": [["b"]]},
    {},
    {"step": None, "model": {"class": None}},
]

CORPUS_QUERIES: list[dict[str, object]] = [
    {},
    {"filter.model.class": "Linear"},
    {"def.model.class": "Linear"},
    {"filter.model.class": {"$in": ["Linear", "LGBM"]}},
    {"filter.model.class": {"$nin": ["Linear"]}},
    {"filter.model.class": {"$ne": "Linear"}},
    {"filter.model.class": None},
    {"filter.model.class": {"$ne": None}},
    {"filter.model.class": {"$in": [None, "LGBM"]}},
    {"filter.model.class": {"$exists": True}},
    {"filter.model.class": {"$exists": False}},
    {"filter.model": "plain"},
    {"filter.model": {"class": "Linear", "kwargs": {"alpha": 1}}},
    {"filter.model": {"$ne": {"class": "Linear", "kwargs": {}}}},
    {"filter.model.kwargs": {}},
    {"filter.tags": "a"},
    {"filter.tags": ["a", "b"]},
    {"filter.tags": {"$in": [["b"], "a"]}},
    {"filter.tags": {"$nin": [["b"]]}},
    {"filter.step": 20},
    {"filter.step": 20.0},
    {"filter.step": {"$gt": 20}},
    {"filter.step": {"$gte": 20, "$lt": 40}},
    {"filter.step": {"$lte": "20"}},
    {"filter.step": {"$in": [20, 40, "20"]}},
    {"filter.step": {"$nin": [20]}},
    {"filter.step": {"$gt": None}},
    {"filter.flag": True},
    {"filter.flag": 1},
    {"filter.flag": {"$ne": False}},
    {"filter.flag": {"$gt": 0}},
    {"filter.flag": {"$in": [True, 0]}},
    {"filter.none": None},
    {"filter.none": {"$exists": True}},
    {"filter.none": {"$exists": False}},
    {"filter.nested.a.b": [1, 2]},
    {"filter.nested.a.b.0": 1},
    {"filter.model.0.class": "Linear"},
    {"filter.model.class.x": {"$exists": False}},
    {"filter.name": {"$gt": "y"}},
    {"filter.name": {"$lt": "Z"}},
    {"filter.0.1": "x"},
    {"filter.dotted.key": 1},
    {"filter.model.kwargs.alpha": {"$lte": 1}},
    {"status": "waiting"},
    {"status": {"$in": ["done", "waiting"]}},
    {"status": {"$nin": ["done"]}},
    {"priority": {"$gt": 0}},
    {"priority": 2},
    {"priority": True},
    {"priority": "2"},
    {"priority": {"$lt": "a"}},
    {"priority": {"$in": [2, 2.0, "x"]}},
    {"worker": None},
    {"worker": {"$ne": None}},
    {"worker": "w1"},
    {"worker": {"$ne": "w1"}},
    {"worker": {"$exists": False}},
    {"worker": {"$exists": True}},
    {"attempts": {"$gte": 1}},
    {"started": {"$exists": True}},
    {"started": {"$gt": 0}},
    {"error": {"$ne": "x"}},
    {"claimed_from": {"$gte": "w"}},
    {"$and": [{"filter.step": {"$gte": 20}}, {"filter.model.class": "Linear"}]},
    {"filter": CORPUS_FILTERS[0]},
    {"status": "waiting", "filter.step": {"$exists": True}, "priority": {"$gte": 0}},
]


# -- behaviour every server-backed store shares ------------------------------------------
def record(name: str, **extra: Any) -> dict[str, Any]:
    """A minimal insertable record named ``name``."""
    return {"_id": name, "def": f'{{"name":"{name}"}}', "def_encoding": "json",
            "filter": {"name": name, **extra}}


def reference_ids(records: list[dict[str, Any]], conditions: list[Condition]) -> list[str]:
    """Ids ``matches`` selects, with JSON typing (``true`` never equals ``1``)."""
    typed = [Condition(item.field, item.path, item.operator,
                       item.value if item.operator == "$exists" else strict(item.value))
             for item in conditions]
    return sorted(item["_id"] for item in records
                  if matches(strict(item), typed))  # type: ignore[arg-type]


def _create_in_process(make_store: Callable[[], TaskStore], pool: str, names: list[str],
                       results: Any) -> None:
    with make_store() as store:
        results.put(store.insert_many(pool, [record(name) for name in names]))


class BackendChecks:
    """Tests run on each server-backed store; subclasses provide ``make_store`` and ``server``."""

    @pytest.fixture
    def store(self, make_store: Callable[[], TaskStore]) -> Iterator[TaskStore]:
        with make_store() as opened:
            yield opened

    @pytest.fixture
    def pool(self, store: TaskStore) -> Iterator[str]:
        name = f"pool_{uuid.uuid4().hex[:8]}"
        yield name
        store.drop_pool(name)

    @pytest.fixture(scope="class")
    @classmethod
    def corpus(cls, make_store: Callable[[], TaskStore]
               ) -> Iterator[tuple[TaskStore, str, list[dict[str, Any]]]]:
        """A pool holding every corpus filter, with varied statuses, workers and priorities."""
        store = make_store()
        pool = f"corpus_{uuid.uuid4().hex[:8]}"
        records = [{"_id": task_id(item), "def": "{}", "def_encoding": "json", "filter": item}
                   for item in CORPUS_FILTERS]
        store.insert_many(pool, records)
        ids = [item["_id"] for item in records]
        store.update(pool, ids[0], {"priority": 2})
        store.update(pool, ids[1], {"status": "done", "error": "x"})
        claimed = store.fetch(pool, [Condition("_id", (), "$eq", ids[2])], "waiting", "w1", 60)
        assert claimed is not None
        store.update(pool, ids[3], {"worker": "w2", "priority": -1})
        yield store, pool, list(store.find(pool, []))
        store.drop_pool(pool)
        store.close()

    # -- queries -------------------------------------------------------------------------
    @pytest.mark.parametrize("query", CORPUS_QUERIES,
                             ids=[str(query)[:60] for query in CORPUS_QUERIES])
    def test_query_matches_reference(
            self, corpus: tuple[TaskStore, str, list[dict[str, Any]]],
            query: dict[str, Any]) -> None:
        store, pool, records = corpus
        conditions = parse_query(query)
        expected = reference_ids(records, conditions)
        assert sorted(item["_id"] for item in store.find(pool, conditions)) == expected
        assert sum(store.count_by_status(pool, conditions).values()) == len(expected)
        assert store.update_many(pool, conditions, {}) == len(expected)
        if expected:
            assert len(list(store.find(pool, conditions, limit=1))) == 1

    def test_update_and_delete_many_use_the_query(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [record("a", step=20), record("b", step=40), record("c"),
                                 record("d", step=[20])])
        conditions = parse_query({"filter.step": {"$gte": 20}})
        assert store.update_many(pool, conditions, {"priority": 5, "finished": NOW}) == 2
        assert {item["_id"]: item["priority"] for item in store.find(pool, [])} == \
            {"a": 5, "b": 5, "c": 0, "d": 0}
        assert store.update_many(pool, parse_query({"filter.step": [20]}), {"priority": 1}) == 1
        assert store.delete_many(pool, parse_query({"filter.step": {"$exists": False}})) == 1
        assert store.delete_many(pool, parse_query({"filter.step": {"$in": [[20]]}})) == 1
        assert store.count_by_status(pool, []) == {"waiting": 2}

    # -- writes --------------------------------------------------------------------------
    def test_insert_many_skips_existing_ids_and_keeps_order(self, store: TaskStore,
                                                            pool: str) -> None:
        assert store.insert_many(pool, [record("b"), record("a"), record("b")]) == ["b", "a"]
        assert store.insert_many(pool, [record("c"), record("a"), record("d")]) == ["c", "d"]
        found = list(store.find(pool, []))
        assert [item["_id"] for item in found] == ["b", "a", "c", "d"]
        assert found[0]["created"] <= found[2]["created"]
        assert abs(found[0]["created"] - time.time()) < 60
        assert found[0]["attempts"] == 0 and found[0]["status"] == "waiting"
        assert pool in store.list_pools()
        assert store.insert_many(pool, []) == []

    def test_payloads_round_trip_as_text_or_bytes(self, store: TaskStore, pool: str) -> None:
        binary = {"_id": "p", "def": b"\x80\x04pickle\x00", "def_encoding": "pickle",
                  "filter": {}}
        store.insert_many(pool, [binary, record("j")])
        assert store.get(pool, "p")["def"] == b"\x80\x04pickle\x00"  # type: ignore[index]
        assert store.get(pool, "j")["def"] == '{"name":"j"}'  # type: ignore[index]
        assert store.update(pool, "j", {"res": b"\x00\x01", "res_encoding": "pickle"})
        assert store.get(pool, "j")["res"] == b"\x00\x01"  # type: ignore[index]
        assert store.update(pool, "j", {"res": "[1]", "res_encoding": "json"})
        got = store.get(pool, "j")
        assert got is not None and got["res"] == "[1]" and got["res_encoding"] == "json"
        assert set(got) == set(RECORD_FIELDS)

    def test_update_guards(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [record("a")])
        assert not store.update(pool, "a", {"status": "done"}, expected_status="running")
        assert not store.update(pool, "missing", {"status": "done"})
        assert store.update(pool, "a", {"status": "done", "finished": NOW},
                            expected_status="waiting")
        got = store.get(pool, "a")
        assert got is not None and got["status"] == "done" and got["finished"] is not None
        assert not store.update(pool, "a", {"res": "1"}, expected_worker="w")
        assert store.update(pool, "a", {})
        assert not store.update(pool, "a", {}, expected_status="waiting")
        with pytest.raises(StoreError):
            store.update(pool, "a", {"created": 1.0})
        with pytest.raises(StoreError):
            store.update(pool, "a", {"status": NOW})

    def test_unknown_and_dropped_pools_read_as_empty(self, store: TaskStore, pool: str) -> None:
        assert list(store.find(pool, [])) == [] and store.count_by_status(pool, []) == {}
        store.insert_many(pool, [record("a")])
        store.delete_many(pool, [])
        assert pool in store.list_pools()
        store.drop_pool(pool)
        assert pool not in store.list_pools()
        assert store.fetch(pool, [], "waiting", "w", 10) is None
        assert store.reap(pool, 3) == 0

    # -- claims --------------------------------------------------------------------------
    def test_fetch_order_and_stamps(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [record("low1"), record("high"), record("low2")])
        store.insert_many(pool, [record("low3")])
        store.update(pool, "high", {"priority": 3})
        before = store.now()
        first = store.fetch(pool, [], "waiting", "w1", 30)
        assert first is not None and first["_id"] == "high"
        assert first["status"] == "running" and first["worker"] == "w1"
        assert first["attempts"] == 1 and first["claimed_from"] == "waiting"
        assert before - 1 <= first["started"] <= store.now() + 1
        assert first["lease_until"] == pytest.approx(first["started"] + 30, abs=0.01)
        order = [store.fetch(pool, [], "waiting", "w1", 30) for _ in range(3)]
        assert [task["_id"] for task in order if task] == ["low1", "low2", "low3"]
        assert store.fetch(pool, [], "waiting", "w1", 30) is None

    def test_fetch_honours_conditions_and_status(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [record("a", kind="x"), record("b", kind="y", tags=["t"])])
        store.update(pool, "b", {"status": "part_done"})
        assert store.fetch(pool, parse_query({"filter.kind": "y"}), "waiting", "w", 5) is None
        assert store.fetch(pool, parse_query({"filter.tags": ["u"]}), "part_done", "w", 5) is None
        got = store.fetch(pool, parse_query({"filter.tags": ["t"]}), "part_done", "w", 5)
        assert got is not None and got["_id"] == "b" and got["claimed_from"] == "part_done"

    def test_heartbeat_and_reap(self, store: TaskStore, pool: str) -> None:
        store.insert_many(pool, [record("a"), record("b")])
        a = store.fetch(pool, [], "waiting", "w1", 0.3)
        b = store.fetch(pool, [], "waiting", "w2", 0.3)
        assert a is not None and b is not None
        assert store.heartbeat(pool, "a", "w1", 60)
        assert not store.heartbeat(pool, "a", "w2", 60)
        time.sleep(0.5)
        assert store.reap(pool, max_attempts=3) == 1
        reaped = store.get(pool, "b")
        assert reaped is not None and reaped["status"] == "waiting" and reaped["worker"] is None
        assert reaped["lease_until"] is None and "w2" in reaped["error"]
        assert not store.heartbeat(pool, "b", "w2", 60)
        again = store.fetch(pool, [], "waiting", "w3", 0.0)
        assert again is not None and again["attempts"] == 2
        time.sleep(0.05)
        assert store.reap(pool, max_attempts=2) == 1
        failed = store.get(pool, "b")
        assert failed is not None and failed["status"] == "failed" and failed["finished"]
        assert store.get(pool, "a")["status"] == "running"  # type: ignore[index]

    def test_concurrent_fetches_claim_each_task_once(
            self, store: TaskStore, pool: str, make_store: Callable[[], TaskStore]) -> None:
        store.insert_many(pool, [record(f"t{index:03d}") for index in range(120)])
        claimed: list[str] = []
        lock = threading.Lock()

        def work(worker: str) -> None:
            with make_store() as own:
                while (task := own.fetch(pool, [], "waiting", worker, 60)) is not None:
                    with lock:
                        claimed.append(task["_id"])

        threads = [threading.Thread(target=work, args=(f"w{index}",)) for index in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(claimed) == [f"t{index:03d}" for index in range(120)]

    def test_concurrent_creators_in_processes_insert_each_id_once(
            self, pool: str, make_store: Callable[[], TaskStore]) -> None:
        names = [f"n{index:03d}" for index in range(150)]
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        orders = [names, names[::-1], names[50:] + names[:50], sorted(names, key=hash)]
        processes = [context.Process(target=_create_in_process,
                                     args=(make_store, pool, order, results))
                     for order in orders]
        for process in processes:
            process.start()
        inserted = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        assert sorted(name for batch in inserted for name in batch) == names

    # -- connections ---------------------------------------------------------------------
    def test_reconnects_after_server_restart(self, server: Any, store: TaskStore,
                                             pool: str) -> None:
        if isinstance(server, ExternalServer):
            pytest.skip("cannot restart an external server")
        store.insert_many(pool, [record("a"), record("b")])
        server.restart()
        assert store.fetch(pool, [], "waiting", "w", 30) is not None
        stopper = threading.Thread(target=server.restart, kwargs={"down_seconds": 2.0})
        stopper.start()
        time.sleep(0.5)
        try:
            assert store.count_by_status(pool, []) == {"running": 1, "waiting": 1}
        finally:
            stopper.join()
        assert store.fetch(pool, [], "waiting", "w", 30) is not None

    def test_closed_store_refuses_work(self, make_store: Callable[[], TaskStore]) -> None:
        store = make_store()
        store.close()
        with pytest.raises(StoreError):
            store.now()
