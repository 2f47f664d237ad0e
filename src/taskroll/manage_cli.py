"""Command line for task pools: ``python -m taskroll.manage -t POOL COMMAND``.

Commands, Qlib's ``python -m qlib.workflow.task.manage`` set under the same names:

* read: ``list`` (the pools), ``task_stat``, ``query``, ``re_query ID``, ``wait``;
* write: ``create_task FILE`` (task definitions from a JSON or YAML file, a list or one
  definition; ``--dry-run``, ``--print-nt``), ``insert_task_def FILE`` (one definition),
  ``replace_task ID FILE``, ``fetch_task`` (claim one task and print it),
  ``commit_task_res ID RES`` (``RES`` is JSON), ``return_task ID``, ``reset_waiting``,
  ``reset_status STATUS``, ``remove``, ``prioritize ID PRIORITY``;
* and ``retry`` (put ``failed`` tasks back, see
  :meth:`~taskroll.manage.TaskManager.retry_failed`).

Queries are JSON Mongo-style filters, e.g. ``--query '{"filter.model.class":
"LinearModel"}'``. Files are read with :func:`taskroll.safe_yaml.load_yaml` (JSON is
YAML), so no file can build Python objects. Every error, a bad argument included,
prints one line on stderr and exits with status 2; nothing is changed when the input is
bad.

This module imports :mod:`taskroll.manage_pool`, never :mod:`taskroll.manage` (whose
``python -m`` entry point imports this one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from taskroll.errors import QueryError, TaskConfigError, TaskrollError, UnknownPoolError
from taskroll.manage_failure import describe
from taskroll.manage_pool import TaskManager
from taskroll.safe_yaml import load_yaml
from taskroll.status import Status

COMMANDS = ("list", "task_stat", "query", "re_query", "wait", "create_task", "insert_task_def",
            "replace_task", "fetch_task", "commit_task_res", "return_task", "reset_waiting",
            "reset_status", "remove", "prioritize", "retry")
_CREATING = ("create_task", "insert_task_def")
"""Commands that may name a pool that does not exist yet."""
STATUSES = tuple(status.value for status in Status)


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
                       ("wait", "block until no task is waiting, running or part_done"),
                       ("fetch_task", "claim one task and print it (running until committed, returned "
                                       "or its lease ends)"),
                       ("reset_waiting", "put running (or --query'd) tasks back to waiting"),
                       ("reset_status", "set the status of matching tasks"),
                       ("remove", "delete matching tasks"),
                       ("retry", "put failed (and matching) tasks back to waiting, attempts reset")):
        command = commands.add_parser(name, help=text)
        if name == "reset_status":
            command.add_argument("status", choices=STATUSES)
        command.add_argument("query_text", nargs="?", metavar="QUERY", help="JSON filter")
        command.add_argument("--query", dest="query_option", help="JSON filter")
        if name == "query":
            command.add_argument("--limit", type=_count, default=None)
        if name == "wait":
            command.add_argument("--poll-interval", type=float, default=1.0)
            command.add_argument("--timeout", type=float, default=None)
        if name == "fetch_task":
            command.add_argument("--status", choices=STATUSES, default="waiting",
                                 help="status to claim from (waiting)")
        if name in ("remove", "reset_status"):
            command.add_argument("--all", action="store_true",
                                 help="allow an empty query (acts on every task in the pool)")
    _add_task_commands(commands)
    return parser


def _add_task_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """The commands that name one task by id, or read task definitions from a file."""
    re_query = commands.add_parser("re_query", help="print one task by id as JSON")
    re_query.add_argument("task_id")
    create = commands.add_parser("create_task",
                                 help="add the new task definitions of a JSON or YAML file")
    create.add_argument("file", help="a list of task definitions, or one definition")
    create.add_argument("--dry-run", "--dry_run", action="store_true",
                        help="only count the new definitions")
    create.add_argument("--print-nt", "--print_nt", action="store_true",
                        help="print the new definitions")
    insert = commands.add_parser("insert_task_def",
                                 help="add one task definition (a JSON or YAML file)")
    insert.add_argument("file")
    replace = commands.add_parser("replace_task",
                                  help="replace the definition of one task (JSON or YAML file)")
    replace.add_argument("task_id")
    replace.add_argument("file")
    commit = commands.add_parser("commit_task_res", help="store a result (JSON) for one task")
    commit.add_argument("task_id")
    commit.add_argument("res", metavar="RES", help="the result as JSON")
    commit.add_argument("--status", choices=STATUSES, default="done", help="new status (done)")
    back = commands.add_parser("return_task", help="put one task back, dropping its lease")
    back.add_argument("task_id")
    back.add_argument("--status", choices=STATUSES, default="waiting",
                      help="new status (waiting)")
    prioritize = commands.add_parser("prioritize", help="set the priority of one task")
    prioritize.add_argument("task_id")
    prioritize.add_argument("priority", type=int)


def load_task_file(path: str, single: bool = False) -> list[dict[str, Any]]:
    """Read task definitions from a JSON or YAML file (plain data only).

    Args:
        path: The file: a list of definitions (dicts), or one definition.
        single: Require exactly one definition.

    Returns:
        The definitions.

    Raises:
        TaskConfigError: When the file cannot be read, is not valid JSON/YAML (or exceeds
            the limits of :mod:`taskroll.safe_yaml`), or does not hold definitions.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise TaskConfigError(f"cannot read task file {path!r}: {error.strerror}") from error
    data = load_yaml(text, source=path)
    definitions = [data] if isinstance(data, dict) else data
    if (not isinstance(definitions, list) or not definitions
            or not all(isinstance(item, dict) for item in definitions)):
        raise TaskConfigError(f"{path}: expected a task definition (a mapping) or a non-empty "
                              f"list of them, got {type(data).__name__}")
    if single and len(definitions) != 1:
        raise TaskConfigError(f"{path}: expected one task definition, got {len(definitions)}")
    return definitions


