"""Worker loops placed on an existing Dask cluster (``taskroll worker --on dask://HOST:PORT``).

Each loop is one long-lived Dask task that runs :func:`taskroll.cluster.loop.run_loop` in a
child process of its Dask worker process (:mod:`taskroll.cluster.loop_process`: loops
sharing a multi-threaded Dask worker keep their own settings and runs), with the
settings of the submitting process (:class:`LoopSettings`: the store and tracking URLs,
lease, allowlists) applied there first. Dask does the placing and the restarting: a loop
asks for ``resources`` (``{"GPU": 1}`` runs only on workers started with
``--resources GPU=1``), and when a Dask worker dies (its loops' processes end with it)
its nanny starts a new one and the scheduler runs the lost loops again elsewhere; the
task a dead loop held comes back when its lease ends, and the loops drain (they wait for
it) so it is finished. ``retries`` re-runs a loop that raised (its process ended with an
exception, e.g. it could not import its task function's module); a loop whose process
was killed (out of memory) is reported, as with local workers, and the other loops
finish its task.

Nothing waits forever: the loops are submitted only once a Dask worker that offers their
``resources`` has joined (``wait_for_workers`` seconds at most, else an error that says
which resources no worker offers), a lost scheduler is a :class:`TaskrollError`, and an
interrupt (Ctrl-C; ``taskroll worker`` turns SIGTERM into one) sets a Dask ``Event`` the
loops read before each claim, so each ends after its current task, and cancels the loops
not yet started.

Dask is optional: this module imports ``distributed`` only when a loop is placed, and a
missing one is a :class:`~taskroll.errors.MissingDependencyError` naming
``pip install "taskroll[dask]"``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary
from taskroll.cluster.loop_process import WORKER_NAME_VARIABLE, run_loop_in_child
from taskroll.errors import TaskConfigError, TaskrollError, require
from taskroll.manage_failure import describe
from taskroll.threads import THREAD_VARIABLES

logger = logging.getLogger(__name__)

WORKER_POLL_SECONDS = 0.5
"""How often :meth:`DaskWorkers.run_loops` looks for a worker that offers the resources."""
SCHEME = "dask://"
"""The scheme of ``--on`` addresses; ``dask://host:port`` is the scheduler ``tcp://host:port``."""


def scheduler_address(address: str) -> str:
    """Return a Dask scheduler address from ``dask://host:port`` (or ``tcp://``, ``tls://``).

    Raises:
        TaskConfigError: For another scheme or a missing host or port.
    """
    given = address
    if address.startswith(SCHEME):
        address = "tcp://" + address[len(SCHEME):]
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if (scheme not in ("tcp", "tls") or not host or not port.isdigit()
            or not 0 < int(port) < 65536):
        raise TaskConfigError(f"--on takes a Dask scheduler as dask://HOST:PORT (or tcp://, "
                              f"tls://) with a port from 1 to 65535, got {given!r}")
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


def _dask_loop(number: int, options: LoopOptions, settings: LoopSettings,
               stop_event: str) -> LoopSummary:
    """Body of one loop as a Dask task: run it in a child process, saying where it ran.

    The loop gets a process of its own (:mod:`taskroll.cluster.loop_process`), since
    other loops may share this Dask worker process; it stops taking tasks once the Dask
    event ``stop_event`` is set.
    """
    distributed: Any = require("distributed", "dask")
    worker = distributed.get_worker()
    event = distributed.Event(stop_event)

    def stop() -> bool:
        try:
            return bool(event.is_set())
        except Exception:  # the scheduler unreachable: go on; claims are leases
            return False

    environment = {WORKER_NAME_VARIABLE: str(worker.name)}
    if options.threads is not None:  # asked for explicitly: wins over Dask's defaults
        environment.update({name: str(options.threads) for name in THREAD_VARIABLES})
    return run_loop_in_child(number, options, settings,
                             where=f"dask worker {worker.name}, {worker.address}",
                             stop=stop, environment=environment)


def _workers(client: Any) -> list[dict[str, Any]]:
    """The scheduler's description of every worker (each with its ``resources``)."""
    try:
        info = client.scheduler_info(n_workers=-1)  # newer Dask lists 5 unless told
    except TypeError:  # distributed before n_workers: it lists them all
        info = client.scheduler_info()
    return list(info.get("workers", {}).values())


def _offers(resources: Mapping[str, float], offered: Mapping[str, float]) -> bool:
    """Whether a worker offering ``offered`` can run a loop that needs ``resources``."""
    return all(offered.get(name, 0) >= amount for name, amount in resources.items())


