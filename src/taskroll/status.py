"""Task statuses and the table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from taskroll.errors import StatusTransitionError


class Status(StrEnum):
    """Life-cycle state of a task in a pool (Qlib's four plus ``failed``)."""

    WAITING = "waiting"
    RUNNING = "running"
    PART_DONE = "part_done"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: Allowed moves. Reset and prioritise tools may move any task back to ``waiting``;
#: a fetch moves ``waiting``/``part_done`` (or any status the caller names) to ``running``.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.WAITING: frozenset({Status.RUNNING, Status.DONE, Status.PART_DONE, Status.FAILED}),
    Status.RUNNING: frozenset(
        {Status.WAITING, Status.PART_DONE, Status.DONE, Status.FAILED, Status.RUNNING}
    ),
    Status.PART_DONE: frozenset({Status.RUNNING, Status.WAITING, Status.DONE, Status.FAILED}),
    Status.DONE: frozenset({Status.WAITING, Status.RUNNING}),
    Status.FAILED: frozenset({Status.WAITING, Status.RUNNING}),
}


def to_status(value: str | Status) -> Status:
    """Return the :class:`Status` named by ``value``.

    Raises:
        StatusTransitionError: If ``value`` names no status.
    """
    try:
        return Status(value)
    except ValueError as error:
        names = ", ".join(status.value for status in Status)
        raise StatusTransitionError(f"unknown task status {value!r}; expected one of {names}") from error


def check_transition(old: str | Status, new: str | Status) -> None:
    """Raise :class:`StatusTransitionError` unless ``old -> new`` is in :data:`TRANSITIONS`."""
    old_status, new_status = to_status(old), to_status(new)
    if old_status == new_status:
        return
    if new_status not in TRANSITIONS[old_status]:
        raise StatusTransitionError(f"a task cannot move from {old_status} to {new_status}")
