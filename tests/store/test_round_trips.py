"""Round trips per task: a claim+commit loop costs one command to claim and one to commit.

Commands are counted where they leave the client: pymongo's command monitoring for
MongoDB (the nx-27017 server, or ``TASKROLL_TEST_MONGO_URL``), a counting psycopg cursor
for PostgreSQL, and SQLite's trace callback. The only other traffic allowed is the
manager's reaping, at most once a second (``TaskManager._reap_now_and_then``), so the
bound is ``2 * tasks + reaps``; counts do not depend on machine load.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import require_module

from taskroll.manage import TaskManager
from taskroll.store import TaskStore
from taskroll.store.query import Condition

TASKS = 300


def claim_and_commit_all(manager: TaskManager) -> int:
    """Claim and commit every waiting task of ``manager``'s pool; return how many."""
    done = 0
    while (task := manager.fetch_task()) is not None:
        assert manager.commit_task_res(task, {"index": task["def"]["index"]})
        done += 1
    return done


def run_loop(store: TaskStore, counts: Counter[str]) -> tuple[int, dict[str, int], float]:
    """Create ``TASKS`` tasks, then count commands over one claim+commit loop.

    Returns:
        (tasks done, commands sent during the loop by kind, seconds the loop took).
    """
    pool = f"trips_{uuid.uuid4().hex[:8]}"
    manager = TaskManager(pool, store=store)
    manager.create_task([{"index": index} for index in range(TASKS)])
    manager.reap()  # the first reap is due at once: take it before counting
    counts.clear()
    began = time.monotonic()
    done = claim_and_commit_all(manager)
    elapsed = time.monotonic() - began
    sent = dict(counts)
    assert manager.task_stat() == {"done": TASKS}
    store.drop_pool(pool)
    return done, sent, elapsed


def reaps_allowed(elapsed: float) -> int:
    """Most reaps a manager makes in ``elapsed`` seconds (at most one a second)."""
    return int(elapsed) + 1


# -- MongoDB -------------------------------------------------------------------------------
def mongo_loop(mongo_url: str) -> tuple[int, dict[str, int], float]:
    """Run :func:`run_loop` on a fresh MongoDB database, counting commands by name."""
    require_module("pymongo", "mongo")
    from pymongo import monitoring

    from taskroll.store.mongo import MongoStore

    counts: Counter[str] = Counter()

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            counts[event.command_name] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    database = f"taskroll_trips_{uuid.uuid4().hex[:8]}"
    store = MongoStore(mongo_url, database, client_options={"event_listeners": [Listener()]})
    try:
        result = run_loop(store, counts)
        store._database().client.drop_database(database)
    finally:
        store.close()
    return result


@pytest.mark.mongo
def test_mongo_claim_and_commit_take_two_commands_per_task(mongo_url: str) -> None:
    done, by_name, elapsed = mongo_loop(mongo_url)
    assert done == TASKS
    # one findAndModify per claim (plus the one that finds the pool empty), one update
    # per commit, no clock reads ("hello") in steady state, reaping at most once a second
    assert by_name.get("findAndModify") == TASKS + 1, by_name
    assert by_name.get("update") == TASKS, by_name
    assert by_name.get("hello", 0) + by_name.get("isMaster", 0) <= 1, by_name
    sent, reaps = sum(by_name.values()), by_name.get("find", 0)
    assert reaps <= reaps_allowed(elapsed), by_name
    assert sent <= 2 * TASKS + 1 + reaps, by_name
    print(f"mongo: {sent / TASKS:.3f} commands per task ({by_name})")


