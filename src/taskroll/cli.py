"""The ``taskroll`` command (also ``python -m taskroll``): a thin layer over the library.

Sub-commands:

* the pool commands of :mod:`taskroll.manage_cli` under their Qlib names (``list``,
  ``task_stat``, ``query``, ``wait``, ``reset_waiting``, ``remove``, ``prioritize``), and
  ``retry`` (failed tasks back to waiting);
* ``worker``: run N worker loops on a pool (``run_task`` with ``task_train`` by default), as
  spawned processes here (:class:`~taskroll.cluster.local_workers.LocalWorkers`; each with
  BLAS/OpenMP threads capped at cores // N, ``--threads``, and its own GPU with ``--gpus``)
  or as long-lived tasks on a Dask cluster with ``--on dask://HOST:PORT``
  (:class:`~taskroll.cluster.dask_workers.DaskWorkers`, ``--resources GPU=1``, giving up
  after ``--wait-for-workers`` seconds without a worker that offers them); each loop
  drains the pool, waiting for tasks other workers still run (``--until-pool-done``, the
  default; ``--once``: it does not); Ctrl-C or SIGTERM stops the loops (exit 130);
* ``demo``: the end-to-end demo (:func:`taskroll.demo.run_demo`);
* ``dashboard``: the web view of the pools (:mod:`taskroll.dashboard`);
* ``online``: online serving, from :mod:`taskroll.online.cli` when it is installed.

``-t/--task-pool``, ``--url`` and ``--db-name`` may come before or after the command.
Errors, bad arguments included, print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import taskroll
from taskroll.cluster.dask_workers import DaskWorkers
from taskroll.cluster.local_workers import LocalWorkers
from taskroll.cluster.loop import DEFAULT_END_FUNC, DEFAULT_FUNC, LoopOptions, load_function
from taskroll.cluster.placement import WorkerPlacement
from taskroll.dashboard.cli import add_dashboard_parser, run_dashboard
from taskroll.errors import TaskrollError, UnknownPoolError
from taskroll.manage import TaskManager
from taskroll.manage_cli import (
    COMMANDS,
    OneLineParser,
    _parse_json_query,
    add_pool_arguments,
    report_errors,
    run_command,
)

__all__ = ["DEFAULT_END_FUNC", "DEFAULT_FUNC", "build_parser", "dispatch", "load_function",
           "main", "run_worker"]
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
                                 help="run worker loops on a task pool, here or on Dask")
    worker.add_argument("-n", "--workers", type=int, default=1,
                        help="worker loops: processes here, or Dask tasks with --on (1)")
    worker.add_argument("--experiment", default=None,
                        help="experiment of the runs (default: the pool name, as TrainerRM)")
    worker.add_argument("--func", default=None, metavar="MODULE:CALLABLE",
                        help=f"task function (default {DEFAULT_FUNC}, or {DEFAULT_END_FUNC} "
                             "with --before-status part_done)")
    worker.add_argument("--before-status", choices=("waiting", "part_done"), default="waiting")
    worker.add_argument("--force-release", action="store_true",
                        help="run each task in a fresh process")
    worker.add_argument("--allow-pickle", action="store_true",
                        help="decode pickled task definitions and store results JSON cannot "
                             "hold with pickle (only for a pool you trust: unpickling runs code)")
    worker.add_argument("--query", default=None, help="JSON filter of the tasks to take")
    ending = worker.add_mutually_exclusive_group()
    ending.add_argument("--until-pool-done", action="store_true",
                        help="drain (the default, said explicitly for recipes): exit only when "
                             "no matching task is waiting or running, so a dead worker's task "
                             "is finished once its lease ends")
    ending.add_argument("--once", action="store_true",
                        help="exit as soon as nothing is waiting, without waiting for tasks "
                             "other workers are running (their tasks come back if they die)")
    worker.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads per worker (default here: cores // -n, at "
                             "least 1; on Dask: unchanged; an OMP_NUM_THREADS etc. already "
                             "set wins)")
    worker.add_argument("--gpus", default=None, metavar="0,1",
                        help="give worker i the device gpus[i %% len(gpus)] as "
                             "CUDA_VISIBLE_DEVICES (round robin)")
    worker.add_argument("--on", default=None, metavar="dask://HOST:PORT",
                        help="place the -n loops as long-lived tasks on this Dask scheduler "
                             "(pip install \"taskroll[dask]\")")
    worker.add_argument("--resources", action="append", default=None, metavar="NAME=AMOUNT",
                        help="Dask resources each loop needs, e.g. GPU=1 (with --on; "
                             "repeat or separate with commas)")
    worker.add_argument("--wait-for-workers", type=float, default=60.0, metavar="SECONDS",
                        help="with --on: give up (exit 2, pool unchanged) when no Dask worker "
                             "that offers --resources has joined within SECONDS (60)")

    demo = commands.add_parser("demo", help="run the end-to-end rolling demo")
    demo.add_argument("--output", default="taskroll_demo", help="output folder (taskroll_demo)")
    demo.add_argument("--instruments", type=int, default=None, help="instruments (150)")
    demo.add_argument("--windows", type=int, default=8, help="rolling windows (8, at least 8)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    demo.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")

    add_dashboard_parser(commands, parents=[pool_parent])

    online, _ = _online_module()
    if online is not None:
        online.add_online_parser(commands)
    else:
        commands.add_parser("online", help="online serving (not available in this install)",
                            add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _placement(arguments: argparse.Namespace) -> WorkerPlacement:
    """The worker placement of ``taskroll worker``: local processes, or Dask with ``--on``.

    Raises:
        TaskrollError: For -n or --threads below 1, a bad --gpus, --on or --resources, or
            options that do not go together.
    """
    if arguments.workers < 1:
        raise TaskrollError(f"-n must be at least 1, got {arguments.workers}")
    if arguments.threads is not None and arguments.threads < 1:
        raise TaskrollError(f"--threads must be at least 1, got {arguments.threads}")
    if arguments.on is None:
        if arguments.resources:
            raise TaskrollError("--resources needs --on dask://HOST:PORT (Dask resources)")
        return LocalWorkers(arguments.workers, gpus=arguments.gpus, threads=arguments.threads)
    if arguments.gpus is not None:
        raise TaskrollError("--gpus places local processes; on Dask start GPU workers with "
                            "'dask worker --resources GPU=1' and ask with --resources GPU=1")
    return DaskWorkers(arguments.on, n=arguments.workers, resources=arguments.resources,
                       threads=arguments.threads, wait_for_workers=arguments.wait_for_workers)


def _raise_interrupt(signal_number: int, frame: Any) -> None:
    """A SIGTERM handler: stop as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signal_number}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, Kubernetes, Slurm) stops the loops as Ctrl-C does.

    The placement then stops its loops (Dask: each after its task; here: each gives its
    task back) instead of this process vanishing while they run on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_worker(arguments: argparse.Namespace) -> int:
    """Run ``-n`` worker loops on the pool (here, or on Dask with ``--on``); print one line each.

    Returns:
        0 when every loop finished, 1 when any stopped early or its process died.

    Raises:
        TaskrollError: Without a pool, for an unknown pool, a bad --func, --query, -n,
            --threads, --gpus, --on or --resources.
    """
    pool = getattr(arguments, "task_pool", None)
    if not pool:
        raise TaskrollError("give the task pool with -t POOL")
    placement = _placement(arguments)
    default = DEFAULT_END_FUNC if arguments.before_status == "part_done" else DEFAULT_FUNC
    options = LoopOptions(task_pool=pool, func=arguments.func or default,
                          query=_parse_json_query(arguments.query),
                          force_release=arguments.force_release,
                          before_status=arguments.before_status, once=arguments.once,
                          experiment=arguments.experiment or pool,
                          allow_pickle=arguments.allow_pickle)
    if arguments.on is None:  # on Dask the function is imported where the loops run
        options.function()  # fail here, once, rather than in every worker
    with TaskManager(pool) as manager:
        pools = manager.list()
        if pool not in pools:
            raise UnknownPoolError(f"unknown task pool {pool!r} in {manager.store!r}; "
                                   f"known pools: {', '.join(pools) or 'none'}")
    with _terminate_as_interrupt():
        summaries = placement.run_loops(options)
    for summary in summaries:
        print(summary.line())
    with TaskManager(pool) as manager:
        print(f"pool {pool!r}: {manager.task_stat()}")
    return 1 if any(summary.error is not None for summary in summaries) else 0


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
    if arguments.command == "dashboard":
        return run_dashboard(arguments)
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
