"""Hostile input against every store: a clear taskroll error or the right answer, never harm.

Each case of :data:`CASES` runs on SQLite, PostgreSQL and MongoDB (the loopback test
servers of ``tests/store/servers.py``; with ``CI=true`` a server that cannot start fails
the run). For every case the test checks that

* the call raises the case's :class:`~taskroll.errors.TaskrollError` subclass, or
  returns the case's expected result;
* the pool holds exactly what it held before (snapshot of every record and of the pool
  list);
* the store still works: a write succeeds at once, on the same store and (SQLite) on a
  second connection with a short busy timeout, so no transaction was left open.

The last tests make a write fail *inside* the SQLite transaction (an error no check
catches) and prove that another process can still write at once.
"""

from __future__ import annotations

import multiprocessing
import reprlib
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from servers import MongoServer, PostgresServer, Server, session_server

from taskroll.errors import (
    QueryError,
    StatusTransitionError,
    StoreError,
    TaskConfigError,
    TaskrollError,
)
from taskroll.store import NOW, TaskStore, parse_query
from taskroll.store.sqlite import SQLiteStore
from taskroll.testing import nested_and, nested_list

Action = Callable[[TaskStore, str], Any]


def task(name: str, **fields: Any) -> dict[str, Any]:
    """An insertable record named ``name``; ``fields`` override record keys."""
    return {"_id": name, "def": f'{{"name": "{name}"}}', "def_encoding": "json",
            "filter": {"name": name, "n": len(name)}, **fields}


@dataclass(frozen=True)
class Case:
    """One hostile call: ``action(store, pool)`` must raise ``error`` or return ``result``."""

    name: str
    action: Action
    error: type[TaskrollError] | None = None
    result: Any = None


def _insert(*records: Any) -> Action:
    return lambda store, pool: store.insert_many(pool, [task("fresh"), *records])


def _update(fields: dict[str, Any], task_id: str = "a") -> Action:
    return lambda store, pool: store.update(pool, task_id, fields)


def _query(query: Any, operation: str = "find") -> Action:
    def act(store: TaskStore, pool: str) -> Any:
        conditions = parse_query(query)
        if operation == "find":
            return sorted(item["_id"] for item in store.find(pool, conditions))
        if operation == "count":
            return store.count_by_status(pool, conditions)
        if operation == "delete":
            return store.delete_many(pool, conditions)
        return store.update_many(pool, conditions, {"priority": 7})
    return act


BAD_PRIORITIES = [True, False, 1.7, 2.0, float("nan"), float("inf"), "high", "1", b"1", 2**63,
                  -(2**63) - 1, 2**70, -(2**70), [1], {"p": 1}]
