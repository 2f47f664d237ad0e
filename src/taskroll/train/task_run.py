"""One task's run: :func:`task_train` and its two halves (Qlib's ``qlib.model.trainer``).

* :func:`task_train` runs one task's whole workflow in a new recorded run: log the
  task as params (:func:`task_params`), build the model and dataset from their cfgs,
  ``model.fit(dataset)``, save the model (``params.pkl``), the dataset (``dataset``)
  and the task (``task``), then build and ``generate()`` each record with
  ``<MODEL>``/``<DATASET>`` filled in.
* :func:`begin_task_train` / :func:`end_task_train` split that in two for the
  delayed trainers.
* :func:`train_in_subprocess` runs a train function in a spawned process
  (``TrainerR(call_in_subproc=True)``).

The trainers are in :mod:`taskroll.train.trainer`, which re-exports these names.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import multiprocessing
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from taskroll.config import Settings, _SettingsHolder, get_settings
from taskroll.store.references import RecorderReference
from taskroll.task.spec import fill_placeholder, init_instance_by_config
from taskroll.train.experiment import DEFAULT_EXPERIMENT_NAME, R
from taskroll.train.recorder import Recorder, as_recorder

logger = logging.getLogger(__name__)
#: Experiment of trainers given no name: ``R``'s default experiment, as in Qlib.
DEFAULT_EXPERIMENT = DEFAULT_EXPERIMENT_NAME
RECORD_MODULE = "taskroll.train.record"
QUALITY_ARTIFACT = "data_quality.json"
"""Artifact holding the dataset handler's data quality report (JSON)."""
TrainFunction = Callable[..., Recorder]


MAX_PARAM_KEY_LENGTH = 250
"""MLflow's longest parameter name."""
MAX_PARAM_VALUE_LENGTH = 6000
"""MLflow's longest parameter value."""
_TRUNCATED = "...truncated-"
_BAD_KEY_CHARACTERS = re.compile(r"[^\w.\- ]")


def _shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters; a cut one ends with a marker and a hash of the whole."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    tail = f"{_TRUNCATED}{digest}"
    return text[:limit - len(tail)] + tail


