"""MLflow tracking stores in a database server: URL forms and the schema lock.

A team keeps its task pool and its MLflow runs in one PostgreSQL database; every
machine names that database in two settings that differ only in their scheme:

* ``TASKROLL_TASK_URL=postgresql://user:password@host:5432/research`` (read by psycopg),
* ``TASKROLL_TRACKING_URI=postgresql+psycopg://user:password@host:5432/research`` (read
  by SQLAlchemy inside MLflow); ``postgresql://`` and ``postgres://`` are accepted too
  and opened with psycopg 3 (:func:`driver_uri`), whatever SQLAlchemy's default driver.

The two never collide: the pool's tables are ``taskroll_tasks`` and ``taskroll_pools``,
MLflow's are its own (``experiments``, ``runs``, ``alembic_version``, ...), none with the
``taskroll_`` prefix.

Schema creation: MLflow creates and migrates its tables (alembic) when a process first
opens an empty database, without any lock between processes; workers starting at
the same moment on several machines fail with "duplicate key ... alembic_version".
:func:`schema_lock` holds a PostgreSQL advisory lock (on a connection of its own) while
a process opens the store, so exactly one creates the tables and the others wait,
then find them. A file lock cannot do this: machines do not share a temp folder.

Comparing stores: a recorder reference in a pool holds a credential-free tracking URI;
:func:`tracking_uri_key` is the form compared with this process's settings, so a run
recorded through ``postgresql+psycopg://`` is found by a reader configured with
``postgresql://`` (host, port and database must be spelt the same).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from taskroll.errors import RecorderError
from taskroll.store.references import strip_credentials
from taskroll.store.urls import mask_url

__all__ = ["SCHEMA_LOCK_KEY", "driver_uri", "libpq_url", "schema_lock", "tracking_uri_key"]

#: Advisory lock key held while a process creates MLflow's tables ("trmlflow"); the task
#: pool uses another key for its own tables.
SCHEMA_LOCK_KEY = 0x74726D6C666C6F77
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
#: Seconds one connection attempt of :func:`schema_lock` may take.
CONNECT_TIMEOUT_SECONDS = 10


def _scheme_parts(uri: str) -> tuple[str, str, str]:
    """Split ``uri`` into (base scheme in lower case, driver, the rest after ``://``)."""
    head, separator, rest = uri.partition("://")
    if not separator:
        return "", "", uri
    base, _, driver = head.lower().partition("+")
    return base, driver, rest


def driver_uri(tracking_uri: str) -> str:
    """Return the URI to hand to MLflow: plain PostgreSQL schemes get the psycopg 3 driver.

    ``postgres://`` is unknown to SQLAlchemy, and ``postgresql://`` means psycopg2 before
    SQLAlchemy 2.1; taskroll's ``[postgres]`` extra installs psycopg 3, so both become
    ``postgresql+psycopg://`` when psycopg is installed. Any other URI is returned as is.

    Args:
        tracking_uri: A tracking URI as configured.

    Returns:
        The same store, with an explicit driver where one was needed.
    """
    base, driver, rest = _scheme_parts(tracking_uri)
    if base in _POSTGRES_SCHEMES and not driver and importlib.util.find_spec("psycopg"):
        return f"postgresql+psycopg://{rest}"
    return tracking_uri


def tracking_uri_key(uri: str) -> str:
    """Return the form of a tracking URI compared between pools and settings.

    No credentials (:func:`~taskroll.store.references.strip_credentials`), and the scheme
    without its driver, in lower case (``postgres`` read as ``postgresql``): the driver is
    each process's own choice, the database is the same.

    Args:
        uri: A tracking URI, with or without credentials.

    Returns:
        The comparison key; safe to show.
    """
    stripped = strip_credentials(uri)
    base, _, rest = _scheme_parts(stripped)
    if not base:
        return stripped
    return f"{'postgresql' if base == 'postgres' else base}://{rest}"


def libpq_url(tracking_uri: str) -> str | None:
    """Return a ``postgresql://`` URL psycopg can open for a PostgreSQL tracking URI, else ``None``.

    The SQLAlchemy URL's driver is dropped; user, password (percent-encoded), host, port,
    database and query options (``sslmode``, ``options``, ...) are kept.
    """
    base, _, rest = _scheme_parts(tracking_uri)
    if base not in _POSTGRES_SCHEMES:
        return None
    return f"postgresql://{rest}"


def _password(url: str) -> str:
    """The password of ``url`` (decoded) or ``""``: the text to scrub from messages."""
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


@contextlib.contextmanager
def schema_lock(tracking_uri: str) -> Iterator[bool]:
    """Hold the schema advisory lock of a PostgreSQL tracking database while inside.

    Opens one connection of its own (closed on exit, which also frees the lock if the
    process dies), waits for :data:`SCHEMA_LOCK_KEY`, and holds it for the block: any
    number of processes on any number of machines create MLflow's tables once.

    Args:
        tracking_uri: The tracking URI (credentials included).

    Yields:
        Whether a lock is held: ``False`` for other stores, or when psycopg is not
        installed (then the caller's file lock is all there is).

    Raises:
        RecorderError: When the database cannot be reached (the URL shown masked).
    """
    url = libpq_url(tracking_uri)
    if url is None or importlib.util.find_spec("psycopg") is None:
        yield False
        return
    import psycopg

    try:
        connection: Any = psycopg.connect(url, autocommit=True,
                                          connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                          application_name="taskroll-schema")
    except psycopg.Error as error:
        message = " ".join(str(error).split())  # libpq's messages span lines
        password = _password(url)
        if password:
            message = message.replace(password, "***")
        raise RecorderError(f"cannot reach the tracking database {mask_url(tracking_uri)}: "
                            f"{message}") from error
    with connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            yield True
        finally:
            with contextlib.suppress(psycopg.Error):
                connection.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
