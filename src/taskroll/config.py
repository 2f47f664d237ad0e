"""Process-wide settings: where the task pool and the experiment store live.

There is exactly one settings object, :data:`settings`, changed only through
:func:`init`. Values come from the arguments of :func:`init`, else from the
environment (``TASKROLL_TASK_URL``, ``TASKROLL_TASK_DB_NAME``,
``TASKROLL_TRACKING_URI``, ``TASKROLL_ARTIFACT_ROOT``, ``TASKROLL_LEASE_SECONDS``,
``TASKROLL_MAX_ATTEMPTS``, ``TASKROLL_PROVIDER_URI``, ``TASKROLL_REGION``), else from
defaults that keep everything in the working directory: ``sqlite:///taskroll.db`` for
tasks and ``sqlite:///mlruns.db`` for MLflow, and no data folder. A team shares one
PostgreSQL database for both (``postgresql://...`` and ``postgresql+psycopg://...``, see
:mod:`taskroll.train.tracking_database`) and one artifact folder mounted on every machine.

:func:`init` takes Qlib's names where Qlib has them (``provider_uri``, ``region``,
``mongo={"task_url": ..., "task_db_name": ...}``); an unknown keyword is an error, never
kept and ignored.

Numbers are checked where they enter: :func:`init` and :class:`taskroll.manage.TaskManager`
raise :class:`~taskroll.errors.TaskConfigError` naming the setting and the value. A bad
environment variable is kept as text and reported when the setting is used (by
:meth:`Settings.checked_lease_seconds` / :meth:`Settings.checked_max_attempts`), so it
never breaks ``import taskroll`` or commands that do not need it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from taskroll.config_keywords import unknown_keywords_message
from taskroll.errors import TaskConfigError, TaskrollWarning
from taskroll.task.spec import set_allowed_modules

DEFAULT_TASK_DB_NAME = "taskroll"
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
#: Longest lease accepted: a year. Longer ones overflow date arithmetic in some stores.
MAX_LEASE_SECONDS = 365 * 24 * 3600.0
#: Most attempts accepted (a 32-bit signed integer, what every store can count to).
MAX_ATTEMPTS_LIMIT = 2**31 - 1
#: Qlib regions accepted by :func:`init`, with the exchange calendar each one makes the
#: default trading calendar when no data folder is configured.
REGION_CALENDARS: dict[str, str] = {"cn": "XSHG", "us": "XNYS"}
#: Keys of Qlib's ``mongo`` setting that :func:`init` understands.
MONGO_KEYS: tuple[str, ...] = ("task_url", "task_db_name")
#: Schemes (before ``+driver``) of database servers: their runs need a shared ``artifact_root``.
SERVER_SCHEMES: frozenset[str] = frozenset({"postgresql", "postgres", "mysql", "mssql"})


def check_lease_seconds(value: object, name: str = "lease_seconds") -> float:
    """Return ``value`` as a lease length in seconds, or raise naming ``name``.

    Args:
        value: A number, or its text (from the environment).
        name: The setting's name in the message (an argument or an environment variable).

    Raises:
        TaskConfigError: Unless the value is a finite number in ``(0, MAX_LEASE_SECONDS]``.
    """
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        seconds = float(value)
    except (ValueError, OverflowError):
        raise TaskConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_LEASE_SECONDS:
        raise TaskConfigError(
            f"{name} must be a finite number of seconds > 0 and <= {MAX_LEASE_SECONDS:g}, "
            f"got {value!r}")
    return seconds


def check_max_attempts(value: object, name: str = "max_attempts") -> int:
    """Return ``value`` as a number of attempts, or raise naming ``name``.

    Args:
        value: An integer, or its text (from the environment).
        name: The setting's name in the message.

    Raises:
        TaskConfigError: Unless the value is a whole number in ``[1, MAX_ATTEMPTS_LIMIT]``.
    """
    attempts: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        attempts = value
    elif isinstance(value, str):
        try:
            attempts = int(value.strip())
        except ValueError:
            attempts = None
    if attempts is None or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        raise TaskConfigError(
            f"{name} must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, got {value!r}")
    return attempts


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
        lease_seconds: How long a fetched task stays claimed without a heartbeat (text when
            it came from ``TASKROLL_LEASE_SECONDS``; checked when used).
        max_attempts: Failed attempts after which a task is ``failed`` (text when it came
            from ``TASKROLL_MAX_ATTEMPTS``; checked when used).
        provider_uri: Qlib data folder (Qlib's ``provider_uri``) that handlers without a
            ``data_loader`` read, and whose ``calendars/day.txt`` is the default trading
            calendar; ``None``: no data folder (a handler then needs a ``data_loader``).
        region: Qlib's region, ``"cn"`` or ``"us"`` (``None``: not set). Its one effect:
            without a data folder, the default trading calendar is the region's exchange
            calendar (``XSHG``, ``XNYS``) instead of every weekday.
    """

    task_url: str | None = None
    task_db_name: str = DEFAULT_TASK_DB_NAME
    tracking_uri: str | None = None
    artifact_root: str | None = None
    lease_seconds: float | str = DEFAULT_LEASE_SECONDS
    max_attempts: int | str = DEFAULT_MAX_ATTEMPTS
    provider_uri: str | None = None
    region: str | None = None

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

    def checked_lease_seconds(self) -> float:
        """Return the lease length.

        Raises:
            TaskConfigError: When it is not a finite number of seconds > 0.
        """
        text = isinstance(self.lease_seconds, str)
        return check_lease_seconds(self.lease_seconds,
                                   "TASKROLL_LEASE_SECONDS" if text else "lease_seconds")

    def checked_max_attempts(self) -> int:
        """Return the number of attempts.

        Raises:
            TaskConfigError: When it is not a whole number >= 1.
        """
        text = isinstance(self.max_attempts, str)
        return check_max_attempts(self.max_attempts,
                                  "TASKROLL_MAX_ATTEMPTS" if text else "max_attempts")


