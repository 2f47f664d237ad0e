"""The store contract suite on the embedded SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskroll.errors import StoreConnectionError
from taskroll.store import open_store
from taskroll.store.sqlite import SQLiteStore
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
