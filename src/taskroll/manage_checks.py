"""Checks of what enters a task pool: durations (leases, waits, poll intervals), statuses.

Priorities and query operands are checked by the store layer
(:func:`taskroll.store.values.check_priority`, :func:`taskroll.store.parse_query`),
which every store and this manager share.
"""

from __future__ import annotations

import math
from typing import Any

from taskroll.errors import StatusTransitionError, TaskConfigError
from taskroll.status import Status, to_status


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


def check_settled_status(value: Any) -> str:
    """Return the name of a status a caller may set: any status but ``running``.

    A task becomes ``running`` only when a worker fetches it, which gives it an owner and
    a lease; a task set to ``running`` otherwise has no lease, so no reaper would ever
    take it back, and ``wait`` and draining workers would wait for it forever.

    Raises:
        StatusTransitionError: For ``running`` or a name that is no status.
    """
    status = to_status(value)
    if status is Status.RUNNING:
        raise StatusTransitionError(
            "a task becomes 'running' only when a worker fetches it (fetch_task gives it an "
            "owner and a lease); choose waiting, part_done, done or failed")
    return status.value
