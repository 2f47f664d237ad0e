"""What the trainers and ``taskroll worker`` need of a way to place worker loops.

:class:`~taskroll.cluster.local_workers.LocalWorkers` (spawned processes here) and
:class:`~taskroll.cluster.dask_workers.DaskWorkers` (tasks on a Dask cluster) both are a
:class:`WorkerPlacement`: ``run_loops(options)`` runs its loops on the pool, waits for
them and returns one :class:`~taskroll.cluster.loop.LoopSummary` per loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from taskroll.cluster.loop import LoopOptions, LoopSummary
from taskroll.errors import TaskrollError


@runtime_checkable
class WorkerPlacement(Protocol):
    """Runs worker loops somewhere and waits for them."""

    n: int

    def run_loops(self, options: LoopOptions) -> list[LoopSummary]:
        """Run ``n`` loops with ``options``, wait, return their summaries in loop order."""
        ...


class WorkerLoopError(TaskrollError):
    """One or more placed worker loops stopped before the pool was done."""


def raise_for_stopped(summaries: Sequence[LoopSummary]) -> None:
    """Raise when any loop stopped with an error, naming each.

    Raises:
        WorkerLoopError: With one line per stopped loop.
    """
    stopped = [summary.line() for summary in summaries if summary.error is not None]
    if stopped:
        raise WorkerLoopError(f"{len(stopped)} of {len(summaries)} worker loop(s) stopped: "
                              + "; ".join(stopped))
