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
    CREATE INDEX tasks_order ON tasks (pool, seq)                         -- paging (find_page)
    CREATE TABLE pools (name TEXT PRIMARY KEY, created REAL)

A fetch is one ``UPDATE ... WHERE seq = (SELECT ... ORDER BY priority DESC, seq
LIMIT 1) RETURNING *`` statement, atomic under SQLite's single-writer lock, so
processes sharing the file never claim the same task; a batch claim (``fetch_many``) is
the same statement with ``seq IN (... LIMIT n)``, one write for ``n`` tasks. Inserts run inside
``BEGIN IMMEDIATE`` (the write lock is held from the start), so concurrent
creators cannot both insert one id. Every write that takes more than one statement
runs in :meth:`SQLiteStore._write_transaction`, which rolls back on *any* exception, so a
failed write never leaves the file locked for other processes; values are checked
(:mod:`taskroll.store.values`) before the transaction starts. One connection per thread
and process (connections are not shared across ``fork``). Queries are translated by
:mod:`taskroll.store.sqlite_query`.

Permissions: a database file the store creates is readable and writable by its owner
only (``0600``; SQLite gives its ``-wal`` and ``-shm`` files the same bits). Choose
other bits with ``SQLiteStore(path, file_mode=0o640)`` or the URL option
``sqlite:///path/tasks.db?file_mode=0640`` (octal). An existing file keeps its
permissions.
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
from urllib.parse import parse_qs

from taskroll.errors import StoreConnectionError, StoreError
from taskroll.store.base import (
    NOW,
    WRITABLE_FIELDS,
    Record,
    SortOrder,
    TaskStore,
    check_claim_count,
    check_page,
    read_in_pages,
)
from taskroll.store.query import Condition
from taskroll.store.sqlite_query import COLUMNS as _COLUMNS
from taskroll.store.sqlite_query import json_text
from taskroll.store.sqlite_query import where as _where
from taskroll.store.values import (
    check_claim,
    check_fields,
    check_lease,
    check_max_attempts,
    check_pool,
    check_records,
)

