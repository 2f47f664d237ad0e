"""Command line for task pools: ``python -m taskroll.manage -t POOL COMMAND``.

Commands (Qlib's names): ``list``, ``task_stat``, ``query``, ``wait``,
``reset_waiting``, ``remove``, ``prioritize``, and ``retry`` (put ``failed`` tasks back,
see :meth:`~taskroll.manage.TaskManager.retry_failed`). Queries are JSON Mongo-style
filters, e.g. ``--query '{"filter.model.class": "LinearModel"}'``. Every error, a bad
argument included, prints one line on stderr and exits with status 2; nothing is changed
when the input is bad.

This module imports :mod:`taskroll.manage_pool`, never :mod:`taskroll.manage` (whose
``python -m`` entry point imports this one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from taskroll.errors import QueryError, TaskrollError, UnknownPoolError
from taskroll.manage_failure import describe
from taskroll.manage_pool import TaskManager

COMMANDS = ("list", "task_stat", "query", "wait", "reset_waiting", "remove", "prioritize",
            "retry")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (status 2), without usage."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message>`` on one line and exit with status 2."""
        text = " ".join(message.split())
        self.exit(2, f"error: {self.prog}: {text} (see --help)\n")


def _count(text: str) -> int:
    """``--limit`` values: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _parse_json_query(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise QueryError(f"--query is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise QueryError("--query must be a JSON object such as '{\"status\": \"waiting\"}'")
    TaskManager._conditions(value)  # validate before touching the database
    return value


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``-t/--task-pool``, ``--url`` and ``--db-name`` options to ``parser``."""
    parser.add_argument("-t", "--task-pool", "--task_pool", dest="task_pool",
                        help="name of the task pool")
    parser.add_argument("--url", help="task store URL (default: TASKROLL_TASK_URL or "
                                      "sqlite:///taskroll.db in the working directory)")
    parser.add_argument("--db-name", help="MongoDB database name (task_db_name)")


def build_parser(prog: str = "python -m taskroll.manage") -> argparse.ArgumentParser:
    """Return the argument parser of the pool commands."""
    parser = OneLineParser(prog=prog, description="Inspect and manage a task pool.")
    add_pool_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="list the task pools")
    for name, text in (("task_stat", "count tasks per status"),
                       ("query", "print matching tasks as JSON lines"),
                       ("wait", "block until no task is waiting or running"),
                       ("reset_waiting", "put running (or --query'd) tasks back to waiting"),
                       ("remove", "delete matching tasks"),
                       ("retry", "put failed (and matching) tasks back to waiting, attempts reset")):
        command = commands.add_parser(name, help=text)
        command.add_argument("query_text", nargs="?", metavar="QUERY", help="JSON filter")
        command.add_argument("--query", dest="query_option", help="JSON filter")
        if name == "query":
            command.add_argument("--limit", type=_count, default=None)
        if name == "wait":
            command.add_argument("--poll-interval", type=float, default=1.0)
            command.add_argument("--timeout", type=float, default=None)
        if name == "remove":
            command.add_argument("--all", action="store_true",
                                 help="allow an empty query (removes every task in the pool)")
    prioritize = commands.add_parser("prioritize", help="set the priority of one task")
    prioritize.add_argument("task_id")
    prioritize.add_argument("priority", type=int)
    return parser


def _printable(manager: TaskManager, record: dict[str, Any]) -> dict[str, Any]:
    """Decode a stored record for printing without unpickling anything.

    A value that cannot be decoded (a pickle, corrupt JSON, a malformed tag) is shown as a
    short note, so one poison task does not hide the rest of the pool.
    """
    notes: dict[str, str] = {}
    for field in ("def", "res"):
        try:
            manager._decode_task({**record, "def": None, "res": None, field: record.get(field)})
        except Exception as error:  # shown, not raised: the other tasks still print
            size = len(record.get(field) or b"")
            notes[field] = (f"<pickled, {size} bytes, not loaded>"
                            if record.get(f"{field}_encoding") == "pickle"
                            else f"<cannot decode: {describe(error)}>")
    task = manager._decode_task({**record, **dict.fromkeys(notes)})
    task.update(notes)
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value)
            for key, value in task.items()}


def run_command(arguments: argparse.Namespace) -> int:
    """Execute parsed pool command arguments; return the exit status."""
    with TaskManager(arguments.task_pool or "_", store=arguments.url) as manager:
        if arguments.command == "list":
            for name in manager.list():
                print(name)
            return 0
        if not arguments.task_pool:
            raise TaskrollError("give the task pool with -t POOL")
        pools = manager.list()
        if arguments.task_pool not in pools:
            known = ", ".join(pools) or "none"
            raise UnknownPoolError(
                f"unknown task pool {arguments.task_pool!r} in {manager.store!r}; known pools: {known}"
            )
        if arguments.command == "prioritize":
            if not manager.prioritize(arguments.task_id, arguments.priority):
                raise TaskrollError(f"no task {arguments.task_id!r} in pool {arguments.task_pool!r}")
            print(f"task {arguments.task_id} priority {arguments.priority}")
            return 0
        query = _parse_json_query(arguments.query_option or arguments.query_text)
        if arguments.command == "task_stat":
            print(json.dumps(manager.task_stat(query), sort_keys=True))
        elif arguments.command == "query":
            for count, record in enumerate(manager.query(query, decode=False)):
                if arguments.limit is not None and count >= arguments.limit:
                    break
                print(json.dumps(_printable(manager, record), default=str, sort_keys=True))
        elif arguments.command == "wait":
            stat = manager.wait(query, poll_interval=arguments.poll_interval,
                                timeout=arguments.timeout)
            print(json.dumps(stat, sort_keys=True))
        elif arguments.command == "retry":
            print(f"{manager.retry_failed(query)} failed task(s) put back")
        elif arguments.command == "reset_waiting":
            print(f"{manager.reset_waiting(query)} task(s) reset to waiting")
        elif arguments.command == "remove":
            if not query and not arguments.all:
                raise TaskrollError("refusing to remove every task without --all")
            print(f"{manager.remove(query)} task(s) removed")
    return 0


def report_errors(command: Callable[[argparse.Namespace], int], arguments: argparse.Namespace) -> int:
    """Run ``command(arguments)``; print any error as one line on stderr.

    Returns:
        The command's status; 2 after an error; 130 after Ctrl-C.
    """
    try:
        return command(arguments)
    except (TaskrollError, TimeoutError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, not a traceback, whatever went wrong
        print(f"error: unexpected {describe(error)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m taskroll.manage``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    return report_errors(run_command, arguments)
