"""How a task pool records failures, and how a worker waits out a failing store.

A failure is written into a task's ``error`` field as JSON text (every store keeps
that field as text, so no store needs a schema change)::

    {"kind": "task raised" | "worker lost" | "store error" | "undecodable" | None,
     "message": str | None,        # one line: "ValueError: index 3 is broken"
     "traceback": str | None,      # the formatted traceback, when there is one
     "attempt": int | None,        # the attempt (fetch count) it happened in
     "history": [ {kind, message, traceback, attempt}, ... ]}   # earlier ones, oldest first

:func:`parse_error` reads it back as that dict. Plain text written by a store's reaper
(``"lease expired: worker ... stopped renewing it ..."``) reads as kind ``"worker lost"``;
any other plain text as kind ``"task raised"``. ``kind`` is ``None`` after
:meth:`~taskroll.manage.TaskManager.retry_failed`: no current failure, the earlier ones
are in ``history``. The history keeps the last :data:`HISTORY_LIMIT` entries.

Kinds:

* ``task raised``: the task function raised, or its result cannot be stored. Counts
  against ``max_attempts``.
* ``worker lost``: the worker stopped renewing its lease (killed, frozen, lost its
  connection); the store's reaper records it. It counts against ``max_attempts`` too:
  the reaper cannot tell a killed worker from a task that kills its worker (out of
  memory, a crash in native code), and such a task must not take every worker down.
* ``store error``: the database failed while the worker recorded the outcome (full
  disk, lost connection, locked database). The worker backs off and retries
  (:class:`Backoff`); when the store stays down the task goes back with this attempt not
  counted.
* ``undecodable``: the stored definition (or part-done result) cannot be decoded: a
  pickle in a pool opened without ``allow_pickle``, corrupt JSON, a malformed codec tag.
  The task goes to ``failed`` at once; workers go on with the next task.
"""

from __future__ import annotations

import json
import time
import traceback as traceback_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from taskroll.errors import StoreError, TaskConfigError
from taskroll.status import Status
from taskroll.store import NOW

TASK_RAISED: Final = "task raised"
WORKER_LOST: Final = "worker lost"
STORE_ERROR: Final = "store error"
UNDECODABLE: Final = "undecodable"
#: Every failure kind, in the order of the module docstring.
FAILURE_KINDS: Final = (TASK_RAISED, WORKER_LOST, STORE_ERROR, UNDECODABLE)
#: Most earlier failures kept in ``history``.
HISTORY_LIMIT: Final = 20
_ENTRY_FIELDS = ("kind", "message", "traceback", "attempt")

Result = TypeVar("Result")


