"""Waiting with backoff while a database server is unreachable (restart, failover).

The server-backed stores retry an operation that failed because the server went away;
this is the one place that decides how long to wait between tries and when to give up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from taskroll.errors import StoreConnectionError

__all__ = ["ReconnectBackoff", "ServerUnreachable", "retry_while_unreachable"]

Result = TypeVar("Result")


class ReconnectBackoff:
    """Exponential backoff, 50 ms doubling up to 1 s, for up to ``retry_seconds`` in all.

    Use one object per operation::

        backoff = ReconnectBackoff(self.retry_seconds)
        while True:
            try:
                return operation()
            except ServerGone as error:
                backoff.wait(error, "cannot reach the task store ...")

    Args:
        retry_seconds: How long after the first failure the operation may keep retrying.
        first_delay: Seconds slept after the first failure.
        max_delay: Longest single sleep.
    """

    def __init__(self, retry_seconds: float, first_delay: float = 0.05,
                 max_delay: float = 1.0) -> None:
        self.retry_seconds = retry_seconds
        self.max_delay = max_delay
        self._delay = first_delay
        self._deadline: float | None = None

    def wait(self, error: BaseException, message: str) -> None:
        """Sleep before the next try, or give up once ``retry_seconds`` have passed.

        Args:
            error: The failure that made the operation retry (chained when giving up).
            message: What went wrong, for the error raised when giving up (already free
                of secrets); the retry time and a hint are appended.

        Raises:
            StoreConnectionError: When the time to retry has run out.
        """
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.retry_seconds
        if now >= self._deadline:
            raise StoreConnectionError(
                f"{message} (retried {self.retry_seconds:g} s); check that the server is "
                "running and the URL is right"
            ) from error
        time.sleep(min(self._delay, max(self._deadline - now, 0.0)))
        self._delay = min(self._delay * 2, self.max_delay)


class ServerUnreachable(Exception):
    """Raised by one try of an operation when the server went away; the try is repeated.

    Its text says what went wrong (already free of secrets); the driver's error is its
    ``__cause__`` (``raise ServerUnreachable(...) from error``).
    """


def retry_while_unreachable(attempt: Callable[[], Result], retry_seconds: float) -> Result:
    """Call ``attempt`` until it returns, repeating it with backoff while the server is away.

    The one reconnect loop of the server-backed stores: each store's ``attempt`` runs the
    operation once, turns a driver error meaning "server gone" (restart, failover, lost
    connection) into :class:`ServerUnreachable`, and translates every other driver error
    itself. Any other exception ends the loop at once.

    Args:
        attempt: One try of the operation.
        retry_seconds: How long after the first failure the operation may keep retrying.

    Returns:
        What the first successful try returned.

    Raises:
        StoreConnectionError: When the server stayed away for ``retry_seconds``; chained to
            the driver's last error.
    """
    backoff = ReconnectBackoff(retry_seconds)
    while True:
        try:
            return attempt()
        except ServerUnreachable as gone:
            backoff.wait(gone.__cause__ or gone, str(gone))
