"""Checks on the values that enter a store, shared by every backend.

A store refuses, before it writes anything, a value that some backend could not hold
or would hold differently, so that every store either stores the same thing or raises
the same error (and a failed call changes nothing):

* ``priority``: an ``int`` (not a ``bool``) in the signed 64-bit range
  (:data:`INTEGER_RANGE`); ``1.7``, ``"high"``, ``True`` and ``2**63`` are refused;
* ``status`` and ``claimed_from``: a name from :class:`taskroll.status.Status`;
* ``attempts``: an ``int`` from 0 to ``2**31 - 1`` (PostgreSQL's ``integer``);
* times (``started``, ``finished``, ``lease_until``): ``None``, :data:`~taskroll.store.base.NOW`
  or a finite number;
* text (ids, ``worker``, encodings, ``def``/``res`` given as ``str``): no NUL characters
  (PostgreSQL refuses them); ``error`` text has its NUL characters replaced by ``\\x00``
  instead, so that recording a failure never fails;
* ``filter``: plain JSON (dict with ``str`` keys, list, ``str``, finite ``float``, 64-bit
  ``int``, ``bool``, ``None``), no NUL characters, nested at most :data:`MAX_DEPTH` levels
  (a real MongoDB refuses documents deeper than 100);
* pool names: a non-empty ``str`` without NUL characters.

Bad task values raise :class:`~taskroll.errors.TaskConfigError` (bad statuses
:class:`~taskroll.errors.StatusTransitionError`), naming the value; both are ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from taskroll.errors import StatusTransitionError, StoreError, TaskConfigError
from taskroll.status import Status

__all__ = [
    "INTEGER_RANGE", "MAX_DEPTH", "check_claim", "check_fields", "check_lease",
    "check_max_attempts", "check_pool", "check_priority", "check_records", "check_status",
    "check_text", "json_problem", "too_deep",
]

#: The integers every store holds exactly: signed 64-bit.
INTEGER_RANGE: Final = range(-(2**63), 2**63)
#: Deepest nesting of lists and dicts in a stored ``filter`` or a query operand.
MAX_DEPTH: Final = 64
_STATUSES: Final = frozenset(status.value for status in Status)
_TIME_FIELDS: Final = frozenset({"started", "finished", "lease_until"})
_TEXT_FIELDS: Final = frozenset({"worker", "def_encoding", "res_encoding"})
_REQUIRED: Final = ("_id", "def", "def_encoding", "filter")


def _fits_64_bits(value: int) -> bool:
    """Whether an int (or int subclass, e.g. an IntEnum) is a signed 64-bit integer.

    Compared, not looked up in :data:`INTEGER_RANGE`: ``range`` membership of anything
    but an exact ``int`` walks the whole range.
    """
    return -(2**63) <= int(value) < 2**63


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists/tuples/mappings in ``value`` nest deeper than ``limit`` (no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit and children:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def json_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Say why ``value`` is not plain JSON every store holds alike, or ``None`` if it is."""
    if too_deep(value, limit):
        return f"it nests deeper than {limit} levels"
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not _fits_64_bits(item):
                return f"the integer {item} does not fit in 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"the number {item!r} is not finite"
        elif isinstance(item, str):
            if "\0" in item:
                return f"the string {item!r} contains a NUL character"
            if _has_surrogate(item):
                return f"the string {item!r} holds a lone surrogate (not valid Unicode)"
        elif isinstance(item, Mapping):
            for key in item:
                if not isinstance(key, str):
                    return f"the key {key!r} is not a string"
                if "\0" in key:
                    return f"the key {key!r} contains a NUL character"
                if _has_surrogate(key):
                    return f"the key {key!r} holds a lone surrogate (not valid Unicode)"
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        else:
            return f"a {type(item).__name__} is not plain JSON"
    return None


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, which no store can encode as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_priority(value: Any) -> int:
    """Return ``value`` if it is a valid priority.

    Raises:
        TaskConfigError: Unless ``value`` is an ``int`` (not ``bool``) in the signed
            64-bit range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not _fits_64_bits(value):
        raise TaskConfigError(
            f"invalid task priority {value!r}: a priority is an integer from -2**63 to "
            "2**63 - 1 (higher is fetched first)")
    return int(value)


def check_status(value: Any, field: str = "status") -> str:
    """Return ``value`` as a status name.

    Raises:
        StatusTransitionError: If ``value`` names no :class:`~taskroll.status.Status`.
    """
    if not isinstance(value, str) or value not in _STATUSES:
        raise StatusTransitionError(
            f"invalid task {field} {value!r}; expected one of {', '.join(sorted(_STATUSES))}")
    return str(value)


def check_text(value: Any, field: str) -> str:
    """Return ``value`` if it is a ``str`` without NUL characters.

    Raises:
        TaskConfigError: Otherwise.
    """
    if not isinstance(value, str) or "\0" in value:
        raise TaskConfigError(f"invalid task {field} {value!r}: expected text without NUL "
                              "characters")
    return value


def check_pool(pool: Any) -> str:
    """Return ``pool`` if it can name a pool in every store.

    Raises:
        StoreError: Unless ``pool`` is a non-empty ``str`` without NUL characters and
            valid Unicode (no lone surrogate, which no store can encode).
    """
    if not isinstance(pool, str) or not pool or "\0" in pool or _has_surrogate(pool):
        raise StoreError(f"invalid pool name {pool!r}: use a non-empty name without NUL "
                         "characters or lone surrogates")
    return pool


def check_lease(seconds: Any) -> float:
    """Return a lease length in seconds as a ``float``.

    Raises:
        TaskConfigError: Unless ``seconds`` is a finite, non-negative number.
    """
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or seconds < 0):
        raise TaskConfigError(f"invalid lease length {seconds!r}: expected a finite number "
                              "of seconds >= 0")
    return float(seconds)


def check_claim(status: Any, worker: Any, lease_seconds: Any) -> tuple[str, str, float]:
    """Check the arguments of a fetch: status to claim from, worker name, lease length.

    Raises:
        StatusTransitionError: For an unknown status, or ``running``: a running task
            belongs to the worker holding its lease until the lease ends (reaping takes it
            back), and a claim from ``running`` would also make ``running`` the status an
            expired lease returns it to, with no lease, where no reaper takes it back.
        TaskConfigError: For a worker name that is not text or a bad lease length.
    """
    if check_status(status) == Status.RUNNING.value:
        raise StatusTransitionError(
            "cannot claim tasks that are running: each belongs to the worker holding its lease "
            "(an expired lease is reaped back to the status it was claimed from)")
    return str(status), check_text(worker, "worker"), check_lease(seconds=lease_seconds)


def check_max_attempts(value: Any) -> int:
    """Return ``value`` if it is a valid attempt limit for a reap.

    Raises:
        TaskConfigError: Unless ``value`` is an ``int`` from 1 to ``2**31 - 1``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= int(value) < 2**31 \
            or value < 1:
        raise TaskConfigError(f"invalid max_attempts {value!r}: expected an integer from 1 to "
                              "2**31 - 1")
    return int(value)


