"""The PostgreSQL store: every pool in one table, claims with ``FOR UPDATE SKIP LOCKED``.

Schema (created on first use, under an advisory lock so concurrent openers do not race)::

    CREATE TABLE taskroll_tasks (
        pool text NOT NULL, id text NOT NULL,          -- PRIMARY KEY (pool, id)
        def_text text, def_bytes bytea,               -- payload: str (json) or bytes (pickle)
        def_encoding text NOT NULL,
        filter jsonb NOT NULL,                        -- canonical JSON copy, queried with #> / @>
        status text NOT NULL, priority bigint NOT NULL DEFAULT 0,
        res_text text, res_bytes bytea, res_encoding text,
        created float8, started float8, finished float8,   -- UNIX seconds, database clock
        worker text, lease_until float8, attempts integer NOT NULL DEFAULT 0,
        error text, claimed_from text,
        claim text,                                   -- token of the fetch that claimed it
        seq bigserial NOT NULL)                       -- insertion order ("oldest first")
    CREATE INDEX taskroll_tasks_fetch ON taskroll_tasks (pool, status, priority DESC, seq)
    CREATE INDEX taskroll_tasks_order ON taskroll_tasks (pool, seq)          -- find, paging
    CREATE INDEX taskroll_tasks_lease ON taskroll_tasks (pool, lease_until)
        WHERE status = 'running'                                            -- reap
    CREATE INDEX taskroll_tasks_filter ON taskroll_tasks USING gin (filter jsonb_path_ops)
    CREATE TABLE taskroll_pools (pool text PRIMARY KEY, created float8)      -- list_pools

Times are ``extract(epoch from statement_timestamp())``: the server's clock, fixed
within one statement. A fetch is one ``UPDATE ... WHERE (pool, id) = (SELECT ... ORDER
BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ...``, tagged with a
fresh ``claim`` token so that a retry after a lost reply finds the task it claimed
rather than orphaning it until its lease runs out. Inserts take
their ``seq`` numbers first (input order) and then insert rows sorted by id with
``ON CONFLICT DO NOTHING`` (one lock order, so concurrent creators cannot deadlock).

Queries are translated to SQL by :mod:`taskroll.store.postgres_query` with the semantics
of :func:`taskroll.store.query.matches` (JSON types kept apart: ``true`` is not ``1``).

Connections (:mod:`taskroll.store.postgres_connection`): a small pool per process
(threads such as a worker's heartbeat borrow one per operation), autocommit. When the
server goes away (restart, failover) broken connections are dropped and the operation is
retried with backoff for up to ``retry_seconds``
(:func:`taskroll.store.retry.retry_while_unreachable`). Passwords never appear in
``repr`` or error messages.

Round trips: a claim is one statement (the ``UPDATE ... RETURNING`` above) and a commit
one (``UPDATE``, times stamped by the server in the statement); a reap is one more
statement, which the manager runs at most once a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskroll.store.base import (
    NOW,
    RECORD_FIELDS,
    WRITABLE_FIELDS,
    Record,
    SortOrder,
    TaskStore,
    check_claim_count,
    check_page,
    read_in_pages,
)
from taskroll.store.postgres_connection import PostgresConnections
from taskroll.store.postgres_query import Fragment, Translator
from taskroll.store.query import Condition
from taskroll.store.values import (
    check_claim,
    check_fields,
    check_lease,
    check_max_attempts,
    check_pool,
    check_records,
)

if TYPE_CHECKING:
    from psycopg import Connection

#: The database clock in UNIX seconds, fixed within one statement.
CLOCK = "extract(epoch from statement_timestamp())::float8"
_LOCK_KEY = 0x7461736B726F6C6C  # "taskroll": serialises schema creation
_PAGE = 1000
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS taskroll_tasks (
        pool text NOT NULL, id text NOT NULL,
        def_text text, def_bytes bytea, def_encoding text NOT NULL,
        filter jsonb NOT NULL,
        status text NOT NULL, priority bigint NOT NULL DEFAULT 0,
        res_text text, res_bytes bytea, res_encoding text,
        created float8, started float8, finished float8,
        worker text, lease_until float8, attempts integer NOT NULL DEFAULT 0,
        error text, claimed_from text, claim text,
        seq bigserial NOT NULL,
        PRIMARY KEY (pool, id))""",
    # tables made before the claim column existed (checked first: ALTER locks the table)
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
    "'taskroll_tasks'::regclass AND attname = 'claim' AND NOT attisdropped) THEN "
    "ALTER TABLE taskroll_tasks ADD COLUMN claim text; END IF; END $$",
    "CREATE INDEX IF NOT EXISTS taskroll_tasks_fetch "
    "ON taskroll_tasks (pool, status, priority DESC, seq)",
    "CREATE INDEX IF NOT EXISTS taskroll_tasks_order ON taskroll_tasks (pool, seq)",
    "CREATE INDEX IF NOT EXISTS taskroll_tasks_lease ON taskroll_tasks (pool, lease_until) "
    "WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS taskroll_tasks_filter "
    "ON taskroll_tasks USING gin (filter jsonb_path_ops)",
    "CREATE TABLE IF NOT EXISTS taskroll_pools (pool text PRIMARY KEY, created float8)",
)
_INDEXES = ("taskroll_tasks_fetch", "taskroll_tasks_order", "taskroll_tasks_lease",
            "taskroll_tasks_filter")