#: SQL for the database clock in UNIX seconds ('now' is fixed within one statement).
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
_SELECT = ", ".join(f"{column}" for column in _COLUMNS.values())
_PRIORITY_INDEX = 1 + list(_COLUMNS).index("priority")  # in a ``seq, {_SELECT}`` row
_PAGE = 1000
#: Permission bits of a database file the store creates: readable by its owner only.
DEFAULT_FILE_MODE = 0o600
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
CREATE INDEX IF NOT EXISTS tasks_order ON tasks (pool, seq);
CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, created REAL);
"""


def _to_record(row: Sequence[Any]) -> Record:
    record = dict(zip(_COLUMNS, row, strict=True))
    try:
        record["filter"] = json.loads(record["filter"]) if record["filter"] is not None else None
    except (TypeError, ValueError):
        # a filter is only an index of ``def``; a corrupted one (written past this store)
        # must not stop a worker or hide the pool: the task is served without it
        record["filter"] = None
    return record


class SQLiteStore(TaskStore):
    """Task store on one SQLite file; safe for many threads and processes on one machine."""

    scheme = "sqlite"

    def __init__(self, path: str | os.PathLike[str], busy_timeout_seconds: float = 60.0,
                 file_mode: int = DEFAULT_FILE_MODE) -> None:
        """Open (and create if needed) the database file.

        Args:
            path: File path; parent folders are created.
            busy_timeout_seconds: How long a writer waits for the lock before failing.
            file_mode: Permission bits of a database file this call creates (its ``-wal``
                and ``-shm`` files get the same); an existing file keeps its own.

        Raises:
            StoreConnectionError: When the file cannot be created or opened.
        """
        if str(path) == ":memory:":
            raise StoreConnectionError(
                "an in-memory SQLite pool cannot be shared with workers; give a file path"
            )
        if isinstance(file_mode, bool) or not isinstance(file_mode, int) \
                or not 0 <= file_mode <= 0o777:
            raise StoreConnectionError(f"file_mode must be permission bits like 0o600, "
                                       f"got {file_mode!r}")
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout_seconds = busy_timeout_seconds
        self.file_mode = file_mode
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        deadline = time.monotonic() + busy_timeout_seconds
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._create_file()
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

    def _create_file(self) -> None:
        """Create the database file with ``file_mode`` (exactly, whatever the umask)."""
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 self.file_mode)
        except FileExistsError:
            return  # an existing file keeps its permissions
        try:
            os.fchmod(descriptor, self.file_mode)
        finally:
            os.close(descriptor)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``.

        The URL may end in ``?file_mode=0640`` (octal permission bits for a new file;
        default ``0600``).

        Raises:
            StoreConnectionError: For another scheme or an unknown or malformed option.
        """
        prefix = "sqlite:///"
        if not url.startswith(prefix):
            raise StoreConnectionError(f"expected a URL like sqlite:///path/to/tasks.db, got {url!r}")
        path, _, query = url[len(prefix):].partition("?")
        options = parse_qs(query, keep_blank_values=True) if query else {}
        unknown = sorted(set(options) - {"file_mode"})
        if unknown:
            raise StoreConnectionError(f"unknown SQLite URL options {unknown}; supported: "
                                       "file_mode (e.g. ?file_mode=0640)")
        file_mode = DEFAULT_FILE_MODE
        if "file_mode" in options:
            text = options["file_mode"][-1]
            try:
                file_mode = int(text, 8)
            except ValueError as error:
                raise StoreConnectionError(
                    f"file_mode must be octal permission bits like 0640, got {text!r}") from error
        return cls(path, file_mode=file_mode)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds,
                                     isolation_level=None, check_same_thread=False)
        with self._lock:
            self._connections.append(connection)
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as error:
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    def _modify(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        try:
            return self._connection().execute(sql, params).rowcount
        except (sqlite3.Error, OverflowError) as error:
            raise StoreError(f"SQLite task store {self.path}: {error}") from error

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on *any* exception (never left open).

        Raises:
            StoreError: For SQLite's errors (the original chained); other exceptions pass
                through unchanged, after the rollback.
        """
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except BaseException as error:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if isinstance(error, (sqlite3.Error, OverflowError)):
                raise StoreError(f"SQLite task store {self.path}: {error}") from error
            raise

    # -- pools ---------------------------------------------------------------------------
    def list_pools(self) -> list[str]:
        """Return the names of the pools in this file, sorted."""
        return [row[0] for row in self._execute("SELECT name FROM pools ORDER BY name")]

    def drop_pool(self, pool: str) -> None:
        """Delete a pool and all its tasks."""
        check_pool(pool)
        with self._write_transaction() as connection:
            connection.execute("DELETE FROM tasks WHERE pool = ?", (pool,))
            connection.execute("DELETE FROM pools WHERE name = ?", (pool,))

    # -- writes --------------------------------------------------------------------------
    def insert_many(self, pool: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Insert tasks whose ids are new, under the write lock; return the inserted ids.

        Raises:
            StoreError: For a malformed record or a database failure (nothing is written).
            TaskConfigError: For a value no store can hold (see :mod:`taskroll.store.values`).
        """
        check_pool(pool)
        checked = check_records(records)
        with self._write_transaction() as connection:
            connection.execute(
                f"INSERT OR IGNORE INTO pools (name, created) VALUES (?, {NOW_SQL})", (pool,)
            )
            existing = {row[0] for row in connection.execute(
                "SELECT id FROM tasks WHERE pool = ? AND id IN (SELECT value FROM json_each(?))",
                (pool, json_text([record["_id"] for record in checked]))).fetchall()}
            rows_to_insert = []
            inserted: list[str] = []
            for record in checked:
                if record["_id"] in existing:
                    continue
                existing.add(record["_id"])
                inserted.append(record["_id"])
                rows_to_insert.append((
                    pool, record["_id"], record["def"], record["def_encoding"],
                    json_text(record["filter"]), record["status"], record["priority"],
                ))
            connection.executemany(
                "INSERT INTO tasks (pool, id, def, def_encoding, filter, status, priority, created)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, {NOW_SQL})",
                rows_to_insert,
            )
        return inserted

    @staticmethod
    def _assignments(fields: Mapping[str, Any]) -> tuple[str, list[Any]]:
        parts, params = [], []
        for name, value in check_fields(fields, WRITABLE_FIELDS, NOW).items():
            if value is NOW:
                parts.append(f"{name} = {NOW_SQL}")
                continue
            parts.append(f"{name} = ?")
            params.append(json_text(value) if name == "filter" else value)
        return ", ".join(parts), params

    def update(self, pool: str, task_id: str, fields: Mapping[str, Any],
               expected_status: str | None = None, expected_worker: str | None = None) -> bool:
        """Set fields of one task if the optional status/worker guards hold."""
        where, params = "pool = ? AND id = ?", [check_pool(pool), task_id]
        if expected_status is not None:
            where += " AND status = ?"
            params.append(expected_status)
        if expected_worker is not None:
            where += " AND worker = ?"
            params.append(expected_worker)
        if not fields:
            return bool(self._execute(f"SELECT 1 FROM tasks WHERE {where}", params))
        assignments, values = self._assignments(fields)
        return self._modify(f"UPDATE tasks SET {assignments} WHERE {where}",
                            [*values, *params]) > 0

    def update_many(self, pool: str, conditions: Sequence[Condition],
                    fields: Mapping[str, Any]) -> int:
        """Set fields on every matching task; return how many matched."""
        where, where_params = _where(check_pool(pool), conditions)
        if not fields:
            return int(self._execute(f"SELECT count(*) FROM tasks WHERE {where}",
                                     where_params)[0][0])
        assignments, params = self._assignments(fields)
        return self._modify(f"UPDATE tasks SET {assignments} WHERE {where}", params + where_params)

    def delete_many(self, pool: str, conditions: Sequence[Condition]) -> int:
        """Delete every matching task."""
        where, params = _where(check_pool(pool), conditions)
        return self._modify(f"DELETE FROM tasks WHERE {where}", params)

    # -- claims --------------------------------------------------------------------------
    def fetch(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
              lease_seconds: float) -> Record | None:
        """Claim the highest-priority, oldest matching task in one atomic statement."""
        records = self.fetch_many(pool, conditions, status, worker, lease_seconds, 1)
        return records[0] if records else None

    def fetch_many(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
                   lease_seconds: float, count: int) -> list[Record]:
        """Claim up to ``count`` best matching tasks in one atomic statement, best first."""
        status, worker, lease_seconds = check_claim(status, worker, lease_seconds)
        count = check_claim_count(count)
        where, params = _where(check_pool(pool), conditions)
        rows = self._execute(
            f"UPDATE tasks SET status = 'running', worker = ?, started = {NOW_SQL}, "
            f"lease_until = {NOW_SQL} + ?, attempts = attempts + 1, claimed_from = status "
            f"WHERE seq IN (SELECT seq FROM tasks WHERE {where} AND status = ? "
            f"ORDER BY priority DESC, seq LIMIT ?) RETURNING seq, {_SELECT}",
            [worker, lease_seconds, *params, status, count],
        )
        # RETURNING gives rows in no promised order: put them back in claim order
        rows.sort(key=lambda row: (-row[_PRIORITY_INDEX], row[0]))
        return [_to_record(row[1:]) for row in rows]

    def heartbeat(self, pool: str, task_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a running task still owned by ``worker``."""
        lease_seconds = check_lease(lease_seconds)
        return self._modify(
            f"UPDATE tasks SET lease_until = {NOW_SQL} + ? "
            "WHERE pool = ? AND id = ? AND status = 'running' AND worker = ?",
            (lease_seconds, check_pool(pool), task_id, worker),
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
            {"max": check_max_attempts(max_attempts), "pool": check_pool(pool)},
        )

    # -- reads ---------------------------------------------------------------------------
    def find(self, pool: str, conditions: Sequence[Condition],
             limit: int | None = None) -> Iterator[Record]:
        """Yield matching records oldest first, reading in pages (no long read transaction)."""
        where, params = _where(check_pool(pool), conditions)
        sql = f"SELECT seq, {_SELECT} FROM tasks WHERE {where} AND seq > ? ORDER BY seq LIMIT ?"
        pages = read_in_pages(lambda after, count: self._execute(sql, [*params, after, count]),
                              limit, _PAGE)
        for row in pages:
            yield _to_record(row[1:])

    def find_page(self, pool: str, conditions: Sequence[Condition], sort: SortOrder = (),
                  skip: int = 0, limit: int = 100) -> list[Record]:
        """One page in one ``ORDER BY ... LIMIT ... OFFSET`` query (NULL sorts lowest)."""
        sort, skip, limit = check_page(sort, skip, limit)
        where, params = _where(check_pool(pool), conditions)
        order = "".join(f"{'seq' if field == 'created' else _COLUMNS[field]} "
                        f"{'DESC' if direction < 0 else 'ASC'}, " for field, direction in sort)
        rows = self._execute(f"SELECT {_SELECT} FROM tasks WHERE {where} "
                             f"ORDER BY {order}seq LIMIT ? OFFSET ?", [*params, limit, skip])
        return [_to_record(row) for row in rows]

    def live_workers(self, pool: str) -> list[str]:
        """Distinct owners of unexpired leases, with one ``SELECT DISTINCT``."""
        return [row[0] for row in self._execute(
            "SELECT DISTINCT worker FROM tasks WHERE pool = ? AND status = 'running' AND "
            f"worker IS NOT NULL AND lease_until > {NOW_SQL} ORDER BY worker", [check_pool(pool)])]

    def count_by_status(self, pool: str, conditions: Sequence[Condition]) -> dict[str, int]:
        """Count matching tasks per status with one GROUP BY."""
        where, params = _where(check_pool(pool), conditions)
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