def parse_error(value: Any) -> dict[str, Any] | None:
    """Return the stored ``error`` field as a failure dict (see the module docstring).

    Args:
        value: The stored field: ``None``, JSON text written by :func:`error_text`, plain
            text (a store's reaper, or an older taskroll), or an already parsed dict.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        parsed: Any = value
    else:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or "kind" not in parsed:
            kind = WORKER_LOST if text.startswith("lease expired") else TASK_RAISED
            return {"kind": kind, "message": text.strip().splitlines()[-1] if text.strip() else "",
                    "traceback": None, "attempt": None, "history": []}
    history = parsed.get("history")
    return {**{name: parsed.get(name) for name in _ENTRY_FIELDS},
            "history": list(history) if isinstance(history, list) else []}


def error_text(kind: str | None, message: str | None, traceback: str | None,
               attempt: int | None, previous: Any = None) -> str:
    """Return the JSON text of a new failure, pushing ``previous`` onto its history.

    Args:
        kind: One of :data:`FAILURE_KINDS`, or ``None`` for "no current failure".
        message: One line saying what failed.
        traceback: The formatted traceback, if any.
        attempt: The attempt it happened in.
        previous: The task's stored ``error`` before this failure (any form
            :func:`parse_error` reads).
    """
    earlier = parse_error(previous)
    history: list[Any] = []
    if earlier is not None:
        history = earlier["history"]
        if earlier["kind"] is not None:
            history = [*history, {name: earlier[name] for name in _ENTRY_FIELDS}]
    record = {"kind": kind, "message": message, "traceback": traceback, "attempt": attempt,
              "history": history[-HISTORY_LIMIT:]}
    # ASCII: a lone surrogate in an exception message must not make the failure unstorable
    return json.dumps(record, ensure_ascii=True, default=str)


def describe(error: BaseException) -> str:
    """Return ``"Type: message"`` on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_fields(error: str | BaseException, kind: str, attempts: int, max_attempts: int,
                   back_to: str, previous: Any = None,
                   cause: BaseException | None = None) -> dict[str, Any]:
    """Return the fields that record a failure of a running task.

    Args:
        error: The exception, or a text (a traceback's last line is its message).
        kind: One of :data:`FAILURE_KINDS`.
        attempts: The task's fetch count, this attempt included.
        max_attempts: Failures (``task raised`` or ``worker lost``) before ``failed``.
        back_to: The status for another attempt.
        previous: The task's ``error`` before this failure.
        cause: The exception whose traceback to keep when ``error`` is a text.

    Returns:
        ``status`` (``back_to``, or ``failed`` after the last attempt or for kind
        ``undecodable``), ``error``, ``worker`` and, as needed, ``finished`` and
        ``attempts`` (lowered by one for kind ``store error``: that attempt does not count).
    """
    if isinstance(error, BaseException):
        cause, message = error, describe(error)
    else:
        lines = str(error).strip().splitlines()
        message = lines[-1] if lines else ""
    if cause is not None:
        trace: str | None = "".join(traceback_module.format_exception(cause))
    else:
        trace = str(error) if not isinstance(error, BaseException) and "\n" in str(error) else None
    fields: dict[str, Any] = {"worker": None,
                              "error": error_text(kind, message, trace, attempts, previous)}
    if kind == STORE_ERROR:
        fields.update(status=back_to, attempts=max(attempts - 1, 0))
    elif kind == UNDECODABLE or attempts >= max_attempts:
        fields.update(status=Status.FAILED.value, finished=NOW)
    else:
        fields["status"] = back_to
    return fields


def retry_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields that put a ``failed`` record back for another round of attempts.

    It goes back to ``part_done`` when it failed from there, else to ``waiting``, with
    ``attempts`` 0 and its last failure moved into the history (``kind`` ``None``).
    """
    back = (Status.PART_DONE.value if record.get("claimed_from") == Status.PART_DONE.value
            else Status.WAITING.value)
    return {"status": back, "attempts": 0, "worker": None, "lease_until": None,
            "finished": None, "error": error_text(None, None, None, None, record.get("error"))}


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff for store errors.

    Waits ``first``, ``first * factor``, ... seconds between tries, each wait at most
    ``longest``, for at most ``tries`` tries in all (defaults: 0.1, 0.2, 0.4 ... 5 s, 8
    tries, about 16 s of waiting). Only :class:`~taskroll.errors.StoreError` is retried.

    Attributes:
        first: First wait in seconds.
        factor: Growth of each wait.
        longest: Cap on one wait in seconds.
        tries: Tries in all (the first one included).
    """

    first: float = 0.1
    factor: float = 2.0
    longest: float = 5.0
    tries: int = 8

    def __post_init__(self) -> None:
        numbers = (self.first, self.factor, self.longest)
        if not all(isinstance(number, (int, float)) and 0 <= number < float("inf")
                   for number in numbers) or self.factor < 1:
            raise TaskConfigError(f"backoff waits must be finite numbers >= 0 and factor >= 1, "
                                  f"got {self!r}")
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 1:
            raise TaskConfigError(f"backoff tries must be a whole number >= 1, got {self.tries!r}")

    def waits(self) -> list[float]:
        """Return the waits between the tries."""
        return [min(self.longest, self.first * self.factor ** number)
                for number in range(self.tries - 1)]

    def call(self, operation: Callable[[], Result], what: str,
             on_error: Callable[[StoreError], None] | None = None) -> Result:
        """Run ``operation``, retrying it after a :class:`StoreError` with growing waits.

        Args:
            operation: The store operation.
            what: What it does, for the log.
            on_error: Called with each error before waiting.

        Raises:
            StoreError: The last error, when every try failed.
        """
        import logging

        for wait in [*self.waits(), None]:
            try:
                return operation()
            except StoreError as error:
                if wait is None:
                    raise
                if on_error is not None:
                    on_error(error)
                logging.getLogger("taskroll.manage").warning(
                    "store error while %s, retrying in %.2g s: %s", what, wait, error)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
