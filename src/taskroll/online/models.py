"""The models of an online strategy's experiment: identity, state and recovery.

Online serving keeps no state of its own beyond the MLflow runs, so that a routine
killed at any point can be run again:

* A **chain** is the sequence of rolling models of one template: tasks equal once
  their segments and the handler's time range are removed (:func:`chain_key`).
* A **window** is one rolling model of a chain: the task without the end of its test
  segment and the handler's end time (:func:`window_key`), which only depend on the
  day the window was trained. A window already trained is reused, never retrained.
* A run is a **trained model** when it ended ``FINISHED`` and holds ``params.pkl``;
  runs of a delayed trainer's first half hold only the task until ``end_train``.
* A run left ``RUNNING`` by a killed process is **interrupted**:
  :func:`fail_interrupted_runs` ends it ``FAILED`` (see :mod:`taskroll.train.process`).

The keys are cached as run tags (:data:`WINDOW_TAG`, :data:`CHAIN_TAG`,
:data:`TEST_START_TAG`) so a routine reads them from one run listing instead of
loading every run's task.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from taskroll.errors import RecorderError
from taskroll.task.calendar import to_timestamp
from taskroll.task.spec import task_id
from taskroll.train.experiment import R
from taskroll.train.process import process_state
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

WINDOW_TAG = "taskroll.window"
"""Run tag caching :func:`window_key` of the run's task."""
CHAIN_TAG = "taskroll.chain"
"""Run tag caching :func:`chain_key` of the run's task."""
TEST_START_TAG = "taskroll.test_start"
"""Run tag caching the first day of the run's test segment (ISO date)."""
MODEL_CLASS_TAG = "taskroll.model_class"
"""Run tag caching the name of the task's model class."""
TRAINED_TAG = "taskroll.trained"
"""Run tag set to ``"true"`` once the run is known to hold ``params.pkl``."""
MODEL_FILE = "params.pkl"
TASK_FILE = "task"
_HANDLER_TIMES = ("start_time", "end_time", "fit_start_time", "fit_end_time")


def _handler_kwargs(task: dict[str, Any]) -> dict[str, Any] | None:
    handler = task.get("dataset", {}).get("kwargs", {}).get("handler")
    kwargs = handler.get("kwargs") if isinstance(handler, dict) else None
    return kwargs if isinstance(kwargs, dict) else None


def _segments(task: Mapping[str, Any]) -> dict[str, Any]:
    try:
        segments = task["dataset"]["kwargs"]["segments"]
    except (KeyError, TypeError) as error:
        raise RecorderError(f"the task has no dataset.kwargs.segments: {error!r}") from None
    if not isinstance(segments, Mapping):
        raise RecorderError("the task's dataset.kwargs.segments is not a mapping")
    return dict(segments)


def chain_key(task: Mapping[str, Any]) -> str:
    """Return the identity of the task's chain: its id without segments and handler times."""
    stripped = copy.deepcopy(dict(task))
    stripped.get("dataset", {}).get("kwargs", {}).pop("segments", None)
    kwargs = _handler_kwargs(stripped)
    for name in _HANDLER_TIMES:
        if kwargs is not None:
            kwargs.pop(name, None)
    return task_id(stripped)


def window_key(task: Mapping[str, Any], test_key: str = "test") -> str:
    """Return the identity of the task's window: its id without test end and handler end."""
    stripped = copy.deepcopy(dict(task))
    segments = _segments(stripped)
    if test_key not in segments:
        raise RecorderError(f"the task has no {test_key!r} segment")
    segments[test_key] = (segments[test_key][0], None)
    stripped["dataset"]["kwargs"]["segments"] = segments
    kwargs = _handler_kwargs(stripped)
    if kwargs is not None:
        kwargs.pop("end_time", None)
    return task_id(stripped)


def test_start(task: Mapping[str, Any], test_key: str = "test") -> pd.Timestamp:
    """Return the first day of the task's test segment.

    Raises:
        RecorderError: When the task has no test segment or its start is not a date.
    """
    segments = _segments(task)
    if test_key not in segments or segments[test_key][0] is None:
        raise RecorderError(f"the task has no start of its {test_key!r} segment")
    return to_timestamp(segments[test_key][0], f"segments.{test_key}[0]")


@dataclass(frozen=True)
class OnlineModel:
    """One run of a strategy's experiment, as online serving sees it.

    Attributes:
        recorder: The run.
        chain: :func:`chain_key` of its task.
        window: :func:`window_key` of its task.
        test_start: First day of its test segment: it never predicts an earlier day.
        trained: Whether the run holds a fitted model (``params.pkl``).
        model_class: Name of the task's model class (to label chains).
    """

    recorder: Recorder
    chain: str
    window: str
    test_start: pd.Timestamp
    trained: bool
    model_class: str = ""


