"""The embedded default store: one SQLite file in WAL mode.

Schema (created on first use)::

    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- insertion order ("oldest first")
        pool TEXT NOT NULL, id TEXT NOT NULL,    -- UNIQUE (pool, id)
        def BLOB, def_encoding TEXT NOT NULL,    -- codec payload (TEXT for json, BLOB for pickle)
        filter TEXT NOT NULL,                    -- canonical JSON, queried with json_extract
        status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
        res BLOB, res_encoding TEXT,
        created REAL, started REAL, finished REAL,   -- UNIX seconds
        worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT, claimed_from TEXT)
    CREATE INDEX tasks_fetch ON tasks (pool, status, priority DESC, seq)   -- fetch order
    CREATE INDEX tasks_lease ON tasks (pool, status, lease_until)         -- reaping
    CREATE TABLE pools (name TEXT PRIMARY KEY, created REAL)

A fetch is one ``UPDATE ... WHERE seq = (SELECT ... ORDER BY priority DESC, seq
LIMIT 1) RETURNING *`` statement, atomic under SQLite's single-writer lock, so
processes sharing the file never claim the same task. Inserts run inside
``BEGIN IMMEDIATE`` (the write lock is held from the start), so concurrent
creators cannot both insert one id. One connection per thread and process
(connections are not shared across ``fork``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from taskroll.errors import StoreConnectionError, StoreError
from taskroll.store.base import NOW, RECORD_FIELDS, WRITABLE_FIELDS, Record, TaskStore, read_in_pages
from taskroll.store.query import Condition

#: SQL for the database clock in UNIX seconds ('now' is fixed within one statement).
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
_COLUMNS = {"_id": "id", **{name: name for name in RECORD_FIELDS if name != "_id"}}
_SELECT = ", ".join(f"{column}" for column in _COLUMNS.values())
_PAGE = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL, id TEXT NOT NULL,
    def BLOB, def_encoding TEXT NOT NULL, filter TEXT NOT NULL,
    status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    res BLOB, res_encoding TEXT,
    created REAL, started REAL, finished REAL,
    worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, claimed_from TEXT,
    UNIQUE (pool, id));
CREATE INDEX IF NOT EXISTS tasks_fetch ON tasks (pool, status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (pool, status, lease_until);
CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, created REAL);
"""


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_path(path: Sequence[str]) -> str:
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in path)