def _from_environment() -> Settings:
    # kept as text: checked when used, so a bad value cannot break ``import taskroll``
    lease = os.environ.get("TASKROLL_LEASE_SECONDS", "").strip()
    attempts = os.environ.get("TASKROLL_MAX_ATTEMPTS", "").strip()
    return Settings(
        task_url=os.environ.get("TASKROLL_TASK_URL") or None,
        task_db_name=os.environ.get("TASKROLL_TASK_DB_NAME") or DEFAULT_TASK_DB_NAME,
        tracking_uri=os.environ.get("TASKROLL_TRACKING_URI") or None,
        artifact_root=os.environ.get("TASKROLL_ARTIFACT_ROOT") or None,
        lease_seconds=lease or DEFAULT_LEASE_SECONDS,
        max_attempts=attempts or DEFAULT_MAX_ATTEMPTS,
        provider_uri=os.environ.get("TASKROLL_PROVIDER_URI") or None,
        region=os.environ.get("TASKROLL_REGION") or None,
    )


class _SettingsHolder:
    """Holds the one settings object so :func:`init` can swap it."""

    current: Settings = _from_environment()


def get_settings() -> Settings:
    """Return the settings in force."""
    return _SettingsHolder.current


def set_tracking_uri(uri: str | None) -> str | None:
    """Make ``uri`` this process's tracking store (what ``R.set_uri`` does, as Qlib's
    ``C.exp_manager`` URI); nothing is exported to the environment.

    Args:
        uri: The MLflow tracking URI; ``None``: ``mlruns.db`` in the working directory.

    Returns:
        The setting it replaced (``None`` when none was set).
    """
    current = _SettingsHolder.current
    _SettingsHolder.current = replace(current, tracking_uri=uri)
    return current.tracking_uri


