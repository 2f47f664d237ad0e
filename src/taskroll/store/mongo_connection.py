"""Connections of the MongoDB store: one client per process, the server clock, one error boundary.

:class:`MongoConnection` is the base of :class:`taskroll.store.mongo.MongoStore` and holds
everything about the connection, so the store module holds only the task operations:

* one ``MongoClient`` per process (pooled, thread-safe); a child after ``fork`` makes its
  own and never closes the parent's;
* the server clock without a round trip: the offset between the server's clock
  (``hello``'s ``localTime``) and the local one is measured once per process (and again
  after a reconnect), refreshed every :data:`CLOCK_REFRESH_SECONDS`;
* network errors (``AutoReconnect``: server restarted, failover) are retried with backoff
  for up to ``retry_seconds`` (:func:`taskroll.store.retry.retry_while_unreachable`);
  other driver errors become :class:`~taskroll.errors.StoreError` here, with passwords
  scrubbed from the message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from taskroll.errors import StoreError, require
from taskroll.store.retry import ServerUnreachable, retry_while_unreachable
from taskroll.store.urls import mask_url

Result = TypeVar("Result")

#: Seconds a measured offset to the server clock is used before it is measured again.
CLOCK_REFRESH_SECONDS = 60.0

__all__ = ["CLOCK_REFRESH_SECONDS", "MongoConnection", "Result"]


class MongoConnection:
    """Client per process, clock offset and error boundary shared by the MongoDB store."""

    def _init_connection(self, url: str, db_name: str, retry_seconds: float,
                         server_selection_timeout_ms: int,
                         client_options: Mapping[str, Any] | None) -> None:
        """Remember how to connect (the client itself is made on first use, per process)."""
        self._pymongo: Any = require("pymongo", "mongo")
        self.url = url
        self.db_name = db_name
        self.safe_url = mask_url(url)
        try:
            password = urlsplit(url).password or ""
        except ValueError:
            password = ""
        self._secrets = [secret for secret in {password, unquote(password)} if secret]
        self.retry_seconds = retry_seconds
        self.server_selection_timeout_ms = server_selection_timeout_ms
        self.client_options = dict(client_options or {})
        self._lock = threading.Lock()
        self._clients: dict[int, Any] = {}
        # per process: (server clock - local clock, time.monotonic() when measured)
        self._offsets: dict[int, tuple[float, float]] = {}
        self._ready_pools: set[str] = set()  # indexes made by this process
        self._claim_ready_pools: set[str] = set()  # claim order checked by this process
        self._closed = False

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _database(self) -> Any:
        if self._closed:
            raise StoreError(f"the task store {self.safe_url} is closed")
        pid = os.getpid()
        with self._lock:
            client = self._clients.get(pid)
            if client is None:
                client = self._pymongo.MongoClient(
                    self.url, serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                    tz_aware=True, appname="taskroll", connect=False, **self.client_options,
                )
                self._clients[pid] = client
        return client[self.db_name]

    def _run(self, operation: Callable[..., Result], *arguments: Any) -> Result:
        """Run ``operation(*arguments)``, retrying network errors for ``retry_seconds``."""
        errors = self._pymongo.errors

        def attempt() -> Result:
            try:
                return operation(*arguments)
            except errors.AutoReconnect as error:
                with self._lock:  # the server may have changed (failover): measure again
                    self._offsets.pop(os.getpid(), None)
                raise ServerUnreachable(f"cannot reach the MongoDB task store {self.safe_url}: "
                                        f"{self._scrub(str(error))}") from error
            except (errors.PyMongoError, errors.InvalidName, errors.InvalidDocument,
                    OverflowError) as error:  # BSON cannot hold the value (e.g. int > 2**63)
                raise StoreError(
                    f"MongoDB task store {self.safe_url}: {self._scrub(str(error))}"
                ) from error
        return retry_while_unreachable(attempt, self.retry_seconds)

    def _server_clock(self) -> float:
        """Ask the server for its clock (one ``hello``) and remember the offset to ours."""
        database = self._database()
        before = time.time()
        try:
            reply = database.command("hello")
        except self._pymongo.errors.OperationFailure:
            reply = database.command("isMaster")
        after = time.time()
        server = float(reply["localTime"].timestamp())
        with self._lock:
            self._offsets[os.getpid()] = (server - (before + after) / 2, time.monotonic())
        return server

    def _clock(self) -> float:
        """The server clock without a round trip: local time plus the measured offset."""
        with self._lock:
            measured = self._offsets.get(os.getpid())
        if measured is None or time.monotonic() - measured[1] >= CLOCK_REFRESH_SECONDS:
            return self._server_clock()
        return time.time() + measured[0]

    def close(self) -> None:
        """Close this process's client; clients inherited over ``fork`` are left alone."""
        with self._lock:
            client = self._clients.pop(os.getpid(), None)
            self._closed = True
        if client is not None:
            client.close()


