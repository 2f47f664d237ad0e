"""task_train and the Trainer family (Qlib's ``qlib.model.trainer``).

* :func:`task_train` runs one task's whole workflow in a new recorded run: build
  the model and dataset from their cfgs, ``model.fit(dataset)``, save the model
  (``params.pkl``), the dataset (``dataset``) and the task (``task``), then build
  and ``generate()`` each record with ``<MODEL>``/``<DATASET>`` filled in.
* :func:`begin_task_train` / :func:`end_task_train` split that in two for the
  delayed trainers.
* :class:`TrainerR` trains in this process; :class:`DelayTrainerR` prepares in
  ``train`` and fits in ``end_train``; :class:`TrainerRM` and
  :class:`DelayTrainerRM` put the tasks in a task pool so any number of workers
  (:meth:`TrainerRM.worker`, ``taskroll worker -t POOL``) share them.
"""

from __future__ import annotations

import inspect
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from taskroll.manage import TaskManager, run_task
from taskroll.store.references import RecorderReference
from taskroll.task.spec import fill_placeholder, init_instance_by_config
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder, as_recorder

logger = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "workflow"
RECORD_MODULE = "taskroll.train.record"
QUALITY_ARTIFACT = "data_quality.json"
"""Artifact holding the dataset handler's data quality report (JSON)."""
TrainFunction = Callable[..., Recorder]


def _log_task_info(task_config: Mapping[str, Any]) -> None:
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


