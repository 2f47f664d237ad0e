"""A worker loop in a child process of the process that placed it (a Dask worker's).

A Dask worker runs as many tasks at once as it has threads (``dask worker`` starts one
per core), so several loops can land in one Dask worker process. A loop's state is
process-wide: the settings of :func:`taskroll.init` (pool, tracking store, allowlists),
the one active run of ``R``, the thread caps, MLflow's clients. Two loops sharing a
process would take each other's run ("still active") or record into each other's store.
:func:`run_loop_in_child` therefore runs each loop in a process of its own, started
with ``python -m taskroll.cluster.loop_process``, as ``taskroll worker -n N`` does locally:

* the loop's options and settings go to the child on its standard input (pickled with
  ``cloudpickle``, as Dask sent them: a parent talking to its own child, nothing read
  from a shared store), its summary comes back in a file;
* the child imports what its parent could: the parent's ``sys.path`` entries beyond the
  interpreter's own are sent with the loop (a folder with ``os.pathsep`` in its name is
  kept) and take the same place on the child's: those before the standard library
  (``client.upload_file``, ``PYTHONPATH``) first, also on its ``PYTHONPATH`` for the
  processes it starts; those after it (a ``.pth`` file's) last, so they shadow nothing
  there; it gets ``TASKROLL_DASK_WORKER`` (the Dask worker's name) and the loop's thread
  caps before it starts;
* an exception that ends the child (a loop it cannot load, an error outside any task)
  comes back as one line and is raised in the parent as a :class:`TaskrollError`, as the
  loop would have raised there (Dask's ``retries`` re-run it); a child that ends without
  a word (killed, out of memory) gives a summary whose ``error`` says how it ended;
* ``stop`` is asked while the child runs; once true, the child is told to take no new
  task (it ends after its current one);
* the child watches its standard input: when it closes without a word (the parent was
  killed or lost), the child exits at once, as it would have died with the parent,
  killing the process that runs its task (``force_release``) and removing the parent's
  summary folder; the task it held comes back when its lease ends.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary, run_loop
from taskroll.errors import TaskrollError
from taskroll.manage_failure import describe

logger = logging.getLogger(__name__)

WORKER_NAME_VARIABLE = "TASKROLL_DASK_WORKER"
"""Set in a loop's process to the name of the Dask worker that placed it."""
POLL_SECONDS = 1.0
"""How often the parent checks ``stop`` (a scheduler round trip on Dask) while the child runs."""
EXIT_GRACE_SECONDS = 30.0
"""How long a child that left its summary may take to exit (a task function may have left a
thread running, which Python waits for) before it is killed and its summary taken."""
STOP_LINE = b"stop\n"
"""What the parent writes to the child's standard input to ask it to stop."""
_LENGTH_BYTES = 8
_ORPHAN_EXIT_STATUS = 70
_ERROR_EXIT_STATUS = 1


def _dumps(value: Any) -> bytes:
    """Pickle ``value`` with cloudpickle when installed (a function defined in a script)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - distributed depends on cloudpickle
        return pickle.dumps(value)
    return bytes(cloudpickle.dumps(value))


def own_path(path: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Return the entries of ``sys.path`` (or ``path``) that are not the interpreter's own.

    Those not under its prefixes: a folder added at run time (``client.upload_file``),
    ``PYTHONPATH``, the working folder (an empty entry, made absolute), a folder a
    ``.pth`` file added; each once, in order, split in two: those before the first of
    the interpreter's own entries (they come before the standard library) and those
    after it (they must not shadow it).
    """
    entries = sys.path if path is None else path
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    front: list[str] = []
    back: list[str] = []
    past_own = False
    for entry in entries:
        if any(entry == prefix or entry.startswith(prefix.rstrip(os.sep) + os.sep)
               for prefix in prefixes):
            past_own = True
        else:
            (back if past_own else front).append(entry or os.getcwd())
    front = _once(front)
    return front, [entry for entry in _once(back) if entry not in front]


def _once(entries: list[str]) -> list[str]:
    """``entries`` without repeats, in order."""
    return list(dict.fromkeys(entries))


def import_path(path: list[str] | None = None) -> str:
    """Return ``PYTHONPATH`` for a child that imports what this process can.

    The entries of :func:`own_path` that come before the standard library come first,
    then the ``PYTHONPATH`` this process was started with. An entry with ``os.pathsep`` in
    it cannot be written there and is left out, as are those after the standard library
    (a loop's process gets both on its ``sys.path`` from :func:`run_loop_in_child`).
    """
    front, _ = own_path(path)
    own = [entry for entry in front if os.pathsep not in entry]
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys([*own, *inherited]))


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a loop's process: this one's, the import path, ``extra``."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = import_path()
    environment.update(extra)
    return environment


def _send(stream: IO[bytes] | None, data: bytes) -> bool:
    """Write to the child's standard input; ``False`` when it is gone."""
    if stream is None:
        return False
    try:
        stream.write(data)
        stream.flush()
    except (BrokenPipeError, OSError, ValueError):
        return False
    return True


