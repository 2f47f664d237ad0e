"""The ``taskroll`` command (also ``python -m taskroll``): a thin layer over the library.

Sub-commands:

* the pool commands of :mod:`taskroll.manage_cli` under their Qlib names (``list``,
  ``task_stat``, ``query``, ``wait``, ``reset_waiting``, ``remove``, ``prioritize``), and
  ``retry`` (failed tasks back to waiting);
* ``worker``: run N worker processes on a pool (``run_task`` with ``task_train`` by default);
  each drains the pool, waiting for tasks other workers still run (``--once``: it does not);
  each starts with its BLAS/OpenMP threads capped at cores // N (``--threads``);
* ``demo``: the end-to-end demo (:func:`taskroll.demo.run_demo`);
* ``online``: online serving, from :mod:`taskroll.online.cli` when it is installed.

``-t/--task-pool``, ``--url`` and ``--db-name`` may come before or after the command.
Errors, bad arguments included, print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import taskroll
from taskroll.errors import TaskrollError, UnknownPoolError
from taskroll.manage import TaskManager, run_task
from taskroll.manage_cli import (
    COMMANDS,
    OneLineParser,
    _parse_json_query,
    add_pool_arguments,
    report_errors,
    run_command,
)
from taskroll.manage_failure import TASK_RAISED, describe
from taskroll.threads import capped_environment, threads_per_worker

DEFAULT_FUNC = "taskroll.train.trainer:task_train"
DEFAULT_END_FUNC = "taskroll.train.trainer:end_task_train"
_POOL_DESTS = ("task_pool", "url", "db_name")


def _online_module() -> tuple[ModuleType | None, str]:
    """Import :mod:`taskroll.online.cli` lazily.

    Returns:
        ``(module, "")``, or ``(None, reason)`` when it is missing or fails to import, so
        that a missing or broken online module never breaks the other commands.
    """
    try:
        return importlib.import_module("taskroll.online.cli"), ""
    except ModuleNotFoundError as error:
        if error.name in ("taskroll.online.cli", "taskroll.online"):
            return None, "taskroll.online.cli is missing from this install"
        return None, f"taskroll.online.cli cannot be imported: {error}"
    except Exception as error:  # a broken online module must not take the CLI down
        return None, f"taskroll.online.cli cannot be imported: {type(error).__name__}: {error}"


def _pool_parent() -> argparse.ArgumentParser:
    """Pool options for sub-commands; suppressed defaults so they never hide ones given earlier."""
    parent = argparse.ArgumentParser(add_help=False)
    add_pool_arguments(parent)
    for action in parent._actions:
        if action.dest in _POOL_DESTS:
            action.default = argparse.SUPPRESS
    return parent


def _manage_subparsers() -> tuple[dict[str, argparse.ArgumentParser], dict[str, str]]:
    """The sub-parsers of :func:`taskroll.manage_cli.build_parser` and their help texts."""
    from taskroll.manage_cli import build_parser as build_manage_parser

    for action in build_manage_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return dict(action.choices), helps
    raise RuntimeError("taskroll.manage_cli.build_parser has no sub-commands")  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``taskroll`` command."""
    parser = OneLineParser(
        prog="taskroll", description="Generate, store, train, collect and serve rolling tasks.")
    add_pool_arguments(parser)
    parser.add_argument("--version", action="version", version=f"taskroll {taskroll.__version__}")
    commands: argparse._SubParsersAction[Any] = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    pool_parent = _pool_parent()
    manage_parsers, manage_helps = _manage_subparsers()
    for name in COMMANDS:
        commands.add_parser(name, parents=[pool_parent, manage_parsers[name]], add_help=False,
                            help=manage_helps.get(name, ""),
                            description=manage_helps.get(name) or None)

    worker = commands.add_parser("worker", parents=[pool_parent],
                                 help="run worker processes on a task pool")
    worker.add_argument("-n", "--workers", type=int, default=1, help="worker processes (1)")
    worker.add_argument("--experiment", default=None,
                        help="experiment of the runs (default: the pool name, as TrainerRM)")
    worker.add_argument("--func", default=None, metavar="MODULE:CALLABLE",
                        help=f"task function (default {DEFAULT_FUNC}, or {DEFAULT_END_FUNC} "
                             "with --before-status part_done)")
    worker.add_argument("--before-status", choices=("waiting", "part_done"), default="waiting")
    worker.add_argument("--force-release", action="store_true",
                        help="run each task in a fresh process")
    worker.add_argument("--query", default=None, help="JSON filter of the tasks to take")
    worker.add_argument("--once", action="store_true",
                        help="exit as soon as nothing is waiting, without waiting for tasks "
                             "other workers are running (their tasks come back if they die)")
    worker.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads per worker (default: cores // -n, at least "
                             "1; an OMP_NUM_THREADS etc. already set wins)")

    demo = commands.add_parser("demo", help="run the end-to-end rolling demo")
    demo.add_argument("--output", default="taskroll_demo", help="output folder (taskroll_demo)")
    demo.add_argument("--instruments", type=int, default=None, help="instruments (150)")
    demo.add_argument("--windows", type=int, default=8, help="rolling windows (8, at least 8)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    demo.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")

    online, _ = _online_module()
    if online is not None:
        online.add_online_parser(commands)
    else:
        commands.add_parser("online", help="online serving (not available in this install)",
                            add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:callable"`` (dots allowed after the colon).

    Raises:
        TaskrollError: When the spec is malformed, the module or attribute is missing, or
            the object is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TaskrollError(f"--func must look like 'package.module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or a SyntaxError / any error in the module
        raise TaskrollError(
            f"--func {spec!r}: cannot import {module_name!r}: {describe(error)}") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TaskrollError(f"--func {spec!r}: {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TaskrollError(f"--func {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


class _CountingManager(TaskManager):
    """A TaskManager that counts the tasks this worker committed and failed."""

    def __init__(self, task_pool: str) -> None:
        super().__init__(task_pool)
        self.done = 0
        self.failed = 0

    def commit_task_res(self, task: Mapping[str, Any] | str, res: Any,
                        status: str = TaskManager.STATUS_DONE) -> bool:
        committed = super().commit_task_res(task, res, status=status)
        self.done += int(committed)
        return committed

    def fail_task(self, task: Mapping[str, Any], error: str | BaseException,
                  status: str = TaskManager.STATUS_WAITING, kind: str = TASK_RAISED) -> str:
        self.failed += 1
        return super().fail_task(task, error, status=status, kind=kind)


def _worker_main(number: int, options: dict[str, Any], results: Any) -> None:
    """Body of one spawned worker process; puts its summary on ``results``."""
    begun = time.perf_counter()
    function = load_function(options["func"])
    manager = _CountingManager(options["task_pool"])
    with manager:
        try:
            ran = run_task(function, manager, query=options["query"],
                           force_release=options["force_release"],
                           before_status=options["before_status"], once=options["once"],
                           experiment_name=options["experiment"])
        except TaskrollError as error:  # reported by the parent in one line
            results.put({"worker": number, "error": describe(error)})
            return
        results.put({"worker": number, "pid": multiprocessing.current_process().pid, "ran": ran,
                     "done": manager.done, "failed": manager.failed,
                     "seconds": time.perf_counter() - begun})


def run_worker(arguments: argparse.Namespace) -> int:
    """Start ``-n`` spawned worker processes on the pool, wait, print one line per worker.

    Returns:
        0 when every worker process exited normally, 1 otherwise.

    Raises:
        TaskrollError: Without a pool, for an unknown pool, a bad --func, --query or -n.
    """
    pool = getattr(arguments, "task_pool", None)
    if not pool:
        raise TaskrollError("give the task pool with -t POOL")
    if arguments.workers < 1:
        raise TaskrollError(f"-n must be at least 1, got {arguments.workers}")
    default = DEFAULT_END_FUNC if arguments.before_status == "part_done" else DEFAULT_FUNC
    options = {"task_pool": pool, "func": arguments.func or default,
               "query": _parse_json_query(arguments.query),
               "force_release": arguments.force_release,
               "before_status": arguments.before_status, "once": arguments.once,
               "experiment": arguments.experiment or pool}
    load_function(options["func"])  # fail here, once, rather than in every worker
    with TaskManager(pool) as manager:
        pools = manager.list()
        if pool not in pools:
            raise UnknownPoolError(f"unknown task pool {pool!r} in {manager.store!r}; "
                                   f"known pools: {', '.join(pools) or 'none'}")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker_main, args=(number, options, results),
                                 name=f"taskroll-worker-{number}")
                 for number in range(arguments.workers)]
    threads = arguments.threads if arguments.threads is not None \
        else threads_per_worker(arguments.workers)
    if threads < 1:
        raise TaskrollError(f"--threads must be at least 1, got {threads}")
    with capped_environment(threads):  # each spawned worker loads its libraries capped
        for process in processes:
            process.start()
    summaries: dict[int, dict[str, Any]] = {}
    while len(summaries) < len(processes):
        if not any(process.is_alive() for process in processes) and results.empty():
            break
        try:
            summary = results.get(timeout=0.5)
        except Exception:  # queue.Empty: poll the processes again
            continue
        summaries[summary["worker"]] = summary
    for process in processes:
        process.join()
    status = 0
    for number, process in enumerate(processes):
        summary = summaries.get(number)
        if summary is not None and "error" in summary:
            print(f"worker {number}: stopped: {summary['error']}")
            status = 1
            continue
        if summary is None or process.exitcode != 0:
            print(f"worker {number}: exited with status {process.exitcode}")
            status = 1
            continue
        print(f"worker {number} (pid {summary['pid']}): {summary['done']} task(s) done, "
              f"{summary['failed']} failed, {summary['seconds']:.1f} s")
    with TaskManager(pool) as manager:
        print(f"pool {pool!r}: {manager.task_stat()}")
    return status


def run_demo_command(arguments: argparse.Namespace) -> int:
    """Run the demo with the command's sizes; return 0."""
    from taskroll.demo import run_demo

    result = run_demo(arguments.output, n_instruments=arguments.instruments,
                      n_windows=arguments.windows, workers=arguments.workers,
                      quick=arguments.quick)
    print(f"demo finished in {result.seconds:.1f} s: {result.n_tasks} tasks; files in "
          f"{result.output_dir}")
    return 0


def dispatch(arguments: argparse.Namespace) -> int:
    """Run the parsed command; return the exit status."""
    if arguments.command in COMMANDS:
        return run_command(arguments)
    if arguments.command == "worker":
        return run_worker(arguments)
    if arguments.command == "demo":
        return run_demo_command(arguments)
    if arguments.command == "online":
        online, reason = _online_module()
        if online is None:
            raise TaskrollError(f"online serving is not available: {reason}")
        return int(online.run_online(arguments))
    raise TaskrollError(f"unknown command {arguments.command!r}")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskroll`` and ``python -m taskroll``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    for name in _POOL_DESTS:
        if not hasattr(arguments, name):
            setattr(arguments, name, None)
    return report_errors(_init_and_dispatch, arguments)


def _init_and_dispatch(arguments: argparse.Namespace) -> int:
    if arguments.url or arguments.db_name:
        # exported to the environment too, so spawned workers use the same store
        taskroll.init(task_url=arguments.url, task_db_name=arguments.db_name)
    return dispatch(arguments)
