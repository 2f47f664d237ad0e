"""MongoStore against a MongoDB wire-protocol server started by the tests (see conftest.py).

By default the server is nx-27017 (an emulator on SQLite); set ``TASKROLL_TEST_MONGO_URL``
to run the same tests against a real MongoDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servers import require_module

from conftest import BackendChecks, record
from taskroll.errors import StoreConnectionError, StoreError
from taskroll.store import TaskStore, open_store, parse_query
from taskroll.testing import TaskStoreContract

pytestmark = pytest.mark.mongo
require_module("pymongo", "mongo")  # skipped locally, a failure with CI=true
import pymongo  # noqa: E402

from taskroll.store.mongo import COUNTERS, MongoStore  # noqa: E402
from taskroll.store.mongo_query import MongoQuery  # noqa: E402


class TestMongoStore(BackendChecks):
    """The shared store behaviour, on MongoDB."""

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, mongo_server: Any) -> Any:
        return mongo_server

    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, mongo_url: str) -> Iterator[str]:
        name = f"taskroll_test_{uuid.uuid4().hex[:8]}"
        yield name
        client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        client.drop_database(name)
        client.close()

    @pytest.fixture(scope="class")
    @classmethod
    def make_store(cls, mongo_url: str, database: str) -> Callable[[], TaskStore]:
        return lambda: MongoStore(mongo_url, database, retry_seconds=20)

    def test_pools_are_collections(self, store: MongoStore, pool: str) -> None:
        store.insert_many(pool, [record("a")])
        names = store._database().list_collection_names()
        assert pool in names and COUNTERS in names
        assert COUNTERS not in store.list_pools()
        document = store._database()[pool].find_one({"_id": "a"})
        assert document["filter"] == {"name": "a"} and document["seq"] >= 1
        with pytest.raises(StoreError):
            store.insert_many("_taskroll_x", [record("a")])

    def test_residual_conditions_fetch_in_order(self, store: MongoStore, pool: str) -> None:
        store.insert_many(pool, [record("a", tags=["x"]), record("b", tags=["x"]),
                                 record("c", tags="x")])
        store.update(pool, "b", {"priority": 1})
        conditions = parse_query({"filter.tags": ["x"]})
        assert MongoQuery(conditions).residual
        claimed = [store.fetch(pool, conditions, "waiting", "w", 5) for _ in range(3)]
        assert [task["_id"] if task else None for task in claimed] == ["b", "a", None]
        assert store.count_by_status(pool, conditions) == {"running": 2}


    def test_claims_use_one_direction_index(self, store: MongoStore, pool: str) -> None:
        store.insert_many(pool, [record("a"), record("b"), record("c")])
        store.update_many(pool, parse_query({"_id": "c"}), {"priority": 2**63 - 1})
        store.update(pool, "a", {"priority": -(2**63)})
        collection = store._database()[pool]
        assert all(document["reverse_seq"] == -document["seq"] for document in collection.find())
        keys = [[pair[0] for pair in index["key"]]  # nx-27017 reports every direction as 1
                for index in collection.index_information().values()]
        assert ["status", "priority", "reverse_seq"] in keys
        claimed = [store.fetch(pool, [], "waiting", "w", 5) for _ in range(3)]
        assert [task["_id"] for task in claimed if task] == ["c", "b", "a"]
        assert all("reverse_seq" not in task for task in claimed if task)

    def test_pool_written_without_claim_order_claims_by_priority(
            self, mongo_url: str, database: str) -> None:
        """Tasks an older taskroll wrote get the claim field; Qlib's, with no priority, last."""
        pool = f"old_{uuid.uuid4().hex[:8]}"
        writer: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        writer[database][pool].insert_many([
            {"_id": name, "def": "{}", "def_encoding": "json", "filter": {"name": name},
             "status": "waiting", "attempts": 0, "seq": seq, **extra}
            for seq, (name, extra) in enumerate(
                [("low", {"priority": -3}), ("qlib", {}), ("high", {"priority": 7}),
                 ("zero", {"priority": 0}), ("high2", {"priority": 7})], start=1)])
        writer.close()
        with MongoStore(mongo_url, database, retry_seconds=20) as store:
            order = []
            while (task := store.fetch(pool, [], "waiting", "w", 5)) is not None:
                order.append(task["_id"])
            assert order == ["high", "high2", "zero", "low", "qlib"]  # no priority: last
            assert store.count_by_status(pool, []) == {"running": 5}
            store.drop_pool(pool)

    @pytest.mark.parametrize("query", [{}, {"filter.tags": ["x"]}], ids=["server", "residual"])
    def test_claim_whose_reply_was_lost_is_not_orphaned(
            self, store: MongoStore, pool: str, query: dict[str, Any],
            monkeypatch: pytest.MonkeyPatch) -> None:
        store.insert_many(pool, [record("a", tags=["x"]), record("b", tags=["x"])])
        collection, lost = store._collection, []

        class Lossy:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def find_one_and_update(self, *arguments: Any, **options: Any) -> Any:
                result = self.inner.find_one_and_update(*arguments, **options)
                if not lost:  # applied, then the reply is lost
                    lost.append(True)
                    raise pymongo.errors.AutoReconnect("connection closed")
                return result

        monkeypatch.setattr(store, "_collection", lambda name: Lossy(collection(name)))
        claimed = store.fetch(pool, parse_query(query), "waiting", "w", 30)
        monkeypatch.undo()
        assert lost and claimed is not None and claimed["_id"] == "a"
        assert claimed["attempts"] == 1
        assert store.count_by_status(pool, []) == {"running": 1, "waiting": 1}


def test_translation_keeps_common_queries_on_the_server() -> None:
    common = {"filter.model.class": {"$in": ["Linear", "LGBM"]}, "status": "waiting",
              "filter.step": {"$gte": 20}, "_id": {"$nin": ["x"]}}
    assert not MongoQuery(parse_query(common)).residual
    assert MongoQuery(parse_query({"filter.x": None})).residual
    assert MongoQuery(parse_query({"filter.x": {"$exists": True}})).residual
    listed = MongoQuery(parse_query({"filter.a.b": [1, 2]}))
    assert listed.residual and {"filter.a.b": {"$type": "array"}} in listed.parts


def test_unreachable_server_error_is_masked() -> None:
    url = "mongodb://alice:s3cret@127.0.0.1:9/?authSource=admin"
    with pytest.raises(StoreConnectionError) as caught:
        MongoStore(url, "db", retry_seconds=0.3, server_selection_timeout_ms=100)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_factory_opens_a_mongo_store(mongo_url: str) -> None:
    with open_store(mongo_url, "taskroll_factory") as store:
        assert isinstance(store, MongoStore) and store.db_name == "taskroll_factory"
        assert repr(store) == f"MongoStore({mongo_url!r}, 'taskroll_factory')"


class TestMongoContract(TaskStoreContract):
    """The package's own contract suite (:mod:`taskroll.testing`) on this backend."""

    @pytest.fixture
    def store_url(self, mongo_url: str) -> str:
        return mongo_url
