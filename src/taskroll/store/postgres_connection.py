"""Connections of the PostgreSQL store: a small per-process pool, retried while the server is away.

:class:`PostgresConnections` is the base of :class:`taskroll.store.postgres.PostgresStore`
and holds everything about connections, so the store module holds only SQL:

* a small pool per process (threads such as a worker's heartbeat borrow one connection
  per operation), autocommit, at most ``max_idle`` kept open between operations;
* after a ``fork`` the child never touches (or closes) the parent's sockets;
* when the server goes away (restart, failover) broken connections are dropped and the
  operation is retried with backoff for up to ``retry_seconds``
  (:func:`taskroll.store.retry.retry_while_unreachable`);
* driver errors become :class:`~taskroll.errors.StoreError` at this one boundary, with
  passwords scrubbed from the message.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from taskroll.errors import StoreError, require
from taskroll.store.retry import ServerUnreachable, retry_while_unreachable
from taskroll.store.urls import mask_url

if TYPE_CHECKING:
    from psycopg import Connection

Result = TypeVar("Result")

__all__ = ["PostgresConnections", "Result"]


class PostgresConnections:
    """Connection pool and error boundary shared by the PostgreSQL store's operations."""

    def _init_connections(self, url: str, retry_seconds: float, connect_timeout: int,
                          max_idle: int, connect_options: Mapping[str, Any] | None) -> None:
        """Set up the pool (no connection is opened yet).

        Raises:
            MissingDependencyError: When psycopg is not installed.
        """
        self._psycopg: Any = require("psycopg", "postgres")
        json_types: Any = require("psycopg.types.json", "postgres")
        self._jsonb: Callable[[Any], Any] = json_types.Jsonb
        self.url = url
        self.safe_url = mask_url(url)
        try:
            self._password = urlsplit(url).password or ""
        except ValueError:
            self._password = ""
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.connect_options = dict(connect_options or {})
        self._lock = threading.Lock()
        self._idle: list[Connection[Any]] = []
        self._inherited: list[Connection[Any]] = []
        self._pid = os.getpid()
        self._closed = False

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return re.sub(r"password=\S+", "password=***", text)

    def _acquire(self) -> Connection[Any]:
        """Take an idle connection of this process, or open one."""
        with self._lock:
            if self._closed:
                raise StoreError(f"the task store {self.safe_url} is closed")
            if self._pid != os.getpid():  # forked: never touch (or close) the parent's sockets
                self._inherited, self._idle, self._pid = self._idle, [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
        return cast("Connection[Any]", self._psycopg.connect(
            self.url, autocommit=True, connect_timeout=self.connect_timeout,
            application_name="taskroll", **self.connect_options))

    def _release(self, connection: Connection[Any], healthy: bool) -> None:
        """Keep a healthy, idle connection for reuse (up to ``max_idle``); close others."""
        idle = self._psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if (healthy and not self._closed and self._pid == os.getpid()
                    and len(self._idle) < self.max_idle and not connection.broken
                    and connection.info.transaction_status == idle):
                self._idle.append(connection)
                return
        with contextlib.suppress(self._psycopg.Error):
            connection.close()

    def _run(self, operation: Callable[[Connection[Any]], Result]) -> Result:
        """Run ``operation`` on a pooled connection, reconnecting while the server is away."""
        psycopg = self._psycopg

        def attempt() -> Result:
            connection: Connection[Any] | None = None
            healthy = False
            try:
                connection = self._acquire()
                result = operation(connection)
                healthy = True
                return result
            except psycopg.OperationalError as error:
                lost = (connection is None or connection.closed or connection.broken
                        or isinstance(error, (psycopg.errors.AdminShutdown,
                                              psycopg.errors.CannotConnectNow)))
                if not lost:
                    raise StoreError(f"PostgreSQL task store {self.safe_url}: "
                                     f"{self._scrub(str(error))}") from error
                with self._lock:  # the other idle connections died with the server too
                    stale, self._idle = self._idle, []
                for item in stale:
                    self._release(item, healthy=False)
                raise ServerUnreachable(
                    f"cannot reach the PostgreSQL task store {self.safe_url}: "
                    f"{self._scrub(str(error))}") from error
            except psycopg.Error as error:
                healthy = True  # a failed statement leaves an autocommit connection usable
                raise StoreError(
                    f"PostgreSQL task store {self.safe_url}: {self._scrub(str(error))}"
                ) from error
            finally:
                if connection is not None:
                    self._release(connection, healthy)
        return retry_while_unreachable(attempt, self.retry_seconds)

    def _execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        def operation(connection: Connection[Any]) -> list[Any]:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
        return self._run(operation)

    def _modify(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        return self._run(lambda connection: connection.execute(sql, params).rowcount)

    def close(self) -> None:
        """Close this process's idle connections (busy ones close when they finish)."""
        with self._lock:
            self._closed = True
            idle = self._idle if self._pid == os.getpid() else []
            self._idle = []
        for connection in idle:
            with contextlib.suppress(self._psycopg.Error):
                connection.close()