def _check_payload(value: Any, field: str, optional: bool) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, str):
        return check_text(value, field)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TaskConfigError(f"invalid task {field} of type {type(value).__name__}: expected the "
                          "codec's str or bytes")


def _check_filter(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TaskConfigError(f"invalid task filter {value!r}: expected a dict")
    problem = json_problem(value)
    if problem is not None:
        raise TaskConfigError(f"invalid task filter: {problem}")
    return dict(value)


def _check_field(name: str, value: Any, now: object) -> Any:
    if value is now:
        if name not in _TIME_FIELDS:
            raise StoreError(f"NOW can only stamp time fields, not {name!r}")
        return value
    if name == "priority":
        return check_priority(value)
    if name == "status" or (name == "claimed_from" and value is not None):
        return check_status(value, name)
    if name == "filter":
        return _check_filter(value)
    if name in ("def", "res"):
        return _check_payload(value, name, optional=name == "res")
    if name == "attempts":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= int(value) < 2**31:
            raise TaskConfigError(f"invalid attempts count {value!r}: expected an integer "
                                  "from 0 to 2**31 - 1")
        return int(value)
    if value is None and name not in ("def_encoding",):
        return None
    if name in _TIME_FIELDS:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise TaskConfigError(f"invalid task {name} {value!r}: expected UNIX seconds")
        return float(value)
    if name == "error":
        if not isinstance(value, str):
            raise TaskConfigError(f"invalid task error {value!r}: expected text")
        return value.replace("\0", "\\x00")
    if name in _TEXT_FIELDS:
        return check_text(value, name)
    raise StoreError(f"cannot write task field {name!r}")


def check_fields(fields: Mapping[str, Any], writable: frozenset[str], now: object
                 ) -> dict[str, Any]:
    """Return the checked values of an update, ready to write.

    Args:
        fields: Field name to new value.
        writable: The names an update may set.
        now: The :data:`~taskroll.store.base.NOW` sentinel (allowed for time fields).

    Raises:
        StoreError: For fields an update may not set, or ``NOW`` on a non-time field.
        TaskConfigError: For values no store holds (see the module docstring).
        StatusTransitionError: For unknown statuses.
    """
    unknown = [name for name in fields if name not in writable]
    if unknown:
        raise StoreError(f"cannot write task fields {sorted(map(str, unknown))}")
    return {name: _check_field(name, value, now) for name, value in fields.items()}


def check_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return checked copies of records for :meth:`~taskroll.store.base.TaskStore.insert_many`.

    Each copy has ``_id``, ``def``, ``def_encoding``, ``filter``, ``status`` (default
    ``waiting``) and ``priority`` (default 0).

    Raises:
        StoreError: When a record is not a mapping or lacks a required key.
        TaskConfigError: For values no store holds (see the module docstring).
        StatusTransitionError: For unknown statuses.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise StoreError(f"insert_many needs a list of records, got {type(records).__name__}")
    checked: list[dict[str, Any]] = []
    for record in records:
        if not isinstance(record, Mapping) or any(name not in record for name in _REQUIRED):
            raise StoreError("task records need _id, def, def_encoding and filter")
        task_id = record["_id"]
        if not task_id:
            raise TaskConfigError(f"invalid task id {task_id!r}: expected non-empty text")
        status = record.get("status")
        priority = record.get("priority")
        checked.append({
            "_id": check_text(task_id, "id"),
            "def": _check_payload(record["def"], "def", optional=False),
            "def_encoding": check_text(record["def_encoding"], "def_encoding"),
            "filter": _check_filter(record["filter"]),
            "status": "waiting" if status is None else check_status(status),
            "priority": 0 if priority is None else check_priority(priority),
        })
    return checked