CASES: list[Case] = [
    *(Case(f"insert priority {value!r}", _insert(task("bad", priority=value)), TaskConfigError)
      for value in BAD_PRIORITIES),
    *(Case(f"update priority {value!r}", _update({"priority": value, "status": "done"}),
           TaskConfigError) for value in (True, 1.7, "high", 2**63, None)),
    Case("update_many priority 2**63",
         lambda store, pool: store.update_many(pool, [], {"priority": 2**63}), TaskConfigError),
    *(Case(f"insert status {value!r}", _insert(task("bad", status=value)), StatusTransitionError)
      for value in ("bogus", "", "WAITING", 1)),
    Case("update status bogus", _update({"status": "bogus"}), StatusTransitionError),
    Case("update claimed_from bogus", _update({"claimed_from": "nowhere"}),
         StatusTransitionError),
    Case("fetch status bogus", lambda store, pool: store.fetch(pool, [], "bogus", "w", 30),
         StatusTransitionError),
    *(Case(f"insert filter {label}", _insert(task("bad", filter=value)), TaskConfigError)
      for label, value in (("2**64", {"n": 2**64}), ("nan", {"n": float("nan")}),
                           ("nul value", {"n": "a\x00b"}), ("nul key", {"a\x00": 1}),
                           ("int key", {1: 2}), ("80 deep", {"n": nested_list(80)}),
                           ("object", {"n": object()}), ("str", "filter"))),
    Case("update filter -2**64", _update({"filter": {"n": -(2**64)}}), TaskConfigError),
    *(Case(f"insert record {label}", _insert(value), error)
      for label, value, error in (
          ("without _id", {"def": "{}", "def_encoding": "json", "filter": {}}, StoreError),
          ("_id empty", task(""), TaskConfigError),
          ("_id with NUL", task("x\x00y"), TaskConfigError),
          ("_id int", task("x", _id=5), TaskConfigError),
          ("def int", task("x", **{"def": 5}), TaskConfigError),
          ("def with NUL", task("x", **{"def": "{\x00}"}), TaskConfigError),
          ("encoding None", task("x", def_encoding=None), TaskConfigError),
          ("not a mapping", "record", StoreError))),
    Case("insert a dict, not a list",
         lambda store, pool: store.insert_many(pool, task("x")), StoreError),  # type: ignore[arg-type]
    *(Case(f"pool name {value!r}", lambda store, pool, value=value: store.insert_many(
        value, [task("x")]), StoreError) for value in ("", "a\x00b", None, 5)),
    *(Case(f"update field {label}", _update(fields), error) for label, fields, error in (
        ("created", {"created": 1.0}, StoreError), ("seq", {"seq": 1}, StoreError),
        ("NOW status", {"status": NOW}, StoreError),
        ("attempts -1", {"attempts": -1}, TaskConfigError),
        ("attempts 2**40", {"attempts": 2**40}, TaskConfigError),
        ("lease_until text", {"lease_until": "soon"}, TaskConfigError),
        ("lease_until nan", {"lease_until": float("nan")}, TaskConfigError),
        ("worker NUL", {"worker": "w\x00"}, TaskConfigError),
        ("res int", {"res": 5}, TaskConfigError))),
    *(Case(f"fetch lease {value!r}", lambda store, pool, value=value: store.fetch(
        pool, [], "waiting", "w", value), TaskConfigError)
      for value in (float("nan"), -1, "10", None)),
    Case("fetch worker None", lambda store, pool: store.fetch(pool, [], "waiting", None, 5),
         TaskConfigError),  # type: ignore[arg-type]
    Case("heartbeat lease inf", lambda store, pool: store.heartbeat(pool, "a", "w",
                                                                    float("inf")),
         TaskConfigError),
    *(Case(f"reap max_attempts {value!r}", lambda store, pool, value=value: store.reap(
        pool, value), TaskConfigError) for value in (0, "3", 2.5)),
    *(Case(f"query {reprlib.repr(query)} ({operation})", _query(query, operation), QueryError)
      for query, operation in (
          ([("status", "waiting")], "find"), ("status", "count"), (7, "delete"),
          (nested_and(1000), "find"), (nested_and(100_000), "delete"),
          ({"$and": {"status": "waiting"}}, "find"), ({"$or": [{"status": "done"}]}, "find"),
          ({"status": {"$regex": "."}}, "delete"), ({'filter.a"b': 1}, "find"),
          ({"filter.a\\b": 1}, "delete"), ({"filter.a\x00b": 1}, "find"),
          ({"filter.name": "a\x00"}, "update"), ({"_id": {"$in": ["a", "\x00"]}}, "delete"),
          ({"filter.n": 2**64}, "find"), ({"priority": {"$in": [1, -(2**63) - 1]}}, "update"),
          ({"filter.n": nested_list(100)}, "find"), ({"filter": {"$in": []}}, "delete"),
          ({"nope": 1}, "find"), ({"": 1}, "find"), ({"filter.": 1}, "delete"),
          ({"status": {"$exists": "yes"}}, "find"), ({"filter.n": {"$in": "abc"}}, "delete"),
          ({"filter.n": {"$in": [nested_list(5000)]}}, "find"))),
    Case("query $in 5000 ids", _query({"_id": {"$in": [f"id{i}" for i in range(5000)] + ["a"]}}),
         result=["a"]),
    Case("query $nin 5000 numbers", _query({"filter.n": {"$nin": list(range(2, 5000))}}),
         result=["a", "b"]),
    Case("query $in 5000 mixed", _query({"filter.name": {"$in": [*range(3000), "bb", None]}}),
         result=["bb"]),
    Case("delete $in 5000 absent", _query({"_id": {"$in": [f"x{i}" for i in range(5000)]}},
                                           "delete"), result=0),
    Case("query $and 32 deep", _query(nested_and(32)), result=["bb"]),
    Case("query priority True", _query({"priority": True}), result=[]),
    Case("query priority '2'", _query({"priority": "2"}), result=[]),
    Case("query n 2**63-1", _query({"filter.n": 2**63 - 1}), result=[]),
    Case("query quote key in value", _query({"filter.name": 'a"b\\'}), result=[]),
    Case("count unknown status", _query({"status": "bogus"}, "count"), result={}),
    Case("update missing task", _update({"status": "done"}, task_id="nope"), result=False),
    Case("update id with NUL", _update({"status": "done"}, task_id="a\x00"), result=False),
    Case("heartbeat id with NUL",
         lambda store, pool: store.heartbeat(pool, "a\x00", "w", 5), result=False),
    Case("get id with NUL", lambda store, pool: store.get(pool, "a\x00"), result=None),
]


