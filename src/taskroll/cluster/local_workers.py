"""Worker loops in spawned processes on this machine (``taskroll worker -n N [--gpus 0,1]``).

Each process gets its own environment (:func:`taskroll.cluster.gpus.worker_environments`:
its GPU, its thread caps) before it starts, runs :func:`taskroll.cluster.loop.run_loop`
and puts its summary on a queue. A process that dies without a summary (killed, out of
memory) is reported with its exit status; its task comes back when its lease ends and
the other loops, which drain, finish it. An interrupt of the parent (Ctrl-C, or SIGTERM
turned into one by ``taskroll worker``) is passed on to the processes as SIGINT, so each
gives its task back, and the parent waits for them before raising it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Sequence
from typing import Any

from taskroll.cluster.gpus import parse_gpus, process_environment, worker_environments
from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary, run_loop
from taskroll.manage_failure import describe
from taskroll.threads import threads_per_worker

GRACE_SECONDS = 2.0
"""How long interrupted processes may take to end on a SIGINT of their own."""


def _process_main(number: int, options: LoopOptions, settings: LoopSettings,
                  results: Any) -> None:
    """Body of one spawned worker process: run a loop, put its summary on ``results``.

    An exception out of the loop (one that is not a task's) becomes the summary's error,
    in one line, and its traceback goes to standard error.
    """
    where = f"pid {multiprocessing.current_process().pid}"
    try:
        summary = run_loop(number, options, settings, where=where)
    except Exception as error:
        traceback.print_exc()
        summary = LoopSummary(number, where=where, error=describe(error))
    results.put(summary)


class LocalWorkers:
    """Place ``n`` worker loops in spawned processes on this machine.

    Args:
        n: Worker processes.
        gpus: Devices given round robin as ``CUDA_VISIBLE_DEVICES`` (``"0,1"`` or a list);
            ``None`` leaves the variable as it is.
        threads: BLAS/OpenMP threads per process (default cores // n).

    Raises:
        TaskConfigError: For ``n`` or ``threads`` below 1, or a malformed ``gpus``.
    """

    def __init__(self, n: int = 1, gpus: str | Sequence[str | int] | None = None,
                 threads: int | None = None) -> None:
        self.n = n
        self.gpus = None if gpus is None else parse_gpus(gpus)
        self.threads = threads_per_worker(n) if threads is None else threads
        self.environments = worker_environments(n, self.threads, self.gpus)

    def __repr__(self) -> str:
        return f"LocalWorkers(n={self.n}, gpus={self.gpus}, threads={self.threads})"

    def run_loops(self, options: LoopOptions) -> list[LoopSummary]:
        """Run the loops, wait for all of them, return their summaries in loop order.

        Raises:
            KeyboardInterrupt: After passing it on to the processes and waiting for them.
        """
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        settings = LoopSettings.current()
        processes = [context.Process(target=_process_main,
                                     args=(number, options, settings, results),
                                     name=f"taskroll-worker-{number}")
                     for number in range(self.n)]
        try:
            for process, environment in zip(processes, self.environments, strict=True):
                with process_environment(environment):  # its libraries load with these
                    process.start()
            return self._collect(processes, results)
        except KeyboardInterrupt:
            _interrupt(processes)
            raise

    @staticmethod
    def _collect(processes: Sequence[Any], results: Any) -> list[LoopSummary]:
        """Wait for the processes' summaries; one per process, in loop order."""
        summaries: dict[int, LoopSummary] = {}
        while len(summaries) < len(processes):
            if not any(process.is_alive() for process in processes) and results.empty():
                break
            try:
                summary = results.get(timeout=0.5)
            except queue.Empty:
                continue
            summaries[summary.number] = summary
        for process in processes:
            process.join()
        return [_checked(number, summaries.get(number), process.exitcode)
                for number, process in enumerate(processes)]


def _interrupt(processes: Sequence[Any], seconds: float = 30.0) -> None:
    """Send SIGINT to the live processes (each gives its task back), wait, then kill.

    After Ctrl-C in a terminal the processes got SIGINT already: those that end within
    a grace period are not sent a second one, which could cut their giving back short.
    """
    grace = time.monotonic() + GRACE_SECONDS
    for process in processes:
        if process.pid is not None:
            process.join(max(0.0, grace - time.monotonic()))
    for process in processes:
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
    for process in processes:
        if process.pid is not None:
            process.join(seconds)
            if process.is_alive():
                process.kill()
                process.join()


def _checked(number: int, summary: LoopSummary | None, exitcode: int | None) -> LoopSummary:
    """The loop's summary, or one saying how its process ended when it left none."""
    if summary is not None and (exitcode == 0 or summary.error is not None):
        return summary
    return LoopSummary(number, error=f"exited with status {exitcode}")
