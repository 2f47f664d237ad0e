"""The store contract suite on the embedded SQLite store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CORPUS_FILTERS, CORPUS_QUERIES, reference_ids
from taskroll.errors import StoreConnectionError
from taskroll.store import open_store, parse_query
from taskroll.store.sqlite import SQLiteStore
from taskroll.task.spec import task_id
from taskroll.testing import TaskStoreContract, make_record


class TestSQLiteContract(TaskStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'tasks.db'}"


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///sub/tasks.db") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == tmp_path / "sub" / "tasks.db"
    with open_store(f"sqlite:///{tmp_path / 'abs.db'}") as store:
        assert isinstance(store, SQLiteStore) and store.path == tmp_path / "abs.db"


def test_memory_database_is_refused() -> None:
    with pytest.raises(StoreConnectionError, match="in-memory"):
        open_store("sqlite:///:memory:")


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreConnectionError, match="cannot open"):
        open_store(f"sqlite:///{blocker / 'tasks.db'}")


def test_unknown_scheme() -> None:
    with pytest.raises(StoreConnectionError, match="unsupported"):
        open_store("redis://localhost")


def test_wal_mode_and_fetch_plan(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "tasks.db") as store:
        store.insert_many("pool", [make_record(1)])
        connection = store._connection()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        plan = " ".join(str(row) for row in connection.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM tasks WHERE pool = 'pool' AND status = 'waiting'"
            " ORDER BY priority DESC, seq LIMIT 1"))
        assert "tasks_fetch" in plan and "TEMP B-TREE" not in plan


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_new_database_files_are_private(tmp_path: Path) -> None:
    previous = os.umask(0)  # even a permissive umask gives owner-only files
    try:
        with SQLiteStore(tmp_path / "tasks.db") as store:
            store.insert_many("pool", [make_record(1)])
            files = [tmp_path / name for name in ("tasks.db", "tasks.db-wal", "tasks.db-shm")]
            assert all(path.exists() for path in files)
            assert [_mode(path) for path in files] == [0o600] * 3
    finally:
        os.umask(previous)


def test_file_mode_from_the_url(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'shared.db'}?file_mode=0640") as store:
        store.insert_many("pool", [make_record(1)])
        assert isinstance(store, SQLiteStore) and store.path == tmp_path / "shared.db"
        assert _mode(tmp_path / "shared.db") == 0o640
        assert _mode(tmp_path / "shared.db-wal") == 0o640
    for bad in ("?file_mode=rw", "?mode=ro", "?file_mode=01777"):
        with pytest.raises(StoreConnectionError, match=r"file_mode|options"):
            open_store(f"sqlite:///{tmp_path / 'other.db'}{bad}")


def test_existing_database_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SQLiteStore(path) as store:
        store.insert_many("pool", [make_record(1)])
    path.chmod(0o644)
    with SQLiteStore(path, file_mode=0o600) as store:
        assert store.insert_many("pool", [make_record(2)]) == ["task-000002"]
    assert _mode(path) == 0o644


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SQLiteStore, list[Any]]]:
    """The server stores' query corpus (conftest.py), in one SQLite pool."""
    store = SQLiteStore(tmp_path_factory.mktemp("corpus") / "tasks.db")
    records = [{"_id": task_id(item), "def": "{}", "def_encoding": "json", "filter": item}
               for item in CORPUS_FILTERS]
    store.insert_many("corpus", records)
    ids = [item["_id"] for item in records]
    store.update("corpus", ids[0], {"priority": 2})
    store.update("corpus", ids[1], {"status": "done", "error": "x"})
    assert store.fetch("corpus", parse_query({"_id": ids[2]}), "waiting", "w1", 60)
    store.update("corpus", ids[3], {"worker": "w2", "priority": -1})
    yield store, list(store.find("corpus", []))
    store.close()


@pytest.mark.parametrize("query", CORPUS_QUERIES, ids=[str(query)[:60] for query in CORPUS_QUERIES])
def test_corpus_queries_agree_with_the_server_stores(
        corpus: tuple[SQLiteStore, list[Any]], query: dict[str, Any]) -> None:
    store, records = corpus
    conditions = parse_query(query)
    expected = reference_ids(records, conditions)
    assert sorted(item["_id"] for item in store.find("corpus", conditions)) == expected
    assert sum(store.count_by_status("corpus", conditions).values()) == len(expected)
    assert store.update_many("corpus", conditions, {}) == len(expected)
