"""The ``R`` facade: process-wide experiment API with one active run (Qlib's ``R``).

The top of the experiment modules: imports :mod:`taskroll.train.experiment_manager`,
:mod:`taskroll.train.mlflow_experiment` and :mod:`taskroll.train.recorder`, and is
imported by none of them. Import it from :mod:`taskroll.train.experiment`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from taskroll.config import set_tracking_uri
from taskroll.errors import RecorderError
from taskroll.train.experiment_manager import ExperimentManager
from taskroll.train.mlflow_experiment import Experiment, search_runs
from taskroll.train.recorder import Recorder
from taskroll.train.tracking import call_mlflow

if TYPE_CHECKING:
    from mlflow.entities import Run


class RecorderFacade:
    """Process-wide experiment API with one active run (Qlib's ``QlibRecorder``, i.e. ``R``).

    Args:
        manager: The experiments it works on; default: the configured store, which
            :meth:`set_uri` and :meth:`uri_context` then change for the whole process.
    """

    def __init__(self, manager: ExperimentManager | None = None):
        self._follows_settings = manager is None
        self.manager = manager or ExperimentManager()
        self._lock = threading.Lock()
        self._active_experiment: Experiment | None = None
        self._active_recorder: Recorder | None = None

    @property
    def uri(self) -> str:
        """The tracking URI in force."""
        return self.manager.uri

    # ---- stores
    def get_uri(self) -> str:
        """Return the tracking URI in force (Qlib's ``R.get_uri``)."""
        return self.manager.uri

    def set_uri(self, uri: str | None) -> None:
        """Use ``uri`` as the default store (Qlib's ``R.set_uri``).

        For ``R`` (a facade following the settings) it becomes the process's tracking
        store, as Qlib's config: trainers, collectors and pool references to it resolve
        there. For a facade given its own manager, only that manager's.
        """
        if self._follows_settings and self.manager.default_uri_override is None:
            set_tracking_uri(uri)
        else:
            self.manager.default_uri = uri

    @contextlib.contextmanager
    def uri_context(self, uri: str) -> Iterator[None]:
        """Use ``uri`` as the default store inside the block (Qlib's ``R.uri_context``);
        see :meth:`set_uri`."""
        if self._follows_settings and self.manager.default_uri_override is None:
            previous = set_tracking_uri(uri)
            try:
                yield
            finally:
                set_tracking_uri(previous)
            return
        before = self.manager.default_uri_override
        self.manager.default_uri = uri
        try:
            yield
        finally:
            self.manager.default_uri = before

    # ---- runs
    def start_exp(self, experiment_name: str | None = None, recorder_name: str | None = None,
                  resume: bool = False, *, experiment_id: str | None = None,
                  recorder_id: str | None = None, uri: str | None = None) -> Recorder:
        """Start (or resume) a run and make it the active one; pair with :meth:`end_exp`.

        Args:
            experiment_name: Experiment, created if missing; ``None`` means the default one.
            recorder_name: Run name; ``None`` means ``"mlflow_recorder"``, as in Qlib.
            resume: Reuse the newest run with this name/id (created if missing)
                instead of always creating a new one.
            experiment_id: Experiment by id instead of name.
            recorder_id: Resume this run (implies ``resume``).
            uri: Tracking store of this run only (Qlib's ``uri``); the default store
                is in force again after :meth:`end_exp`.

        Returns:
            The running recorder (Qlib returns the experiment; ``R.get_exp()`` gives it).

        Raises:
            RecorderError: When a run is already active.
        """
        with self._lock:
            if self._active_recorder is not None:
                raise RecorderError(
                    f"{self._active_recorder!r} is still active; end it before starting another")
            self.manager.active_uri = uri
            try:
                experiment = self.manager.get_exp(experiment_name, create=experiment_id is None,
                                                  experiment_id=experiment_id)
                recorder = experiment.start(recorder_id=recorder_id, recorder_name=recorder_name,
                                            resume=resume or recorder_id is not None)
            except BaseException:
                self.manager.active_uri = None
                raise
            self._active_experiment, self._active_recorder = experiment, recorder
            return recorder

    def end_exp(self, recorder_status: str = Recorder.STATUS_FINISHED) -> None:
        """End the active run with ``recorder_status``; does nothing when none is active."""
        with self._lock:
            experiment, self._active_experiment = self._active_experiment, None
            self._active_recorder = None
            self.manager.active_uri = None
        if experiment is not None:
            experiment.end(recorder_status)

    @contextlib.contextmanager
    def start(self, experiment_name: str | None = None, recorder_name: str | None = None,
              resume: bool = False, *, experiment_id: str | None = None,
              recorder_id: str | None = None, uri: str | None = None) -> Iterator[Recorder]:
        """Run a block inside a new (or resumed) run; arguments as :meth:`start_exp`.

        The run ends ``FINISHED``; ``FAILED`` when the block raises an exception
        (re-raised), ``KILLED`` on ``KeyboardInterrupt``/``SystemExit``.

        Yields:
            The active recorder (Qlib yields the experiment; ``R.get_exp()`` gives it).

        Raises:
            RecorderError: When a run is already active.
        """
        recorder = self.start_exp(experiment_name, recorder_name, resume,
                                  experiment_id=experiment_id, recorder_id=recorder_id, uri=uri)
        try:
            yield recorder
        except Exception:
            self.end_exp(Recorder.STATUS_FAILED)
            raise
        except BaseException:
            self.end_exp(Recorder.STATUS_KILLED)
            raise
        self.end_exp(Recorder.STATUS_FINISHED)

    def _active_or_start(self) -> Recorder:
        """The active recorder; without one, a new run in the default experiment (as Qlib)."""
        recorder = self._active_recorder
        if recorder is not None:
            return recorder
        try:
            return self.start_exp()
        except RecorderError:
            recorder = self._active_recorder  # another thread started one first
            if recorder is None:
                raise
            return recorder

    def _require_active(self) -> Recorder:
        recorder = self._active_recorder
        if recorder is None:
            raise RecorderError("no active run; use `with R.start(...)` first")
        return recorder

    # ---- experiments and recorders
    def get_exp(self, experiment_name: str | None = None, create: bool = True, *,
                experiment_id: str | None = None, start: bool = False) -> Experiment:
        """Return an experiment: by id/name, else the active one, else the default one.

        Args:
            experiment_name: Name; ``None`` with no id: the active, else the default one.
            create: Create a missing experiment (by name).
            experiment_id: Id (wins over the name).
            start: With no active run, start one in this experiment (Qlib's ``start``).

        Raises:
            RecorderLookupError: When it does not exist and ``create`` is false (a
                ``ValueError``, as in Qlib).
        """
        if experiment_name is None and experiment_id is None and self._active_experiment:
            return self._active_experiment
        experiment = self.manager.get_exp(experiment_name, create, experiment_id=experiment_id)
        if start and self._active_recorder is None:
            self.start_exp(experiment.name)
            return self._active_experiment or experiment
        return experiment

    def list_experiments(self) -> dict[str, Experiment]:
        """Return the live experiments as ``{name: Experiment}``."""
        return self.manager.list_experiments()

    def delete_exp(self, experiment_name: str | None = None, *,
                   experiment_id: str | None = None) -> None:
        """Delete an experiment and its runs (MLflow soft delete).

        Raises:
            RecorderLookupError: When neither a name nor an id is given, or it does not
                exist (a ``ValueError``, as in Qlib).
        """
        self.manager.delete_exp(experiment_name, experiment_id=experiment_id)

    def search_records(self, experiment_ids: Iterable[str], **kwargs: Any) -> list[Run]:
        """Return the MLflow runs of experiments (Qlib's ``R.search_records``).

        Keyword arguments: ``filter_string``, ``run_view_type``, ``max_results`` and
        ``order_by`` (e.g. ``["metrics.m DESC"]``), as Qlib's.

        Returns:
            The ``mlflow.entities.Run`` objects (what Qlib's MLflow manager returns).
        """
        return search_runs(self.uri, experiment_ids, **kwargs)

    def get_recorder(self, recorder_id: str | None = None, recorder_name: str | None = None,
                     experiment_name: str | None = None, *,
                     experiment_id: str | None = None) -> Recorder:
        """Return a recorder: the active one when nothing is named, else by id or name.

        A ``recorder_id`` alone is looked up in the whole store; a name in the named
        experiment, else the active one, else the default one.

        Raises:
            RecorderError: When no run is active and nothing is named.
            RecorderLookupError: When nothing matches (a ``ValueError``, as in Qlib).
        """
        if recorder_id is None and recorder_name is None:
            return self._require_active()
        if recorder_id is not None and experiment_name is None and experiment_id is None:
            return Recorder(recorder_id, self.uri)
        experiment = self.get_exp(experiment_name, create=False, experiment_id=experiment_id)
        return experiment.get_recorder(recorder_id, recorder_name)

    @overload
    def list_recorders(self, experiment_name: str | None = ..., rtype: Literal["dict"] = ...,
                       status: str | Iterable[str] | None = ..., filter_string: str = ..., *,
                       experiment_id: str | None = ...,
                       max_results: int | None = ...) -> dict[str, Recorder]: ...

    @overload
    def list_recorders(self, experiment_name: str | None, rtype: Literal["list"],
                       status: str | Iterable[str] | None = ..., filter_string: str = ..., *,
                       experiment_id: str | None = ...,
                       max_results: int | None = ...) -> list[Recorder]: ...

    @overload
    def list_recorders(self, experiment_name: str | None = ..., *, rtype: Literal["list"],
                       status: str | Iterable[str] | None = ..., filter_string: str = ...,
                       experiment_id: str | None = ...,
                       max_results: int | None = ...) -> list[Recorder]: ...

    def list_recorders(self, experiment_name: str | None = None,
                       rtype: Literal["dict", "list"] = "dict",
                       status: str | Iterable[str] | None = None, filter_string: str = "", *,
                       experiment_id: str | None = None,
                       max_results: int | None = None) -> dict[str, Recorder] | list[Recorder]:
        """List recorders of an experiment; see :meth:`Experiment.list_recorders`.

        A missing experiment is created (empty), as Qlib's ``R.list_recorders`` does.
        """
        experiment = self.get_exp(experiment_name, experiment_id=experiment_id)
        if rtype == "list":
            return experiment.list_recorders("list", max_results, status, filter_string)
        return experiment.list_recorders("dict", max_results, status, filter_string)

    def delete_recorder(self, recorder_id: str | None = None,
                        recorder_name: str | None = None) -> None:
        """Delete a run by id, else the newest with ``recorder_name`` in the active (else
        default) experiment (MLflow soft delete).

        Raises:
            RecorderLookupError: When neither is given or nothing matches.
        """
        if recorder_id is None:
            self.get_exp().delete_recorder(recorder_name=recorder_name)
            return
        client = self.manager.client
        call_mlflow(lambda: client.delete_run(recorder_id), f"delete run {recorder_id}")

    # ---- the active run (started in the default experiment when none is, as Qlib)
    def log_params(self, **params: Any) -> None:
        """Log params to the active run."""
        self._active_or_start().log_params(**params)

    def log_metrics(self, step: int | None = None, **metrics: float) -> None:
        """Log metrics to the active run."""
        self._active_or_start().log_metrics(step, **metrics)

    def set_tags(self, **tags: Any) -> None:
        """Set tags on the active run."""
        self._active_or_start().set_tags(**tags)

    def save_objects(self, local_path: str | os.PathLike[str] | None = None,
                     artifact_path: str | None = None, **objects: Any) -> None:
        """Save a local file/folder, or pickled objects, to the active run.

        See :meth:`Recorder.save_objects`.

        Raises:
            ValueError: When both ``local_path`` and objects are given (as Qlib).
        """
        if local_path is not None and objects:
            raise ValueError("give only one of `local_path` (files in a path) or objects "
                             "(passed as keywords)")
        self._active_or_start().save_objects(local_path, artifact_path, **objects)

    def load_object(self, name: str) -> Any:
        """Load a pickled artifact of the active run."""
        return self._active_or_start().load_object(name)

    def log_artifact(self, local_path: str | os.PathLike[str],
                     artifact_path: str | None = None) -> None:
        """Upload a local file to the active run."""
        self._active_or_start().log_artifact(local_path, artifact_path)

    def download_artifact(self, path: str, dst_path: str | None = None) -> str:
        """Download an artifact of the active run and return its local path."""
        return self._active_or_start().download_artifact(path, dst_path)


#: The process-wide facade, like ``qlib.workflow.R``.
R = RecorderFacade()
