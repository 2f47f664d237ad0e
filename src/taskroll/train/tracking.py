"""The one boundary between taskroll and MLflow: clients, retries, locks, paths.

Two MLflow behaviours are worked around here:

* MLflow's SQL store creates and migrates its schema (alembic) when a process first
  opens a fresh database, with no inter-process lock: two processes doing so at once
  fail ("table already exists", half-applied revisions). :func:`open_client` opens
  each store under a file lock beside the database (``mlruns.db.lock``), and a
  PostgreSQL store also under an advisory lock in the database, which every machine
  sees (:mod:`taskroll.train.tracking_database`). A new SQLite file gets MLflow's
  schema copied from a ready template instead (:mod:`taskroll.train.tracking_template`).
* SQLite has one writer at a time; writers can still get "database is locked"
  despite MLflow's busy timeout. :func:`call_mlflow` retries those with backoff and
  translates every other failure into :class:`~taskroll.errors.RecorderError`.

Which stores a pool may name: a recorder reference read from a task pool is
resolved by :func:`resolve_tracking_uri` only when its (credential-free) URI is
this process's configured tracking URI (``taskroll.init(tracking_uri=...)`` /
``TASKROLL_TRACKING_URI``) or one listed in ``TASKROLL_ALLOWED_TRACKING_URIS``
(comma separated, read at use time). The credentials used are the reader's own,
from those settings; none ever come from a pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from taskroll.errors import RecorderError, RecorderLookupError
from taskroll.store.urls import mask_url
from taskroll.train.tracking_database import driver_uri, schema_lock, tracking_uri_key
from taskroll.train.tracking_template import seed_sqlite_database

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

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
#: Environment variable listing extra tracking URIs that pool references may name.
ALLOWED_TRACKING_URIS_ENVIRONMENT = "TASKROLL_ALLOWED_TRACKING_URIS"
#: MLflow error codes for a name, id or value the store does not know or refuses.
_LOOKUP_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


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
            code = getattr(error, "error_code", None)
            kind = RecorderLookupError if code in _LOOKUP_CODES else RecorderError
            recorder_error = kind(f"MLflow failed to {what}: {error}")
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
        # hashed without credentials: a temp file name must not let anyone test guesses
        digest = hashlib.sha256(tracking_uri_key(tracking_uri).encode()).hexdigest()[:16]
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
        with lock, schema_lock(tracking_uri):  # the file lock: one machine; schema_lock: all
            # Building the client builds the store (MLflow 3 does it in the constructor,
            # older versions on first use): schema creation and alembic upgrades run here.
            shown = mask_url(tracking_uri)
            seed_sqlite_database(tracking_uri)  # a new SQLite file: MLflow's ready schema
            client = call_mlflow(lambda: MlflowClient(tracking_uri=driver_uri(tracking_uri)),
                                 f"open the tracking store {shown}")
            call_mlflow(lambda: client.search_experiments(max_results=1),
                        f"open the tracking store {shown}")
        engine = getattr(getattr(client, "_tracking_client", None), "store", None)
        engine = getattr(engine, "engine", None)
        if engine is not None:
            _ClientCache.engines.append(engine)
        _ClientCache.clients[tracking_uri] = client
        return client


def configured_tracking_uri() -> str:
    """Return this process's tracking URI (settings), credentials included."""
    from taskroll.config import get_settings

    return get_settings().resolved_tracking_uri()


def allowed_tracking_uris() -> dict[str, str]:
    """Return the tracking stores pool references may name: credential-free URI -> full URI.

    The configured tracking URI comes first; ``TASKROLL_ALLOWED_TRACKING_URIS`` adds more.
    """
    configured = configured_tracking_uri()
    allowed = {tracking_uri_key(configured): configured}
    for item in os.environ.get(ALLOWED_TRACKING_URIS_ENVIRONMENT, "").split(","):
        if item.strip():
            allowed.setdefault(tracking_uri_key(item.strip()), item.strip())
    return allowed


def resolve_tracking_uri(reference_uri: str | None, run_id: str) -> tuple[str, bool]:
    """Map the tracking URI of a pool reference to a store this process may open.

    Args:
        reference_uri: URI read from the pool (``None``: the configured store).
        run_id: The run named, for the error message.

    Returns:
        ``(full URI with this process's credentials, whether it is the configured store)``.

    Raises:
        RecorderError: When the URI is neither the configured one nor allowlisted; the
            message shows it masked and opens nothing.
    """
    configured = configured_tracking_uri()
    if reference_uri is None:
        return configured, True
    key = tracking_uri_key(reference_uri)
    allowed = allowed_tracking_uris()
    if key not in allowed:
        shown = ", ".join(mask_url(uri) for uri in allowed)
        raise RecorderError(
            f"recorder {run_id!r} lives in tracking store {mask_url(key)!r}, which this "
            f"process is not configured for (allowed: {shown}); set TASKROLL_TRACKING_URI "
            f"or add it to {ALLOWED_TRACKING_URIS_ENVIRONMENT} if you trust it")
    return allowed[key], key == tracking_uri_key(configured)


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


