"""A feature cache on disk, shared by every worker process and every rolling task.

Computing Alpha158 over a whole market takes seconds; every worker process, and
before the in-process cache every rolling task, used to compute the same panel. This
store keeps one Arrow IPC file per key under a folder; the first process that needs a
panel computes and writes it, every other one reads it memory-mapped.

Key: a digest of the data source's identity *and version* (a loader's ``cache_key``,
which for :class:`~taskroll.data.loader.FileLoader` and
:class:`~taskroll.data.qlib_bin.QlibDataLoader` holds the size and modification time of
every file read), the feature configuration (windows, operators, label horizon, dtype,
and a digest of the code that computes the features) and the file format's version. Changing the
data changes the key, so stale features are never read; their files are dropped by the
size cap (least recently used first). Only sources stamped with a version on disk are
cached here (keys starting with ``"file"`` or ``"qlib"``); others stay in the
in-process cache alone.

Writes are atomic (a temporary file in the same folder, then :func:`os.replace`), so a
reader never sees half a file. A lock file per key (``fcntl.flock`` where available)
makes a second process wait for the first one's build instead of repeating it; without
``fcntl`` both build, both write the same bytes and one rename wins.

Location: the ``TASKROLL_FEATURE_CACHE`` environment variable (a folder; ``off``
disables the store). Unset: a ``feature_cache`` folder beside the MLflow store when
``taskroll.init(tracking_uri=...)`` names a local SQLite file or folder, otherwise
``$XDG_CACHE_HOME/taskroll/features`` (``~/.cache/taskroll/features``).

File layout: one record batch; columns ``0..n-1`` are the float features (no null
mask, NaN kept as values, so reading gives back the same bits), then one
dictionary-encoded column per index level (the ``MultiIndex`` codes and levels as they
are); the column names and index names are JSON in the schema metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from taskroll.config import get_settings

try:  # POSIX only; elsewhere two racing builders both build and one rename wins
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ENVIRONMENT_VARIABLE = "TASKROLL_FEATURE_CACHE"
"""Names the cache folder; ``off`` (or ``0``, ``no``, ``false``) disables the store."""

DEFAULT_MAX_BYTES = 4 * 1024**3
"""The folder is trimmed to this size after each write, least recently used first."""

FORMAT_VERSION = 1
"""Bumped when the file layout changes, so older files are never read."""

_SUFFIX = ".arrow"
_METADATA_KEY = b"taskroll.features"
_VERSIONED_SOURCES = ("file", "qlib")
_DISABLED = ("off", "0", "no", "false", "none")

BUILDS = 0
"""How many panels this process computed for the store (reads of an existing file do
not count); see :func:`build_count`."""

_counter_lock = threading.Lock()


def build_count() -> int:
    """Return how many feature panels this process has computed for the store."""
    return BUILDS


def _count_build() -> None:
    global BUILDS
    with _counter_lock:
        BUILDS += 1


def cache_folder() -> Path | None:
    """Return the folder of the feature store, or ``None`` when it is disabled.

    Returns:
        ``TASKROLL_FEATURE_CACHE`` when set (``None`` for ``off``); else a
        ``feature_cache`` folder beside a local MLflow store given to
        ``taskroll.init``; else the user cache folder.
    """
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured is not None and configured.strip():
        if configured.strip().lower() in _DISABLED:
            return None
        return Path(configured).expanduser()
    beside = _beside_tracking_store(get_settings().tracking_uri)
    if beside is not None:
        return beside
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskroll" / "features"


def _beside_tracking_store(tracking_uri: str | None) -> Path | None:
    if not tracking_uri:
        return None
    if tracking_uri.startswith("sqlite:///"):
        database = tracking_uri[len("sqlite:///"):]
        if not database or database == ":memory:":
            return None
        return Path(database).expanduser().resolve().parent / "feature_cache"
    if tracking_uri.startswith("file://"):
        return Path(tracking_uri[len("file://"):]).resolve().parent / "feature_cache"
    if "://" not in tracking_uri:
        return Path(tracking_uri).expanduser().resolve().parent / "feature_cache"
    return None


def store_key(source_key: Hashable | None, config: dict[str, Any]) -> str | None:
    """Return the file stem for a source and feature configuration, or ``None``.

    Args:
        source_key: The loader's ``cache_key``; only keys whose first element is
            ``"file"`` or ``"qlib"`` (sources versioned by their files) are stored.
        config: The feature configuration (windows, operators, horizon, dtype, code
            digest): plain JSON-able values.

    Returns:
        A hex digest naming the file, or ``None`` when the source is not stored on disk.
    """
    if not isinstance(source_key, tuple) or not source_key \
            or source_key[0] not in _VERSIONED_SOURCES:
        return None
    identity = repr((FORMAT_VERSION, source_key,
                     json.dumps(config, sort_keys=True, default=repr)))
    return hashlib.sha256(identity.encode()).hexdigest()[:40]


def get_or_build(source_key: Hashable | None, config: dict[str, Any],
                 build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Return the cached feature frame for the key, building and storing it when absent.

    Args:
        source_key: The loader's ``cache_key`` (see :func:`store_key`).
        config: The feature configuration.
        build: Computes the frame (2-level columns, a 2-level index whose first level is
            dates, float columns of one dtype).

    Returns:
        The frame, bit-identical to ``build()``'s; ``build()`` itself when the store is
        off or the source is not versioned.
    """
    folder = cache_folder()
    stem = store_key(source_key, config)
    if folder is None or stem is None:
        return build()
    path = folder / f"{stem}{_SUFFIX}"
    frame = _read_if_present(path)
    if frame is not None:
        return frame
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(folder / f"{stem}.lock"))
        except OSError:  # an unwritable folder: compute as if the store were off
            _count_build()
            return build()
        frame = _read_if_present(path)  # another process may have built it meanwhile
        if frame is not None:
            return frame
        frame = build()
        _count_build()
        with contextlib.suppress(OSError):  # a full disk costs speed, never results
            _write_atomically(frame, path)
    _trim(folder, DEFAULT_MAX_BYTES, keep=path)
    return frame


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_if_present(path: Path) -> pd.DataFrame | None:
    try:
        frame = read_frame(path)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException, ValueError, KeyError):
        return None  # a damaged file is rebuilt and replaced
    with contextlib.suppress(OSError):
        os.utime(path)  # marks it recently used for the size cap
    return frame


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write a feature frame to ``path`` as one Arrow IPC record batch.

    Args:
        frame: Float columns of one dtype, a ``MultiIndex`` of rows.
        path: The file to write (overwritten).
    """
    index = frame.index if isinstance(frame.index, pd.MultiIndex) \
        else pd.MultiIndex.from_arrays([frame.index])
    values = frame.to_numpy(copy=False)
    arrays: list[pa.Array] = [pa.array(np.ascontiguousarray(values[:, column]))
                              for column in range(values.shape[1])]
    names = [str(column) for column in range(values.shape[1])]
    for number, (level, codes) in enumerate(zip(index.levels, index.codes, strict=True)):
        arrays.append(pa.DictionaryArray.from_arrays(
            pa.array(np.asarray(codes), type=pa.int32()), pa.array(level.to_numpy())))
        names.append(f"index{number}")
    meta = {"columns": [list(column) if isinstance(column, tuple) else [column]
                        for column in frame.columns],
            "index_names": list(index.names), "levels": index.nlevels,
            "width": values.shape[1], "dtype": str(values.dtype)}
    table = pa.Table.from_arrays(arrays, names=names)
    schema = table.schema.with_metadata({_METADATA_KEY: json.dumps(meta).encode()})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))


def read_frame(path: Path) -> pd.DataFrame:
    """Read a frame written by :func:`write_frame`, memory-mapped.

    Args:
        path: The file.

    Returns:
        The frame, equal bit for bit to the one written.

    Raises:
        FileNotFoundError: When the file does not exist.
        pyarrow.ArrowException: When the file is damaged.
    """
    with pa.memory_map(str(path), "r") as source:
        reader = ipc.open_file(source)
        meta = json.loads(reader.schema.metadata[_METADATA_KEY])
        table = reader.read_all()
    width = int(meta["width"])
    rows = table.num_rows
    values = np.empty((rows, width), dtype=np.dtype(meta["dtype"]), order="F")
    for column in range(width):
        values[:, column] = table.column(column).to_numpy()
    levels = []
    codes = []
    for number in range(int(meta["levels"])):
        encoded = table.column(f"index{number}").combine_chunks()
        codes.append(encoded.indices.to_numpy())
        levels.append(pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False)))
    index = pd.MultiIndex(levels=levels, codes=codes, names=meta["index_names"],
                          verify_integrity=False)
    column_names = [tuple(column) if len(column) > 1 else column[0]
                    for column in meta["columns"]]
    columns = pd.MultiIndex.from_tuples(column_names) \
        if all(isinstance(column, tuple) for column in column_names) else pd.Index(column_names)
    return pd.DataFrame(values, index=index, columns=columns, copy=False)


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write_frame(frame, temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _trim(folder: Path, max_bytes: int, keep: Path) -> None:
    """Delete the least recently used feature files until the folder fits ``max_bytes``."""
    files = []
    for path in folder.glob(f"*{_SUFFIX}"):
        with contextlib.suppress(OSError):
            stat = path.stat()
            files.append((stat.st_mtime_ns, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        if path == keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            path.with_suffix(".lock").unlink(missing_ok=True)
        total -= size


def clear(folder: Path | None = None) -> int:
    """Delete every feature file of the store.

    Args:
        folder: The store's folder (default: :func:`cache_folder`).

    Returns:
        How many feature files were deleted.
    """
    folder = folder if folder is not None else cache_folder()
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"*{_SUFFIX}"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
