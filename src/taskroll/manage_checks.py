"""Checks of the durations that enter a task pool: leases, waits, poll intervals.

Priorities and query operands are checked by the store layer
(:func:`taskroll.store.values.check_priority`, :func:`taskroll.store.parse_query`),
which every store and this manager share.
"""

from __future__ import annotations

import math
from typing import Any

from taskroll.errors import TaskConfigError


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
