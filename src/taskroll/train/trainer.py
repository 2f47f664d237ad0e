"""task_train and the Trainer family (Qlib's ``qlib.model.trainer``).

* :func:`task_train` runs one task's whole workflow in a new recorded run;
  :func:`begin_task_train` / :func:`end_task_train` split that in two for the
  delayed trainers (all three live in :mod:`taskroll.train.task_run`, re-exported here).
* :class:`TrainerR` trains here (or one spawned process per task with ``call_in_subproc``);
  :class:`DelayTrainerR` prepares in ``train`` and fits in ``end_train``;
  :class:`TrainerRM` and :class:`DelayTrainerRM` put the tasks in a task pool so any
  number of workers (:meth:`TrainerRM.worker`, ``taskroll worker -t POOL``) share them.
"""


from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from taskroll.cluster.loop import LoopOptions, absolute_url
from taskroll.cluster.placement import WorkerPlacement, raise_for_stopped
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager, run_task
from taskroll.store.references import RecorderReference
from taskroll.train.recorder import Recorder, as_recorder
from taskroll.train.task_run import (
    DEFAULT_EXPERIMENT,
    MAX_PARAM_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    QUALITY_ARTIFACT,
    RECORD_MODULE,
    TrainFunction,
    begin_task_train,
    end_task_train,
    task_params,
    task_train,
    train_in_subprocess,
)

__all__ = [
    "DEFAULT_EXPERIMENT", "MAX_PARAM_KEY_LENGTH", "MAX_PARAM_VALUE_LENGTH", "QUALITY_ARTIFACT",
    "RECORD_MODULE", "STATUS_BEGIN", "STATUS_END", "STATUS_KEY", "DelayTrainerR",
    "DelayTrainerRM", "TrainFunction", "Trainer", "TrainerR", "TrainerRM", "begin_task_train",
    "end_task_train", "task_params", "task_train", "train_in_subprocess",
]

