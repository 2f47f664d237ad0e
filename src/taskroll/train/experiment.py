"""Experiments, the experiment manager and the ``R`` facade (Qlib's ``qlib.workflow.R``).

An :class:`Experiment` is an MLflow experiment; :class:`ExperimentManager` finds,
creates and deletes experiments of one tracking store (by default the store
configured with :func:`taskroll.init`, read at each use); :data:`R` is the
process-wide facade with the active run::

    from taskroll.train.recorder import R

    with R.start(experiment_name="rolling", recorder_name="linear"):
        R.log_params(alpha=0.1)
        R.save_objects(**{"pred.pkl": pred})

All MLflow calls go through :func:`taskroll.train.recorder.call_mlflow`, which
retries SQLite lock contention and raises :class:`~taskroll.errors.RecorderError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload

from taskroll.config import get_settings
from taskroll.errors import RecorderError
from taskroll.store.urls import mask_url
from taskroll.train.process import process_tags
from taskroll.train.recorder import Recorder
from taskroll.train.tracking import (
    call_mlflow,
    is_duplicate,
    is_missing,
    local_directory,
    open_client,
    sqlite_path,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT_NAME = "Experiment"


def _filter_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise RecorderError(f"a recorder name cannot contain both quote characters: {value!r}")


class Experiment:
    """One MLflow experiment: a named collection of recorders (Qlib's ``MLflowExperiment``).

    Args:
        experiment_id: MLflow experiment id.
        name: Experiment name.
        tracking_uri: Store holding it.
    """

    def __init__(self, experiment_id: str, name: str, tracking_uri: str):
        self._id = experiment_id
        self._name = name
        self.tracking_uri = tracking_uri

    @property
    def id(self) -> str:
        """The MLflow experiment id."""
        return self._id

    @property
    def name(self) -> str:
        """The experiment name."""
        return self._name

    @property
    def client(self) -> MlflowClient:
        """The MLflow client of this experiment's store."""
        return open_client(self.tracking_uri)

    @property
    def info(self) -> dict[str, Any]:
        """Description: ``class``, ``id``, ``name``, ``artifact_location``, ``recorders`` (ids)."""
        client, experiment_id = self.client, self._id
        found = call_mlflow(lambda: client.get_experiment(experiment_id),
                            f"get experiment {experiment_id}")
        return {
            "class": type(self).__name__,
            "id": self._id,
            "name": self._name,
            "artifact_location": found.artifact_location,
            "lifecycle_stage": found.lifecycle_stage,
            "recorders": list(self.list_recorders(rtype="dict")),
        }

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Experiment) and other._id == self._id
                and other.tracking_uri == self.tracking_uri)

    def __hash__(self) -> int:
        return hash((self._id, self.tracking_uri))

    def __repr__(self) -> str:
        return f"Experiment(id={self._id!r}, name={self._name!r})"

    def create_recorder(self, recorder_name: str | None = None) -> Recorder:
        """Create a new run (status ``RUNNING``) in this experiment.

        The run is tagged with this process's identity as it is created
        (:func:`taskroll.train.process.process_tags`), so a run whose process dies
        is found interrupted whatever point the process reached.

        Args:
            recorder_name: Run name; ``None`` lets MLflow pick a readable one.

        Returns:
            The new recorder.
        """
        client, experiment_id = self.client, self._id
        tags = process_tags()
        run = call_mlflow(lambda: client.create_run(experiment_id, run_name=recorder_name,
                                                    tags=tags),
                          f"create a run in experiment {self._name!r}")
        return Recorder(run.info.run_id, self.tracking_uri, run=run)

    def get_recorder(self, recorder_id: str | None = None, recorder_name: str | None = None,
                     create: bool = False) -> Recorder:
        """Return a recorder by id, else the newest one with ``recorder_name``.

        Args:
            recorder_id: Run id (wins over the name).
            recorder_name: Run name; the most recently started match is returned.
            create: Create a recorder named ``recorder_name`` when none matches
                (or a fresh unnamed one when neither id nor name is given).

        Returns:
            The recorder.

        Raises:
            RecorderError: When nothing matches and ``create`` is false, or the id
                belongs to another experiment.
        """
        client = self.client
        if recorder_id is not None:
            try:
                run = call_mlflow(lambda: client.get_run(recorder_id), f"get run {recorder_id}")
            except RecorderError as error:
                if is_missing(error) and create:
                    return self.create_recorder(recorder_name)
                raise
            if run.info.experiment_id != self._id:
                raise RecorderError(
                    f"run {recorder_id} belongs to experiment {run.info.experiment_id}, "
                    f"not {self._name!r} ({self._id})")
            return Recorder(recorder_id, self.tracking_uri, run=run)
        if recorder_name is not None:
            filter_string = f"attributes.run_name = {_filter_literal(recorder_name)}"
            found = self.list_recorders(rtype="list", filter_string=filter_string)
            if found:
                return found[0]
        if create:
            return self.create_recorder(recorder_name)
        raise RecorderError(
            f"no recorder with name {recorder_name!r} in experiment {self._name!r}"
            if recorder_name is not None
            else "give recorder_id or recorder_name (or create=True)")

    @overload
    def list_recorders(self, rtype: Literal["dict"] = ..., status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> dict[str, Recorder]: ...

    @overload
    def list_recorders(self, rtype: Literal["list"], status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> list[Recorder]: ...

    def list_recorders(self, rtype: Literal["dict", "list"] = "dict",
                       status: str | Iterable[str] | None = None,
                       filter_string: str = "") -> dict[str, Recorder] | list[Recorder]:
        """List the active (not deleted) recorders, newest first.

        Args:
            rtype: ``"dict"`` for ``{run_id: Recorder}`` (Qlib's ``RT_D``), ``"list"`` for a list.
            status: Keep only runs with this status (or any of these statuses).
            filter_string: An MLflow search filter, e.g. ``"params.model = 'linear'"``
                or ``"tags.train_status = 'done'"``.

        Returns:
            The recorders, as a dict or list.

        Raises:
            RecorderError: For a malformed filter or a store failure.
        """
        if rtype not in ("dict", "list"):
            raise RecorderError(f"rtype must be 'dict' or 'list', got {rtype!r}")
        wanted = {status} if isinstance(status, str) else set(status) if status else None
        client, experiment_id = self.client, self._id
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = call_mlflow(
                partial(client.search_runs, [experiment_id], filter_string=filter_string,
                        max_results=1000, page_token=token,
                        order_by=["attributes.start_time DESC"]),
                f"search runs of experiment {self._name!r}")
            runs.extend(page)
            token = page.token
            if not token:
                break
        recorders = [Recorder(run.info.run_id, self.tracking_uri, run=run) for run in runs
                     if wanted is None or run.info.status in wanted]
        if rtype == "list":
            return recorders
        return {recorder.id: recorder for recorder in recorders}

    def delete_recorder(self, recorder_id: str) -> None:
        """Delete a run (MLflow soft delete: hidden from listings, removed by ``mlflow gc``)."""
        client = self.client
        call_mlflow(lambda: client.delete_run(recorder_id), f"delete run {recorder_id}")


def experiment_artifact_location(tracking_uri: str, root: str | None, name: str) -> str | None:
    """Return the artifact location for a new experiment ``name``.

    Args:
        tracking_uri: The store.
        root: Configured artifact root; ``None`` means ``mlruns/`` beside a SQLite
            database, and for other stores lets MLflow decide (returns ``None``).
        name: The experiment name, made filesystem-safe for the folder name.
    """
    if root is None:
        database = sqlite_path(tracking_uri)
        if database is None:
            return None
        root = str(database.parent / "mlruns")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    local = local_directory(root)
    return str(local.resolve() / slug) if local is not None else f"{root.rstrip('/')}/{slug}"


class ExperimentManager:
    """The experiments of one MLflow tracking store (Qlib's ``MLflowExpManager``).

    Args:
        tracking_uri: The store; ``None`` means ``get_settings().resolved_tracking_uri()``
            read at every use, so :func:`taskroll.init` and ``TASKROLL_TRACKING_URI`` apply.
        default_experiment_name: Experiment used when a call names none.
        artifact_root: Artifact root for new experiments; ``None`` means
            ``Settings.artifact_root``, else ``mlruns/`` beside a SQLite database.
    """

    def __init__(self, tracking_uri: str | None = None,
                 default_experiment_name: str = DEFAULT_EXPERIMENT_NAME,
                 artifact_root: str | None = None):
        self._tracking_uri = tracking_uri
        self.default_experiment_name = default_experiment_name
        self._artifact_root = artifact_root

    @property
    def uri(self) -> str:
        """The tracking URI in force."""
        return self._tracking_uri or get_settings().resolved_tracking_uri()

    @property
    def client(self) -> MlflowClient:
        """This process's MLflow client for :attr:`uri`."""
        return open_client(self.uri)

    def _wrap(self, found: Any) -> Experiment:
        return Experiment(found.experiment_id, found.name, self.uri)

    def _find(self, experiment_id: str | None, experiment_name: str | None) -> Any:
        client = self.client
        found: Any
        if experiment_id is not None:
            try:
                found = call_mlflow(lambda: client.get_experiment(experiment_id),
                                    f"get experiment {experiment_id}")
            except RecorderError as error:
                if is_missing(error):
                    return None
                raise
        else:
            name = experiment_name or self.default_experiment_name
            found = call_mlflow(lambda: client.get_experiment_by_name(name),
                                f"get experiment {name!r}")
        if found is None or found.lifecycle_stage == "deleted":
            return None
        return found

    def create_exp(self, experiment_name: str | None = None) -> Experiment:
        """Create an experiment.

        Raises:
            RecorderError: When the name is taken (by a live or a deleted experiment).
        """
        name = experiment_name or self.default_experiment_name
        client = self.client
        root = self._artifact_root or get_settings().artifact_root
        location = experiment_artifact_location(self.uri, root, name)
        experiment_id = call_mlflow(lambda: client.create_experiment(name, location),
                                    f"create experiment {name!r}")
        return Experiment(experiment_id, name, self.uri)

    def get_exp(self, experiment_name: str | None = None, create: bool = True, *,
                experiment_id: str | None = None) -> Experiment:
        """Return an experiment by id or name, creating it by name when allowed.

        Safe against concurrent creators: when another process creates the same
        name first, its experiment is returned.

        Args:
            experiment_name: Name; ``None`` means the default experiment.
            create: Create a missing experiment (not possible by id).
            experiment_id: Id (wins over the name).

        Returns:
            The experiment.

        Raises:
            RecorderError: When it does not exist and cannot be created, e.g. its
                name belongs to a deleted experiment (restore it in the MLflow UI
                or remove it for good with ``mlflow gc``).
        """
        found = self._find(experiment_id, experiment_name)
        if found is not None:
            return self._wrap(found)
        if not create or experiment_id is not None:
            wanted = experiment_id or experiment_name or self.default_experiment_name
            raise RecorderError(f"no experiment {wanted!r} in {mask_url(self.uri)}")
        try:
            return self.create_exp(experiment_name)
        except RecorderError as error:
            if not is_duplicate(error):
                raise
            winner = self._find(None, experiment_name)  # lost a creation race: use the winner's
            if winner is None:
                raise RecorderError(
                    f"experiment {experiment_name!r} was deleted; restore it with "
                    "`mlflow experiments restore` or purge it with `mlflow gc` first") from error
            return self._wrap(winner)

    def list_experiments(self) -> dict[str, Experiment]:
        """Return the live experiments as ``{name: Experiment}``."""
        client = self.client
        experiments: dict[str, Experiment] = {}
        token: str | None = None
        while True:
            page = call_mlflow(partial(client.search_experiments, max_results=1000,
                                       page_token=token), "list experiments")
            for found in page:
                experiments[found.name] = self._wrap(found)
            token = page.token
            if not token:
                return experiments

    def delete_exp(self, experiment_name: str | None = None, *,
                   experiment_id: str | None = None) -> None:
        """Delete an experiment and its runs (MLflow soft delete).

        Raises:
            RecorderError: When it does not exist.
        """
        experiment = self.get_exp(experiment_name, create=False, experiment_id=experiment_id)
        client = self.client
        call_mlflow(lambda: client.delete_experiment(experiment.id),
                    f"delete experiment {experiment.name!r}")


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
