"""Odd pool names on every store: the pool works, or a taskroll error and nothing written.

Each name runs on SQLite, PostgreSQL and MongoDB (the loopback test servers of
``tests/store/servers.py``). A store may refuse a name it cannot hold (MongoDB refuses
``$`` and names its server rejects), but only with a :class:`~taskroll.errors.StoreError`
naming the pool, never a driver's own exception or a ``UnicodeEncodeError``, and a name
it accepts must round-trip: the pool is listed, counted, and dropped.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from servers import MongoServer, PostgresServer, Server, session_server

from taskroll.errors import StoreError
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store

NAMES = [".", "a..b", "a.", ".a", " ", "x" * 200, "ü/é", "a$b", "system.x", "tab\there",
         "\ud800", "a\udfffb", "pool.\ud83d"]
#: Names every store refuses: they are not valid Unicode, so no store can encode them.
REFUSED_EVERYWHERE = {"\ud800", "a\udfffb", "pool.\ud83d"}


@pytest.fixture(scope="module")
def postgres_names_server() -> Iterator[Server]:
    yield from session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                              PostgresServer)


@pytest.fixture(scope="module")
def mongo_names_server() -> Iterator[Server]:
    yield from session_server("pymongo", "mongo", "TASKROLL_TEST_MONGO_URL", MongoServer)


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mongo", marks=pytest.mark.mongo)])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('names') / 'tasks.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_names_server").url)
    return str(request.getfixturevalue("mongo_names_server").url)


@pytest.mark.parametrize("name", NAMES, ids=ascii)
def test_an_odd_pool_name_works_or_is_refused_cleanly(url: str, name: str) -> None:
    store = _open(url, f"names_{uuid.uuid4().hex[:8]}")
    with TaskManager("witness", store=store) as witness, \
            contextlib.ExitStack() as cleanup:
        if isinstance(store, TaskStore):
            cleanup.callback(store.close)
        witness.create_task([{"index": 0}])
        before = witness.list()
        manager = TaskManager(name, store=witness.store)
        try:
            manager.create_task([{"index": 1}])
        except StoreError as error:
            assert name not in REFUSED_EVERYWHERE or "pool" in str(error)
            assert witness.list() == before  # nothing written
            # reads and no-op writes refuse the name too, or find an empty pool
            for call, empty in ((manager.task_stat, {}), (manager.fetch_task, None),
                                (lambda: list(manager.query()), []), (manager.remove, 0),
                                (manager.reap, 0)):
                with contextlib.suppress(StoreError):
                    assert call() == empty
            assert witness.list() == before
        else:
            assert name not in REFUSED_EVERYWHERE, "a name no store can encode was accepted"
            assert manager.task_stat() == {"waiting": 1}
            assert witness.list() == sorted([*before, name])
            task = manager.fetch_task()
            assert task is not None and manager.commit_task_res(task, "done")
            assert manager.task_stat() == {"done": 1}
            manager.store.drop_pool(name)
            assert witness.list() == before
        assert witness.task_stat() == {"waiting": 1}
        witness.store.drop_pool("witness")


def _open(url: str, database: str) -> TaskStore | str:
    """A store on ``url``; MongoDB gets a database of its own (an empty list to start)."""
    return open_store(url, database) if url.startswith("mongodb") else url
