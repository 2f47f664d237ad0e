"""Fixtures of the dashboard tests (helpers in ``dashboard_helpers.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dashboard_helpers import MixedPool, fill_mixed_pool

from taskroll.store import TaskStore, open_store


@pytest.fixture
def mixed_pool(tmp_path: Path) -> MixedPool:
    """The mixed pool in a fresh SQLite file."""
    return fill_mixed_pool(f"sqlite:///{tmp_path / 'tasks.db'}")


@pytest.fixture
def store(mixed_pool: MixedPool) -> Iterator[TaskStore]:
    """An open store on the mixed pool's database."""
    with open_store(mixed_pool.url) as opened:
        yield opened


sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from servers import MongoServer, PostgresServer, Server, session_server  # noqa: E402


@pytest.fixture(scope="session")
def dashboard_postgres_server() -> Iterator[Server]:
    """A PostgreSQL test server (``TASKROLL_TEST_POSTGRES_URL`` when set)."""
    yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                              PostgresServer)


@pytest.fixture(scope="session")
def dashboard_mongo_server() -> Iterator[Server]:
    """A MongoDB wire-protocol test server (``TASKROLL_TEST_MONGO_URL`` when set)."""
    yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)