def run_loop_in_child(number: int, options: LoopOptions, settings: LoopSettings,
                      where: str, stop: Callable[[], bool],
                      environment: Mapping[str, str] | None = None) -> LoopSummary:
    """Run :func:`~taskroll.cluster.loop.run_loop` in a child process and wait for it.

    Args:
        number: The loop's number.
        options: What the loop runs.
        settings: The settings the child applies first.
        where: Where it runs, without the pid (the child adds its own).
        stop: Asked before the child starts (when true, none starts), then every
            :data:`POLL_SECONDS`; once true, the child takes no new task.
        environment: Variables set in the child besides this process's.

    Returns:
        The child's summary, or one whose ``error`` says how the child ended when it left
        none (killed, out of memory, interrupted).

    Raises:
        TaskrollError: When an exception ended the child (it cannot load the loop, or
            the loop raised outside its tasks), with the exception on one line.
    """
    if stop():  # asked already (e.g. a loop Dask starts late): no process, no claim
        return LoopSummary(number, where=where)
    with tempfile.TemporaryDirectory(prefix="taskroll-loop-") as folder:
        summary_path = Path(folder) / "summary.pickle"
        loop = _dumps((number, options, settings, where))
        # the path and summary file first: the loop may need the one, its error the other
        payload = pickle.dumps((*own_path(), str(summary_path), loop))
        child = subprocess.Popen([sys.executable, "-m", "taskroll.cluster.loop_process"],
                                 stdin=subprocess.PIPE,
                                 env=child_environment(environment or {}))
        try:
            _send(child.stdin, len(payload).to_bytes(_LENGTH_BYTES, "big") + payload)
            status, lingered = _wait(child, summary_path, stop)
        finally:
            if child.poll() is None:  # this thread was interrupted: the child goes too
                child.kill()
                child.wait()
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()
        left = None
        if summary_path.exists():
            with summary_path.open("rb") as stream:
                left = pickle.load(stream)  # written by our own child, in a folder of ours
    if isinstance(left, str):
        raise TaskrollError(f"the loop's process ({where}, pid {child.pid}) raised: {left}")
    if (status == 0 or lingered) and isinstance(left, LoopSummary):
        return left
    return LoopSummary(number, where=f"{where}, pid {child.pid}",
                       error=f"its process exited with status {_status(status)} and no "
                             f"summary ({where}, pid {child.pid}: its output is in the log "
                             f"there)")


def _wait(child: subprocess.Popen[bytes], summary_path: Path,
          stop: Callable[[], bool]) -> tuple[int, bool]:
    """Wait for ``child``, passing ``stop`` on; return ``(status, killed after its summary)``.

    A child still alive :data:`EXIT_GRACE_SECONDS` after leaving its summary is killed:
    its loop is over, only its exit is held up.
    """
    asked, summarized = False, None
    while True:
        try:
            return child.wait(timeout=POLL_SECONDS), False
        except subprocess.TimeoutExpired:
            pass
        if summary_path.exists():
            summarized = summarized or time.monotonic()
            if time.monotonic() - summarized >= EXIT_GRACE_SECONDS:
                logger.warning("the loop's process %s left its summary but did not exit in %g s "
                               "(a thread its task function left running?): killed",
                               child.pid, EXIT_GRACE_SECONDS)
                child.kill()
                return child.wait(), True
        elif not asked and stop():
            asked = True
            _send(child.stdin, STOP_LINE)


def _status(status: int) -> str:
    """An exit status in words: ``-9 (SIGKILL)`` for a process ended by a signal."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"{status} ({signal.Signals(-status).name})"
    return str(status)


def _read_exactly(descriptor: int, size: int) -> bytes:
    """Read ``size`` bytes from a file descriptor (fewer only at its end)."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(descriptor, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _watch_parent(descriptor: int, stopped: threading.Event, folder: Path) -> None:
    """Set ``stopped`` on a stop line; exit the process when the parent goes away.

    Reads the raw descriptor (a daemon thread blocked on ``sys.stdin`` would hold its
    lock when the interpreter shuts down, which aborts it). On the way out it kills the
    processes it started (the fresh process of a ``force_release`` task) and removes
    ``folder``, the summary folder its dead parent can no longer remove.
    """
    received = b""
    while chunk := os.read(descriptor, 64):
        received += chunk
        if STOP_LINE in received:
            stopped.set()
    try:  # standard input closed: the parent is gone
        with contextlib.suppress(Exception):
            for process in multiprocessing.active_children():
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os._exit(_ORPHAN_EXIT_STATUS)


def _write(value: LoopSummary | str, summary_path: str) -> None:
    """Leave ``value`` (a summary, or an error in one line) where the parent reads it."""
    staged = Path(f"{summary_path}.tmp")
    with staged.open("wb") as output:
        pickle.dump(value, output)
    os.replace(staged, summary_path)


def main() -> int:
    """Body of a loop's process: read the loop, run it, write its summary (or its error)."""
    descriptor = sys.stdin.fileno()
    size = int.from_bytes(_read_exactly(descriptor, _LENGTH_BYTES), "big")
    # the parent, our own process, sent this: its path, the summary file (texts), the loop
    front, back, summary_path, loop = pickle.loads(_read_exactly(descriptor, size))
    sys.path[:0] = [entry for entry in front if entry not in sys.path]
    sys.path += [entry for entry in back if entry not in sys.path]
    stopped = threading.Event()
    threading.Thread(target=_watch_parent, args=(descriptor, stopped, Path(summary_path).parent),
                     daemon=True, name="taskroll-parent-watch").start()
    try:
        # cloudpickle's output loads with pickle; a module it names may fail to import
        number, options, settings, where = pickle.loads(loop)
        summary = run_loop(number, options, settings, where=f"{where}, pid {os.getpid()}",
                           stop=stopped.is_set)
    except Exception as error:
        traceback.print_exc()  # into the log of the parent (a Dask worker's)
        _write(describe(error), summary_path)
        return _ERROR_EXIT_STATUS
    _write(summary, summary_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
