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
from typing import Any, Literal, overload

from taskroll.errors import RecorderError
from taskroll.train.experiment_manager import ExperimentManager
from taskroll.train.mlflow_experiment import Experiment
from taskroll.train.recorder import Recorder
from taskroll.train.tracking import call_mlflow


class RecorderFacade:
    """Process-wide experiment API with one active run (Qlib's ``QlibRecorder``, i.e. ``R``).

    Args:
        manager: The experiments it works on; default: the configured store.
    """

    def __init__(self, manager: ExperimentManager | None = None):
        self.manager = manager or ExperimentManager()
        self._lock = threading.Lock()
        self._active_experiment: Experiment | None = None
        self._active_recorder: Recorder | None = None

    @property
    def uri(self) -> str:
        """The tracking URI in force."""
        return self.manager.uri

    # ---- runs
    def start_exp(self, experiment_name: str | None = None, recorder_name: str | None = None,
                  resume: bool = False, *, experiment_id: str | None = None,
                  recorder_id: str | None = None) -> Recorder:
        """Start (or resume) a run and make it the active one; pair with :meth:`end_exp`.

        Args:
            experiment_name: Experiment, created if missing; ``None`` means the default one.
            recorder_name: Run name.
            resume: Reuse the newest run with this name/id (created if missing)
                instead of always creating a new one.
            experiment_id: Experiment by id instead of name.
            recorder_id: Resume this run (implies ``resume``).

        Returns:
            The running recorder.

        Raises:
            RecorderError: When a run is already active.
        """
        with self._lock:
            if self._active_recorder is not None:
                raise RecorderError(
                    f"{self._active_recorder!r} is still active; end it before starting another")
            experiment = self.manager.get_exp(experiment_name, create=experiment_id is None,
                                              experiment_id=experiment_id)
            if resume or recorder_id is not None:
                recorder = experiment.get_recorder(recorder_id, recorder_name, create=True)
                recorder.start_run()
            else:
                recorder = experiment.create_recorder(recorder_name)
            self._active_experiment, self._active_recorder = experiment, recorder
            return recorder

    def end_exp(self, recorder_status: str = Recorder.STATUS_FINISHED) -> None:
        """End the active run with ``recorder_status``; does nothing when none is active."""
        with self._lock:
            recorder, self._active_recorder = self._active_recorder, None
            self._active_experiment = None
        if recorder is not None:
            recorder.end_run(recorder_status)

    @contextlib.contextmanager
    def start(self, experiment_name: str | None = None, recorder_name: str | None = None,
              resume: bool = False, *, experiment_id: str | None = None,
              recorder_id: str | None = None) -> Iterator[Recorder]:
        """Run a block inside a new (or resumed) run.

        The run ends ``FINISHED``; ``FAILED`` when the block raises an exception
        (re-raised), ``KILLED`` on ``KeyboardInterrupt``/``SystemExit``.

        Yields:
            The active recorder.

        Raises:
            RecorderError: When a run is already active.
        """
        recorder = self.start_exp(experiment_name, recorder_name, resume,
                                  experiment_id=experiment_id, recorder_id=recorder_id)
        try:
            yield recorder
        except Exception:
            self.end_exp(Recorder.STATUS_FAILED)
            raise
        except BaseException:
            self.end_exp(Recorder.STATUS_KILLED)
            raise
        self.end_exp(Recorder.STATUS_FINISHED)

    def _require_active(self) -> Recorder:
        recorder = self._active_recorder
        if recorder is None:
            raise RecorderError("no active run; use `with R.start(...)` first")
        return recorder

    # ---- experiments and recorders
    def get_exp(self, experiment_name: str | None = None, create: bool = True, *,
                experiment_id: str | None = None) -> Experiment:
        """Return an experiment: by id/name, else the active one, else the default one.

        Raises:
            RecorderError: When it does not exist and ``create`` is false.
        """
        if experiment_name is None and experiment_id is None and self._active_experiment:
            return self._active_experiment
        return self.manager.get_exp(experiment_name, create, experiment_id=experiment_id)

    def list_experiments(self) -> dict[str, Experiment]:
        """Return the live experiments as ``{name: Experiment}``."""
        return self.manager.list_experiments()

    def delete_exp(self, experiment_name: str | None = None, *,
                   experiment_id: str | None = None) -> None:
        """Delete an experiment and its runs (MLflow soft delete)."""
        self.manager.delete_exp(experiment_name, experiment_id=experiment_id)

    def get_recorder(self, recorder_id: str | None = None, recorder_name: str | None = None,
                     experiment_name: str | None = None, *,
                     experiment_id: str | None = None) -> Recorder:
        """Return a recorder: the active one when nothing is named, else by id or name.

        A ``recorder_id`` alone is looked up in the whole store.

        Raises:
            RecorderError: When nothing matches.
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
                       experiment_id: str | None = ...) -> dict[str, Recorder]: ...

    @overload
    def list_recorders(self, experiment_name: str | None, rtype: Literal["list"],
                       status: str | Iterable[str] | None = ..., filter_string: str = ..., *,
                       experiment_id: str | None = ...) -> list[Recorder]: ...

    def list_recorders(self, experiment_name: str | None = None,
                       rtype: Literal["dict", "list"] = "dict",
                       status: str | Iterable[str] | None = None, filter_string: str = "", *,
                       experiment_id: str | None = None) -> dict[str, Recorder] | list[Recorder]:
        """List recorders of an experiment; see :meth:`Experiment.list_recorders`.

        Raises:
            RecorderError: When the experiment does not exist.
        """
        experiment = self.get_exp(experiment_name, create=False, experiment_id=experiment_id)
        if rtype == "list":
            return experiment.list_recorders("list", status, filter_string)
        return experiment.list_recorders("dict", status, filter_string)

    def delete_recorder(self, recorder_id: str) -> None:
        """Delete a run by id (MLflow soft delete)."""
        client = self.manager.client
        call_mlflow(lambda: client.delete_run(recorder_id), f"delete run {recorder_id}")

    # ---- the active run
    def log_params(self, **params: Any) -> None:
        """Log params to the active run."""
        self._require_active().log_params(**params)

    def log_metrics(self, step: int | None = None, **metrics: float) -> None:
        """Log metrics to the active run."""
        self._require_active().log_metrics(step, **metrics)

    def set_tags(self, **tags: Any) -> None:
        """Set tags on the active run."""
        self._require_active().set_tags(**tags)

    def save_objects(self, local_path: str | os.PathLike[str] | None = None,
                     artifact_path: str | None = None, **objects: Any) -> None:
        """Save files/pickled objects to the active run; see :meth:`Recorder.save_objects`."""
        self._require_active().save_objects(local_path, artifact_path, **objects)

    def load_object(self, name: str) -> Any:
        """Load a pickled artifact of the active run."""
        return self._require_active().load_object(name)


#: The process-wide facade, like ``qlib.workflow.R``.
R = RecorderFacade()
