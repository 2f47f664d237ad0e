"""A worker account that may only read and write rows can use a pool its administrator made.

Teams give workers an account with ``SELECT, INSERT, UPDATE, DELETE`` on the tables and
``USAGE`` on the sequence, not the tables' owner (MLflow's store is content with that).
The store used to re-run ``CREATE TABLE/INDEX IF NOT EXISTS`` at every open, which
PostgreSQL allows only to the owner: such a worker could not even connect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")

from taskroll.errors import StoreError  # noqa: E402
from taskroll.store.postgres import PostgresStore  # noqa: E402

POOL = "rows_only"


def as_role(url: str, role: str) -> str:
    """``url`` with its user replaced by ``role`` (no password: the test server trusts loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture()
def rows_only_url(postgres_url: str) -> Iterator[str]:
    """A login role with row privileges only, on tables an administrator created."""
    PostgresStore(postgres_url).close()  # the administrator makes the tables
    role = f"taskroll_rows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON taskroll_tasks, taskroll_pools "
                      f"TO {role}")
        admin.execute(f"GRANT USAGE ON SEQUENCE taskroll_tasks_seq_seq TO {role}")
    try:
        yield as_role(postgres_url, role)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DELETE FROM taskroll_tasks WHERE pool = '{POOL}'")
            admin.execute(f"DELETE FROM taskroll_pools WHERE pool = '{POOL}'")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_rows_only_account_claims_and_commits(rows_only_url: str) -> None:
    with PostgresStore(rows_only_url) as store:
        store.insert_many(POOL, [{"_id": "a", "def": '{"x": 1}', "def_encoding": "json",
                                  "filter": {"x": 1}, "status": "waiting", "priority": 0}])
        claimed = store.fetch(POOL, [], "waiting", "worker-1", 60)
        assert claimed is not None and claimed["_id"] == "a"
        assert store.update(POOL, "a", {"status": "done", "res": '{"ok": 1}',
                                        "res_encoding": "json"},
                            expected_status="running", expected_worker="worker-1")
        assert store.count_by_status(POOL, []) == {"done": 1}


def test_the_account_really_lacks_the_owner_rights(rows_only_url: str) -> None:
    """The check above is meaningful: this account cannot run the schema statements."""
    with psycopg.connect(rows_only_url, autocommit=True) as worker, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        worker.execute("CREATE INDEX IF NOT EXISTS taskroll_tasks_order "
                       "ON taskroll_tasks (pool, seq)")


def test_a_missing_index_is_still_created_by_the_owner(postgres_url: str,
                                                       rows_only_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP INDEX taskroll_tasks_order")
    try:
        with pytest.raises(StoreError):  # not current, and this account may not fix it
            PostgresStore(rows_only_url, retry_seconds=0).close()
    finally:
        PostgresStore(postgres_url).close()  # the owner brings it back
    with psycopg.connect(postgres_url) as admin:
        found = admin.execute("SELECT to_regclass('taskroll_tasks_order')").fetchone()
    assert found is not None and found[0] is not None
