"""The online output folder: the signal file, written atomically, and the routine lock.

``signals.parquet`` is replaced in one step (written beside it, flushed to disk,
then renamed over it), so a routine killed while writing leaves the previous file
whole. A file that still cannot be read (a disk fault, a hand edit) is not fatal:
it is kept aside (``signals.parquet.unreadable-<time>``) and the signals are
rebuilt from the trained models; a readable table that is not signals is an
error. One routine at a time holds the folder's lock (``.routine.lock``, released
by the system when its process dies), so a cron job that starts while the
previous one still runs stops with a clear error instead of racing it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
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


class SignalFileError(TaskrollError, ValueError):
    """The signal file reads as a table but not as signals (another program's file?)."""


def _as_signals(frame: pd.DataFrame, path: Path) -> pd.Series:
    """The ``score`` series of a signal table, indexed by ``(datetime, instrument)``.

    A table with ``datetime`` and ``instrument`` columns (the index written out as
    columns) is indexed by them.

    Raises:
        SignalFileError: When the table has no score or no ``(date, instrument)`` index.
    """
    if {"datetime", "instrument"} <= set(frame.columns):
        frame = frame.set_index(["datetime", "instrument"])
    values = [name for name in frame.columns if name == "score"] or list(frame.columns)
    if frame.index.nlevels != 2 or len(values) != 1:
        raise SignalFileError(
            f"{path} is not a signal file (index levels {list(frame.index.names)}, columns "
            f"{list(frame.columns)}; expected a score indexed by (datetime, instrument)); "
            "it is left as it is: move it away, or point --output at the signal folder")
    signals = frame[values[0]]
    days = signals.index.get_level_values(0)
    if not isinstance(days, pd.DatetimeIndex):
        try:
            days = pd.DatetimeIndex(pd.to_datetime(days))
        except (TypeError, ValueError) as error:
            raise SignalFileError(f"{path}: the first index level is not dates ({error}); "
                                  "it is left as it is: move it away, or point --output at "
                                  "the signal folder") from None
        signals.index = pd.MultiIndex.from_arrays([days, signals.index.get_level_values(1)])
    signals.index = signals.index.set_names(["datetime", "instrument"])
    if not signals.index.is_monotonic_increasing:
        signals = signals.sort_index()
    signals.name = "score"
    return signals


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.unreadable-<UTC time>`` (numbered when taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.unreadable-{stamp}")
    number = 1
    while kept.exists():
        number += 1
        kept = path.with_name(f"{path.name}.unreadable-{stamp}-{number}")
    os.replace(path, kept)
    return kept


def read_signals(folder: Path, set_aside: bool = False) -> pd.Series | None:
    """Read ``folder/signals.parquet``; ``None`` when missing or unreadable (logged).

    Args:
        folder: The online output folder.
        set_aside: Rename an unreadable file to ``signals.parquet.unreadable-<time>``
            (for a caller that writes a rebuilt file next): its bytes may hold days
            served as a rebuild would not serve them, so they are never overwritten.

    Returns:
        The ``score`` series indexed by ``(datetime, instrument)``.

    Raises:
        SignalFileError: When the file reads as a table that is not signals (a wrong
            ``--output`` folder, another program's file): it is never overwritten.
    """
    path = folder / SIGNALS_FILE
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # any unreadable file: rebuilt from the models
        kept = f"; kept as {_set_aside(path).name}" if set_aside else ""
        _logger.warning("%s cannot be read (%s: %s); the signals are rebuilt from the "
                        "models%s", path, type(error).__name__, error, kept)
        return None
    return _as_signals(frame, path)


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
