"""The command line of the dashboard: ``taskroll dashboard`` / ``python -m taskroll.dashboard``.

Options: ``--host`` (127.0.0.1), ``--port`` (8080), ``--allow-actions`` (off: read-only),
``--online FOLDER``, ``--online-experiment NAME`` (repeatable), ``--refresh SECONDS`` and
the pool store options of every command (``--url``, ``--db-name``; ``-t`` is accepted and
ignored: the dashboard shows every pool of the store). MLflow reads fail fast in the
dashboard's process (:func:`fail_fast_tracking`). Starlette and uvicorn are
imported only when the server starts; without them the command prints one line naming
``pip install "taskroll[dashboard]"`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskroll.manage_cli import OneLineParser, add_pool_arguments, report_errors

INSTALL_HINT = 'the dashboard needs Starlette and uvicorn: pip install "taskroll[dashboard]"'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Host names a dashboard bound to loopback answers to (others: 400, against DNS rebinding).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
#: MLflow HTTP retries and seconds per request of the dashboard's process (see
#: :func:`fail_fast_tracking`).
TRACKING_RETRIES = 1
TRACKING_TIMEOUT_SECONDS = 10


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on ({DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.add_argument("--allow-actions", action="store_true",
                        help="allow retry failed / reset / prioritise from the pages "
                             "(each asks for confirmation); read-only without it")
    parser.add_argument("--online", metavar="FOLDER", default=None,
                        help="online output folder (signals.parquet, report.csv) for the online view")
    parser.add_argument("--online-experiment", metavar="NAME", action="append", default=[],
                        dest="online_experiments",
                        help="experiment of an online strategy (repeatable): shows which model "
                             "was online when")
    parser.add_argument("--refresh", type=float, default=3.0,
                        help="seconds between live refreshes of a page (3; 0: off)")


def add_dashboard_parser(commands: argparse._SubParsersAction[Any],
                         parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``dashboard`` sub-command to the ``taskroll`` command's sub-parsers.

    Args:
        commands: The sub-parsers of the ``taskroll`` command.
        parents: Parsers whose options the sub-command also takes (e.g. the pool options
            ``--url`` / ``--db-name`` with suppressed defaults, as the other commands).

    The dispatch of ``taskroll`` calls :func:`run_dashboard` with the parsed arguments.
    """
    parser = commands.add_parser("dashboard", parents=list(parents),
                                 help="serve a web view of the task pools",
                                 description="Serve a web view of the task pools, failures, "
                                             "workers and rolling windows.")
    _add_options(parser)


def build_parser(prog: str = "python -m taskroll.dashboard") -> argparse.ArgumentParser:
    """The parser of ``python -m taskroll.dashboard``."""
    parser = OneLineParser(prog=prog, description="Serve a web view of the task pools.")
    add_pool_arguments(parser)
    _add_options(parser)
    return parser


def loopback_host_names(host: str) -> list[str] | None:
    """The ``Host`` names a dashboard bound to ``host`` answers to; ``None``: any.

    Bound to a loopback address (any of ``127.0.0.0/8``, ``::1``) or ``localhost``: the
    loopback names and ``host`` itself, so that a foreign name rebound to this machine
    is refused. Bound to any other address: ``None``, since the names people use to
    reach it are not known here.
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = literal == "localhost" or ipaddress.ip_address(literal).is_loopback
    except ValueError:  # a host name other than localhost
        return None
    if not loopback:
        return None
    extra = [literal, f"[{literal}]"] if ":" in literal else [literal]
    return list(dict.fromkeys([*LOOPBACK_HOSTS, *extra]))


def exposure_warning(host: str, allow_actions: bool) -> str | None:
    """The warning printed when actions are served beyond loopback, else ``None``.

    On loopback the server answers only to loopback host names; on any other address it
    answers to every ``Host``, so a site whose name is rebound to this machine could read
    a page's token and run actions.
    """
    if loopback_host_names(host) is not None or not allow_actions:
        return None
    return (f"warning: --allow-actions on {host} lets anyone who can reach this port retry, "
            "reset and reprioritise tasks, and host names are not checked off loopback; "
            "prefer --host 127.0.0.1 with an SSH tunnel")


def fail_fast_tracking() -> None:
    """Make MLflow HTTP reads of this process give up in seconds, unless the user chose.

    MLflow retries an unreachable tracking server 7 times with backoff (about 4 minutes
    per read); a page that reads runs would hang that long. The dashboard's own process
    uses :data:`TRACKING_RETRIES` retries and :data:`TRACKING_TIMEOUT_SECONDS` per request
    instead, where the environment does not set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` /
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(TRACKING_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TRACKING_TIMEOUT_SECONDS))


def missing_dependency() -> str | None:
    """The install hint when Starlette or uvicorn is missing, else ``None``."""
    for name in ("starlette", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            return INSTALL_HINT
    return None


def run_dashboard(arguments: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted; return the exit status.

    Reads ``url`` / ``db_name`` (``None``: the configured store), ``host``, ``port``,
    ``allow_actions``, ``online`` and ``refresh`` from ``arguments``.

    Raises:
        StoreConnectionError: When the store cannot be opened.
    """
    hint = missing_dependency()
    if hint is not None:
        print(f"error: {hint}", file=sys.stderr)
        return 1
    import uvicorn

    from taskroll.config import get_settings
    from taskroll.dashboard.app import create_app
    from taskroll.store import open_store

    fail_fast_tracking()
    settings = get_settings()
    url = getattr(arguments, "url", None) or settings.resolved_task_url()
    db_name = getattr(arguments, "db_name", None) or settings.task_db_name
    online = getattr(arguments, "online", None)
    with open_store(url, db_name) as store:
        app = create_app(store, allow_actions=bool(arguments.allow_actions),
                         online_folder=Path(online) if online else None,
                         refresh_seconds=float(getattr(arguments, "refresh", 3.0)),
                         online_experiments=getattr(arguments, "online_experiments", None) or (),
                         allowed_hosts=loopback_host_names(arguments.host))
        mode = "actions allowed" if arguments.allow_actions else "read-only"
        warning = exposure_warning(arguments.host, bool(arguments.allow_actions))
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        print(f"taskroll dashboard on http://{arguments.host}:{arguments.port}/ ({mode}); "
              "Ctrl+C stops it", flush=True)
        uvicorn.run(app, host=arguments.host, port=arguments.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m taskroll.dashboard``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    if arguments.url or arguments.db_name:
        import taskroll

        taskroll.init(task_url=arguments.url, task_db_name=arguments.db_name)
    return report_errors(run_dashboard, arguments)
