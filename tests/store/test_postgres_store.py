"""PostgresStore against a real PostgreSQL server started by the tests (see conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from servers import require_module

from conftest import BackendChecks, record
from taskroll.errors import StoreConnectionError
from taskroll.store import TaskStore, open_store, parse_query
from taskroll.testing import TaskStoreContract

pytestmark = pytest.mark.postgres
require_module("psycopg", "postgres")  # skipped locally, a failure with CI=true

from taskroll.store.postgres import PostgresStore  # noqa: E402


class TestPostgresStore(BackendChecks):
    """The shared store behaviour, on PostgreSQL."""

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, postgres_server: Any) -> Any:
        return postgres_server

    @pytest.fixture(scope="class")
    @classmethod
    def make_store(cls, postgres_url: str) -> Callable[[], TaskStore]:
        return lambda: PostgresStore(postgres_url, retry_seconds=20)

    def test_fetch_uses_the_fetch_index(self, store: PostgresStore, pool: str) -> None:
        store.insert_many(pool, [record(f"t{index}") for index in range(3000)])
        store.update_many(pool, parse_query({"filter.name": {"$gte": "t2"}}), {"status": "done"})

        def explain(connection: Any) -> str:
            connection.execute("ANALYZE taskroll_tasks")
            with connection.transaction():
                rows = connection.execute(
                    "EXPLAIN SELECT pool, id FROM taskroll_tasks WHERE pool = %s "
                    "AND status = %s ORDER BY priority DESC, seq LIMIT 1",
                    [pool, "waiting"]).fetchall()
            return " ".join(row[0] for row in rows)

        assert "taskroll_tasks_fetch" in store._run(explain)

    def test_short_lived_threads_do_not_leak_connections(self, store: PostgresStore,
                                                         pool: str) -> None:
        store.insert_many(pool, [record("a")])
        for _ in range(40):  # like one heartbeat thread per task
            thread = threading.Thread(target=store.heartbeat, args=(pool, "a", "w", 5))
            thread.start()
            thread.join()
        rows = store._execute("SELECT count(*) FROM pg_stat_activity "
                              "WHERE application_name = 'taskroll'")
        assert rows[0][0] <= 10
        assert len(store._idle) <= store.max_idle


    def test_claim_whose_reply_was_lost_is_not_orphaned(self, store: PostgresStore,
                                                         pool: str) -> None:
        import psycopg

        store.insert_many(pool, [record("a"), record("b")])
        run, lost = store._run, []

        def lossy_run(operation: Any) -> Any:
            def wrapped(connection: Any) -> Any:
                result = operation(connection)
                if not lost:  # applied and committed, then the connection dies
                    lost.append(True)
                    connection.close()
                    raise psycopg.OperationalError("server closed the connection")
                return result
            return run(wrapped)

        store._run = lossy_run  # type: ignore[method-assign]
        try:
            claimed = store.fetch(pool, [], "waiting", "w", 30)
        finally:
            del store._run
        assert lost and claimed is not None and claimed["_id"] == "a"
        assert claimed["attempts"] == 1
        assert store.count_by_status(pool, []) == {"running": 1, "waiting": 1}


def test_unreachable_server_error_is_masked() -> None:
    url = "postgresql://alice:s3cret@127.0.0.1:9/db"
    with pytest.raises(StoreConnectionError) as caught:
        PostgresStore(url, retry_seconds=0.2, connect_timeout=1)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_factory_and_repr_mask_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:hunter2@")
    with open_store(url) as store:
        assert isinstance(store, PostgresStore)
        assert "hunter2" not in repr(store) and "***" in repr(store)


class TestPostgresContract(TaskStoreContract):
    """The package's own contract suite (:mod:`taskroll.testing`) on this backend."""

    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url
