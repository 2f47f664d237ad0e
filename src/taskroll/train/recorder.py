"""Recorders: MLflow runs (Qlib's ``MLflowRecorder``).

Nothing here is custom storage: experiments are MLflow experiments, recorders are
MLflow runs, objects are pickled files among the run's artifacts, so a store is
browsable with the standard UI (``pip install "taskroll[ui]"``, then
``mlflow ui --backend-store-uri sqlite:///mlruns.db``). ``R``, ``Experiment`` and
``ExperimentManager`` are imported from :mod:`taskroll.train.experiment`; the
experiment modules import this one, never the reverse.

The two MLflow behaviours worked around (schema creation racing between processes,
SQLite lock contention) are handled in :mod:`taskroll.train.tracking`, through which
every MLflow call here goes.

Recorders in task pools: a pool holds only an inert
:class:`~taskroll.store.references.RecorderReference` (run id, credential-free URI).
:meth:`Recorder.from_reference` (and :func:`as_recorder`) make it live, only for the
configured tracking store or one in ``TASKROLL_ALLOWED_TRACKING_URIS``.

Unpickling artifacts: :meth:`Recorder.load_object` runs :func:`pickle.load`. A recorder
built by this process, or resolved from a reference to the *configured* tracking store,
is ours and loads freely (this keeps ``pred.pkl``/``task`` loading in trainers and
collectors working). A recorder resolved from a reference to any other (allowlisted)
store loads pickles only with the pool's opt-in, ``allow_pickle=True`` (the same flag
that lets a :class:`~taskroll.manage.TaskManager` unpickle pool values).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskroll.errors import RecorderError
from taskroll.store.references import RecorderReference, strip_credentials
from taskroll.store.urls import mask_url
from taskroll.train.process import process_tags
from taskroll.train.recorder_qlib import QlibRecorderMethods, format_run_time
from taskroll.train.tracking import (
    _check_status,
    _chunks,
    call_mlflow,
    local_directory,
    open_client,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


#: Name of a run started without one, as Qlib's ``MLflowExperiment`` names it.
DEFAULT_RECORDER_NAME = "mlflow_recorder"


class Recorder(QlibRecorderMethods):
    """One MLflow run: params, metrics, tags and pickled artifacts (Qlib's ``MLflowRecorder``).

    A recorder is a light handle (tracking URI + run id); it pickles cheaply and
    can be sent to worker processes. Equality and hashing use the run id.

    Args:
        run_id: The MLflow run id.
        tracking_uri: Store holding the run; ``None`` means the configured store.
        run: An already fetched ``mlflow.entities.Run`` (saves one query).

    Raises:
        RecorderError: When the run does not exist or the store fails.
    """

    STATUS_RUNNING = "RUNNING"
    STATUS_SCHEDULED = "SCHEDULED"
    STATUS_FINISHED = "FINISHED"
    STATUS_FAILED = "FAILED"
    STATUS_KILLED = "KILLED"
    # Qlib's spellings, so code written against qlib.workflow keeps working.
    STATUS_R = STATUS_RUNNING
    STATUS_S = STATUS_SCHEDULED
    STATUS_FI = STATUS_FINISHED
    STATUS_FA = STATUS_FAILED

    def __init__(self, run_id: str, tracking_uri: str | None = None, run: Run | None = None):
        if tracking_uri is None:
            from taskroll.config import get_settings

            tracking_uri = get_settings().resolved_tracking_uri()
        self.tracking_uri = tracking_uri
        #: Whether :meth:`load_object` may unpickle this run's artifacts (see the module doc).
        self.allow_pickle = True
        if run is None:
            client = self.client
            run = call_mlflow(lambda: client.get_run(run_id), f"get run {run_id}")
        self._id: str = run.info.run_id
        self._name: str = run.info.run_name or ""
        self._experiment_id: str = run.info.experiment_id
        self._artifact_uri: str = run.info.artifact_uri or ""
        self._snapshot: Run = run

    # ---- identity
    @property
    def client(self) -> MlflowClient:
        """The MLflow client of this recorder's store (shared per process and URI)."""
        return open_client(self.tracking_uri)

    @property
    def id(self) -> str:
        """The MLflow run id."""
        return self._id

    @property
    def name(self) -> str:
        """The run name shown in the MLflow UI."""
        return self._name

    @property
    def experiment_id(self) -> str:
        """Id of the experiment holding the run."""
        return self._experiment_id

    @property
    def artifact_uri(self) -> str:
        """Root URI of the run's artifacts."""
        return self._artifact_uri

    @property
    def status(self) -> str:
        """Current MLflow run status (``RUNNING``, ``FINISHED``, ``FAILED``, ...), read fresh."""
        return str(self._fetch().info.status)

    @property
    def info(self) -> dict[str, Any]:
        """Run description: ``class``, ``id``, ``name``, ``experiment_id``, times (Qlib's
        ``"%Y-%m-%d %H:%M:%S"`` strings), ``status`` and ``artifact_uri``."""
        run = self._fetch()
        return {
            "class": type(self).__name__,
            "id": self._id,
            "name": self._name,
            "experiment_id": self._experiment_id,
            "start_time": format_run_time(run.info.start_time),
            "end_time": format_run_time(run.info.end_time),
            "status": run.info.status,
            "artifact_uri": self._artifact_uri,
        }

    @property
    def snapshot_tags(self) -> dict[str, str]:
        """The run's tags when this recorder was built (e.g. by a listing), without a call."""
        return dict(self._snapshot.data.tags)

    @property
    def snapshot_start_time(self) -> int | None:
        """The run's start time (ms since the epoch) when this recorder was built."""
        start: int | None = self._snapshot.info.start_time
        return start

    def _fetch(self) -> Run:
        client, run_id = self.client, self._id
        return call_mlflow(lambda: client.get_run(run_id), f"get run {run_id}")

    #: Tag under which :mod:`taskroll.store.codec` stores a recorder as plain JSON, so a
    #: task pool can hold trained recorders without pickle.
    __taskroll_reference__ = "recorder"

    def to_reference(self) -> dict[str, str | None]:
        """Return the JSON-compatible reference: run id and tracking URI without credentials."""
        return RecorderReference(self._id, self.tracking_uri).to_reference()

    @classmethod
    def from_reference(cls, reference: RecorderReference | dict[str, Any],
                       allow_pickle: bool = False) -> Recorder:
        """Make a live recorder from a pool reference (or :meth:`to_reference` output).

        The reference's URI must be the configured tracking URI or listed in
        ``TASKROLL_ALLOWED_TRACKING_URIS``; the store is opened with this process's own
        URI (its credentials), never with anything read from the pool.

        Args:
            reference: A :class:`~taskroll.store.references.RecorderReference` or its dict.
            allow_pickle: Let :meth:`load_object` unpickle artifacts of a run that is not in
                the configured store (runs there are always loadable).

        Returns:
            The recorder.

        Raises:
            RecorderError: When the store is not allowed (nothing is opened), the
                reference is malformed, or the run does not exist.
        """
        if not isinstance(reference, RecorderReference):
            try:
                reference = RecorderReference.from_payload(reference)
            except ValueError as error:
                raise RecorderError(f"not a recorder reference: {error}") from error
        tracking_uri, configured = resolve_tracking_uri(reference.tracking_uri, reference.run_id)
        recorder = cls(reference.run_id, tracking_uri)
        recorder.allow_pickle = configured or allow_pickle
        return recorder

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recorder) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return (f"Recorder(id={self._id!r}, name={self._name!r}, "
                f"experiment_id={self._experiment_id!r})")

    # ---- lifecycle
    def start_run(self) -> Recorder:
        """Mark the run ``RUNNING`` (new runs already are; this resumes a finished one).

        The run is tagged with this process's identity first (see
        :mod:`taskroll.train.process`), so a resumed run whose process dies is found.

        Returns:
            This recorder.
        """
        self.set_tags(**process_tags())
        client, run_id = self.client, self._id
        call_mlflow(lambda: client.update_run(run_id, status=self.STATUS_RUNNING),
                    f"start run {run_id}")
        return self

    def end_run(self, status: str = STATUS_FINISHED) -> None:
        """Terminate the run with ``status`` and stamp its end time.

        Raises:
            RecorderError: For an unknown status or a store failure.
        """
        client, run_id = self.client, self._id
        _check_status(status)
        call_mlflow(lambda: client.set_terminated(run_id, status=status), f"end run {run_id}")

    # ---- params, metrics, tags
    def log_params(self, **params: Any) -> None:
        """Log parameters (values stored as strings; MLflow caps a value at 6,000 chars)."""
        from mlflow.entities import Param

        entries = [Param(key, str(value)) for key, value in params.items()]
        self._log_batch(params=entries)

    def log_metrics(self, step: int | None = None, **metrics: float) -> None:
        """Log numeric metrics, all at the same timestamp and ``step`` (0 when ``None``)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), stamp, step or 0) for key, value in metrics.items()]
        self._log_batch(metrics=entries)

    def set_tags(self, **tags: Any) -> None:
        """Set tags (values stored as strings)."""
        from mlflow.entities import RunTag

        self._log_batch(tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def _log_batch(self, params: Sequence[Any] = (), metrics: Sequence[Any] = (),
                   tags: Sequence[Any] = ()) -> None:
        client, run_id = self.client, self._id
        # MLflow limits one batch to 100 params/tags and 1,000 metrics.
        for chunk in _chunks(params, 100):
            call_mlflow(partial(client.log_batch, run_id, params=chunk), f"log params to {run_id}")
        for chunk in _chunks(tags, 100):
            call_mlflow(partial(client.log_batch, run_id, tags=chunk), f"set tags on {run_id}")
        for chunk in _chunks(metrics, 1000):
            call_mlflow(partial(client.log_batch, run_id, metrics=chunk),
                        f"log metrics to {run_id}")

    def list_params(self) -> dict[str, str]:
        """Return all params of the run."""
        return dict(self._fetch().data.params)

    def list_metrics(self) -> dict[str, float]:
        """Return the latest value of every metric of the run."""
        return dict(self._fetch().data.metrics)

    def list_tags(self) -> dict[str, str]:
        """Return all tags of the run, MLflow's ``mlflow.*`` system tags included."""
        return dict(self._fetch().data.tags)

    # ---- artifacts
    def save_objects(self, local_path: str | os.PathLike[str] | None = None,
                     artifact_path: str | None = None, **objects: Any) -> None:
        """Save files and/or pickled objects among the run's artifacts.

        Args:
            local_path: A local file or directory uploaded as is.
            artifact_path: Directory inside the artifacts to write to (``None``: the root).
            **objects: ``name=object`` pairs, each pickled to a file called ``name``
                (e.g. ``**{"pred.pkl": frame}``); a name may contain ``/``.

        Raises:
            RecorderError: When an object cannot be pickled or the upload fails.
        """
        client, run_id = self.client, self._id
        if local_path is not None:
            source = Path(local_path)
            if source.is_dir():
                call_mlflow(lambda: client.log_artifacts(run_id, str(source), artifact_path),
                            f"upload {source} to {run_id}")
            else:
                call_mlflow(lambda: client.log_artifact(run_id, str(source), artifact_path),
                            f"upload {source} to {run_id}")
        if not objects:
            return
        with tempfile.TemporaryDirectory(prefix="taskroll-artifacts-") as staging:
            for name, value in objects.items():
                target = Path(staging) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with target.open("wb") as handle:
                        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError) as error:
                    raise RecorderError(f"cannot pickle artifact {name!r}: {error}") from error
            call_mlflow(lambda: client.log_artifacts(run_id, staging, artifact_path),
                        f"upload objects {sorted(objects)} to {run_id}")

    def load_object(self, name: str, unpickler: type[pickle.Unpickler] = pickle.Unpickler) -> Any:
        """Unpickle the artifact ``name`` (e.g. ``"pred.pkl"``, ``"sig_analysis/ic.pkl"``).

        ``unpickler`` is the :class:`pickle.Unpickler` class to use (Qlib's argument).

        Only load artifacts from stores you trust: this runs :func:`pickle.load`. A recorder
        resolved from a pool reference to a store other than the configured one needs
        ``allow_pickle`` (see the module doc).

        Raises:
            RecorderError: When the artifact does not exist, cannot be unpickled, or the
                recorder may not unpickle.
        """
        if not getattr(self, "allow_pickle", True):  # recorders pickled before it existed
            raise RecorderError(
                f"not unpickling {name!r} of run {self._id}: it came from a task pool reference "
                f"to tracking store {mask_url(strip_credentials(self.tracking_uri))!r}, not this "
                "process's own; "
                "resolve it with allow_pickle=True only if you trust every writer of that store")
        local = local_directory(self._artifact_uri)
        if local is not None:
            return self._unpickle(local / name, name, unpickler)
        client, run_id = self.client, self._id
        with tempfile.TemporaryDirectory(prefix="taskroll-download-") as staging:
            path = call_mlflow(lambda: client.download_artifacts(run_id, name, staging),
                               f"download artifact {name!r} of {run_id}")
            return self._unpickle(Path(path), name, unpickler)

    def _unpickle(self, path: Path, name: str, unpickler: type[pickle.Unpickler]) -> Any:
        try:
            with path.open("rb") as handle:
                return unpickler(handle).load()
        except FileNotFoundError as error:
            raise RecorderError(f"run {self._id} has no artifact {name!r}") from error
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
            raise RecorderError(f"cannot unpickle artifact {name!r} of run {self._id}: "
                                f"{error}") from error

    def list_artifacts(self, artifact_path: str | None = None) -> list[str]:
        """Return the artifact paths directly under ``artifact_path`` (the root when ``None``)."""
        client, run_id = self.client, self._id
        files = call_mlflow(lambda: client.list_artifacts(run_id, artifact_path),
                            f"list artifacts of {run_id}")
        return [entry.path for entry in files]


def as_recorder(value: Recorder | RecorderReference | dict[str, Any],
                allow_pickle: bool = False) -> Recorder:
    """Return ``value`` as a live recorder: recorders unchanged, references resolved.

    Args:
        value: A recorder, or a reference read from a task pool.
        allow_pickle: Passed to :meth:`Recorder.from_reference`.

    Returns:
        The recorder.

    Raises:
        RecorderError: As :meth:`Recorder.from_reference`.
    """
    if isinstance(value, Recorder):
        return value
    return Recorder.from_reference(value, allow_pickle=allow_pickle)
