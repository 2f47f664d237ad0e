"""Query conditions to MongoDB filters, for :mod:`taskroll.store.mongo`.

The semantics are those of :func:`taskroll.store.query.matches`, with JSON typing
(``true`` is not ``1``), on a real MongoDB and on the nx-27017 test server alike:

* each ``filter`` path prefix must be an object and not an array (MongoDB would
  otherwise look inside arrays); operands carry a ``$type``; negations are ``$nor``
  (nx-27017 has no ``$not``);
* conditions MongoDB servers disagree on (operands that are ``null``, lists or
  documents, ``$exists`` on a ``filter`` path, keys with quotes or ``$``) are
  *residual*: the server filter only narrows the candidates and
  :meth:`MongoQuery.keeps` decides in Python;
* task fields are typed scalars, so their tests are always exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from taskroll.store.query import Condition, matches

__all__ = ["NEVER", "Filter", "MongoQuery"]

#: A MongoDB filter document.
Filter = dict[str, Any]

#: A filter no document passes.
NEVER: Filter = {"_id": {"$in": []}}
_TEXT_FIELDS = frozenset({"_id", "status", "worker", "error", "claimed_from"})
_KINDS = ((bool, "bool"), (str, "string"), (int, "number"), (float, "number"))


class _Strict:
    """A bool equal only to bools, so Python checks keep JSON typing (``true != 1``)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Strict) and other.value == self.value

    def __hash__(self) -> int:
        return hash((_Strict, self.value))


def _strict(value: Any) -> Any:
    if isinstance(value, bool):
        return _Strict(value)
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return value


def _kind(value: Any) -> str | None:
    """The ``$type`` alias of a scalar operand, or ``None`` for null, lists and documents."""
    for python_type, alias in _KINDS:
        if isinstance(value, python_type):
            return alias
    return None


def _accepts(field: str, value: Any) -> bool:
    if field in _TEXT_FIELDS:
        return isinstance(value, str)
    return _kind(value) == "number"


def _all(parts: Sequence[Filter]) -> Filter:
    return parts[0] if len(parts) == 1 else {"$and": list(parts)} if parts else {}


class MongoQuery:
    """A condition list split into a server filter and residual conditions checked in Python."""

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self.parts: list[Filter] = []
        self.residual: list[Condition] = []
        for condition in conditions:
            if condition.field == "filter":
                parts, exact = self._filter(condition)
            else:
                parts, exact = self._field(condition), True
            self.parts.extend(parts)
            if not exact:
                self.residual.append(condition)

    def filter(self, *extra: Filter) -> Filter:
        """The server filter: every translated part and ``extra`` joined with ``$and``."""
        return _all([*self.parts, *extra])

    def keeps(self, record: Mapping[str, Any]) -> bool:
        """Whether a record the server selected also passes the residual conditions."""
        if not self.residual:
            return True
        typed = [Condition(item.field, item.path, item.operator,
                           item.value if item.operator == "$exists" else _strict(item.value))
                 for item in self.residual]
        return matches(_strict(dict(record)), typed)

    @staticmethod
    def _negate(parts: list[Filter]) -> list[Filter]:
        return [] if parts == [NEVER] else [{"$nor": [_all(parts)]}]

    def _filter(self, condition: Condition) -> tuple[list[Filter], bool]:
        """Translate a ``filter`` path test: (server parts, exact?). Inexact parts narrow only."""
        operator, value, path = condition.operator, condition.value, condition.path
        if operator in ("$ne", "$nin"):
            positive = Condition("filter", path, {"$ne": "$eq", "$nin": "$in"}[operator], value)
            parts, exact = self._filter(positive)
            return (self._negate(parts), True) if exact else ([], False)
        if any(part.startswith("$") or re.search(r"['\"\\]", part) for part in path):
            return [], False
        name = "filter." + ".".join(path)
        guards: list[Filter] = []
        for index in range(1, len(path)):
            prefix = "filter." + ".".join(path[:index])
            guards += [{prefix: {"$type": "object"}}, {"$nor": [{prefix: {"$type": "array"}}]}]
        scalar = {"$nor": [{name: {"$type": "array"}}]}
        if operator == "$exists":
            return (guards if value else []), False
        if operator == "$eq":
            kind = _kind(value)
            if kind is not None:
                return [*guards, scalar, {name: {"$eq": value, "$type": kind}}], True
            if value is None:
                return guards, False
            return [*guards, {name: {"$type": "array" if isinstance(value, list) else "object"}}], \
                False
        if operator == "$in":
            if not value:
                return [NEVER], True
            kinds = [_kind(item) for item in value]
            if None in kinds:
                return guards, False
            groups = [{name: {"$in": [item for item, item_kind in zip(value, kinds, strict=True)
                                      if item_kind == kind], "$type": kind}}
                      for kind in sorted(set(kinds), key=str)]
            return [*guards, scalar, groups[0] if len(groups) == 1 else {"$or": groups}], True
        kind = _kind(value)
        if kind not in ("number", "string"):
            return [NEVER], True
        return [*guards, scalar, {name: {operator: value, "$type": kind}}], True

    def _field(self, condition: Condition) -> list[Filter]:
        """Translate a test on a task field (always exact: task fields are typed scalars)."""
        field, operator, value = condition.field, condition.operator, condition.value
        if operator == "$exists":
            return [{field: {"$ne": None}} if value else {field: None}]
        if operator in ("$in", "$nin"):  # task fields are scalars: no array or type guards
            items = [item for item in value if _accepts(field, item)]
            if not items:
                return [NEVER] if operator == "$in" else []
            return [{field: {operator: items}}]
        if not _accepts(field, value):
            return [] if operator == "$ne" else [NEVER]
        return [{field: {operator: value}}]
