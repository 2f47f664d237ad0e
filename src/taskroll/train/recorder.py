"""Recorders (MLflow runs) and the one boundary between taskroll and MLflow.

Nothing here is custom storage: experiments are MLflow experiments, recorders are
MLflow runs, objects are pickled files among the run's artifacts, so a store is
browsable with the standard UI (``pip install "taskroll[ui]"``, then
``mlflow ui --backend-store-uri sqlite:///mlruns.db``). ``R``, ``Experiment`` and
``ExperimentManager`` live in :mod:`taskroll.train.experiment` and are re-exported here.

Two MLflow behaviours are worked around:

* MLflow's SQL store creates and migrates its schema (alembic) when a process first
  opens a fresh database, with no inter-process lock: two processes doing so at once
  fail ("table already exists", half-applied revisions). :func:`open_client` opens
  each store under a file lock beside the database (``mlruns.db.lock``).
* SQLite has one writer at a time; writers can still get "database is locked"
  despite MLflow's busy timeout. :func:`call_mlflow` retries those with backoff and
  translates every other failure into :class:`~taskroll.errors.RecorderError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from taskroll.errors import RecorderError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from taskroll.train.experiment import Experiment as Experiment
    from taskroll.train.experiment import ExperimentManager as ExperimentManager
    from taskroll.train.experiment import R as R
    from taskroll.train.experiment import RecorderFacade as RecorderFacade

#: Names re-exported lazily from :mod:`taskroll.train.experiment` (it imports this module).
_FROM_EXPERIMENT = ("R", "Experiment", "ExperimentManager", "RecorderFacade")


def __getattr__(name: str) -> Any:
    if name in _FROM_EXPERIMENT:
        from taskroll.train import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ResultType = TypeVar("ResultType")
_logger = logging.getLogger(__name__)

#: Messages (anywhere in an exception chain) that mean "SQLite is busy, try again".
_RETRYABLE_MESSAGES = ("database is locked", "database table is locked",
                       "database schema is locked")
_MAX_ATTEMPTS = 12
_FIRST_DELAY_SECONDS = 0.05
_MAX_DELAY_SECONDS = 2.0

#: MLflow run statuses, also available as ``Recorder.STATUS_*``.
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def _is_retryable(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if any(message in text for message in _RETRYABLE_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def call_mlflow(operation: Callable[[], ResultType], what: str) -> ResultType:
    """Run one MLflow operation, retrying SQLite lock contention, translating failures.

    Args:
        operation: A zero-argument callable doing one MLflow call (one transaction),
            safe to repeat when it failed with "database is locked".
        what: Short description used in the error message ("create run in experiment 3").

    Returns:
        Whatever ``operation`` returns.

    Raises:
        RecorderError: When the operation fails for another reason, or is still
            locked out after about 15 seconds of retries. The MLflow exception is
            chained as ``__cause__``; its ``error_code`` is copied to ``error.error_code``.
    """
    delay = _FIRST_DELAY_SECONDS
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            return operation()
        except RecorderError:
            raise
        except Exception as error:
            if _is_retryable(error) and attempt < _MAX_ATTEMPTS:
                _logger.debug("SQLite busy during %s (attempt %d), retrying", what, attempt)
                # Jitter keeps two workers that collided from colliding again in lockstep.
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_DELAY_SECONDS)
                continue
            recorder_error = RecorderError(f"MLflow failed to {what}: {error}")
            code = getattr(error, "error_code", None)
            recorder_error.error_code = code if isinstance(code, str) else None  # type: ignore[attr-defined]
            raise recorder_error from error
    raise AssertionError("unreachable")  # pragma: no cover


def is_missing(error: RecorderError) -> bool:
    """Return whether a :class:`RecorderError` from :func:`call_mlflow` means "does not exist"."""
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def is_duplicate(error: RecorderError) -> bool:
    """Return whether a :class:`RecorderError` from :func:`call_mlflow` means "already exists"."""
    return getattr(error, "error_code", None) == "RESOURCE_ALREADY_EXISTS"


# --------------------------------------------------------------------------- store opening


def sqlite_path(tracking_uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` tracking URI, or ``None`` for other URIs."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve()


def _lock_path(tracking_uri: str) -> Path | None:
    database = sqlite_path(tracking_uri)
    if database is not None:
        return database.with_name(database.name + ".lock")
    scheme = urlparse(tracking_uri).scheme.split("+")[0]
    if scheme in {"postgresql", "mysql", "mssql"}:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"taskroll-mlflow-{digest}.lock"
    return None  # file stores and tracking servers initialise themselves


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created if missing) while inside.

    Args:
        path: The lock file.

    Yields:
        Nothing; the lock is held until the block exits.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    handle.seek(0)
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _ClientCache:
    """One :class:`MlflowClient` per tracking URI per process, opened under the init lock."""

    lock = threading.Lock()
    clients: dict[str, MlflowClient] = {}
    engines: list[Any] = []
    owner_pid = os.getpid()


def _forget_inherited_connections() -> None:
    # A forked child inherits the parent's pooled SQLite connections; using them from two
    # processes corrupts state. SQLAlchemy's recipe: drop (not close) them in the child.
    for engine in _ClientCache.engines:
        with contextlib.suppress(Exception):
            engine.dispose(close=False)
    _ClientCache.engines = []
    _ClientCache.clients = {}
    _ClientCache.owner_pid = os.getpid()


def open_client(tracking_uri: str) -> MlflowClient:
    """Return this process's MLflow client for ``tracking_uri``, initialising the store safely.

    The first use of a URI in a process builds MLflow's tracking store, which creates
    or migrates a fresh database; that happens under an inter-process file lock
    beside the SQLite file (or in the temp dir for other SQL databases).

    Args:
        tracking_uri: Any MLflow tracking URI (``sqlite:///...``, ``postgresql://...``,
            ``file:...``, ``http://...``).

    Returns:
        A ready :class:`mlflow.tracking.MlflowClient`.

    Raises:
        RecorderError: When the store cannot be opened.
    """
    with _ClientCache.lock:
        if _ClientCache.owner_pid != os.getpid():
            _forget_inherited_connections()
        client = _ClientCache.clients.get(tracking_uri)
        if client is not None:
            return client
        from mlflow.tracking import MlflowClient

        lock_path = _lock_path(tracking_uri)
        lock = file_lock(lock_path) if lock_path is not None else contextlib.nullcontext()
        with lock:
            # Building the client builds the store (MLflow 3 does it in the constructor,
            # older versions on first use): schema creation and alembic upgrades run here.
            client = call_mlflow(lambda: MlflowClient(tracking_uri=tracking_uri),
                                 f"open the tracking store {tracking_uri}")
            call_mlflow(lambda: client.search_experiments(max_results=1),
                        f"open the tracking store {tracking_uri}")
        engine = getattr(getattr(client, "_tracking_client", None), "store", None)
        engine = getattr(engine, "engine", None)
        if engine is not None:
            _ClientCache.engines.append(engine)
        _ClientCache.clients[tracking_uri] = client
        return client


def local_directory(artifact_uri: str) -> Path | None:
    """Return the local directory of a plain path or ``file:`` URI, else ``None``."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and sys.platform == "win32"):
        return Path(artifact_uri)
    return None


def _check_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise RecorderError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
    return status


def _chunks(items: Sequence[ResultType], size: int) -> Iterator[Sequence[ResultType]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- Recorder


class Recorder:
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
        if run is None:
            client = self.client
            run = call_mlflow(lambda: client.get_run(run_id), f"get run {run_id}")
        self._id: str = run.info.run_id
        self._name: str = run.info.run_name or ""
        self._experiment_id: str = run.info.experiment_id
        self._artifact_uri: str = run.info.artifact_uri or ""

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
        """Run description: ``class``, ``id``, ``name``, ``experiment_id``, times and status."""
        run = self._fetch()
        return {
            "class": type(self).__name__,
            "id": self._id,
            "name": self._name,
            "experiment_id": self._experiment_id,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "status": run.info.status,
            "artifact_uri": self._artifact_uri,
        }

    def _fetch(self) -> Run:
        client, run_id = self.client, self._id
        return call_mlflow(lambda: client.get_run(run_id), f"get run {run_id}")

    #: Tag under which :mod:`taskroll.store.codec` stores a recorder as plain JSON, so a
    #: task pool can hold trained recorders without pickle.
    __taskroll_reference__ = "recorder"

    def to_reference(self) -> dict[str, str]:
        """Return the JSON-compatible reference (run id and tracking URI) of this recorder."""
        return {"run_id": self._id, "tracking_uri": self.tracking_uri}

    @classmethod
    def from_reference(cls, reference: dict[str, str]) -> Recorder:
        """Rebuild a recorder from :meth:`to_reference` output."""
        return cls(reference["run_id"], reference.get("tracking_uri"))

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

        Returns:
            This recorder.
        """
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

    def load_object(self, name: str) -> Any:
        """Unpickle the artifact ``name`` (e.g. ``"pred.pkl"``, ``"sig_analysis/ic.pkl"``).

        Only load artifacts from stores you trust: this runs :func:`pickle.load`.

        Raises:
            RecorderError: When the artifact does not exist or cannot be unpickled.
        """
        local = local_directory(self._artifact_uri)
        if local is not None:
            return self._unpickle(local / name, name)
        client, run_id = self.client, self._id
        with tempfile.TemporaryDirectory(prefix="taskroll-download-") as staging:
            path = call_mlflow(lambda: client.download_artifacts(run_id, name, staging),
                               f"download artifact {name!r} of {run_id}")
            return self._unpickle(Path(path), name)

    def _unpickle(self, path: Path, name: str) -> Any:
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
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