class DaskWorkers:
    """Place ``n`` worker loops on a Dask cluster, each a long-lived Dask task.

    Args:
        client_or_address: A ``distributed.Client``, or a scheduler address
            (``dask://host:port``, ``tcp://host:port``); a client made from an address is
            closed after each run.
        n: Worker loops.
        resources: Dask resources each loop needs, e.g. ``{"GPU": 1}`` or ``"GPU=1"``.
        threads: BLAS/OpenMP threads each loop's process may use (``None``: as the Dask
            worker process was started).
        retries: Times Dask re-runs a loop that raised (a loop lost with its Dask worker
            is re-run by the scheduler, up to ``distributed.scheduler.allowed-failures``).
        wait_for_workers: Seconds to wait for a Dask worker that offers ``resources``
            (any worker, without them) to join before giving up.

    Raises:
        TaskConfigError: For ``n`` below 1, bad resources, threads, address or wait.
    """

    def __init__(self, client_or_address: Any, n: int = 1,
                 resources: str | Sequence[str] | Mapping[str, float] | None = None,
                 threads: int | None = None, retries: int = 3,
                 wait_for_workers: float = 60.0) -> None:
        if not wait_for_workers >= 0 or wait_for_workers == float("inf"):
            raise TaskConfigError(f"--wait-for-workers takes seconds >= 0, got {wait_for_workers}")
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
        self.wait_for_workers = wait_for_workers

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
        except Exception as error:  # OSError, or a reply that is not Dask's (another server)
            raise TaskrollError(f"cannot reach the Dask scheduler at {self.client_or_address}: "
                                f"{describe(error)}") from error

    def _wait_for_capable_worker(self, client: Any) -> None:
        """Wait until a worker that can run a loop has joined.

        Raises:
            TaskrollError: When none joined within ``wait_for_workers`` seconds.
        """
        deadline = time.monotonic() + self.wait_for_workers
        warned = False
        while True:
            if any(_offers(self.resources, worker.get("resources") or {})
                   for worker in _workers(client)):
                return
            if time.monotonic() >= deadline:
                break
            if not warned:
                logger.warning("waiting up to %g s for a Dask worker at %s that offers %s",
                               self.wait_for_workers, self._address(),
                               self._wanted())
                warned = True
            time.sleep(WORKER_POLL_SECONDS)
        hint = (f"start one with 'dask worker {self._address()} --resources "
                f"{','.join(f'{name}={amount:g}' for name, amount in self.resources.items())}'"
                if self.resources else f"start one with 'dask worker {self._address()}'")
        raise TaskrollError(f"no Dask worker at {self._address()} offers {self._wanted()} "
                            f"after {self.wait_for_workers:g} s; {hint}, or change --resources; "
                            f"the pool is unchanged")

    def _wanted(self) -> str:
        """What a loop needs, in words."""
        if not self.resources:
            return "a thread (no worker has joined)"
        return ", ".join(f"{name}={amount:g}" for name, amount in self.resources.items())

    def run_loops(self, options: LoopOptions) -> list[LoopSummary]:
        """Submit the loops, wait for all of them, return their summaries in loop order.

        A loop that failed on the cluster (it raised out of the loop ``retries`` + 1 times,
        its process was killed, Dask gave up after its worker died ``allowed-failures``
        times) gets a summary with ``error``.

        Raises:
            MissingDependencyError: When ``distributed`` is not installed.
            TaskrollError: When the scheduler cannot be reached, no worker offering the
                resources joined in time, or the scheduler was lost while the loops ran.
            KeyboardInterrupt: After asking the loops to stop (each finishes its task).
        """
        distributed: Any = require("distributed", "dask")
        settings = LoopSettings.current()
        if self.threads is not None:
            options = replace(options, threads=self.threads)
        client, made_here = self._client()
        try:
            self._wait_for_capable_worker(client)
            run = uuid.uuid4().hex[:12]
            stop_event = f"taskroll-stop-{run}"
            futures = [client.submit(_dask_loop, number, options, settings, stop_event,
                                     pure=False,
                                     key=f"taskroll-loop-{options.task_pool}-{number}-{run}",
                                     retries=self.retries, resources=self.resources or None)
                       for number in range(self.n)]
            try:
                distributed.wait(futures)
            except KeyboardInterrupt:
                _stop(distributed, client, stop_event, futures)
                raise
            except Exception as error:  # the scheduler lost: the futures are cancelled
                raise TaskrollError(
                    f"the loops on the Dask scheduler at {self._address()} were cancelled, "
                    f"e.g. the scheduler was lost ({describe(error)}); tasks they held come "
                    f"back when their leases end: run the command again") from error
            summaries = []
            for number, future in enumerate(futures):
                if future.status == "finished":
                    summaries.append(future.result())
                elif future.status == "cancelled":
                    summaries.append(LoopSummary(number, error="cancelled on the Dask cluster"))
                else:
                    summaries.append(LoopSummary(number, error=describe(future.exception())))
            return summaries
        finally:
            if made_here:
                client.close()


def _stop(distributed: Any, client: Any, stop_event: str, futures: list[Any]) -> None:
    """Ask running loops to end after their task; cancel the loops not yet started."""
    with contextlib.suppress(Exception):  # best effort: the scheduler may be gone
        distributed.Event(stop_event, client=client).set()
    with contextlib.suppress(Exception):
        # a running loop is not interrupted (Dask cannot stop a thread); it reads the event
        # (its thread asks every second and tells the loop's process)
        client.cancel([future for future in futures if future.status == "pending"])