class _Translator:
    """Builds a SQL ``WHERE`` fragment and its parameters from conditions."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def _json_equal(self, path: str, value: Any) -> str:
        kind = "json_type(filter, ?)"
        extract = "json_extract(filter, ?)"
        if value is None:
            self.params.append(path)
            return f"{kind} = 'null'"
        if isinstance(value, bool):
            self.params.append(path)
            return f"{kind} = '{'true' if value else 'false'}'"
        if isinstance(value, (int, float)):
            self.params.extend([path, path, value])
            return f"({kind} IN ('integer', 'real') AND {extract} = ?)"
        if isinstance(value, str):
            self.params.extend([path, path, value])
            return f"({kind} = 'text' AND {extract} = ?)"
        self.params.extend([path, path, _json_text(value)])
        return f"({kind} IN ('array', 'object') AND {extract} = ?)"

    def _json_order(self, path: str, operator: str, value: Any) -> str:
        symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[operator]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return "0"
        kinds = "('text')" if isinstance(value, str) else "('integer', 'real')"
        self.params.extend([path, path, value])
        return f"(json_type(filter, ?) IN {kinds} AND json_extract(filter, ?) {symbol} ?)"

    def _json_condition(self, condition: Condition) -> str:
        path, operator, value = _json_path(condition.path), condition.operator, condition.value
        if operator == "$exists":
            self.params.append(path)
            return f"json_type(filter, ?) IS {'NOT ' if value else ''}NULL"
        if operator == "$eq":
            return self._json_equal(path, value)
        if operator == "$in":
            return "(" + " OR ".join([self._json_equal(path, item) for item in value] or ["0"]) + ")"
        if operator == "$nin":
            self.params.append(path)  # the missing-path test comes first in the SQL text
            options = [self._json_equal(path, item) for item in value] or ["0"]
            return f"(json_type(filter, ?) IS NULL OR NOT ({' OR '.join(options)}))"
        if operator == "$ne":
            equal = self._json_equal(path, value)
            self.params.append(path)
            return f"(NOT {equal} OR json_type(filter, ?) IS NULL)"
        return self._json_order(path, operator, value)

    def _column_condition(self, condition: Condition) -> str:
        column, operator, value = _COLUMNS[condition.field], condition.operator, condition.value
        if operator == "$exists":
            return f"{column} IS {'NOT ' if value else ''}NULL"
        if operator == "$eq":
            if value is None:
                return "0"
            self.params.append(value)
            return f"{column} = ?"
        if operator == "$ne":
            self.params.append(value)
            return f"({column} IS NULL OR {column} != ?)"
        if operator in ("$in", "$nin"):
            items = [item for item in value if item is not None]
            if not items:
                return "0" if operator == "$in" else "1"
            self.params.extend(items)
            marks = ", ".join("?" for _ in items)
            if operator == "$in":
                return f"{column} IN ({marks})"
            return f"({column} IS NULL OR {column} NOT IN ({marks}))"
        symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[operator]
        self.params.append(value)
        return f"({column} IS NOT NULL AND {column} {symbol} ?)"

    def where(self, conditions: Sequence[Condition]) -> str:
        parts = [
            self._json_condition(condition) if condition.field == "filter"
            else self._column_condition(condition)
            for condition in conditions
        ]
        return " AND ".join(parts) if parts else "1"


def _where(pool: str, conditions: Sequence[Condition]) -> tuple[str, list[Any]]:
    translator = _Translator()
    clause = translator.where(conditions)
    return f"pool = ? AND {clause}", [pool, *translator.params]


def _to_record(row: Sequence[Any]) -> Record:
    record = dict(zip(_COLUMNS, row, strict=True))
    record["filter"] = json.loads(record["filter"]) if record["filter"] is not None else None
    return record


class SQLiteStore(TaskStore):
    """Task store on one SQLite file; safe for many threads and processes on one machine."""

    scheme = "sqlite"

    def __init__(self, path: str | os.PathLike[str], busy_timeout_seconds: float = 60.0) -> None:
        """Open (and create if needed) the database file.

        Args:
            path: File path; parent folders are created.
            busy_timeout_seconds: How long a writer waits for the lock before failing.

        Raises:
            StoreConnectionError: When the file cannot be created or opened.
        """
        if str(path) == ":memory:":
            raise StoreConnectionError(
                "an in-memory SQLite pool cannot be shared with workers; give a file path"
            )
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout_seconds = busy_timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        deadline = time.monotonic() + busy_timeout_seconds
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._connection().executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as error:
                # switching a new file to WAL can fail at once with "locked" while another
                # process does the same, without waiting for the busy timeout
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise StoreConnectionError(
                        f"cannot open SQLite task store at {self.path}: {error}") from error
                self.close()
                time.sleep(0.05)
            except (OSError, sqlite3.Error) as error:
                raise StoreConnectionError(
                    f"cannot open SQLite task store at {self.path}: {error}") from error

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix):
            raise StoreConnectionError(f"expected a URL like sqlite:///path/to/tasks.db, got {url!r}")
        return cls(url[len(prefix):])

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout_seconds, isolation_level=None,
            check_same_thread=False,
        )
        with self._lock:
            self._connections.append(connection)
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    def _modify(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        try:
            return self._connection().execute(sql, params).rowcount
        except sqlite3.Error as error:
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    # -- pools ---------------------------------------------------------------------------
    def list_pools(self) -> list[str]:
        """Return the names of the pools in this file, sorted."""
        return [row[0] for row in self._execute("SELECT name FROM pools ORDER BY name")]

    def drop_pool(self, pool: str) -> None:
        """Delete a pool and all its tasks."""
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM tasks WHERE pool = ?", (pool,))
            connection.execute("DELETE FROM pools WHERE name = ?", (pool,))
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    # -- writes --------------------------------------------------------------------------
    def insert_many(self, pool: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Insert tasks whose ids are new, under the write lock; return the inserted ids."""
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                f"INSERT OR IGNORE INTO pools (name, created) VALUES (?, {NOW_SQL})", (pool,)
            )
            ids = [record["_id"] for record in records]
            existing: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = connection.execute(
                    f"SELECT id FROM tasks WHERE pool = ? AND id IN ({marks})", (pool, *chunk)
                ).fetchall()
                existing.update(row[0] for row in rows)
            rows_to_insert = []
            inserted: list[str] = []
            for record in records:
                if record["_id"] in existing:
                    continue
                existing.add(record["_id"])
                inserted.append(record["_id"])
                rows_to_insert.append((
                    pool, record["_id"], record["def"], record["def_encoding"],
                    _json_text(record["filter"]), record.get("status") or "waiting",
                    int(record.get("priority") or 0),
                ))
            connection.executemany(
                "INSERT INTO tasks (pool, id, def, def_encoding, filter, status, priority, created)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, {NOW_SQL})",
                rows_to_insert,
            )
            connection.execute("COMMIT")
            return inserted
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    def _assignments(self, fields: Mapping[str, Any]) -> tuple[str, list[Any]]:
        unknown = set(fields) - WRITABLE_FIELDS
        if unknown:
            raise StoreError(f"cannot write task fields {sorted(unknown)}")
        parts, params = [], []
        for name, value in fields.items():
            if value is NOW:
                parts.append(f"{name} = {NOW_SQL}")
                continue
            parts.append(f"{name} = ?")
            params.append(_json_text(value) if name == "filter" else value)
        return ", ".join(parts), params

    def update(self, pool: str, task_id: str, fields: Mapping[str, Any],
               expected_status: str | None = None, expected_worker: str | None = None) -> bool:
        """Set fields of one task if the optional status/worker guards hold."""
        if not fields:
            return self.get(pool, task_id) is not None
        assignments, params = self._assignments(fields)
        sql = f"UPDATE tasks SET {assignments} WHERE pool = ? AND id = ?"
        params.extend([pool, task_id])
        if expected_status is not None:
            sql += " AND status = ?"
            params.append(expected_status)
        if expected_worker is not None:
            sql += " AND worker = ?"
            params.append(expected_worker)
        return self._modify(sql, params) > 0

    def update_many(self, pool: str, conditions: Sequence[Condition],
                    fields: Mapping[str, Any]) -> int:
        """Set fields on every matching task."""
        assignments, params = self._assignments(fields)
        where, where_params = _where(pool, conditions)
        return self._modify(f"UPDATE tasks SET {assignments} WHERE {where}", params + where_params)

    def delete_many(self, pool: str, conditions: Sequence[Condition]) -> int:
        """Delete every matching task."""
        where, params = _where(pool, conditions)
        return self._modify(f"DELETE FROM tasks WHERE {where}", params)

    # -- claims --------------------------------------------------------------------------
    def fetch(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
              lease_seconds: float) -> Record | None:
        """Claim the highest-priority, oldest matching task in one atomic statement."""
        where, params = _where(pool, conditions)
        rows = self._execute(
            f"UPDATE tasks SET status = 'running', worker = ?, started = {NOW_SQL}, "
            f"lease_until = {NOW_SQL} + ?, attempts = attempts + 1, claimed_from = status "
            f"WHERE seq = (SELECT seq FROM tasks WHERE {where} AND status = ? "
            f"ORDER BY priority DESC, seq LIMIT 1) RETURNING {_SELECT}",
            [worker, lease_seconds, *params, status],
        )
        return _to_record(rows[0]) if rows else None

    def heartbeat(self, pool: str, task_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a running task still owned by ``worker``."""
        return self._modify(
            f"UPDATE tasks SET lease_until = {NOW_SQL} + ? "
            "WHERE pool = ? AND id = ? AND status = 'running' AND worker = ?",
            (lease_seconds, pool, task_id, worker),
        ) > 0

    def reap(self, pool: str, max_attempts: int) -> int:
        """Return expired leases to their previous status, or fail them after max_attempts."""
        return self._modify(
            "UPDATE tasks SET "
            "status = CASE WHEN attempts >= :max THEN 'failed' "
            "ELSE COALESCE(claimed_from, 'waiting') END, "
            "error = 'lease expired: worker ' || COALESCE(worker, '?') || "
            "' stopped renewing it during attempt ' || attempts || ' of ' || :max, "
            f"finished = CASE WHEN attempts >= :max THEN {NOW_SQL} ELSE finished END, "
            "worker = NULL, lease_until = NULL "
            f"WHERE pool = :pool AND status = 'running' AND lease_until < {NOW_SQL}",
            {"max": max_attempts, "pool": pool},
        )

    # -- reads ---------------------------------------------------------------------------
    def find(self, pool: str, conditions: Sequence[Condition],
             limit: int | None = None) -> Iterator[Record]:
        """Yield matching records oldest first, reading in pages (no long read transaction)."""
        where, params = _where(pool, conditions)
        sql = f"SELECT seq, {_SELECT} FROM tasks WHERE {where} AND seq > ? ORDER BY seq LIMIT ?"
        pages = read_in_pages(lambda after, count: self._execute(sql, [*params, after, count]),
                              limit, _PAGE)
        for row in pages:
            yield _to_record(row[1:])

    def count_by_status(self, pool: str, conditions: Sequence[Condition]) -> dict[str, int]:
        """Count matching tasks per status with one GROUP BY."""
        where, params = _where(pool, conditions)
        rows = self._execute(f"SELECT status, COUNT(*) FROM tasks WHERE {where} GROUP BY status",
                             params)
        return {status: count for status, count in rows}

    def now(self) -> float:
        """Return SQLite's clock (this machine's) as UNIX seconds."""
        value = self._execute(f"SELECT {NOW_SQL}")[0][0]
        return float(value) if value is not None else time.time()

    def close(self) -> None:
        """Close every connection this store opened in this process."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local = threading.local()