# -- stores ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_attack_server() -> Iterator[Server]:
    yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                              PostgresServer)


@pytest.fixture(scope="module")
def mongo_attack_server() -> Iterator[Server]:
    yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mongo", marks=pytest.mark.mongo)])
def opener(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Callable[[], TaskStore]:
    """Opens a store of one kind (SQLite with a short busy timeout: a leaked lock shows)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("attack") / "tasks.db"
        return lambda: SQLiteStore(path, busy_timeout_seconds=2)
    if request.param == "postgres":
        from taskroll.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_attack_server").url
        return lambda: PostgresStore(url, retry_seconds=5)
    from taskroll.store.mongo import MongoStore

    url = request.getfixturevalue("mongo_attack_server").url
    database = f"attack_{uuid.uuid4().hex[:8]}"
    return lambda: MongoStore(url, database, retry_seconds=5)


@pytest.fixture(scope="module")
def store(opener: Callable[[], TaskStore]) -> Iterator[TaskStore]:
    with opener() as opened:
        yield opened


@pytest.fixture(scope="module")
def second(opener: Callable[[], TaskStore]) -> Iterator[TaskStore]:
    """Another store object (another connection) on the same database."""
    with opener() as opened:
        yield opened


@pytest.fixture
def pool(store: TaskStore) -> Iterator[str]:
    """A pool with tasks a (priority 2, running), b (done) and bb (waiting)."""
    name = f"attack_{uuid.uuid4().hex[:10]}"
    store.insert_many(name, [task("a"), task("b"), task("bb")])
    store.update(name, "a", {"priority": 2})
    store.update(name, "b", {"status": "done", "finished": NOW})
    assert store.fetch(name, [], "waiting", "owner", 300) is not None
    yield name
    store.drop_pool(name)


def snapshot(store: TaskStore, pool: str) -> tuple[list[dict[str, Any]], bool]:
    """Everything a call could have changed: every record, and whether the pool is listed."""
    return list(store.find(pool, [])), pool in store.list_pools()


def assert_usable(store: TaskStore, second: TaskStore, pool: str) -> None:
    """A write succeeds at once on this store and on a second connection."""
    for user in (store, second):
        probe = f"probe_{uuid.uuid4().hex[:8]}"
        assert user.insert_many(pool, [task(probe)]) == [probe]
        assert user.delete_many(pool, parse_query({"_id": probe})) == 1


# -- the table ---------------------------------------------------------------------------
def test_the_table_is_large() -> None:
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_call(store: TaskStore, second: TaskStore, pool: str, case: Case) -> None:
    before = snapshot(store, pool)
    if case.error is not None:
        with pytest.raises(case.error) as caught:
            case.action(store, pool)
        assert str(caught.value), "the error must say what is wrong"
    else:
        assert case.action(store, pool) == case.result
    assert snapshot(store, pool) == before
    assert snapshot(second, pool) == before
    assert_usable(store, second, pool)


def test_error_text_with_nul_is_kept_readable(store: TaskStore, pool: str) -> None:
    assert store.update(pool, "a", {"error": "boom\x00tail"})
    stored = store.get(pool, "a")
    assert stored is not None and stored["error"] == "boom\\x00tail"


# -- SQLite: a write failing inside its transaction leaves no lock behind ----------------
def _write_once(path: str, results: Any) -> None:
    with SQLiteStore(path, busy_timeout_seconds=2) as other:
        results.put(other.insert_many("pool", [task("from-another-process")]))


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt(),
                                     OverflowError("Python int too large")])
def test_sqlite_write_failing_midway_rolls_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                failure: BaseException) -> None:
    import taskroll.store.sqlite as sqlite_module

    path = tmp_path / "tasks.db"
    with SQLiteStore(path, busy_timeout_seconds=2) as store:
        store.insert_many("pool", [task("kept")])
        calls, original = [], sqlite_module.json_text

        def failing_json_text(value: Any) -> str:
            calls.append(value)
            if len(calls) > 1:  # after BEGIN IMMEDIATE and the first statements
                raise failure
            return original(value)

        monkeypatch.setattr(sqlite_module, "json_text", failing_json_text)
        expected = StoreError if isinstance(failure, OverflowError) else type(failure)
        with pytest.raises(expected):
            store.insert_many("pool", [task("lost1"), task("lost2")])
        monkeypatch.undo()
        assert not store._connection().in_transaction
        assert [item["_id"] for item in store.find("pool", [])] == ["kept"]
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        process = context.Process(target=_write_once, args=(str(path), results))
        process.start()
        assert results.get(timeout=60) == ["from-another-process"]
        process.join(30)
        assert process.exitcode == 0
        assert store.insert_many("pool", [task("after")]) == ["after"]


def test_sqlite_huge_priority_no_longer_locks_the_file(tmp_path: Path) -> None:
    """The issue's reproduction: priority 2**70 used to leave BEGIN IMMEDIATE open."""
    path = tmp_path / "tasks.db"
    with SQLiteStore(path, busy_timeout_seconds=1) as store, \
            SQLiteStore(path, busy_timeout_seconds=1) as other:
        with pytest.raises(TaskConfigError, match=str(2**70)):
            store.insert_many("pool", [task("a", priority=2**70)])
        assert not store._connection().in_transaction
        assert other.insert_many("pool", [task("b")]) == ["b"]
        assert store.insert_many("pool", [task("c")]) == ["c"]


@pytest.mark.postgres
def test_postgres_write_failing_midway_rolls_back(postgres_attack_server: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside PostgreSQL's insert transaction (after its first statements)."""
    from taskroll.store.postgres import PostgresStore

    store = PostgresStore(postgres_attack_server.url, retry_seconds=5)
    second = PostgresStore(postgres_attack_server.url, retry_seconds=5)
    pool = f"attack_{uuid.uuid4().hex[:10]}"
    calls, original = [], store._jsonb

    def failing_jsonb(value: Any) -> Any:
        calls.append(value)
        if len(calls) > 1:
            raise RuntimeError("boom inside the transaction")
        return original(value)

    monkeypatch.setattr(store, "_jsonb", failing_jsonb)
    with pytest.raises(RuntimeError, match="boom"):
        store.insert_many(pool, [task("a"), task("b")])
    monkeypatch.undo()
    assert pool not in store.list_pools() and list(store.find(pool, [])) == []
    assert second.insert_many(pool, [task("c")]) == ["c"]
    assert store.insert_many(pool, [task("d")]) == ["d"]
    store.drop_pool(pool)
    store.close()
    second.close()
