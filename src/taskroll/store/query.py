"""Mongo-style task filters, parsed once and translated by each store.

Supported, in every backend:

* equality on a task field or on a path inside the task's ``filter``
  (``{"filter.model.class": "LinearModel"}``, ``{"status": "done"}``,
  ``{"_id": "..."}``); ``def.`` paths are read as ``filter.`` paths;
* operators ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$exists``, ``$gt``, ``$gte``,
  ``$lt``, ``$lte`` (``{"filter.step": {"$in": [20, 40]}}``);
* ``$and`` over a list of such queries;
* equality of the whole ``filter`` with a task definition, answered through the
  task id (``{"filter": task_def}`` is ``{"_id": task_id(task_def)}``).

Values are compared in their canonical form (:func:`taskroll.task.spec.normalise`):
dates as ISO strings, tuples as lists. Anything else raises :class:`QueryError`
before the database is touched.

Limits, the same in every store (each raises :class:`QueryError`):

* ``$and`` may nest at most :data:`MAX_AND_DEPTH` (32) levels, and an operand (a list or
  dict value) at most :data:`MAX_VALUE_DEPTH` (64) levels;
* integers must fit in a signed 64-bit integer (what every store can hold);
* strings (keys and values) must not contain NUL characters, which no store keeps
  (PostgreSQL refuses them), and ``filter`` path parts must not contain ``"``, ``\\`` or
  other control characters (SQLite's JSON paths cannot name such keys).

``$in`` / ``$nin`` lists may be of any length: every store answers them in one
statement whose size does not grow with the list (SQLite reads them with ``json_each``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskroll.errors import QueryError, TaskConfigError
from taskroll.store.values import MAX_DEPTH, json_problem, too_deep
from taskroll.task.spec import normalise, task_id

#: Task-level fields a query may name, besides ``filter.<path>``.
TASK_FIELDS = frozenset(
    {"_id", "status", "priority", "worker", "attempts", "created", "started", "finished",
     "lease_until", "error", "claimed_from"}
)
OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte"})
#: Deepest nesting of ``$and`` a query may use.
MAX_AND_DEPTH = 32
#: Deepest nesting of lists and dicts inside one operand.
MAX_VALUE_DEPTH = MAX_DEPTH
_PATH_FORBIDDEN = frozenset({'"', "\\", *map(chr, range(32))})


@dataclass(frozen=True)
class Condition:
    """One test on one field.

    Attributes:
        field: A name from :data:`TASK_FIELDS`, or ``"filter"`` for a path inside the filter.
        path: Keys inside the filter (empty for task-level fields).
        operator: One of :data:`OPERATORS`.
        value: Canonical operand (a list for ``$in``/``$nin``, a bool for ``$exists``).
    """

    field: str
    path: tuple[str, ...]
    operator: str
    value: Any


def _canonical(value: Any, where: str) -> Any:
    if too_deep(value, MAX_VALUE_DEPTH):  # checked first: normalise recurses
        raise QueryError(f"{where}: the operand nests deeper than {MAX_VALUE_DEPTH} levels")
    try:
        canonical = normalise(value, where)
    except TaskConfigError as error:
        raise QueryError(str(error)) from error
    problem = json_problem(canonical, MAX_VALUE_DEPTH)
    if problem is not None:
        raise QueryError(f"{where}: {problem}, so no task store can hold it")
    return canonical


def _split(key: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(key, str) or not key:
        raise QueryError(f"query keys must be non-empty strings, got {key!r}")
    head, dot, rest = key.partition(".")
    if head in ("filter", "def"):
        if dot and not rest:
            raise QueryError(f"malformed path {key!r}")
        path = tuple(rest.split(".")) if rest else ()
        if any(not part for part in path):
            raise QueryError(f"malformed path {key!r}")
        if any(_PATH_FORBIDDEN.intersection(part) for part in path):
            raise QueryError(
                f"query path {key!r} contains a quote, a backslash or a control character; "
                "such keys cannot be queried (rename the key in the task definition)")
        return "filter", path
    if rest or head not in TASK_FIELDS:
        raise QueryError(
            f"unknown query field {key!r}; query task contents with 'filter.<path>' or one of "
            f"{sorted(TASK_FIELDS)}"
        )
    return head, ()


def _operand(operator: str, value: Any, key: str) -> Any:
    if operator in ("$in", "$nin"):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise QueryError(f"{key}: {operator} needs a list, got {type(value).__name__}")
        return [_canonical(item, key) for item in value]
    if operator == "$exists":
        if not isinstance(value, bool):
            raise QueryError(f"{key}: $exists needs true or false, got {value!r}")
        return value
    return _canonical(value, key)


def parse_query(query: Mapping[str, Any] | None) -> list[Condition]:
    """Parse a Mongo-style query into a flat list of conditions (all must hold).

    Raises:
        QueryError: For unknown fields or operators, malformed operands, or a query
            beyond the limits in this module's docstring (e.g. ``$and`` nested deeper
            than :data:`MAX_AND_DEPTH`).
    """
    if query is None:
        return []
    return _parse(query, 0)


def _parse(query: Any, depth: int) -> list[Condition]:
    if not isinstance(query, Mapping):
        raise QueryError(f"a query must be a dict, got {type(query).__name__}")
    if depth > MAX_AND_DEPTH:
        raise QueryError(f"$and nests deeper than {MAX_AND_DEPTH} levels; flatten the query")
    conditions: list[Condition] = []
    for key, value in query.items():
        if key == "$and":
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
                raise QueryError("$and needs a list of queries")
            for part in value:
                conditions.extend(_parse(part, depth + 1))
            continue
        if isinstance(key, str) and key.startswith("$"):
            raise QueryError(f"unsupported top-level operator {key!r}; supported: $and")
        field, path = _split(key)
        if field == "filter" and not path:
            if isinstance(value, Mapping) and any(str(name).startswith("$") for name in value):
                raise QueryError("operators on the whole 'filter' are not supported")
            _canonical(value, key)  # the same limits as any operand
            try:
                conditions.append(Condition("_id", (), "$eq", task_id(value)))
            except TaskConfigError as error:
                raise QueryError(str(error)) from error
            continue
        operators = (
            value
            if isinstance(value, Mapping) and value and all(str(name).startswith("$") for name in value)
            else None
        )
        if operators is None:
            conditions.append(Condition(field, path, "$eq", _canonical(value, key)))
            continue
        for operator, operand in operators.items():
            if operator not in OPERATORS:
                raise QueryError(
                    f"{key}: unsupported operator {operator!r}; supported: {sorted(OPERATORS)}"
                )
            conditions.append(Condition(field, path, operator, _operand(operator, operand, key)))
    return conditions


def matches(record: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    """Evaluate conditions on a plain record in Python (reference semantics for stores).

    Missing paths compare unequal to everything and fail ``$in`` and order tests;
    ``$ne``/``$nin`` hold on missing paths, as in MongoDB.
    """
    missing = object()
    for condition in conditions:
        if condition.field == "filter":
            current: Any = record.get("filter")
            for part in condition.path:
                current = current.get(part, missing) if isinstance(current, Mapping) else missing
        else:
            current = record.get(condition.field, missing)
            if current is None:
                current = missing
        operator, value = condition.operator, condition.value
        if operator == "$exists":
            if (current is not missing) != value:
                return False
            continue
        if operator == "$eq" and (current is missing or current != value):
            return False
        if operator == "$ne" and current is not missing and current == value:
            return False
        if operator == "$in" and (current is missing or current not in value):
            return False
        if operator == "$nin" and current is not missing and current in value:
            return False
        if operator in ("$gt", "$gte", "$lt", "$lte"):
            if current is missing:
                return False
            try:
                ok = {
                    "$gt": current > value,
                    "$gte": current >= value,
                    "$lt": current < value,
                    "$lte": current <= value,
                }[operator]
            except TypeError:
                ok = False
            if not ok:
                return False
    return True
