"""Scale-out: place worker loops on this machine or on an engine people already run.

* :class:`~taskroll.cluster.local_workers.LocalWorkers`: ``taskroll worker -n N [--gpus 0,1]``,
  spawned processes, each with its own GPU (``CUDA_VISIBLE_DEVICES``) and thread caps;
* :class:`~taskroll.cluster.dask_workers.DaskWorkers`: ``taskroll worker --on dask://HOST:PORT``,
  each loop a long-lived task on an existing Dask cluster (``pip install "taskroll[dask]"``)
  that runs the loop in a child process of its own
  (:func:`~taskroll.cluster.loop_process.run_loop_in_child`), since several loops may
  share one Dask worker process.

Both are a :class:`~taskroll.cluster.placement.WorkerPlacement`, which
``TrainerRM(..., workers=...)`` takes. Importing this package never imports Dask.
"""

from __future__ import annotations

from taskroll.cluster.dask_workers import DaskWorkers
from taskroll.cluster.local_workers import LocalWorkers
from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary, run_loop
from taskroll.cluster.placement import WorkerLoopError, WorkerPlacement

__all__ = ["DaskWorkers", "LocalWorkers", "LoopOptions", "LoopSettings", "LoopSummary",
           "WorkerLoopError", "WorkerPlacement", "run_loop"]