@pytest.mark.mongo
def test_mongo_count_sees_clock_reads(mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count is not blind: reading the server clock before every stamp (as before
    issue 12) shows up as one ``hello`` per claim and per commit, four commands a task."""
    from taskroll.store import mongo_connection

    monkeypatch.setattr(mongo_connection, "CLOCK_REFRESH_SECONDS", 0.0)
    done, by_name, _ = mongo_loop(mongo_url)
    assert done == TASKS
    assert by_name.get("hello", 0) + by_name.get("isMaster", 0) >= 2 * TASKS, by_name
    assert sum(by_name.values()) >= 4 * TASKS, by_name


# -- PostgreSQL ----------------------------------------------------------------------------
@pytest.mark.postgres
def test_postgres_claim_and_commit_take_two_statements_per_task(postgres_url: str) -> None:
    require_module("psycopg", "postgres")
    import psycopg

    from taskroll.store.postgres import PostgresStore

    counts: Counter[str] = Counter()

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            text = str(query).lstrip()
            counts[text.split(None, 1)[0].upper()] += 1
            return super().execute(query, params, **options)

    store = PostgresStore(postgres_url, connect_options={"cursor_factory": CountingCursor})
    try:
        done, by_kind, elapsed = run_loop(store, counts)
    finally:
        store.close()
    assert done == TASKS
    # a claim is one UPDATE led by WITH (one more finds the pool empty), a commit one
    # UPDATE; a reap is one more UPDATE at most once a second
    assert by_kind.get("WITH") == TASKS + 1 and set(by_kind) <= {"WITH", "UPDATE"}, by_kind
    sent = sum(by_kind.values())
    assert sent <= 2 * TASKS + 1 + reaps_allowed(elapsed), by_kind
    print(f"postgres: {sent / TASKS:.3f} statements per task ({by_kind})")


# -- SQLite (reported for comparison) ------------------------------------------------------
@pytest.fixture
def sqlite_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the statements every SQLite connection opened during the test executes."""
    counts: Counter[str] = Counter()
    connect = sqlite3.connect

    def counting_connect(*arguments: Any, **options: Any) -> sqlite3.Connection:
        connection = connect(*arguments, **options)
        connection.set_trace_callback(
            lambda statement: counts.update([statement.lstrip().split(None, 1)[0].upper()]))
        return connection

    monkeypatch.setattr(sqlite3, "connect", counting_connect)
    yield counts


def test_sqlite_statements_per_task_are_reported(tmp_path: Path,
                                                 sqlite_statements: Counter[str]) -> None:
    from taskroll.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'trips.db'}")
    try:
        done, by_kind, _ = run_loop(store, sqlite_statements)
    finally:
        store.close()
    sent = sum(by_kind.values())
    assert done == TASKS and sent >= 2 * TASKS, by_kind
    print(f"sqlite: {sent / TASKS:.3f} statements per task ({by_kind})")


