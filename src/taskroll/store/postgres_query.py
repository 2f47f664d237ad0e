"""Query conditions to PostgreSQL ``WHERE`` fragments, for :mod:`taskroll.store.postgres`.

The semantics are those of :func:`taskroll.store.query.matches`, with JSON types kept
apart as in the SQLite store and MongoDB (``true`` is not ``1``):

* a ``filter`` path is present only when every prefix is an object (``jsonb_typeof``
  guards on each prefix), so ``filter.a.b`` never looks inside a string or a list;
* ``$ne``/``$nin`` are the negations of ``$eq``/``$in`` (true when the path is missing);
* order tests (``$gt`` ...) compare numbers with numbers (as ``numeric``) and strings
  with strings (code-point order, ``COLLATE "C"``); anything else is false;
* equality on a ``filter`` path also adds ``filter @> {...}`` so the GIN index
  (``jsonb_path_ops``) can serve it;
* task fields are typed columns: an operand of the wrong JSON type never matches.

Every fragment is wrapped in ``coalesce(..., false)``: it is never NULL, so ``NOT``
negates it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from taskroll.store.query import Condition

__all__ = ["Fragment", "Translator"]

#: A piece of SQL with its ``%s`` parameters, in order.
Fragment = tuple[str, list[Any]]

_TEXT_COLUMNS = {"_id": "id", "status": "status", "worker": "worker", "error": "error",
                 "claimed_from": "claimed_from"}
_INTEGER_COLUMNS = {"priority", "attempts"}
_SYMBOLS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value  # stored text never holds NUL


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


def _nested(path: Sequence[str], value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value


class Translator:
    """Turns conditions into one ``WHERE`` fragment (never NULL-valued) with its parameters.

    Args:
        jsonb: The driver's JSONB adapter (``psycopg.types.json.Jsonb``), passed in so
            this module imports without psycopg.
    """

    def __init__(self, jsonb: Callable[[Any], Any]) -> None:
        self.jsonb = jsonb

    def where(self, conditions: Sequence[Condition]) -> Fragment:
        """Return ``(sql, params)`` for all ``conditions`` joined with ``AND`` (``TRUE`` if none)."""
        sql, params = [], []
        for condition in conditions:
            text, values = (
                self._filter(condition) if condition.field == "filter" else self._column(condition)
            )
            sql.append(text)
            params.extend(values)
        return (" AND ".join(sql) if sql else "TRUE"), params

    def _guards(self, path: Sequence[str]) -> Fragment:
        parts = ["jsonb_typeof(filter #> %s) = 'object'" for _ in path[:-1]]
        return " AND ".join(["TRUE", *parts]), [list(path[:index]) for index in range(1, len(path))]

    def _filter(self, condition: Condition) -> Fragment:
        operator, value, path = condition.operator, condition.value, list(condition.path)
        if operator in ("$ne", "$nin"):
            positive = Condition("filter", condition.path, {"$ne": "$eq", "$nin": "$in"}[operator],
                                 value)
            sql, params = self._filter(positive)
            return f"NOT {sql}", params
        guards, params = self._guards(path)
        if operator == "$exists":
            sql = f"coalesce({guards} AND filter #> %s IS NOT NULL, false)"
            return (sql if value else f"NOT {sql}"), [*params, path]
        if operator == "$eq":
            sql = f"coalesce({guards} AND filter @> %s AND filter #> %s = %s, false)"
            return sql, [*params, self.jsonb(_nested(path, value)), path, self.jsonb(value)]
        if operator == "$in":
            if not value:
                return "FALSE", []
            sql = f"coalesce({guards} AND filter #> %s = ANY(%s::jsonb[]), false)"
            return sql, [*params, path, [self.jsonb(item) for item in value]]
        symbol = _SYMBOLS[operator]
        if _is_number(value):
            sql = (f"coalesce({guards} AND CASE WHEN jsonb_typeof(filter #> %s) = 'number' "
                   f"THEN (filter #> %s)::numeric END {symbol} %s::numeric, false)")
            return sql, [*params, path, path, _decimal(value)]
        if isinstance(value, str):
            sql = (f"coalesce({guards} AND (CASE WHEN jsonb_typeof(filter #> %s) = 'string' "
                   f"THEN filter #>> %s END) COLLATE \"C\" {symbol} %s, false)")
            return sql, [*params, path, path, value]
        return "FALSE", []

    def _column(self, condition: Condition) -> Fragment:
        field, operator, value = condition.field, condition.operator, condition.value
        if operator in ("$ne", "$nin"):
            positive = Condition(field, (), {"$ne": "$eq", "$nin": "$in"}[operator], value)
            sql, params = self._column(positive)
            return f"NOT {sql}", params
        column = _TEXT_COLUMNS.get(field, field)
        if operator == "$exists":
            return f"{column} IS {'NOT ' if value else ''}NULL", []
        accepts: Callable[[Any], bool]
        convert: Callable[[Any], Any]
        if field in _TEXT_COLUMNS:
            accepts, convert, cast_to, target = _is_text, str, "text", f'{column} COLLATE "C"'
        elif field in _INTEGER_COLUMNS:
            accepts, convert, cast_to = _is_number, _decimal, "numeric"
            target = f"{column}::numeric"
        else:
            accepts, convert, cast_to, target = _is_number, float, "float8", column
        if operator == "$in":
            items = [convert(item) for item in value if accepts(item)]
            if not items:
                return "FALSE", []
            return f"coalesce({target} = ANY(%s::{cast_to}[]), false)", [items]
        if not accepts(value):
            return "FALSE", []
        symbol = "=" if operator == "$eq" else _SYMBOLS[operator]
        return f"coalesce({target} {symbol} %s::{cast_to}, false)", [convert(value)]