def init(
    task_url: str | None = None,
    task_db_name: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    lease_seconds: float | None = None,
    max_attempts: int | None = None,
    allowed_modules: Iterable[str] | str | None = None,
    allowed_tracking_uris: Iterable[str] | str | None = None,
    provider_uri: str | os.PathLike[str] | Mapping[str, str] | None = None,
    region: str | None = None,
    mongo: Mapping[str, str] | None = None,
    **unknown: object,
) -> Settings:
    """Set where tasks, experiments and data are (like ``qlib.init(provider_uri=..., mongo={...})``).

    Arguments left ``None`` keep their current value (environment or default).
    Environment variables are exported too, so worker processes started
    afterwards (``force_release``, ``taskroll worker``) see the same stores and data.

    Args:
        task_url: Task store URL (``sqlite:///...``, ``mongodb://...``, ``postgresql://...``).
        task_db_name: MongoDB database name.
        tracking_uri: MLflow tracking URI (``postgresql+psycopg://...`` for a team database).
        artifact_root: Artifact location for new experiments (with a database server: a
            folder every machine mounts at this path; unset, a :class:`TaskrollWarning`).
        lease_seconds: Lease length for fetched tasks.
        max_attempts: Attempts before a task is marked ``failed``.
        allowed_modules: Module prefixes that task definitions may import (e.g.
            ``["taskroll.", "mylab.models"]``); a task naming another module fails before
            anything is imported. Exported as ``TASKROLL_ALLOWED_MODULES``; unset:
            every module is allowed (who can write the pool can run code in workers).
        allowed_tracking_uris: Tracking URIs, besides ``tracking_uri``, whose recorder
            references read from a pool may be opened. Exported as
            ``TASKROLL_ALLOWED_TRACKING_URIS``.
        provider_uri: A Qlib data folder (Qlib's name; ``~`` is expanded; Qlib's
            ``{"day": folder}`` form is accepted too), read by handlers
            without a ``data_loader`` and giving the default trading calendar. Exported as
            ``TASKROLL_PROVIDER_URI``.
        region: Qlib's region, ``"cn"`` or ``"us"``; it only chooses the default trading
            calendar when no data folder is configured (``XSHG`` / ``XNYS``). Exported as
            ``TASKROLL_REGION``.
        mongo: Qlib's task store setting, ``{"task_url": ..., "task_db_name": ...}``; the same
            as the two arguments of those names.
        **unknown: Refused: any other keyword raises :class:`TaskConfigError`.

    Returns:
        The new settings.

    Raises:
        TaskConfigError: When ``lease_seconds`` or ``max_attempts`` is out of range, an
            allowlist is empty, ``provider_uri`` is not a folder with ``calendars/day.txt``,
            ``region`` is not ``"cn"``/``"us"``, ``mongo`` has an unknown key or disagrees
            with ``task_url``/``task_db_name``, or a keyword is unknown (nothing is changed
            then).
    """
    if unknown:
        raise TaskConfigError(unknown_keywords_message(sorted(unknown)))
    task_url, task_db_name = _merge_mongo(mongo, task_url, task_db_name)
    modules = None if allowed_modules is None else _joined(allowed_modules)
    tracking_uris = None if allowed_tracking_uris is None else _joined(allowed_tracking_uris)
    if lease_seconds is not None:
        lease_seconds = check_lease_seconds(lease_seconds)
    if max_attempts is not None:
        max_attempts = check_max_attempts(max_attempts)
    provider = None if provider_uri is None else check_provider_uri(provider_uri)
    if region is not None:
        region = check_region(region)
    current = _SettingsHolder.current
    updated = replace(
        current,
        task_url=task_url if task_url is not None else current.task_url,
        task_db_name=task_db_name if task_db_name is not None else current.task_db_name,
        tracking_uri=tracking_uri if tracking_uri is not None else current.tracking_uri,
        artifact_root=artifact_root if artifact_root is not None else current.artifact_root,
        lease_seconds=lease_seconds if lease_seconds is not None else current.lease_seconds,
        max_attempts=max_attempts if max_attempts is not None else current.max_attempts,
        provider_uri=provider if provider is not None else current.provider_uri,
        region=region if region is not None else current.region,
    )
    _SettingsHolder.current = updated
    if updated.artifact_root is None and updated.tracking_uri and updated.tracking_uri.split(
            ":", 1)[0].split("+")[0].lower() in SERVER_SCHEMES:
        warnings.warn("the tracking store is a database server but artifact_root is not set: "
                      "each run's files would go to ./mlruns of the process that creates its "
                      "experiment; give artifact_root=... a folder every machine mounts",
                      TaskrollWarning, stacklevel=2)
    exported = {
        "TASKROLL_TASK_URL": updated.task_url,
        "TASKROLL_TASK_DB_NAME": updated.task_db_name,
        "TASKROLL_TRACKING_URI": updated.tracking_uri,
        "TASKROLL_ARTIFACT_ROOT": updated.artifact_root,
        "TASKROLL_LEASE_SECONDS": str(updated.lease_seconds),
        "TASKROLL_MAX_ATTEMPTS": str(updated.max_attempts),
        "TASKROLL_PROVIDER_URI": updated.provider_uri,
        "TASKROLL_REGION": updated.region,
    }
    if modules is not None:
        exported["TASKROLL_ALLOWED_MODULES"] = modules
        set_allowed_modules(None)  # the environment variable now decides, here and in workers
    if tracking_uris is not None:
        exported["TASKROLL_ALLOWED_TRACKING_URIS"] = tracking_uris
    for name, value in exported.items():
        if value:
            os.environ[name] = value
    return updated