@pytest.mark.mongo
def test_mongo_clock_offset_is_measured_once_and_refreshed_rarely(
        mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("pymongo", "mongo")
    from pymongo import monitoring

    from taskroll.store import mongo, mongo_connection

    clock_reads: list[str] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name in ("hello", "isMaster"):
                clock_reads.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    monkeypatch.setattr(mongo_connection, "CLOCK_REFRESH_SECONDS", 0.5)
    database = f"taskroll_trips_{uuid.uuid4().hex[:8]}"
    store = mongo.MongoStore(mongo_url, database,
                             client_options={"event_listeners": [Listener()]})
    try:
        store.insert_many("clock", [{"_id": str(index), "def": "{}", "def_encoding": "json",
                                     "filter": {}} for index in range(4)])
        first = len(clock_reads)
        claimed = [store.fetch("clock", [], "waiting", "me", 60.0) for _ in range(2)]
        assert len(clock_reads) == first  # stamps reuse the offset measured at insert
        time.sleep(0.6)
        claimed.append(store.fetch("clock", [], "waiting", "me", 60.0))
        assert len(clock_reads) == first + 1  # measured again once the offset is stale
        server_now = store.now()
        store._database().client.drop_database(database)
    finally:
        store.close()
    for record in claimed:
        assert record is not None
        assert record["lease_until"] == pytest.approx(record["started"] + 60.0)
        assert server_now - 2.0 <= record["started"] <= server_now + 0.05


@pytest.mark.postgres
def test_postgres_batch_claim_is_one_statement_best_first_and_exactly_once(
        postgres_url: str) -> None:
    require_module("psycopg", "postgres")
    import psycopg

    from taskroll.store.postgres import PostgresStore

    statements: list[str] = []

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            statements.append(str(query).lstrip().split(None, 1)[0].upper())
            return super().execute(query, params, **options)

    pool = f"batch_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(postgres_url, connect_options={"cursor_factory": CountingCursor})
    try:
        store.insert_many(pool, [{"_id": f"t{index:02d}", "def": "{}", "def_encoding": "json",
                                  "filter": {"index": index}, "priority": index % 3}
                                 for index in range(40)])
        expected = sorted(range(40), key=lambda index: (-(index % 3), index))
        statements.clear()
        first = store.fetch_many(pool, [], "waiting", "one", 60.0, 10)
        assert statements == ["WITH"]  # one statement claimed the whole batch
        assert [record["_id"] for record in first] == [f"t{index:02d}" for index in expected[:10]]
        assert all(record["status"] == "running" and record["worker"] == "one"
                   and record["attempts"] == 1 and record["claimed_from"] == "waiting"
                   and record["lease_until"] == pytest.approx(record["started"] + 60.0)
                   for record in first)
        claimed: dict[str, list[str]] = {"one": [], "two": []}

        def drain(worker: str) -> None:
            while batch := store.fetch_many(pool, [], "waiting", worker, 60.0, 3):
                claimed[worker].extend(record["_id"] for record in batch)

        threads = [threading.Thread(target=drain, args=(name,)) for name in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rest = claimed["one"] + claimed["two"]
        assert len(rest) == len(set(rest)) == 30  # every task claimed exactly once
        assert {record["_id"] for record in first}.isdisjoint(rest)
        assert store.count_by_status(pool, []) == {"running": 40}
    finally:
        store.drop_pool(pool)
        store.close()


@pytest.mark.mongo
def test_mongo_batch_claim_is_three_commands_best_first_and_exactly_once(mongo_url: str) -> None:
    """A batch claim is find + update_many + find whatever its size, and concurrent
    batch claimers never share a task."""
    require_module("pymongo", "mongo")
    from pymongo import monitoring

    from taskroll.store.mongo import MongoStore

    commands: list[str] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            commands.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    pool = f"batch_{uuid.uuid4().hex[:8]}"
    database = f"taskroll_trips_{uuid.uuid4().hex[:8]}"
    store = MongoStore(mongo_url, database, client_options={"event_listeners": [Listener()]})
    try:
        store.insert_many(pool, [{"_id": f"t{index:02d}", "def": "{}", "def_encoding": "json",
                                  "filter": {"index": index}, "priority": index % 3}
                                 for index in range(40)])
        expected = sorted(range(40), key=lambda index: (-(index % 3), index))
        store._clock()  # the clock offset is measured once per process, not per claim
        store._claims_ready(pool)  # so is the claim order of the pool's tasks
        commands.clear()
        first = store.fetch_many(pool, [], "waiting", "one", 60.0, 10)
        assert commands == ["find", "update", "find"], commands
        assert [record["_id"] for record in first] == [f"t{index:02d}" for index in expected[:10]]
        assert all(record["status"] == "running" and record["worker"] == "one"
                   and record["attempts"] == 1 and record["claimed_from"] == "waiting"
                   and record["lease_until"] == pytest.approx(record["started"] + 60.0)
                   for record in first)
        # a condition the server decides exactly keeps the batch path, and is honoured
        odd = store.fetch_many(pool, [Condition("filter", ("index",), "$in", [1, 3, 5, 7])],
                               "waiting", "one", 60.0, 10)
        taken = set(expected[:10])
        assert [record["_id"] for record in odd] == [  # best first, the first batch's left out
            f"t{index:02d}" for index in sorted({1, 3, 5, 7} - taken,
                                               key=lambda index: (-(index % 3), index))]
        claimed: dict[str, list[str]] = {"one": [], "two": [], "three": []}

        def drain(worker: str) -> None:
            while batch := store.fetch_many(pool, [], "waiting", worker, 60.0, 3):
                claimed[worker].extend(record["_id"] for record in batch)

        threads = [threading.Thread(target=drain, args=(name,)) for name in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rest = [task for tasks in claimed.values() for task in tasks]
        assert len(rest) == len(set(rest)) == 27  # every task claimed exactly once
        assert {record["_id"] for record in first + odd}.isdisjoint(rest)
        assert store.count_by_status(pool, []) == {"running": 40}
        assert {record["attempts"] for record in store.find(pool, [])} == {1}
    finally:
        store._database().client.drop_database(database)
        store.close()