def _parse_json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TaskConfigError(f"{what} is not valid JSON: {error}") from error


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


def _print_task(manager: TaskManager, task_id: str) -> None:
    record = manager.store.get(manager.task_pool, task_id)
    if record is None:
        raise TaskrollError(f"no task {task_id!r} in pool {manager.task_pool!r}")
    print(json.dumps(_printable(manager, dict(record)), default=str, sort_keys=True))


def _run_task_command(manager: TaskManager, arguments: argparse.Namespace) -> bool:
    """Run a command of :func:`_add_task_commands`; ``False`` when it is another one."""
    command, pool = arguments.command, arguments.task_pool
    if command == "create_task":
        definitions = load_task_file(arguments.file)
        ids = manager.create_task(definitions, dry_run=arguments.dry_run,
                                  print_nt=arguments.print_nt)
        for task_id in ids:
            print(task_id)
        return True
    if command == "insert_task_def":
        print(manager.insert_task_def(load_task_file(arguments.file, single=True)[0]))
        return True
    if command == "re_query":
        _print_task(manager, arguments.task_id)
        return True
    if command not in ("replace_task", "commit_task_res", "return_task", "prioritize"):
        return False
    if command == "replace_task":
        changed = manager.replace_task(
            arguments.task_id, {"def": load_task_file(arguments.file, single=True)[0]})
    elif command == "commit_task_res":
        result = _parse_json_value(arguments.res, "RES")
        changed = manager.commit_task_res(arguments.task_id, result, status=arguments.status)
    elif command == "return_task":
        changed = manager.return_task(arguments.task_id, status=arguments.status)
    else:
        changed = manager.prioritize(arguments.task_id, arguments.priority)
    if not changed:
        raise TaskrollError(f"no task {arguments.task_id!r} in pool {pool!r}")
    if command == "prioritize":
        print(f"task {arguments.task_id} priority {arguments.priority}")
    else:
        _print_task(manager, arguments.task_id)
    return True


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
        if arguments.task_pool not in pools and arguments.command not in _CREATING:
            known = ", ".join(pools) or "none"
            raise UnknownPoolError(
                f"unknown task pool {arguments.task_pool!r} in {manager.store!r}; known pools: {known}"
            )
        if _run_task_command(manager, arguments):
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
        elif arguments.command == "fetch_task":
            task = manager.fetch_task(query, status=arguments.status)
            if task is None:
                raise TaskrollError(f"no {arguments.status} task matches in pool "
                                    f"{arguments.task_pool!r}")
            _print_task(manager, str(task["_id"]))
        elif arguments.command == "reset_waiting":
            print(f"{manager.reset_waiting(query)} task(s) reset to waiting")
        elif arguments.command == "reset_status":
            if not query and not arguments.all:
                raise TaskrollError("refusing to reset every task without --all")
            count = manager.reset_status(query, arguments.status)
            print(f"{count} task(s) set to {arguments.status}")
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