def task_params(task_config: Mapping[str, Any]) -> dict[str, str]:
    """The task flattened into MLflow parameters, as Qlib's ``R.log_params(**flatten_dict(task))``.

    Nested dict keys are joined with ``.`` (``{"model": {"class": "LinearModel"}}`` gives
    ``model.class``), so runs can be searched with a filter such as
    ``params.`model.class` = 'LinearModel'``; other values (lists, tuples, objects)
    become their ``str()``. MLflow refuses what these rules fix, so logging never fails:

    * a character MLflow does not allow in a name, or that would make it a path (anything
      but letters, digits, ``_``, ``-``, ``.`` and space), becomes ``_``;
    * a name longer than 250 characters or a value longer than 6,000 is cut to that
      length, ending with ``...truncated-`` and 8 hex digits of the SHA-1 of the whole
      text (so two long values that differ still differ). The full task is always in the
      run's ``task`` artifact.

    Args:
        task_config: The task definition.

    Returns:
        ``{parameter name: value text}``.
    """
    params: dict[str, str] = {}

    def visit(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                visit(item, f"{prefix}.{key}" if prefix else str(key))
            return
        name = _BAD_KEY_CHARACTERS.sub("_", prefix)
        name = _shortened("_" if name in ("", ".", "..") else name, MAX_PARAM_KEY_LENGTH)
        params[name] = _shortened(str(dict(value) if isinstance(value, Mapping) else value),
                                  MAX_PARAM_VALUE_LENGTH)

    visit(task_config, "")
    return params


def _log_task_info(task_config: Mapping[str, Any]) -> None:
    R.log_params(**task_params(task_config))
    R.save_objects(task=dict(task_config))


def _build_record(config: Any, recorder: Recorder, model: Any, dataset: Any,
                  where: str) -> Any:
    from taskroll.task.spec import get_callable_by_config

    factory, kwargs = get_callable_by_config(config, RECORD_MODULE, where)
    parameters = inspect.signature(factory).parameters
    for name, value in (("model", model), ("dataset", dataset)):
        if name in parameters and name not in kwargs:
            kwargs[name] = value
    return init_instance_by_config({"class": factory, "kwargs": kwargs}, where=where,
                                   recorder=recorder)


def _log_data_quality(recorder: Recorder, dataset: Any) -> None:
    """Save ``dataset.handler.quality_report().to_dict()`` as :data:`QUALITY_ARTIFACT`.

    Skipped when the handler has no such method or it returns ``None``; a failure
    is logged as a warning and never fails the training.
    """
    try:
        quality_report = getattr(getattr(dataset, "handler", None), "quality_report", None)
        if not callable(quality_report):
            return
        report = quality_report()
        to_dict = getattr(report, "to_dict", None)
        if not callable(to_dict):
            return
        text = json.dumps(to_dict(), indent=2, sort_keys=True)
        with tempfile.TemporaryDirectory(prefix="taskroll-quality-") as staging:
            path = Path(staging) / QUALITY_ARTIFACT
            path.write_text(text, encoding="utf-8")
            recorder.save_objects(local_path=path)
    except Exception as error:  # a report is a courtesy: never fail the training for it
        logger.warning("could not log %s for run %s: %s: %s", QUALITY_ARTIFACT, recorder.id,
                       type(error).__name__, error)


def _exe_task(task_config: Mapping[str, Any]) -> None:
    recorder = R.get_recorder()
    # Qlib's path placeholders (e.g. "<dataset.kwargs.segments.train.0>") are filled
    # before anything is built; <MODEL> and <DATASET> stay for the records
    task_config = fill_placeholder(dict(task_config), {})
    model = init_instance_by_config(task_config["model"], where="task.model")
    dataset = init_instance_by_config(task_config["dataset"], where="task.dataset")
    _log_data_quality(recorder, dataset)
    reweighter = task_config.get("reweighter")
    if reweighter is not None:
        model.fit(dataset, reweighter=init_instance_by_config(reweighter, where="task.reweighter"))
    else:
        model.fit(dataset)
    R.save_objects(**{"params.pkl": model, "dataset": dataset})
    filled = fill_placeholder(dict(task_config), {"<MODEL>": model, "<DATASET>": dataset})
    records = filled.get("record") or []
    if not isinstance(records, list):
        records = [records]
    for index, record_config in enumerate(records):
        record = _build_record(record_config, recorder, model, dataset, f"task.record[{index}]")
        record.generate()


def task_train(task_config: Mapping[str, Any], experiment_name: str,
               recorder_name: str | None = None) -> Recorder:
    """Train one task in a new run of ``experiment_name`` and return its recorder.

    Args:
        task_config: ``{"model": cfg, "dataset": cfg, "record": [cfg, ...]}``.
        experiment_name: Experiment holding the run (created if missing).
        recorder_name: Optional run name.

    Returns:
        The finished recorder, with ``task``, ``params.pkl``, ``dataset``,
        ``data_quality.json`` (when the dataset's handler has a ``quality_report()``)
        and the records' artifacts (e.g. ``pred.pkl``, ``label.pkl``, IC metrics).

    Raises:
        TaskConfigError: When a cfg of the task cannot be built; the run ends ``FAILED``.
    """
    with R.start(experiment_name=experiment_name, recorder_name=recorder_name) as recorder:
        _log_task_info(task_config)
        _exe_task(task_config)
    return recorder


def begin_task_train(task_config: Mapping[str, Any], experiment_name: str,
                     recorder_name: str | None = None) -> Recorder:
    """First half of a delayed training: create the run and save the task only."""
    with R.start(experiment_name=experiment_name, recorder_name=recorder_name) as recorder:
        _log_task_info(task_config)
    return recorder


def end_task_train(rec: Recorder | RecorderReference, experiment_name: str) -> Recorder:
    """Second half of a delayed training: resume the run and execute its saved task.

    Args:
        rec: The run of :func:`begin_task_train`, or its reference read from a task pool
            (resolved for the configured tracking stores only).
        experiment_name: Experiment holding the run.

    Returns:
        The recorder.

    Raises:
        RecorderError: When a reference names a store this process is not configured for.
    """
    rec = as_recorder(rec)
    with R.start(experiment_name=experiment_name, recorder_id=rec.id, resume=True):
        _exe_task(R.load_object("task"))
    return rec



def _train_in_child(train_func: TrainFunction, settings: Settings, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> dict[str, str | None]:
    """Body of :func:`train_in_subprocess` in the spawned process: the parent's settings, then
    the training; the recorder goes back as its reference (an exception that cannot be
    pickled goes back as a ``RuntimeError`` with its type and message)."""
    _SettingsHolder.current = settings
    try:
        return train_func(*args, **kwargs).to_reference()
    except Exception as error:
        try:
            pickle.dumps(error)
        except Exception:
            raise RuntimeError(f"{type(error).__name__}: {error}") from None
        raise


def train_in_subprocess(train_func: TrainFunction, *args: Any, **kwargs: Any) -> Recorder:
    """Run a train function in a fresh process, so its memory is given back when it ends.

    Qlib's ``qlib.utils.paral.call_in_subproc``, used by ``TrainerR(call_in_subproc=True)``:
    each call spawns one process (the ``spawn`` start method: nothing of this process's
    memory is inherited), gives it this process's :func:`taskroll.config.get_settings`,
    runs ``train_func(*args, **kwargs)`` there and waits. ``train_func`` and its
    arguments must be picklable (a module-level function, plain task dicts). Spawn is
    used rather than fork (Qlib's default on Linux) because a forked child inherits open
    MLflow/SQLite connections and lock states of other threads; like every spawned
    process, it imports the calling script again, so a script needs the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        train_func: ``(task, experiment_name, recorder_name=None, **kwargs) -> Recorder``.
        *args: Passed to ``train_func``.
        **kwargs: Passed to ``train_func``.

    Returns:
        The run's recorder, opened here with this process's tracking settings.

    Raises:
        Exception: What ``train_func`` raised in the child, with its message.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        reference = executor.submit(_train_in_child, train_func, get_settings(), args,
                                    kwargs).result()
    return as_recorder(reference)

