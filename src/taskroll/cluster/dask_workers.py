"""Worker loops placed on an existing Dask cluster (``taskroll worker --on dask://HOST:PORT``).

Each loop is one long-lived Dask task that runs :func:`taskroll.cluster.loop.run_loop` in a
Dask worker process, with the settings of the submitting process (:class:`LoopSettings`:
the store and tracking URLs, lease, allowlists) applied there first. Dask does the
placing and the restarting: a loop asks for ``resources`` (``{"GPU": 1}`` runs only on
workers started with ``--resources GPU=1``), and when a Dask worker dies its nanny starts
a new one and the scheduler runs the lost loop again elsewhere; the task the dead loop
held comes back when its lease ends, and the loops drain (they wait for it) so it is
finished. ``retries`` re-runs a loop that raised.

Dask is optional: this module imports ``distributed`` only when a loop is placed, and a
missing one is a :class:`~taskroll.errors.MissingDependencyError` naming
``pip install "taskroll[dask]"``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from taskroll.errors import TaskConfigError, TaskrollError, require
from taskroll.manage_failure import describe
from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary, run_loop

logger = logging.getLogger(__name__)

SCHEME = "dask://"
"""The scheme of ``--on`` addresses; ``dask://host:port`` is the scheduler ``tcp://host:port``."""


def scheduler_address(address: str) -> str:
    """Return a Dask scheduler address from ``dask://host:port`` (or ``tcp://``, ``tls://``).

    Raises:
        TaskConfigError: For another scheme or a missing host or port.
    """
    if address.startswith(SCHEME):
        address = "tcp://" + address[len(SCHEME):]
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("tcp", "tls", "inproc") or not host or not port.isdigit():
        raise TaskConfigError(f"--on takes a Dask scheduler as dask://HOST:PORT (or tcp://, "
                              f"tls://), got {address!r}")
    return f"{scheme}://{host}:{port}"


def parse_resources(values: str | Sequence[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Return Dask resources from ``["GPU=1", "MEMORY=4e9"]`` or ``"GPU=1,MEMORY=4e9"``.

    Raises:
        TaskConfigError: For an item that is not ``NAME=NUMBER`` with a number > 0.
    """
    if values is None:
        return {}
    if isinstance(values, Mapping):
        items = [f"{name}={amount}" for name, amount in values.items()]
    else:
        texts = [values] if isinstance(values, str) else list(values)
        items = [item for text in texts for item in text.replace(",", " ").split()]
    resources: dict[str, float] = {}
    for item in items:
        name, _, amount = item.partition("=")
        try:
            number = float(amount)
        except ValueError:
            number = float("nan")
        if not name.strip() or not number > 0 or number == float("inf"):
            raise TaskConfigError(f"--resources takes NAME=AMOUNT with an amount > 0, e.g. "
                                  f"GPU=1, got {item!r}")
        resources[name.strip()] = number
    return resources


def _dask_loop(number: int, options: LoopOptions, settings: LoopSettings) -> LoopSummary:
    """Body of one loop as a Dask task: run it, saying which Dask worker ran it."""
    from distributed import get_worker

    worker = get_worker()
    return run_loop(number, options, settings,
                    where=f"dask worker {worker.name}, {worker.address}, pid {os.getpid()}")


class DaskWorkers:
    """Place ``n`` worker loops on a Dask cluster, each a long-lived Dask task.

    Args:
        client_or_address: A ``distributed.Client``, or a scheduler address
            (``dask://host:port``, ``tcp://host:port``); a client made from an address is
            closed after each run.
        n: Worker loops.
        resources: Dask resources each loop needs, e.g. ``{"GPU": 1}`` or ``"GPU=1"``.
        threads: BLAS/OpenMP threads each loop may use in its Dask worker process
            (``None``: as the Dask worker was started).
        retries: Times Dask re-runs a loop that raised (a loop lost with its Dask worker
            is re-run by the scheduler, up to ``distributed.scheduler.allowed-failures``).

    Raises:
        TaskConfigError: For ``n`` below 1, bad resources, threads or address.
    """

    def __init__(self, client_or_address: Any, n: int = 1,
                 resources: str | Sequence[str] | Mapping[str, float] | None = None,
                 threads: int | None = None, retries: int = 3) -> None:
        if n < 1:
            raise TaskConfigError(f"-n must be at least 1, got {n}")
        if threads is not None and threads < 1:
            raise TaskConfigError(f"--threads must be at least 1, got {threads}")
        if isinstance(client_or_address, str):
            client_or_address = scheduler_address(client_or_address)
        self.client_or_address = client_or_address
        self.n = n
        self.resources = parse_resources(resources)
        self.threads = threads
        self.retries = retries

    def __repr__(self) -> str:
        return (f"DaskWorkers({self._address()!r}, n={self.n}, resources={self.resources}, "
                f"threads={self.threads})")

    def _address(self) -> str:
        if isinstance(self.client_or_address, str):
            return self.client_or_address
        scheduler = getattr(self.client_or_address, "scheduler", None)
        return str(getattr(scheduler, "address", self.client_or_address))

    def _client(self) -> tuple[Any, bool]:
        """Return ``(client, made here)``."""
        distributed: Any = require("distributed", "dask")
        if not isinstance(self.client_or_address, str):
            return self.client_or_address, False
        try:
            return distributed.Client(self.client_or_address, timeout="30s"), True
        except OSError as error:
            raise TaskrollError(f"cannot reach the Dask scheduler at {self.client_or_address}: "
                                f"{describe(error)}") from error

    def _warn_without_resources(self, client: Any) -> None:
        offered: set[str] = set()
        for worker in client.scheduler_info().get("workers", {}).values():
            offered.update(worker.get("resources", {}))
        missing = sorted(set(self.resources) - offered)
        if missing:
            logger.warning("no Dask worker offers %s yet: the loops wait until one joins "
                           "(dask worker --resources %s=1)", ", ".join(missing), missing[0])

    def run_loops(self, options: LoopOptions) -> list[LoopSummary]:
        """Submit the loops, wait for all of them, return their summaries in loop order.

        A loop that failed on the cluster (its function raised out of the loop, Dask gave
        up after its worker died ``allowed-failures`` times) gets a summary with ``error``.

        Raises:
            MissingDependencyError: When ``distributed`` is not installed.
            TaskrollError: When the scheduler cannot be reached.
        """
        distributed: Any = require("distributed", "dask")
        settings = LoopSettings.current()
        if self.threads is not None:
            options = replace(options, threads=self.threads)
        client, made_here = self._client()
        try:
            if self.resources:
                self._warn_without_resources(client)
            run = uuid.uuid4().hex[:12]
            futures = [client.submit(_dask_loop, number, options, settings, pure=False,
                                     key=f"taskroll-loop-{options.task_pool}-{number}-{run}",
                                     retries=self.retries, resources=self.resources or None)
                       for number in range(self.n)]
            distributed.wait(futures)
            summaries = []
            for number, future in enumerate(futures):
                if future.status == "finished":
                    summaries.append(future.result())
                else:
                    summaries.append(LoopSummary(number, error=describe(future.exception())))
            return summaries
        finally:
            if made_here:
                client.close()
