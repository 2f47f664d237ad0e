"""One worker loop, wherever it runs: a spawned process here or a task on a Dask cluster.

A loop is :func:`taskroll.manage.run_task` on one pool with a manager that counts what
it committed and failed. The process that runs it may be another process, or another
machine: :class:`LoopSettings` carries what :func:`taskroll.init` needs there (the
store and tracking URLs resolved here, so a default or relative SQLite file, artifact
folder or data folder keeps its absolute path, and the ``TASKROLL_*`` variables of this
environment), and :class:`LoopOptions` what the loop does. Both show URLs with their
passwords masked (Dask logs the arguments of a task that failed). :func:`run_loop`
returns a :class:`LoopSummary` (never raises for a :class:`~taskroll.errors.TaskrollError`:
it becomes the summary's ``error``); a loop whose store does not hold its pool stops at
once with an error rather than reporting "nothing to do" (another machine's working
directory, another file), and a loop given ``stop`` takes no new task once it is true.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, overload

from taskroll.config import get_settings, init
from taskroll.errors import TaskrollError
from taskroll.manage import TaskManager, run_task
from taskroll.manage_failure import TASK_RAISED, describe
from taskroll.store.urls import mask_url
from taskroll.threads import cap_threads

DEFAULT_FUNC = "taskroll.train.trainer:task_train"
"""The task function of ``taskroll worker`` (trains a task, returns its recorder)."""
DEFAULT_END_FUNC = "taskroll.train.trainer:end_task_train"
"""The task function of ``taskroll worker --before-status part_done``."""
#: ``TASKROLL_*`` variables a loop elsewhere gets besides the settings of :func:`init`.
CARRIED_VARIABLES: tuple[str, ...] = ("TASKROLL_ALLOWED_MODULES", "TASKROLL_ALLOWED_TRACKING_URIS",
                                      "TASKROLL_FEATURE_CACHE")


def absolute_url(url: str) -> str:
    """Return ``url`` with a relative ``sqlite:///path`` made absolute (others unchanged).

    A loop may run in another working directory (a Dask worker's): a relative file
    there is another file.
    """
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path, mark, query = url[len(prefix):].partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            return f"{prefix}{os.path.abspath(path)}{mark}{query}"
    return url


def absolute_folder(folder: str | None) -> str | None:
    """Return a relative folder (no ``scheme:``) made absolute; URLs and ``None`` unchanged."""
    if not folder or "://" in folder or folder.startswith("file:"):
        return folder
    return os.path.abspath(os.path.expanduser(folder))


def masked_repr(value: Any) -> str:
    """The ``repr`` of a dataclass with the passwords of its URLs (and URL values) masked."""
    parts = []
    for item in fields(value):
        shown = getattr(value, item.name)
        if isinstance(shown, str):
            shown = mask_url(shown)
        elif isinstance(shown, dict):
            shown = {key: mask_url(text) if isinstance(text, str) else text
                     for key, text in shown.items()}
        parts.append(f"{item.name}={shown!r}")
    return f"{type(value).__name__}({', '.join(parts)})"


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


@dataclass(frozen=True, repr=False)
class LoopSettings:
    """What :func:`taskroll.init` needs in the process that runs a loop.

    Attributes:
        task_url: Task store URL (resolved: never ``None``).
        task_db_name: MongoDB database name.
        tracking_uri: MLflow tracking URI (resolved).
        artifact_root: Artifact root of new experiments, or ``None``.
        lease_seconds: Lease of fetched tasks.
        max_attempts: Attempts before a task is ``failed``.
        provider_uri: Qlib data folder, or ``None``.
        region: Qlib region, or ``None``.
        environment: Other ``TASKROLL_*`` variables (:data:`CARRIED_VARIABLES`) to set.
    """

    task_url: str
    task_db_name: str
    tracking_uri: str
    artifact_root: str | None = None
    lease_seconds: float = 60.0
    max_attempts: int = 3
    provider_uri: str | None = None
    region: str | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls) -> LoopSettings:
        """Return the settings in force in this process (checked).

        Raises:
            TaskConfigError: When the lease or attempts in force are invalid.
        """
        settings = get_settings()
        return cls(task_url=absolute_url(settings.resolved_task_url()),
                   task_db_name=settings.task_db_name,
                   tracking_uri=absolute_url(settings.resolved_tracking_uri()),
                   artifact_root=absolute_folder(settings.artifact_root),
                   lease_seconds=settings.checked_lease_seconds(),
                   max_attempts=settings.checked_max_attempts(),
                   provider_uri=absolute_folder(settings.provider_uri), region=settings.region,
                   environment={name: os.environ[name] for name in CARRIED_VARIABLES
                                if os.environ.get(name)})

    def __repr__(self) -> str:
        return masked_repr(self)

    def apply(self) -> None:
        """Make these the settings of this process (and of the processes it starts)."""
        os.environ.update(self.environment)
        modules = self.environment.get("TASKROLL_ALLOWED_MODULES")
        init(task_url=self.task_url, task_db_name=self.task_db_name,
             tracking_uri=self.tracking_uri, artifact_root=self.artifact_root,
             lease_seconds=self.lease_seconds, max_attempts=self.max_attempts,
             provider_uri=self.provider_uri, region=self.region,
             allowed_modules=modules or None)


@dataclass(frozen=True, repr=False)
class LoopOptions:
    """What a worker loop does (the options of ``taskroll worker``).

    Attributes:
        task_pool: Pool to work on.
        func: Task function, or its ``"module:callable"`` spec (imported where the loop runs).
        query: Mongo-style filter of the tasks to take.
        before_status: ``waiting`` or ``part_done``.
        after_status: Status committed with each result.
        once: Exit as soon as nothing is waiting; default: drain (also wait for tasks other
            workers are running, which come back when a dead worker's lease ends).
        force_release: Run each task in a fresh process.
        experiment: Experiment name passed to the task function as ``experiment_name``.
        kwargs: Further keyword arguments of the task function.
        threads: BLAS/OpenMP threads the loop's process may use (``None``: leave as is).
        task_url: The pool's store, when not the one of the settings (``TrainerRM``'s
            ``task_manager_kwargs``); an absolute URL.
        allow_pickle: Decode and store pickled values (a pool created with it).
        lease_seconds: Lease of the loop's claims (``None``: the settings').
        max_attempts: Attempts before a task is ``failed`` (``None``: the settings').
    """

    task_pool: str
    func: Callable[..., Any] | str = DEFAULT_FUNC
    query: Mapping[str, Any] | None = None
    before_status: str = TaskManager.STATUS_WAITING
    after_status: str = TaskManager.STATUS_DONE
    once: bool = False
    force_release: bool = False
    experiment: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = None
    task_url: str | None = None
    allow_pickle: bool = False
    lease_seconds: float | None = None
    max_attempts: int | None = None

    def __repr__(self) -> str:
        return masked_repr(self)

    def function(self) -> Callable[..., Any]:
        """Return the task function (imported from its spec when given as text)."""
        return load_function(self.func) if isinstance(self.func, str) else self.func


@dataclass(frozen=True)
class LoopSummary:
    """What one worker loop did.

    Attributes:
        number: The loop's number (0 to n - 1).
        where: Where it ran, e.g. ``"pid 4242"`` or ``"dask worker gpu-0, pid 4242"``.
        done: Tasks it committed.
        failed: Task attempts that failed in it.
        seconds: Its wall time.
        error: Why it stopped early (one line), or ``None`` when it finished.
    """

    number: int
    where: str = ""
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        """The one line ``taskroll worker`` prints for this loop."""
        if self.error is not None:
            return f"worker {self.number}: stopped: {self.error}"
        return (f"worker {self.number} ({self.where}): {self.done} task(s) done, "
                f"{self.failed} failed, {self.seconds:.1f} s")


class CountingManager(TaskManager):
    """A TaskManager that counts the tasks this loop committed and failed.

    With ``stop``, it claims nothing and sees nothing running elsewhere once ``stop()``
    is true, so the loop ends after the task it is running.
    """

    def __init__(self, options: LoopOptions, stop: Callable[[], bool] | None = None) -> None:
        super().__init__(options.task_pool, store=options.task_url,
                         allow_pickle=options.allow_pickle,
                         lease_seconds=options.lease_seconds, max_attempts=options.max_attempts)
        self.done = 0
        self.failed = 0
        self.stop = stop

    def stopped(self) -> bool:
        """Whether the loop was asked to stop."""
        return self.stop is not None and self.stop()

    @overload
    def fetch_task(self, query: Mapping[str, Any] | None = None,
                   status: str = TaskManager.STATUS_WAITING, n: None = None
                   ) -> dict[str, Any] | None: ...

    @overload
    def fetch_task(self, query: Mapping[str, Any] | None = None,
                   status: str = TaskManager.STATUS_WAITING, *, n: int
                   ) -> list[dict[str, Any]]: ...

    def fetch_task(self, query: Mapping[str, Any] | None = None,
                   status: str = TaskManager.STATUS_WAITING, n: int | None = None
                   ) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Claim as :meth:`TaskManager.fetch_task` does, nothing once stopped."""
        if self.stopped():
            return None if n is None else []
        if n is None:
            return super().fetch_task(query, status)
        return super().fetch_task(query, status, n=n)

    def running_elsewhere(self, query: Mapping[str, Any] | None = None,
                          status: str = TaskManager.STATUS_WAITING) -> int:
        """Count as :meth:`TaskManager.running_elsewhere` does, none once stopped."""
        return 0 if self.stopped() else super().running_elsewhere(query, status)

    def commit_task_res(self, task: Mapping[str, Any] | str, res: Any,
                        status: str = TaskManager.STATUS_DONE) -> bool:
        """Commit as :meth:`TaskManager.commit_task_res` does, counting commits that took."""
        committed = super().commit_task_res(task, res, status=status)
        self.done += int(committed)
        return committed

    def fail_task(self, task: Mapping[str, Any], error: str | BaseException,
                  status: str = TaskManager.STATUS_WAITING, kind: str = TASK_RAISED) -> str:
        """Record a failure as :meth:`TaskManager.fail_task` does, counting it."""
        self.failed += 1
        return super().fail_task(task, error, status=status, kind=kind)


def run_loop(number: int, options: LoopOptions, settings: LoopSettings | None = None,
             where: str | None = None, stop: Callable[[], bool] | None = None) -> LoopSummary:
    """Run one worker loop on ``options.task_pool`` until it is drained (or ``once``).

    Args:
        number: The loop's number, echoed in the summary.
        options: What to run.
        settings: Settings to apply first (in a process other than the caller's).
        where: Where the loop runs (default: this host's name and pid).
        stop: Asked before each claim; once true, the loop takes no new task and ends.

    Returns:
        The loop's summary; a :class:`~taskroll.errors.TaskrollError` (a bad function, a
        store that stays down, a store without the pool) is its ``error`` instead of
        being raised.
    """
    begun = time.perf_counter()
    where = where or f"{socket.gethostname()}, pid {os.getpid()}"
    try:
        if settings is not None:
            settings.apply()
        if options.threads is not None:
            cap_threads(options.threads)
        function = options.function()
        with CountingManager(options, stop) as manager:
            if options.task_pool not in manager.list():
                raise TaskrollError(
                    f"task pool {options.task_pool!r} is not in {manager.store!r} as seen "
                    f"from {where} (give the store as an absolute path or a server URL "
                    f"that this machine reaches)")
            run_task(function, manager, query=options.query,
                     force_release=options.force_release, before_status=options.before_status,
                     after_status=options.after_status, once=options.once,
                     **{"experiment_name": options.experiment or options.task_pool,
                        **options.kwargs})
    except TaskrollError as error:
        return LoopSummary(number, where=where, seconds=time.perf_counter() - begun,
                           error=describe(error))
    return LoopSummary(number, where=where, done=manager.done, failed=manager.failed,
                       seconds=time.perf_counter() - begun)
