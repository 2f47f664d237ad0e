"""Task stores: the contract and its SQLite, PostgreSQL and MongoDB backends."""

from __future__ import annotations

from taskroll.errors import StoreConnectionError
from taskroll.store.base import NOW, Record, TaskStore
from taskroll.store.query import Condition, parse_query

__all__ = ["NOW", "Condition", "Record", "TaskStore", "open_store", "parse_query"]


def open_store(url: str, db_name: str | None = None) -> TaskStore:
    """Build the store a URL names (the one factory for stores).

    Args:
        url: ``sqlite:///path/to/file.db`` (``sqlite:///:memory:`` is refused: workers
            in other processes could not see it), ``postgresql://user@host:port/db``
            (``postgresql+psycopg://`` too, as in MLflow tracking URIs) or ``mongodb://host:port``.
        db_name: Database name for MongoDB (Qlib's ``task_db_name``).

    Returns:
        An open store; close it with ``close()`` or a ``with`` block.

    Raises:
        StoreConnectionError: For an unknown scheme or an unreachable database.
        MissingDependencyError: When the backend's extra is not installed.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from taskroll.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from taskroll.store.postgres import PostgresStore

        # ``postgresql+psycopg://`` (MLflow's form of the same database) is read by psycopg
        return PostgresStore.from_url("postgresql" + url[len(scheme):] if "+" in scheme else url)
    if scheme in ("mongodb", "mongodb+srv"):
        from taskroll.store.mongo import MongoStore

        return MongoStore.from_url(url, db_name or "taskroll")
    raise StoreConnectionError(
        f"unsupported task store URL scheme {scheme!r}; use sqlite:///, postgresql:// or mongodb://"
    )
