"""Checks of the numbers that enter a task pool: priorities, query operands, waits.

Every store holds a signed 64-bit integer and cannot compare NaN, so these are refused
with a :class:`~taskroll.errors.TaskrollError` before the store is touched.
"""

from __future__ import annotations

import math
from typing import Any, Final

from taskroll.errors import QueryError, TaskConfigError
from taskroll.store import values

#: The range of a signed 64-bit integer, what every store holds.
INT64_RANGE: Final = (-(2**63), 2**63 - 1)


def check_query_number(value: Any, what: str) -> None:
    """Raise for a query operand no store can compare (NaN, inf, beyond 64 bits).

    Args:
        value: The operand (a list is checked item by item).
        what: Where it is, for the message.

    Raises:
        QueryError: For such a number.
    """
    if isinstance(value, (list, tuple)):
        for item in value:
            check_query_number(item, what)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise QueryError(f"{what}: {value} is outside the 64-bit integer range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{what}: {value!r} is not a finite number")


def check_priority(priority: Any) -> int:
    """Return ``priority`` when it is a whole number within 64 bits (the stores' rule).

    Raises:
        TaskConfigError: Otherwise.
    """
    return values.check_priority(priority)


def check_seconds(value: Any, what: str, zero: bool = False) -> float:
    """Return ``value`` as seconds when it is finite and > 0 (>= 0 with ``zero``).

    Raises:
        TaskConfigError: Otherwise, naming ``what`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        limit = ">= 0" if zero else "> 0"
        raise TaskConfigError(f"{what} must be a finite number of seconds {limit}, got {value!r}")
    return float(value)