logger = logging.getLogger(__name__)


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
    """Train tasks one after the other; tag each recorder as trained.

    Args:
        experiment_name: Default experiment of the runs.
        train_func: Function ``(task, experiment_name, recorder_name=None) -> Recorder``.
        call_in_subproc: Train each task in a new process (:func:`train_in_subprocess`), as
            Qlib, so the memory of one task's data and model is freed before the next.
        default_rec_name: Run name given to every run.
    """

    STATUS_KEY = STATUS_KEY
    STATUS_BEGIN = STATUS_BEGIN
    STATUS_END = STATUS_END

    def __init__(self, experiment_name: str | None = None, train_func: TrainFunction = task_train,
                 call_in_subproc: bool = False, default_rec_name: str | None = None) -> None:
        super().__init__()
        self.experiment_name = experiment_name
        self.train_func = train_func
        self._call_in_subproc = call_in_subproc
        self.default_rec_name = default_rec_name

    def train(self, tasks: Any, train_func: TrainFunction | None = None,
              experiment_name: str | None = None, **kwargs: Any) -> list[Recorder]:
        """Train each task with a progress bar; return the recorders tagged ``begin``."""
        task_list = _as_list(tasks)
        train_func = train_func or self.train_func
        if self._call_in_subproc:
            logger.info("training each task in a new process (its memory is freed after it)")
            train_func = functools.partial(train_in_subprocess, train_func)
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
    """Like :class:`TrainerR`, but ``train`` only creates the runs and ``end_train`` fits.

    ``call_in_subproc`` applies to ``train`` (as Qlib, where it reaches ``TrainerR``
    through ``**kwargs``); ``end_train`` fits in this process.
    """

    def __init__(self, experiment_name: str | None = None,
                 train_func: TrainFunction = begin_task_train,
                 end_train_func: Callable[..., Recorder] = end_task_train,
                 default_rec_name: str | None = None, call_in_subproc: bool = False) -> None:
        super().__init__(experiment_name, train_func, call_in_subproc=call_in_subproc,
                         default_rec_name=default_rec_name)
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
        workers: Where ``train`` runs the worker loops instead of here, e.g.
            ``DaskWorkers(client, n=4)`` or ``LocalWorkers(n=2)`` (:mod:`taskroll.cluster`);
            ``train`` fills the pool, runs the loops there, waits, and returns the
            recorders. The task functions must be importable where the loops run; the
            loops use the settings in force (:func:`taskroll.init`) with the pool's store
            (a ``store`` URL in ``task_manager_kwargs``), ``allow_pickle``, lease and
            attempts as this trainer's manager has them.

    Raises:
        TaskConfigError: For ``workers`` with a ``store`` object (not a URL) in
            ``task_manager_kwargs``: a loop elsewhere cannot use this process's store.
    """

    STATUS_KEY = STATUS_KEY
    STATUS_BEGIN = STATUS_BEGIN
    STATUS_END = STATUS_END
    TM_ID = "_id in TaskManager"

    def __init__(self, experiment_name: str | None = None, task_pool: str | None = None,
                 train_func: TrainFunction = task_train, skip_run_task: bool = False,
                 default_rec_name: str | None = None,
                 task_manager_kwargs: Mapping[str, Any] | None = None,
                 workers: WorkerPlacement | None = None) -> None:
        super().__init__()
        self.experiment_name = experiment_name
        self.task_pool = task_pool
        self.train_func = train_func
        self.skip_run_task = skip_run_task
        self.default_rec_name = default_rec_name
        self.task_manager_kwargs = dict(task_manager_kwargs or {})
        store = self.task_manager_kwargs.get("store")
        if workers is not None and store is not None and not isinstance(store, str):
            raise TaskConfigError("with workers=..., give task_manager_kwargs['store'] as a URL, "
                                  f"not {type(store).__name__}: each loop opens it where it runs")
        self.workers = workers

    def _run_tasks(self, task_func: Callable[..., Any], manager: TaskManager,
                   query: Mapping[str, Any], experiment_name: str, before_status: str,
                   after_status: str, **kwargs: Any) -> None:
        """Run the worker loop here, or the placed loops (``workers``) and check them.

        Raises:
            WorkerLoopError: When a placed loop stopped before the pool was done.
        """
        if self.workers is None:
            run_task(task_func, manager, query=query, experiment_name=experiment_name,
                     before_status=before_status, after_status=after_status, **kwargs)
            return
        store = self.task_manager_kwargs.get("store")
        options = LoopOptions(task_pool=manager.task_pool, func=task_func, query=query,
                              before_status=before_status, after_status=after_status,
                              experiment=experiment_name, kwargs=kwargs,
                              task_url=None if store is None else absolute_url(store),
                              allow_pickle=manager.allow_pickle,
                              lease_seconds=manager.lease_seconds,
                              max_attempts=manager.max_attempts)
        raise_for_stopped(self.workers.run_loops(options))

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
                self._run_tasks(train_func, manager, query, experiment_name, before_status,
                                after_status,
                                recorder_name=default_rec_name or self.default_rec_name,
                                **kwargs)
            # also for the delayed trainer: other workers may still hold some of these tasks.
            # wait() counts part_done as undone (as Qlib), and part_done is where the
            # delayed trainer's tasks stop, so it waits for the waiting/running ones only.
            wait_query: dict[str, Any] = dict(query)
            if after_status == TaskManager.STATUS_PART_DONE:
                wait_query["status"] = {"$in": [TaskManager.STATUS_WAITING,
                                                TaskManager.STATUS_RUNNING]}
            manager.wait(query=wait_query, progress=bool(self.skip_run_task))
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
                 task_manager_kwargs: Mapping[str, Any] | None = None,
                 workers: WorkerPlacement | None = None) -> None:
        super().__init__(experiment_name, task_pool, train_func, skip_run_task, default_rec_name,
                         task_manager_kwargs, workers)
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
                self._run_tasks(end_train_func or self.end_train_func, manager, query,
                                experiment_name, TaskManager.STATUS_PART_DONE,
                                TaskManager.STATUS_DONE, **kwargs)
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
