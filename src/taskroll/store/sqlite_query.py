"""Query conditions to SQLite ``WHERE`` fragments, for :mod:`taskroll.store.sqlite`.

The semantics are those of :func:`taskroll.store.query.matches`, with JSON types kept
apart as in PostgreSQL and MongoDB (``true`` is not ``1``):

* ``filter`` paths are read with ``json_type`` / ``json_extract`` on the canonical JSON
  text; numbers compare with numbers, strings with strings (code-point order), lists and
  documents by their canonical JSON text;
* ``$in`` / ``$nin`` lists, of any length, are passed as *one* JSON parameter read with
  ``json_each``, one test per JSON type, so neither SQLite's expression depth limit
  ("Expression tree is too large") nor its limit on parameters is ever reached;
* ``$ne`` / ``$nin`` are the negations of ``$eq`` / ``$in`` (true when the path or the
  column is missing);
* task fields are typed columns: an operand of the wrong type never matches (as in
  PostgreSQL), so ``{"priority": True}`` or ``{"priority": "2"}`` select nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from taskroll.store.base import RECORD_FIELDS
from taskroll.store.query import Condition

__all__ = ["COLUMNS", "json_text", "where"]

#: Record field -> column.
COLUMNS = {"_id": "id", **{name: name for name in RECORD_FIELDS if name != "_id"}}
_TEXT_FIELDS = frozenset({"_id", "status", "worker", "error", "claimed_from", "def_encoding",
                          "res_encoding"})
_SYMBOLS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NUMBER_KINDS = "('integer', 'real')"


def json_text(value: Any) -> str:
    """The canonical JSON text SQLite stores and compares (sorted keys, compact)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_path(path: Sequence[str]) -> str:
    return "$" + "".join('."' + part + '"' for part in path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _accepts(field: str, value: Any) -> bool:
    return isinstance(value, str) if field in _TEXT_FIELDS else _is_number(value)


class _Translator:
    """Builds a SQL ``WHERE`` fragment and its parameters from conditions."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def _json_equal(self, path: str, value: Any) -> str:
        kind = "json_type(filter, ?)"
        extract = "json_extract(filter, ?)"
        if value is None:
            self.params.append(path)
            return f"{kind} = 'null'"
        if isinstance(value, bool):
            self.params.append(path)
            return f"{kind} = '{'true' if value else 'false'}'"
        if _is_number(value):
            self.params.extend([path, path, value])
            return f"({kind} IN {_NUMBER_KINDS} AND {extract} = ?)"
        if isinstance(value, str):
            self.params.extend([path, path, value])
            return f"({kind} = 'text' AND {extract} = ?)"
        self.params.extend([path, path, json_text(value)])
        return f"({kind} IN ('array', 'object') AND {extract} = ?)"

    def _json_in(self, path: str, values: Sequence[Any]) -> str:
        """``$in`` as at most five tests (one per JSON type), whatever the list's length."""
        tests = [self._json_equal(path, flag) for flag in (None, True, False)
                 if any(item is flag for item in values)]
        groups = (
            (_NUMBER_KINDS, [item for item in values if _is_number(item)]),
            ("('text')", [item for item in values if isinstance(item, str)]),
            ("('array', 'object')",
             [json_text(item) for item in values if isinstance(item, (list, dict))]),
        )
        for kinds, items in groups:
            if items:
                self.params.extend([path, path, json_text(items)])
                tests.append(f"(json_type(filter, ?) IN {kinds} AND json_extract(filter, ?) IN "
                             "(SELECT value FROM json_each(?)))")
        return "(" + (" OR ".join(tests) or "0") + ")"

    def _json_order(self, path: str, operator: str, value: Any) -> str:
        if not (_is_number(value) or isinstance(value, str)):
            return "0"
        kinds = "('text')" if isinstance(value, str) else _NUMBER_KINDS
        self.params.extend([path, path, value])
        return (f"(json_type(filter, ?) IN {kinds} AND json_extract(filter, ?) "
                f"{_SYMBOLS[operator]} ?)")

    def json_condition(self, condition: Condition) -> str:
        path, operator, value = _json_path(condition.path), condition.operator, condition.value
        if operator == "$exists":
            self.params.append(path)
            return f"json_type(filter, ?) IS {'NOT ' if value else ''}NULL"
        if operator == "$eq":
            return self._json_equal(path, value)
        if operator == "$in":
            return self._json_in(path, value)
        if operator in ("$ne", "$nin"):
            self.params.append(path)  # the missing-path test comes first in the SQL text
            positive = (self._json_equal(path, value) if operator == "$ne"
                        else self._json_in(path, value))
            return f"(json_type(filter, ?) IS NULL OR NOT {positive})"
        return self._json_order(path, operator, value)

    def column_condition(self, condition: Condition) -> str:
        field, operator, value = condition.field, condition.operator, condition.value
        column = COLUMNS[field]
        if operator == "$exists":
            return f"{column} IS {'NOT ' if value else ''}NULL"
        if operator in ("$ne", "$nin"):
            positive = self.column_condition(
                Condition(field, (), {"$ne": "$eq", "$nin": "$in"}[operator], value))
            return f"({column} IS NULL OR NOT {positive})"
        if operator == "$in":
            items = [item for item in value if _accepts(field, item)]
            if not items:
                return "0"
            self.params.append(json_text(items))
            return f"({column} IN (SELECT value FROM json_each(?)))"
        if not _accepts(field, value):
            return "0"
        self.params.append(value)
        return f"({column} {'=' if operator == '$eq' else _SYMBOLS[operator]} ?)"


def where(pool: str, conditions: Sequence[Condition]) -> tuple[str, list[Any]]:
    """Return ``(sql, params)`` selecting the tasks of ``pool`` that meet every condition."""
    translator = _Translator()
    parts = [translator.json_condition(condition) if condition.field == "filter"
             else translator.column_condition(condition) for condition in conditions]
    return "pool = ? AND " + (" AND ".join(parts) if parts else "1"), [pool, *translator.params]