_SCHEMA_CURRENT = (
    "SELECT to_regclass('taskroll_pools') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute "
    "WHERE attrelid = to_regclass('taskroll_tasks') AND attname = 'claim' AND NOT attisdropped)"
    " AND (SELECT count(*) FROM unnest(ARRAY[" + ", ".join(f"'{name}'" for name in _INDEXES)
    + "]) AS name WHERE to_regclass(name) IS NOT NULL) = " + str(len(_INDEXES))
)
"""True when every table, column and index of :data:`_SCHEMA` exists."""
_COLUMNS = (
    "id", "def_text", "def_bytes", "def_encoding", "filter", "status", "priority", "res_text",
    "res_bytes", "res_encoding", "created", "started", "finished", "worker", "lease_until",
    "attempts", "error", "claimed_from",
)
_SELECT = ", ".join(_COLUMNS)
#: Sort fields of ``find_page`` whose column differs (text in code-point order, as SQLite).
_SORT_COLUMNS = {"created": "seq", "_id": 'id COLLATE "C"', "status": 'status COLLATE "C"',
                 "worker": 'worker COLLATE "C"'}


def _has_nul(*texts: Any) -> bool:
    return any(isinstance(text, str) and "\0" in text for text in texts)


def _payload(value: Any) -> tuple[str | None, bytes | None]:
    """Split a codec payload into its (text, bytes) columns."""
    if value is None or isinstance(value, str):
        return value, None
    return None, bytes(value)


def _to_record(row: Sequence[Any]) -> Record:
    values = dict(zip(_COLUMNS, row, strict=True))
    record: Record = {field: values.get(field) for field in RECORD_FIELDS}
    record["_id"] = values["id"]
    for name in ("def", "res"):
        binary = values[f"{name}_bytes"]
        record[name] = bytes(binary) if binary is not None else values[f"{name}_text"]
    return record


