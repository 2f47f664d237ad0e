"""A ready MLflow schema for new SQLite tracking files, built once per MLflow version.

MLflow creates a fresh SQLite tracking database by running every one of its schema
migrations, which takes seconds (2-5 s on a small machine) on each new file: every
new experiment folder, every demo, every test. :func:`seed_sqlite_database` instead
copies an empty database that MLflow itself built and migrated once, kept in the user
cache folder under a name holding the MLflow and SQLAlchemy versions (so an upgrade
builds a new one). MLflow opens the copy as it would its own: all tables and the
alembic revision are in place, and the ``Default`` experiment, which is removed from
the template because it records an artifact location, is created by MLflow at first
use with the location it would have chosen.

Only a file that does not exist yet is seeded, by an atomic no-clobber link, so an
existing database (or one another process created meanwhile) is never touched. Any
failure leaves the file absent and MLflow initialises it the usual way.
``TASKROLL_MLFLOW_TEMPLATE=off`` turns seeding off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "TASKROLL_MLFLOW_TEMPLATE"
"""``off`` (or ``0``, ``no``, ``false``) turns seeding off; a path names the template folder."""
_OFF = ("off", "0", "no", "false")

__all__ = ["ENVIRONMENT_VARIABLE", "seed_sqlite_database", "sqlite_path", "template_path"]


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` tracking URI, or ``None`` for any other URI.

    In-memory databases and URIs with query options give ``None``.
    """
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if tracking_uri.startswith(prefix):
            rest = tracking_uri[len(prefix):]
            if not rest or rest == ":memory:" or "?" in rest:
                return None
            return Path(rest)
    return None


def template_path() -> Path | None:
    """Where this MLflow version's empty database is kept, or ``None`` when seeding is off."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if configured.strip().lower() in _OFF:
        return None
    try:
        import mlflow
        import sqlalchemy
    except ImportError:
        return None
    if configured:
        folder = Path(configured).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base) / "taskroll" / "mlflow-schema"
    return folder / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}.db"


def _build_template(target: Path) -> None:
    """Let MLflow create and migrate a database, drop its ``Default`` experiment, move it in."""
    from mlflow.tracking import MlflowClient

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as staging:
        database = Path(staging) / "mlflow.db"
        client = MlflowClient(tracking_uri=f"sqlite:///{database}")
        client.search_experiments(max_results=1)
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            connection.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            connection.execute("DELETE FROM experiments WHERE experiment_id = 0")
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("VACUUM")
        os.replace(database, target)  # builders racing each other write equal files


def seed_sqlite_database(tracking_uri: str) -> bool:
    """Copy the ready schema to a SQLite tracking file that does not exist yet.

    Args:
        tracking_uri: The MLflow tracking URI about to be opened.

    Returns:
        ``True`` when the file was created from the template; ``False`` when the URI is
        not a SQLite file, the file exists, seeding is off, or anything failed (MLflow
        then builds the database itself).
    """
    path = sqlite_path(tracking_uri)
    if path is None or path.exists():
        return False
    template = template_path()
    if template is None:
        return False
    try:
        if not template.exists():
            _build_template(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.seed")
        shutil.copyfile(template, staged)
        try:
            os.link(staged, path)  # no-clobber: fails if another process made the file
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)
    except Exception as error:  # seeding is an optimisation: never fail for it
        logger.debug("MLflow schema template not used for %s: %s", path, error)
        return False
    return True
