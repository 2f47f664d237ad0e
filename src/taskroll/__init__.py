"""taskroll: generate, store, train, collect and serve many models over rolling windows.

The public API, importable from the top level. Heavy parts (MLflow, pandas models)
are imported on first use, so ``import taskroll`` stays quick for workers and the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

from taskroll.config import Settings, get_settings, init
from taskroll.errors import (
    CalendarError,
    DataError,
    DataQualityWarning,
    LookAheadWarning,
    MissingDependencyError,
    PickleNotAllowedError,
    QueryError,
    RecorderError,
    RecorderLookupError,
    SerializationError,
    StatusTransitionError,
    StoreConnectionError,
    StoreError,
    TaskConfigError,
    TaskrollError,
    TaskrollWarning,
    UnknownPoolError,
)
from taskroll.status import Status

__version__ = "0.1.0"

#: Public name -> module that defines it (imported lazily by ``__getattr__``).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("TaskManager", "run_task"), "taskroll.manage"),
    **dict.fromkeys(("TaskStore", "open_store"), "taskroll.store"),
    **dict.fromkeys(("init_instance_by_config", "fill_placeholder", "task_id", "canonical_json"),
                    "taskroll.task.spec"),
    **dict.fromkeys(("TaskGen", "RollingGen", "MultiHorizonGenBase", "task_generator",
                     "handler_mod"), "taskroll.task.gen"),
    **dict.fromkeys(("TimeAdjuster", "load_calendar"), "taskroll.task.calendar"),
    **dict.fromkeys(("R", "Experiment", "ExperimentManager"), "taskroll.train.experiment"),
    "Recorder": "taskroll.train.recorder",
    **dict.fromkeys(("RecordTemp", "SignalRecord", "SigAnaRecord", "calc_ic"),
                    "taskroll.train.record"),
    **dict.fromkeys(("task_train", "begin_task_train", "end_task_train", "Trainer", "TrainerR",
                     "DelayTrainerR", "TrainerRM", "DelayTrainerRM"), "taskroll.train.trainer"),
    **dict.fromkeys(("Collector", "MergeCollector", "RecorderCollector", "Group", "RollingGroup",
                     "Ensemble", "SingleKeyEnsemble", "RollingEnsemble", "AverageEnsemble"),
                    "taskroll.collect"),
    **dict.fromkeys(("OnlineManager", "OnlineStrategy", "RollingStrategy", "OnlineTool",
                     "OnlineToolR", "PredUpdater", "LabelUpdater", "ServedReport",
                     "served_report"),
                    "taskroll.online"),
    **dict.fromkeys(("DaskWorkers", "LocalWorkers"), "taskroll.cluster"),
}

__all__ = [
    "CalendarError", "DataError", "DataQualityWarning", "LookAheadWarning",
    "MissingDependencyError", "PickleNotAllowedError",
    "QueryError", "RecorderError", "RecorderLookupError", "SerializationError", "Settings", "Status",
    "StatusTransitionError", "StoreConnectionError", "StoreError", "TaskConfigError",
    "TaskrollError", "TaskrollWarning", "UnknownPoolError", "__version__", "get_settings", "init",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskroll' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