class PostgresStore(PostgresConnections, TaskStore):
    """Task store in a PostgreSQL database, shared by any number of worker machines."""

    scheme = "postgresql"

    def __init__(self, url: str, retry_seconds: float = 30.0, connect_timeout: int = 10,
                 max_idle: int = 4, connect_options: Mapping[str, Any] | None = None) -> None:
        """Connect and create the schema if needed.

        Args:
            url: ``postgresql://user:password@host:port/database`` (libpq URL or key=value).
            retry_seconds: How long an operation keeps retrying while the server is
                unreachable (e.g. restarting) before it fails.
            connect_timeout: Seconds one connection attempt may take.
            max_idle: Connections kept open for reuse between operations.
            connect_options: More keyword arguments for ``psycopg.connect`` (e.g.
                ``sslmode``, ``cursor_factory``).

        Raises:
            MissingDependencyError: When psycopg is not installed.
            StoreConnectionError: When the database cannot be reached within ``retry_seconds``.
        """
        self._init_connections(url, retry_seconds, connect_timeout, max_idle,
                               connect_options)
        self._run(self._create_schema)

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Open the store a ``postgresql://`` (or ``postgres://``) URL names."""
        return cls(url)

    def __repr__(self) -> str:
        return f"PostgresStore({self.safe_url!r})"

    @staticmethod
    def _create_schema(connection: Connection[Any]) -> None:
        """Create or upgrade the tables, unless they are current already.

        The check comes first so that an account that may only read and write rows (no
        ``CREATE`` on the schema, not the tables' owner) can open a database whose tables
        its administrator made; ``CREATE ... IF NOT EXISTS`` alone needs those rights.
        """
        if connection.execute(_SCHEMA_CURRENT).fetchone()[0]:  # type: ignore[index]
            return
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            for statement in _SCHEMA:
                connection.execute(statement)

    def _where(self, pool: str, conditions: Sequence[Condition]) -> Fragment:
        sql, params = Translator(self._jsonb).where(conditions)
        return f"pool = %s AND {sql}", [check_pool(pool), *params]

    # -- pools ---------------------------------------------------------------------------
    def list_pools(self) -> list[str]:
        """Return the names of the pools in this database, sorted."""
        rows = self._execute('SELECT pool FROM taskroll_pools ORDER BY pool COLLATE "C"')
        return [row[0] for row in rows]

    def drop_pool(self, pool: str) -> None:
        """Delete a pool and all its tasks (no error if absent)."""
        check_pool(pool)

        def operation(connection: Connection[Any]) -> None:
            with connection.transaction():
                connection.execute("DELETE FROM taskroll_tasks WHERE pool = %s", (pool,))
                connection.execute("DELETE FROM taskroll_pools WHERE pool = %s", (pool,))
        self._run(operation)

    # -- writes --------------------------------------------------------------------------
    def insert_many(self, pool: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Insert tasks whose ids are new (``ON CONFLICT DO NOTHING``); return those inserted.

        Raises:
            StoreError: When a record lacks ``_id``, ``def``, ``def_encoding`` or ``filter``.
            TaskConfigError: For a value no store can hold (see :mod:`taskroll.store.values`).
        """
        check_pool(pool)
        records = check_records(records)
        order = sorted(range(len(records)), key=lambda index: str(records[index]["_id"]))
        rows = [records[index] for index in order]
        payloads = [_payload(record["def"]) for record in rows]

        def operation(connection: Connection[Any]) -> set[str]:
            with connection.transaction():
                connection.execute(
                    f"INSERT INTO taskroll_pools (pool, created) VALUES (%s, {CLOCK}) "
                    "ON CONFLICT DO NOTHING", (pool,))
                if not records:
                    return set()
                numbers = sorted(row[0] for row in connection.execute(
                    "SELECT nextval(pg_get_serial_sequence('taskroll_tasks', 'seq')) "
                    "FROM generate_series(1, %s)", (len(records),)).fetchall())
                inserted = connection.execute(
                    "INSERT INTO taskroll_tasks (pool, id, def_text, def_bytes, def_encoding, "
                    "filter, status, priority, seq, created) "
                    f"SELECT %s, r.id, r.def_text, r.def_bytes, r.def_encoding, r.filter, "
                    f"r.status, r.priority, r.seq, {CLOCK} "
                    "FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::jsonb[], "
                    "%s::text[], %s::bigint[], %s::bigint[]) "
                    "AS r(id, def_text, def_bytes, def_encoding, filter, status, priority, seq) "
                    'ORDER BY r.id COLLATE "C", r.seq '
                    "ON CONFLICT (pool, id) DO NOTHING RETURNING id",
                    (pool, [str(record["_id"]) for record in rows],
                     [text for text, _ in payloads], [binary for _, binary in payloads],
                     [record["def_encoding"] for record in rows],
                     [self._jsonb(record["filter"]) for record in rows],
                     [record["status"] for record in rows],
                     [record["priority"] for record in rows],
                     [numbers[index] for index in order]),
                ).fetchall()
                return {row[0] for row in inserted}

        inserted = self._run(operation)
        result: list[str] = []
        for record in records:
            if record["_id"] in inserted:
                inserted.discard(record["_id"])
                result.append(record["_id"])
        return result

    def _assignments(self, fields: Mapping[str, Any]) -> Fragment:
        parts: list[str] = []
        params: list[Any] = []
        for name, value in check_fields(fields, WRITABLE_FIELDS, NOW).items():
            if value is NOW:
                parts.append(f"{name} = {CLOCK}")
            elif name in ("def", "res"):
                parts.append(f"{name}_text = %s, {name}_bytes = %s")
                params.extend(_payload(value))
            elif name == "filter":
                parts.append("filter = %s")
                params.append(self._jsonb(value))
            else:
                parts.append(f"{name} = %s")
                params.append(value)
        return ", ".join(parts), params

    def update(self, pool: str, task_id: str, fields: Mapping[str, Any],
               expected_status: str | None = None, expected_worker: str | None = None) -> bool:
        """Set fields of one task if it exists and the optional status/worker guards hold."""
        where, params = "pool = %s AND id = %s", [check_pool(pool), task_id]
        if _has_nul(task_id, expected_status, expected_worker):
            check_fields(fields, WRITABLE_FIELDS, NOW)
            return False  # no stored text holds NUL (PostgreSQL would refuse the query)
        if expected_status is not None:
            where += " AND status = %s"
            params.append(expected_status)
        if expected_worker is not None:
            where += " AND worker = %s"
            params.append(expected_worker)
        if not fields:
            return bool(self._execute(f"SELECT 1 FROM taskroll_tasks WHERE {where}", params))
        assignments, values = self._assignments(fields)
        return self._modify(f"UPDATE taskroll_tasks SET {assignments} WHERE {where}",
                            [*values, *params]) > 0

    def update_many(self, pool: str, conditions: Sequence[Condition],
                    fields: Mapping[str, Any]) -> int:
        """Set fields on every matching task; return how many matched."""
        where, params = self._where(pool, conditions)
        if not fields:
            return int(self._execute(f"SELECT count(*) FROM taskroll_tasks WHERE {where}",
                                     params)[0][0])
        assignments, values = self._assignments(fields)
        return self._modify(f"UPDATE taskroll_tasks SET {assignments} WHERE {where}",
                            [*values, *params])

    def delete_many(self, pool: str, conditions: Sequence[Condition]) -> int:
        """Delete every matching task; return how many were deleted."""
        where, params = self._where(pool, conditions)
        return self._modify(f"DELETE FROM taskroll_tasks WHERE {where}", params)

    # -- claims --------------------------------------------------------------------------
    def fetch(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
              lease_seconds: float) -> Record | None:
        """Claim the highest-priority, oldest matching task in one atomic statement.

        The claim is tagged with a fresh token; if the connection breaks before the reply
        arrives, the retry first looks for a task carrying the token (the lost reply may
        have been a success) instead of claiming a second one.
        """
        records = self._claim(pool, conditions, status, worker, lease_seconds, 1)
        return records[0] if records else None

    def fetch_many(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
                   lease_seconds: float, count: int) -> list[Record]:
        """Claim up to ``count`` matching tasks, best first, in one atomic statement.

        Raises:
            TaskConfigError: When ``count`` is not a whole number >= 1.
        """
        return self._claim(pool, conditions, status, worker, lease_seconds,
                           check_claim_count(count))

    def _claim(self, pool: str, conditions: Sequence[Condition], status: str, worker: str,
               lease_seconds: float, count: int) -> list[Record]:
        """One ``UPDATE ... RETURNING`` claiming up to ``count`` rows locked with SKIP LOCKED."""
        status, worker, lease_seconds = check_claim(status, worker, lease_seconds)
        where, params = self._where(pool, conditions)
        token, sent = uuid.uuid4().hex, False
        returning = ", ".join(f"task.{name}" for name in _COLUMNS)

        def operation(connection: Connection[Any]) -> list[Any]:
            nonlocal sent
            if sent:
                rows = connection.execute(
                    f"SELECT {_SELECT} FROM taskroll_tasks AS task WHERE pool = %s "
                    "AND status = 'running' AND worker = %s AND claim = %s "
                    "ORDER BY priority DESC, seq", (pool, worker, token)).fetchall()
                if rows:
                    return rows
            sent = True
            # the chosen rows are materialised once, so each is locked and claimed once
            return connection.execute(
                "WITH chosen AS MATERIALIZED (SELECT pool, id FROM taskroll_tasks "
                f"WHERE {where} AND status = %s ORDER BY priority DESC, seq "
                "LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE taskroll_tasks AS task SET status = 'running', worker = %s, "
                f"started = {CLOCK}, lease_until = {CLOCK} + %s::float8, "
                "attempts = task.attempts + 1, claimed_from = task.status, claim = %s "
                "FROM chosen WHERE task.pool = chosen.pool AND task.id = chosen.id "
                f"RETURNING {returning}, task.priority AS rank, task.seq",
                [*params, status, count, worker, float(lease_seconds), token],
            ).fetchall()

        rows = self._run(operation)
        if rows and len(rows[0]) > len(_COLUMNS):  # RETURNING has no order: sort as chosen
            rows = [row[:len(_COLUMNS)] for row in sorted(rows, key=lambda row: (-row[-2],
                                                                                  row[-1]))]
        return [_to_record(row) for row in rows]

    def heartbeat(self, pool: str, task_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a running task still owned by ``worker``."""
        lease_seconds = check_lease(lease_seconds)
        if _has_nul(task_id, worker):
            return False
        return self._modify(
            f"UPDATE taskroll_tasks SET lease_until = {CLOCK} + %s::float8 "
            "WHERE pool = %s AND id = %s AND status = 'running' AND worker = %s",
            (lease_seconds, check_pool(pool), task_id, worker),
        ) > 0

    def reap(self, pool: str, max_attempts: int) -> int:
        """Return expired leases to their previous status, or fail them after max_attempts."""
        return self._modify(
            "UPDATE taskroll_tasks SET "
            "status = CASE WHEN attempts >= %(max)s THEN 'failed' "
            "ELSE coalesce(claimed_from, 'waiting') END, "
            "error = 'lease expired: worker ' || coalesce(worker, '?') || "
            "' stopped renewing it during attempt ' || attempts || ' of ' || %(max)s::text, "
            f"finished = CASE WHEN attempts >= %(max)s THEN {CLOCK} ELSE finished END, "
            "worker = NULL, lease_until = NULL "
            f"WHERE pool = %(pool)s AND status = 'running' AND lease_until < {CLOCK}",
            {"max": check_max_attempts(max_attempts), "pool": check_pool(pool)},
        )

    # -- reads ---------------------------------------------------------------------------
    def find(self, pool: str, conditions: Sequence[Condition],
             limit: int | None = None) -> Iterator[Record]:
        """Yield matching records oldest first, in pages (no long-running transaction)."""
        where, params = self._where(pool, conditions)
        sql = (f"SELECT seq, {_SELECT} FROM taskroll_tasks WHERE {where} AND seq > %s "
                       "ORDER BY seq LIMIT %s")
        pages = read_in_pages(lambda after, count: self._execute(sql, [*params, after, count]),
                              limit, _PAGE)
        for row in pages:
            yield _to_record(row[1:])

    def find_page(self, pool: str, conditions: Sequence[Condition], sort: SortOrder = (),
                  skip: int = 0, limit: int = 100) -> list[Record]:
        """One page in one ``ORDER BY ... LIMIT ... OFFSET`` query (NULL sorts lowest)."""
        sort, skip, limit = check_page(sort, skip, limit)
        where, params = self._where(pool, conditions)
        order = "".join(f"{_SORT_COLUMNS.get(field, field)} "
                        f"{'DESC NULLS LAST' if direction < 0 else 'ASC NULLS FIRST'}, "
                        for field, direction in sort)
        rows = self._execute(f"SELECT {_SELECT} FROM taskroll_tasks WHERE {where} "
                             f"ORDER BY {order}seq LIMIT %s OFFSET %s", [*params, limit, skip])
        return [_to_record(row) for row in rows]

    def live_workers(self, pool: str) -> list[str]:
        """Distinct owners of unexpired leases, with one ``SELECT DISTINCT``."""
        return [row[0] for row in self._execute(
            "SELECT DISTINCT worker COLLATE \"C\" FROM taskroll_tasks WHERE pool = %s AND "
            f"status = 'running' AND worker IS NOT NULL AND lease_until > {CLOCK} "
            "ORDER BY 1", [check_pool(pool)])]

    def count_by_status(self, pool: str, conditions: Sequence[Condition]) -> dict[str, int]:
        """Count matching tasks per status with one ``GROUP BY``."""
        where, params = self._where(pool, conditions)
        rows = self._execute(
            f"SELECT status, count(*) FROM taskroll_tasks WHERE {where} GROUP BY status", params)
        return {status: int(count) for status, count in rows}

    def now(self) -> float:
        """Return the server's clock as UNIX seconds."""
        return float(self._execute(f"SELECT {CLOCK}")[0][0])

