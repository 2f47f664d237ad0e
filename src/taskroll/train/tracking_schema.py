"""Create the task pool's and MLflow's tables once, before any worker starts.

Workers create both sets of tables themselves on first use, safely (the pool under
its advisory lock, MLflow under :func:`taskroll.train.tracking_database.schema_lock`),
so this step is optional. It is still the tidy way to start a team database: one
person runs it once with an account allowed to create tables, and workers can then
use an account that may only read and write rows::

    export TASKROLL_TASK_URL='postgresql://admin:PASSWORD@db.lab:5432/research'
    export TASKROLL_TRACKING_URI='postgresql+psycopg://admin:PASSWORD@db.lab:5432/research'
    python -m taskroll.train.tracking_schema

It prints the two stores (passwords masked) and exits 0, or prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from taskroll.config import get_settings
from taskroll.errors import TaskrollError
from taskroll.store import open_store
from taskroll.store.urls import mask_url
from taskroll.train.tracking import open_client

__all__ = ["main", "prepare_stores"]


def prepare_stores(task_url: str | None = None, tracking_uri: str | None = None,
                   task_db_name: str | None = None) -> dict[str, str]:
    """Create (if missing) the tables of the task store and of the MLflow tracking store.

    Safe to run any number of times, from any number of machines at once.

    Args:
        task_url: Task store URL; ``None``: the configured one (``TASKROLL_TASK_URL``).
        tracking_uri: MLflow tracking URI; ``None``: the configured one
            (``TASKROLL_TRACKING_URI``).
        task_db_name: MongoDB database of the task store; ``None``: the configured one.

    Returns:
        ``{"task store": URL, "tracking store": URI}``, passwords masked.

    Raises:
        StoreError: When the task store cannot be opened.
        RecorderError: When the tracking store cannot be opened.
    """
    settings = get_settings()
    task_url = task_url or settings.resolved_task_url()
    tracking_uri = tracking_uri or settings.resolved_tracking_uri()
    with open_store(task_url, task_db_name or settings.task_db_name):
        pass  # opening creates the schema
    open_client(tracking_uri)  # builds MLflow's store: creates and migrates its tables
    return {"task store": mask_url(task_url), "tracking store": mask_url(tracking_uri)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run :func:`prepare_stores` from the command line.

    Args:
        argv: Arguments (``--task-url``, ``--tracking-uri``); default ``sys.argv[1:]``.

    Returns:
        0 when both stores are ready, 2 (after one line on stderr) otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="python -m taskroll.train.tracking_schema",
        description="Create the task pool's and MLflow's tables once (default: the stores "
                    "of TASKROLL_TASK_URL and TASKROLL_TRACKING_URI).")
    parser.add_argument("--task-url", default=None, help="task store URL")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    arguments = parser.parse_args(argv)
    try:
        ready = prepare_stores(arguments.task_url, arguments.tracking_uri)
    except TaskrollError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, url in ready.items():
        print(f"{name}: {url} (ready)")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    sys.exit(main())