def _as_list(tasks: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [tasks] if isinstance(tasks, Mapping) else list(tasks)


def _as_recorders(models: Recorder | Sequence[Recorder]) -> list[Recorder]:
    return [models] if isinstance(models, Recorder) else list(models)


STATUS_KEY = "train_status"
STATUS_BEGIN = "begin_task_train"
STATUS_END = "end_task_train"


def _mark_ended(models: Recorder | Sequence[Recorder]) -> list[Recorder]:
    """Tag recorders ``train_status=end_task_train`` and return them as a list."""
    recorders = _as_recorders(models)
    for recorder in recorders:
        recorder.set_tags(**{STATUS_KEY: STATUS_END})
    return recorders


class Trainer:
    """Base trainer: ``train`` turns tasks into models, ``end_train`` finishes them."""

    def __init__(self) -> None:
        self.delay = False

    def train(self, tasks: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """Train (or, for delayed trainers, prepare) the tasks; return the models."""
        raise NotImplementedError

    def end_train(self, models: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """Finish training; the default returns the models unchanged."""
        return list(models)

    def is_delay(self) -> bool:
        """Whether ``train`` only prepares and ``end_train`` does the fitting."""
        return self.delay

    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self.end_train(self.train(*args, **kwargs))

    def has_worker(self) -> bool:
        """Whether :meth:`worker` can be run (in other processes or machines)."""
        return False

    def worker(self) -> None:
        """Work on the trainer's pool until it is empty."""
        raise NotImplementedError(f"{type(self).__name__} has no worker")


class TrainerR(Trainer):
    """Train tasks one after the other in this process; tag each recorder as trained.

    Args:
        experiment_name: Default experiment of the runs.
        train_func: Function ``(task, experiment_name, recorder_name=None) -> Recorder``.
        default_rec_name: Run name given to every run.
    """

    STATUS_KEY = STATUS_KEY
    STATUS_BEGIN = STATUS_BEGIN
    STATUS_END = STATUS_END

    def __init__(self, experiment_name: str | None = None, train_func: TrainFunction = task_train,
                 default_rec_name: str | None = None) -> None:
        super().__init__()
        self.experiment_name = experiment_name
        self.train_func = train_func
        self.default_rec_name = default_rec_name

    def train(self, tasks: Any, train_func: TrainFunction | None = None,
              experiment_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Train each task with a progress bar; return the recorders tagged ``begin``."""
        task_list = _as_list(tasks)
        train_func = train_func or self.train_func
        experiment_name = experiment_name or self.experiment_name or DEFAULT_EXPERIMENT
        recorders = []
        for task in tqdm(task_list, desc="train tasks", disable=not task_list):
            recorder = train_func(task, experiment_name, recorder_name=self.default_rec_name,
                                  **kwargs)
            recorder.set_tags(**{self.STATUS_KEY: self.STATUS_BEGIN})
            recorders.append(recorder)
        return recorders

    def end_train(self, models: Any, **kwargs: Any) -> list[Recorder]:
        """Tag the recorders as finished (``train_status=end_task_train``)."""
        return _mark_ended(models)


class DelayTrainerR(TrainerR):
    """Like :class:`TrainerR`, but ``train`` only creates the runs and ``end_train`` fits."""

    def __init__(self, experiment_name: str | None = None,
                 train_func: TrainFunction = begin_task_train,
                 end_train_func: Callable[..., Recorder] = end_task_train,
                 default_rec_name: str | None = None) -> None:
        super().__init__(experiment_name, train_func, default_rec_name)
        self.end_train_func = end_train_func
        self.delay = True

    def end_train(self, models: Any, end_train_func: Callable[..., Recorder] | None = None,
                  experiment_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Fit every prepared run not yet finished, then tag it ``end``."""
        recorders = _as_recorders(models)
        end_train_func = end_train_func or self.end_train_func
        experiment_name = experiment_name or self.experiment_name or DEFAULT_EXPERIMENT
        for recorder in tqdm(recorders, desc="end train", disable=not recorders):
            if recorder.list_tags().get(self.STATUS_KEY) == self.STATUS_END:
                continue
            end_train_func(recorder, experiment_name, **kwargs)
            recorder.set_tags(**{self.STATUS_KEY: self.STATUS_END})
        return recorders


class TrainerRM(Trainer):
    """Train through a task pool, so workers in other processes and machines share the work.

    ``train`` stores the tasks (deduplicated) in ``task_pool``, runs ``run_task`` here
    too unless ``skip_run_task``, waits until every one of them is done, and returns
    their recorders in task order. Results travel through the pool as recorder
    references (JSON), not pickles.

    Args:
        experiment_name: Experiment of the runs.
        task_pool: Pool name; defaults to the experiment name, as in Qlib.
        train_func: Function run by the workers on each task.
        skip_run_task: Only store the tasks and wait for other workers.
        default_rec_name: Run name given to every run.
        task_manager_kwargs: Extra arguments of :class:`TaskManager` (``store``, ``lease_seconds``...).
    """

    STATUS_KEY = STATUS_KEY
    STATUS_BEGIN = STATUS_BEGIN
    STATUS_END = STATUS_END
    TM_ID = "_id in TaskManager"

    def __init__(self, experiment_name: str | None = None, task_pool: str | None = None,
                 train_func: TrainFunction = task_train, skip_run_task: bool = False,
                 default_rec_name: str | None = None,
                 task_manager_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.experiment_name = experiment_name
        self.task_pool = task_pool
        self.train_func = train_func
        self.skip_run_task = skip_run_task
        self.default_rec_name = default_rec_name
        self.task_manager_kwargs = dict(task_manager_kwargs or {})

    def _names(self, experiment_name: str | None) -> tuple[str, str]:
        experiment = experiment_name or self.experiment_name or DEFAULT_EXPERIMENT
        return experiment, self.task_pool or experiment

    def _manager(self, task_pool: str) -> TaskManager:
        return TaskManager(task_pool, **self.task_manager_kwargs)

    def train(self, tasks: Any, train_func: TrainFunction | None = None,
              experiment_name: str | None = None,
              before_status: str = TaskManager.STATUS_WAITING,
              after_status: str = TaskManager.STATUS_DONE,
              default_rec_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Store the tasks, work on them (unless skipped), wait, and return their recorders."""
        task_list = _as_list(tasks)
        if not task_list:
            return []
        experiment_name, task_pool = self._names(experiment_name)
        train_func = train_func or self.train_func
        with self._manager(task_pool) as manager:
            ids = manager.create_task(task_list)
            query = {"_id": {"$in": ids}}
            if not self.skip_run_task:
                run_task(train_func, manager, query=query, experiment_name=experiment_name,
                         before_status=before_status, after_status=after_status,
                         recorder_name=default_rec_name or self.default_rec_name, **kwargs)
            # also for the delayed trainer: other workers may still hold some of these tasks
            manager.wait(query=query, progress=bool(self.skip_run_task))
            recorders = []
            for task_id in ids:
                task = manager.re_query(task_id)
                result = None if task is None else task.get("res")
                if task is None or not isinstance(result, (Recorder, RecorderReference)):
                    status = None if task is None else task["status"]
                    error = _error_text(None if task is None else task.get("error"))
                    raise RuntimeError(
                        f"task {task_id} in pool {task_pool!r} ended {status} without a "
                        f"recorder:\n{error}")
                # a pool holds inert references: resolve them here, for our stores only
                recorder = as_recorder(result, allow_pickle=manager.allow_pickle)
                recorder.set_tags(**{self.STATUS_KEY: self.STATUS_BEGIN, self.TM_ID: task_id})
                recorders.append(recorder)
        return recorders

    def end_train(self, models: Any, **kwargs: Any) -> list[Recorder]:
        """Tag the recorders as finished."""
        return _mark_ended(models)

    def has_worker(self) -> bool:
        """A pool trainer always has a worker."""
        return True

    def worker(self, train_func: TrainFunction | None = None,
               experiment_name: str | None = None) -> None:
        """Work on the pool's waiting tasks until none is left (run this anywhere)."""
        experiment_name, task_pool = self._names(experiment_name)
        with self._manager(task_pool) as manager:
            run_task(train_func or self.train_func, manager, experiment_name=experiment_name)


class DelayTrainerRM(TrainerRM):
    """The delayed pool trainer: ``train`` leaves tasks ``part_done``, ``end_train`` fits them."""

    def __init__(self, experiment_name: str | None = None, task_pool: str | None = None,
                 train_func: TrainFunction = begin_task_train,
                 end_train_func: Callable[..., Recorder] = end_task_train,
                 skip_run_task: bool = False, default_rec_name: str | None = None,
                 task_manager_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(experiment_name, task_pool, train_func, skip_run_task, default_rec_name,
                         task_manager_kwargs)
        self.end_train_func = end_train_func
        self.delay = True

    def train(self, tasks: Any, train_func: TrainFunction | None = None,
              experiment_name: str | None = None,
              before_status: str = TaskManager.STATUS_WAITING,
              after_status: str = TaskManager.STATUS_PART_DONE,
              default_rec_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Create the runs through the pool; tasks end ``part_done``."""
        return super().train(tasks, train_func=train_func, experiment_name=experiment_name,
                             before_status=before_status, after_status=after_status,
                             default_rec_name=default_rec_name, **kwargs)

    def end_train(self, models: Any, end_train_func: Callable[..., Recorder] | None = None,
                  experiment_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Fit the ``part_done`` tasks of these recorders (here and in workers), then tag them."""
        recorders = _as_recorders(models)
        if not recorders:
            return []
        experiment_name, task_pool = self._names(experiment_name)
        ids = [recorder.list_tags()[self.TM_ID] for recorder in recorders]
        query = {"_id": {"$in": ids}}
        with self._manager(task_pool) as manager:
            if not self.skip_run_task:
                run_task(end_train_func or self.end_train_func, manager, query=query,
                         before_status=TaskManager.STATUS_PART_DONE,
                         experiment_name=experiment_name, **kwargs)
            manager.wait(query=query)
        return _mark_ended(recorders)

    def worker(self, end_train_func: Callable[..., Recorder] | None = None,
               experiment_name: str | None = None) -> None:
        """Do both halves of the pool's work until nothing is left."""
        experiment_name, task_pool = self._names(experiment_name)
        with self._manager(task_pool) as manager:
            run_task(self.train_func, manager, experiment_name=experiment_name)
            run_task(end_train_func or self.end_train_func, manager,
                     before_status=TaskManager.STATUS_PART_DONE, experiment_name=experiment_name)


def _error_text(error: Any) -> str:
    """A task's recorded failure as text: kind, message and traceback (``""`` when none)."""
    if not error:
        return ""
    if isinstance(error, Mapping):
        head = ": ".join(str(part) for part in (error.get("kind"), error.get("message")) if part)
        return "\n".join(part for part in (head, str(error.get("traceback") or "")) if part)
    return str(error)
