"""Process-wide settings: where the task pool and the experiment store live.

There is exactly one settings object, :data:`settings`, changed only through
:func:`init`. Values come from the arguments of :func:`init`, else from the
environment (``TASKROLL_TASK_URL``, ``TASKROLL_TASK_DB_NAME``,
``TASKROLL_TRACKING_URI``), else from defaults that keep everything in the
working directory: ``sqlite:///taskroll.db`` for tasks and
``sqlite:///mlruns.db`` for MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_TASK_DB_NAME = "taskroll"
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Settings:
    """Resolved taskroll settings.

    Attributes:
        task_url: Store URL: ``sqlite:///path``, ``mongodb://...`` or ``postgresql://...``.
            ``None`` means the SQLite file ``taskroll.db`` in the working directory.
        task_db_name: Database name used by MongoDB (as Qlib's ``task_db_name``).
        tracking_uri: MLflow tracking URI; ``None`` means ``sqlite:///mlruns.db`` in the
            working directory.
        artifact_root: Where MLflow artifacts of new experiments go; ``None`` means
            ``mlruns/`` beside the tracking database.
        lease_seconds: How long a fetched task stays claimed without a heartbeat.
        max_attempts: Fetches (including crashed ones) after which a task is ``failed``.
    """

    task_url: str | None = None
    task_db_name: str = DEFAULT_TASK_DB_NAME
    tracking_uri: str | None = None
    artifact_root: str | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    extra: dict[str, object] = field(default_factory=dict)

    def resolved_task_url(self) -> str:
        """Return the task store URL, defaulting to ``taskroll.db`` in the working directory."""
        if self.task_url:
            return self.task_url
        return f"sqlite:///{Path.cwd() / 'taskroll.db'}"

    def resolved_tracking_uri(self) -> str:
        """Return the MLflow tracking URI, defaulting to ``mlruns.db`` in the working directory."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def _from_environment() -> Settings:
    lease = os.environ.get("TASKROLL_LEASE_SECONDS")
    attempts = os.environ.get("TASKROLL_MAX_ATTEMPTS")
    return Settings(
        task_url=os.environ.get("TASKROLL_TASK_URL") or None,
        task_db_name=os.environ.get("TASKROLL_TASK_DB_NAME") or DEFAULT_TASK_DB_NAME,
        tracking_uri=os.environ.get("TASKROLL_TRACKING_URI") or None,
        artifact_root=os.environ.get("TASKROLL_ARTIFACT_ROOT") or None,
        lease_seconds=float(lease) if lease else DEFAULT_LEASE_SECONDS,
        max_attempts=int(attempts) if attempts else DEFAULT_MAX_ATTEMPTS,
    )


class _SettingsHolder:
    """Holds the one settings object so :func:`init` can swap it."""

    current: Settings = _from_environment()


def get_settings() -> Settings:
    """Return the settings in force."""
    return _SettingsHolder.current


def init(
    task_url: str | None = None,
    task_db_name: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    lease_seconds: float | None = None,
    max_attempts: int | None = None,
    **extra: object,
) -> Settings:
    """Set where tasks and experiments are stored (like ``qlib.init(mongo={...})``).

    Arguments left ``None`` keep their current value (environment or default).
    Environment variables are exported too, so worker processes started
    afterwards (``force_release``, ``taskroll worker``) see the same stores.

    Args:
        task_url: Task store URL (``sqlite:///...``, ``mongodb://...``, ``postgresql://...``).
        task_db_name: MongoDB database name.
        tracking_uri: MLflow tracking URI.
        artifact_root: Artifact location for new experiments.
        lease_seconds: Lease length for fetched tasks.
        max_attempts: Attempts before a task is marked ``failed``.
        **extra: Kept in ``Settings.extra`` for extensions.

    Returns:
        The new settings.
    """
    current = _SettingsHolder.current
    updated = replace(
        current,
        task_url=task_url if task_url is not None else current.task_url,
        task_db_name=task_db_name if task_db_name is not None else current.task_db_name,
        tracking_uri=tracking_uri if tracking_uri is not None else current.tracking_uri,
        artifact_root=artifact_root if artifact_root is not None else current.artifact_root,
        lease_seconds=lease_seconds if lease_seconds is not None else current.lease_seconds,
        max_attempts=max_attempts if max_attempts is not None else current.max_attempts,
        extra={**current.extra, **extra},
    )
    _SettingsHolder.current = updated
    exported = {
        "TASKROLL_TASK_URL": updated.task_url,
        "TASKROLL_TASK_DB_NAME": updated.task_db_name,
        "TASKROLL_TRACKING_URI": updated.tracking_uri,
        "TASKROLL_ARTIFACT_ROOT": updated.artifact_root,
        "TASKROLL_LEASE_SECONDS": str(updated.lease_seconds),
        "TASKROLL_MAX_ATTEMPTS": str(updated.max_attempts),
    }
    for name, value in exported.items():
        if value:
            os.environ[name] = value
    return updated
