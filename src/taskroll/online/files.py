"""The online output folder: the signal file, written atomically, and the routine lock.

``signals.parquet`` is replaced in one step (written beside it, flushed to disk,
then renamed over it), so a routine killed while writing leaves the previous file
whole. A file that still cannot be read (a disk fault, a hand edit) is not fatal:
the signals are rebuilt from the trained models. One routine at a time holds the
folder's lock (``.routine.lock``, released by the system when its process dies),
so a cron job that starts while the previous one still runs stops with a clear
error instead of racing it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from taskroll.errors import TaskrollError

_logger = logging.getLogger(__name__)

SIGNALS_FILE = "signals.parquet"
LOCK_FILE = ".routine.lock"


class RoutineLockedError(TaskrollError, RuntimeError):
    """Another routine holds the online output folder."""


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never a part.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with staging.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def write_signals(signals: pd.Series, folder: Path) -> Path:
    """Write the signals to ``folder/signals.parquet`` atomically (column ``score``)."""
    frame = signals.to_frame("score")
    return write_atomic(folder / SIGNALS_FILE, frame.to_parquet())


def read_signals(folder: Path) -> pd.Series | None:
    """Read ``folder/signals.parquet``; ``None`` when missing or unreadable (logged).

    Returns:
        The ``score`` series indexed by ``(datetime, instrument)``.
    """
    path = folder / SIGNALS_FILE
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path)
        signals = frame["score"] if "score" in frame else frame.iloc[:, 0]
    except Exception as error:  # any unreadable file: rebuilt from the models
        _logger.warning("%s cannot be read (%s: %s); the signals are rebuilt from the models",
                        path, type(error).__name__, error)
        return None
    signals.name = "score"
    return signals


@contextmanager
def routine_lock(folder: Path) -> Iterator[Path]:
    """Hold the folder's routine lock for the block.

    Raises:
        RoutineLockedError: When another process holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RoutineLockedError(f"another routine (pid {holder}) is running on "
                                     f"{folder}; try again when it ends") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        for staging in folder.glob(".*.tmp"):  # left by a writer killed mid-write
            staging.unlink(missing_ok=True)
        yield path
    finally:
        handle.close()
