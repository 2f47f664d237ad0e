"""Thread caps for worker processes: N workers on C cores get C // N threads each.

BLAS (OpenBLAS, MKL), OpenMP (LightGBM) and numexpr each start one thread per core by
default; N worker processes then run N x cores threads that preempt one another.
These libraries read their thread count from the environment when they load, so the
cap must be in a worker's environment before it imports numpy or LightGBM: start the
worker processes inside :func:`capped_environment` (a spawned process copies the
parent's environment), or call :func:`cap_threads` first thing in a fresh process.

A variable the user set explicitly (already in the environment) is left as it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
"""The environment variables that cap the threads of OpenMP, OpenBLAS, MKL, numexpr."""


def available_cores() -> int:
    """Return the cores this process may run on (its CPU affinity where known)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Return ``cores // workers``, at least 1.

    Args:
        workers: Worker processes sharing the machine.
        cores: Cores to share (default: :func:`available_cores`).

    Returns:
        Threads each worker may use.
    """
    total = available_cores() if cores is None else cores
    return max(1, total // max(1, workers))


def _capped_values(threads: int) -> dict[str, str]:
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return {name: str(threads) for name in THREAD_VARIABLES if not os.environ.get(name)}


def cap_threads(threads: int) -> dict[str, str]:
    """Cap this process's BLAS/OpenMP/numexpr threads at ``threads``.

    Sets each of :data:`THREAD_VARIABLES` the user has not set, which takes effect for
    libraries loaded afterwards; where ``threadpoolctl`` is installed, also limits the
    thread pools of libraries already loaded (to the cap, or to the user's
    ``OMP_NUM_THREADS`` when that was set).

    Args:
        threads: Threads allowed (at least 1).

    Returns:
        The variables this call set (those the user had set are not changed).

    Raises:
        ValueError: When ``threads`` is below 1.
    """
    values = _capped_values(threads)
    os.environ.update(values)
    try:
        from threadpoolctl import threadpool_limits  # optional: not a dependency
    except ImportError:
        return values
    omp = os.environ.get("OMP_NUM_THREADS", "")
    limit = int(omp) if omp.isdigit() and int(omp) > 0 else threads
    threadpool_limits(limits=limit)
    return values


@contextlib.contextmanager
def capped_environment(threads: int) -> Iterator[dict[str, str]]:
    """Set the thread caps in this process's environment for the duration of the block.

    Start worker processes inside the block: each copies the environment, so its
    libraries load with the cap; this process's own loaded libraries are not affected,
    and the variables are restored on exit.

    Args:
        threads: Threads each process started in the block may use (at least 1).

    Yields:
        The variables set for the block (those the user had set are kept).

    Raises:
        ValueError: When ``threads`` is below 1.
    """
    values = _capped_values(threads)
    os.environ.update(values)
    try:
        yield values
    finally:
        for name in values:
            os.environ.pop(name, None)