def _merge_mongo(mongo: Mapping[str, str] | None, task_url: str | None,
                 task_db_name: str | None) -> tuple[str | None, str | None]:
    """Fold Qlib's ``mongo={"task_url", "task_db_name"}`` into the two arguments.

    Raises:
        TaskConfigError: When ``mongo`` is not a mapping of those keys to text, or a value
            differs from the argument of the same name.
    """
    if mongo is None:
        return task_url, task_db_name
    if not isinstance(mongo, Mapping):
        raise TaskConfigError(f"mongo must be a dict like {{'task_url': 'mongodb://...', "
                              f"'task_db_name': 'rolling_db'}}, got {mongo!r}")
    unknown = sorted(set(map(str, mongo)) - set(MONGO_KEYS))
    if unknown:
        raise TaskConfigError(f"mongo: unknown key(s) {unknown}; it takes {list(MONGO_KEYS)}")
    given = {"task_url": task_url, "task_db_name": task_db_name}
    for name in MONGO_KEYS:
        value = mongo.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise TaskConfigError(f"mongo[{name!r}] must be non-empty text, got {value!r}")
        if given[name] is not None and given[name] != value:
            raise TaskConfigError(f"{name} is given twice with different values: "
                                  f"{given[name]!r} and mongo[{name!r}]={value!r}")
        given[name] = value
    return given["task_url"], given["task_db_name"]


def check_provider_uri(provider_uri: object) -> str:
    """Return a Qlib data folder as an absolute path, or raise saying what is wrong.

    Args:
        provider_uri: A folder path (``~`` is expanded), or Qlib's per-frequency form
            ``{"day": path}`` (only daily data is read).

    Raises:
        TaskConfigError: When it is not a path, does not exist, or has no
            ``calendars/day.txt``.
    """
    if isinstance(provider_uri, Mapping):
        if set(provider_uri) != {"day"}:
            raise TaskConfigError(f"provider_uri: only daily data is read, so a dict needs "
                                  f"exactly the key 'day', got {sorted(map(str, provider_uri))}")
        provider_uri = provider_uri["day"]
    if not isinstance(provider_uri, (str, os.PathLike)) or not str(provider_uri):
        raise TaskConfigError(f"provider_uri must be a Qlib data folder path, got "
                              f"{provider_uri!r}")
    folder = Path(provider_uri).expanduser().resolve()
    if not folder.is_dir():
        raise TaskConfigError(f"provider_uri {str(provider_uri)!r}: folder {folder} does not "
                              "exist")
    if not (folder / "calendars" / "day.txt").is_file():
        raise TaskConfigError(f"provider_uri {str(provider_uri)!r}: {folder} is not a Qlib data "
                              "folder (calendars/day.txt is missing)")
    return str(folder)


def check_region(region: object, name: str = "region") -> str:
    """Return ``region`` as ``"cn"`` or ``"us"``, or raise naming ``name``.

    Raises:
        TaskConfigError: For any other value.
    """
    if not isinstance(region, str) or region.lower() not in REGION_CALENDARS:
        raise TaskConfigError(f"{name} must be one of {sorted(REGION_CALENDARS)} (Qlib's "
                              f"REG_CN / REG_US), got {region!r}")
    return region.lower()


def _joined(values: Iterable[str] | str) -> str:
    """Comma-joined items of a list setting (a string is taken as already joined).

    Raises:
        TaskConfigError: For an empty list (an empty allowlist would silently allow all).
    """
    items = values.split(",") if isinstance(values, str) else list(values)
    joined = ",".join(str(item).strip() for item in items if str(item).strip())
    if not joined:
        raise TaskConfigError(f"an allowlist needs at least one entry, got {values!r}")
    return joined
