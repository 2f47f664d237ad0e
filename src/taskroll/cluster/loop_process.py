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
  interpreter's own (``client.upload_file``, ``PYTHONPATH``) are put first on its
  ``PYTHONPATH``; it gets ``TASKROLL_DASK_WORKER`` (the Dask worker's name) and the
  loop's thread caps before it starts;
* ``stop`` is asked while the child runs; once true, the child is told to take no new
  task (it ends after its current one);
* the child watches its standard input: when it closes without a word (the parent was
  killed or lost), the child exits at once, as it would have died with the parent; the
  task it held comes back when its lease ends.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from taskroll.cluster.loop import LoopOptions, LoopSettings, LoopSummary, run_loop

WORKER_NAME_VARIABLE = "TASKROLL_DASK_WORKER"
"""Set in a loop's process to the name of the Dask worker that placed it."""
POLL_SECONDS = 1.0
"""How often the parent checks ``stop`` (a scheduler round trip on Dask) while the child runs."""
STOP_LINE = b"stop\n"
"""What the parent writes to the child's standard input to ask it to stop."""
_LENGTH_BYTES = 8
_ORPHAN_EXIT_STATUS = 70


def _dumps(value: Any) -> bytes:
    """Pickle ``value`` with cloudpickle when installed (a function defined in a script)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - distributed depends on cloudpickle
        return pickle.dumps(value)
    return bytes(cloudpickle.dumps(value))


def import_path(path: list[str] | None = None) -> str:
    """Return ``PYTHONPATH`` for a child that imports what this process can.

    The entries of ``sys.path`` that are not the interpreter's own (not under its
    prefixes: a folder added at run time, ``PYTHONPATH``, the working folder) come
    first, then the ``PYTHONPATH`` this process was started with.
    """
    entries = sys.path if path is None else path
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    own = [entry or os.getcwd() for entry in entries
           if not any(entry == prefix or entry.startswith(prefix.rstrip(os.sep) + os.sep)
                      for prefix in prefixes)]
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
        stop: Asked every :data:`POLL_SECONDS`; once true, the child takes no new task.
        environment: Variables set in the child besides this process's.

    Returns:
        The child's summary, or one whose ``error`` says how the child ended when it left
        none (killed, out of memory, interrupted).
    """
    with tempfile.TemporaryDirectory(prefix="taskroll-loop-") as folder:
        summary_path = Path(folder) / "summary.pickle"
        payload = _dumps((number, options, settings, where, str(summary_path)))
        child = subprocess.Popen([sys.executable, "-m", "taskroll.cluster.loop_process"],
                                 stdin=subprocess.PIPE,
                                 env=child_environment(environment or {}))
        try:
            _send(child.stdin, len(payload).to_bytes(_LENGTH_BYTES, "big") + payload)
            asked = False
            while True:
                try:
                    status = child.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if not asked and stop():
                    asked = True
                    _send(child.stdin, STOP_LINE)
        finally:
            if child.poll() is None:  # this thread was interrupted: the child goes too
                child.kill()
                child.wait()
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()
        if status == 0 and summary_path.exists():
            with summary_path.open("rb") as stream:
                summary: LoopSummary = pickle.load(stream)  # written by our own child
            return summary
        return LoopSummary(number, where=f"{where}, pid {child.pid}",
                           error=f"its process exited with status {status}")


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


def _watch_parent(descriptor: int, stopped: threading.Event) -> None:
    """Set ``stopped`` on a stop line; exit the process when the parent goes away.

    Reads the raw descriptor (a daemon thread blocked on ``sys.stdin`` would hold its
    lock when the interpreter shuts down, which aborts it).
    """
    received = b""
    while chunk := os.read(descriptor, 64):
        received += chunk
        if STOP_LINE in received:
            stopped.set()
    os._exit(_ORPHAN_EXIT_STATUS)  # standard input closed: the parent is gone


def main() -> int:
    """Body of a loop's process: read the loop, run it, write its summary."""
    descriptor = sys.stdin.fileno()
    size = int.from_bytes(_read_exactly(descriptor, _LENGTH_BYTES), "big")
    # the parent, our own process, sent this (cloudpickle's output loads with pickle)
    number, options, settings, where, summary_path = pickle.loads(
        _read_exactly(descriptor, size))
    stopped = threading.Event()
    threading.Thread(target=_watch_parent, args=(descriptor, stopped), daemon=True,
                     name="taskroll-parent-watch").start()
    summary = run_loop(number, options, settings, where=f"{where}, pid {os.getpid()}",
                       stop=stopped.is_set)
    staged = Path(f"{summary_path}.tmp")
    with staged.open("wb") as output:
        pickle.dump(summary, output)
    os.replace(staged, summary_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
