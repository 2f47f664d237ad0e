"""The SQLite store waits for a held write lock up to its busy timeout, and no longer.

These tests hold the write lock from another connection and check the outcomes: a write
waits and then succeeds once the lock is let go, a write gives up with ``StoreError``
after the timeout and changes nothing, and reads never wait for a writer (WAL).

(A store that polled for the lock in microsecond steps instead of SQLite's busy handler
was tried in this session and was slower with two workers: ``benchmarks/README.md``.)
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskroll.errors import StoreError
from taskroll.store.base import Condition
from taskroll.store.sqlite import SQLiteStore

POOL = "lock_wait"


def record(task_id: str) -> dict[str, object]:
    return {"_id": task_id, "def": '{"x": 1}', "def_encoding": "json", "filter": {"x": 1},
            "status": "waiting", "priority": 0}


@contextlib.contextmanager
def lock_held(path: Path, seconds: float) -> Iterator[None]:
    """Hold the database's write lock from another connection for ``seconds``."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        yield
    finally:
        release.join()
        blocker.close()


def statuses(store: SQLiteStore) -> list[str]:
    return [row["status"] for row in store.find(POOL, [])]


@pytest.mark.parametrize("write", ["fetch", "update", "insert"])
def test_a_write_waits_for_the_lock_then_succeeds(tmp_path: Path, write: str) -> None:
    path = tmp_path / "tasks.db"
    with SQLiteStore(path, busy_timeout_seconds=10) as store:
        store.insert_many(POOL, [record("a")])
        with lock_held(path, 0.3):
            begun = time.monotonic()
            if write == "fetch":
                claimed = store.fetch(POOL, [], "waiting", "worker-1", 60)
                assert claimed is not None and claimed["_id"] == "a"
            elif write == "update":
                assert store.update(POOL, "a", {"priority": 5})
            else:
                assert store.insert_many(POOL, [record("b")]) == ["b"]
            waited = time.monotonic() - begun
        assert waited >= 0.2  # it did wait for the other connection
        expected = {"fetch": ["running"], "update": ["waiting"], "insert": ["waiting", "waiting"]}
        assert statuses(store) == expected[write]


@pytest.mark.parametrize("write", ["fetch", "update", "insert"])
def test_a_write_gives_up_after_the_busy_timeout_and_changes_nothing(tmp_path: Path,
                                                                     write: str) -> None:
    path = tmp_path / "tasks.db"
    with SQLiteStore(path, busy_timeout_seconds=0.2) as store:
        store.insert_many(POOL, [record("a")])
        with lock_held(path, 1.0), pytest.raises(StoreError, match="locked"):
            if write == "fetch":
                store.fetch(POOL, [], "waiting", "worker-1", 60)
            elif write == "update":
                store.update(POOL, "a", {"priority": 5})
            else:
                store.insert_many(POOL, [record("b")])
        rows = list(store.find(POOL, []))
        assert [(row["_id"], row["status"], row["priority"]) for row in rows] == [("a", "waiting", 0)]


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SQLiteStore(path, busy_timeout_seconds=0.2) as store:
        store.insert_many(POOL, [record("a")])
        with lock_held(path, 0.5):  # WAL: readers see the last committed state at once
            assert store.count_by_status(POOL, [Condition("_id", (), "$eq", "a")]) == {"waiting": 1}
