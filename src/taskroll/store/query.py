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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskroll.errors import QueryError, TaskConfigError
from taskroll.task.spec import normalise, task_id

#: Task-level fields a query may name, besides ``filter.<path>``.
TASK_FIELDS = frozenset(
    {"_id", "status", "priority", "worker", "attempts", "created", "started", "finished",
     "lease_until", "error", "claimed_from"}
)
OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte"})


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
    try:
        return normalise(value, where)
    except TaskConfigError as error:
        raise QueryError(str(error)) from error


def _split(key: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(key, str) or not key:
        raise QueryError(f"query keys must be non-empty strings, got {key!r}")
    head, _, rest = key.partition(".")
    if head in ("filter", "def"):
        path = tuple(rest.split(".")) if rest else ()
        if any(not part for part in path):
            raise QueryError(f"malformed path {key!r}")
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
        QueryError: For unknown fields or operators, or malformed operands.
    """
    if query is None:
        return []
    if not isinstance(query, Mapping):
        raise QueryError(f"a query must be a dict, got {type(query).__name__}")
    conditions: list[Condition] = []
    for key, value in query.items():
        if key == "$and":
            if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
                raise QueryError("$and needs a list of queries")
            for part in value:
                conditions.extend(parse_query(part))
            continue
        if isinstance(key, str) and key.startswith("$"):
            raise QueryError(f"unsupported top-level operator {key!r}; supported: $and")
        field, path = _split(key)
        if field == "filter" and not path:
            if isinstance(value, Mapping) and any(str(name).startswith("$") for name in value):
                raise QueryError("operators on the whole 'filter' are not supported")
            conditions.append(Condition("_id", (), "$eq", task_id(value)))
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