def model_class(task: Mapping[str, Any]) -> str:
    """Return the name of the task's model class (``""`` when it has none)."""
    model = task.get("model")
    named = model.get("class", "") if isinstance(model, Mapping) else ""
    return named if isinstance(named, str) else getattr(named, "__name__", str(named))


def describe(recorder: Recorder, tags: Mapping[str, str] | None = None,
             test_key: str = "test") -> OnlineModel | None:
    """Return the run as an :class:`OnlineModel`, or ``None`` when it holds no usable task.

    Args:
        recorder: The run.
        tags: Its tags when already read (default: :attr:`Recorder.snapshot_tags`).
        test_key: Name of the test segment.
    """
    tags = recorder.snapshot_tags if tags is None else tags
    trained = tags.get(TRAINED_TAG) == "true"
    if not trained and MODEL_FILE in recorder.list_artifacts():
        trained = True
        recorder.set_tags(**{TRAINED_TAG: "true"})
    if all(tag in tags for tag in (WINDOW_TAG, CHAIN_TAG, TEST_START_TAG, MODEL_CLASS_TAG)):
        return OnlineModel(recorder, tags[CHAIN_TAG], tags[WINDOW_TAG],
                           pd.Timestamp(tags[TEST_START_TAG]), trained, tags[MODEL_CLASS_TAG])
    try:
        task = recorder.load_object(TASK_FILE)
        model = OnlineModel(recorder, chain_key(task), window_key(task, test_key),
                            test_start(task, test_key), trained, model_class(task))
    except Exception as error:  # not a task of ours: skipped, never fatal to a routine
        _logger.warning("run %s has no usable task (%s: %s); ignored", recorder.id,
                        type(error).__name__, error)
        return None
    recorder.set_tags(**{WINDOW_TAG: model.window, CHAIN_TAG: model.chain,
                         TEST_START_TAG: model.test_start.date().isoformat(),
                         MODEL_CLASS_TAG: model.model_class})
    return model


def list_models(experiment_name: str, test_key: str = "test") -> list[OnlineModel]:
    """Return the finished runs of the experiment holding a rolling task, oldest first.

    Args:
        experiment_name: The strategy's experiment (none yet: no model).
        test_key: Name of the test segment.

    Raises:
        RecorderError: When MLflow fails.
    """
    try:
        experiment = R.get_exp(experiment_name, create=False)
    except RecorderError:
        return []
    runs = experiment.list_recorders("list", status=Recorder.STATUS_FINISHED)
    models = []
    for recorder in reversed(runs):
        model = describe(recorder, test_key=test_key)
        if model is not None:
            models.append(model)
    return models


def trained_windows(experiment_name: str, test_key: str = "test") -> dict[str, Recorder]:
    """Return ``{window: recorder}`` of the experiment's trained models (the oldest per window)."""
    windows: dict[str, Recorder] = {}
    for model in list_models(experiment_name, test_key):
        if model.trained:
            windows.setdefault(model.window, model.recorder)
    return windows


def chains(models: Sequence[OnlineModel]) -> dict[str, list[OnlineModel]]:
    """Group trained models by chain, each chain sorted by test start (one model per start)."""
    grouped: dict[str, dict[pd.Timestamp, OnlineModel]] = {}
    for model in models:
        if model.trained:
            grouped.setdefault(model.chain, {}).setdefault(model.test_start, model)
    return {chain: [starts[start] for start in sorted(starts)]
            for chain, starts in grouped.items()}


def fail_interrupted_runs(experiment_name: str,
                          stale_after: float | None = None) -> list[str]:
    """End ``FAILED`` the experiment's ``RUNNING`` runs whose process is gone.

    A run is interrupted when its process ran on this host and is dead, or, when
    ``stale_after`` is given, when it started more than ``stale_after`` seconds ago
    and its process cannot be checked from here (another host, or no process tags).

    Args:
        experiment_name: The experiment (none yet: nothing to do).
        stale_after: Age in seconds after which an unverifiable run counts as interrupted.

    Returns:
        The ids of the runs marked ``FAILED``.
    """
    try:
        experiment = R.get_exp(experiment_name, create=False)
    except RecorderError:
        return []
    failed = []
    now_ms = time.time() * 1000
    for recorder in experiment.list_recorders("list", status=Recorder.STATUS_RUNNING):
        state = process_state(recorder.snapshot_tags)
        started = recorder.snapshot_start_time
        stale = (state == "unknown" and stale_after is not None and started is not None
                 and now_ms - started > stale_after * 1000)
        if state == "dead" or stale:
            recorder.set_tags(**{"taskroll.interrupted": "process gone" if state == "dead"
                                 else f"running for more than {stale_after} s"})
            recorder.end_run(Recorder.STATUS_FAILED)
            _logger.warning("run %s of %r was interrupted; marked FAILED", recorder.id,
                            experiment_name)
            failed.append(recorder.id)
    return failed
