"""Loading panels of daily bars: files (CSV, Parquet), the synthetic market, or a frame.

A panel is a frame indexed by ``(datetime, instrument)``, sorted, without
duplicate rows. Loaders are small objects built from task cfgs; their data is
cached per process (a bounded LRU), so several tasks run by one worker read a
file, or generate a market, once.

Bar loaders (:class:`FileLoader`, :class:`SyntheticLoader`, a :class:`StaticLoader`
of bars) clean what they load with :func:`~taskroll.data.quality.clean_bars`:
invalid bars become NaN, exact duplicate rows are dropped, and the problems are
counted in a :class:`~taskroll.data.quality.DataQualityReport` (see
:meth:`DataLoader.quality_report`), warned about once per kind when the panel is
loaded (not on every cache hit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from taskroll.data.cache import PANEL_CACHE, clear_caches
from taskroll.data.quality import (
    BAR_KINDS,
    PRICE_COLUMNS,
    VOLUME_COLUMN,
    DataQualityReport,
    clean_bars,
    drop_duplicate_rows,
)
from taskroll.errors import DataError

__all__ = ["CheckedLoader", "DataLoader", "FileLoader", "StaticLoader", "SyntheticLoader", "clear_caches",
           "load_panel", "slice_panel", "validate_panel"]

INDEX_NAMES: tuple[str, str] = ("datetime", "instrument")
"""Names of the two index levels of every panel."""

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def validate_panel(frame: pd.DataFrame, source: str = "panel",
                   required_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Check and normalise a panel frame.

    Accepts a frame with a ``(datetime, instrument)`` MultiIndex, or with
    ``datetime`` and ``instrument`` columns. Exact duplicate rows (same date,
    instrument and values) are dropped.

    Args:
        frame: The frame to check.
        source: Where it came from, for error messages.
        required_columns: Columns that must be present besides the index.

    Returns:
        A frame indexed by ``(datetime, instrument)`` with datetime64 dates, sorted.

    Raises:
        DataError: When the index columns are missing, a date cannot be parsed, a
            required column is missing, or a ``(datetime, instrument)`` pair repeats
            with different values.
    """
    return _validate(frame, source, required_columns)[0]


def _validate(frame: pd.DataFrame, source: str,
              required_columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """:func:`validate_panel`, also returning how many exact duplicate rows were dropped."""
    if isinstance(frame.index, pd.MultiIndex) and list(frame.index.names) == list(INDEX_NAMES):
        frame = frame.reset_index()
    missing_keys = [name for name in INDEX_NAMES if name not in frame.columns]
    if missing_keys:
        raise DataError(f"{source}: missing column(s) {missing_keys}; a panel needs 'datetime' "
                        f"and 'instrument' columns (or index levels), got {list(frame.columns)}")
    missing = [name for name in required_columns if name not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {missing}; "
                        f"columns present: {list(frame.columns)}")
    frame = frame.copy()
    try:
        frame["datetime"] = pd.to_datetime(frame["datetime"], errors="raise")
    except (ValueError, TypeError, OverflowError) as error:
        raise DataError(f"{source}: cannot parse the 'datetime' column: {error}") from error
    if frame["datetime"].isna().any():
        raise DataError(f"{source}: the 'datetime' column has missing values")
    if frame["instrument"].isna().any():
        raise DataError(f"{source}: the 'instrument' column has missing values")
    frame["instrument"] = frame["instrument"].astype(str)
    frame = frame.set_index(list(INDEX_NAMES)).sort_index()
    return drop_duplicate_rows(frame, source)


def load_panel(path: str | Path, required_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a panel from a CSV or Parquet file (chosen by suffix) and validate it.

    Args:
        path: A ``.csv`` (optionally compressed, e.g. ``.csv.gz``), ``.parquet`` or ``.pq`` file.
        required_columns: Columns that must be present besides the index.

    Returns:
        The validated panel (see :func:`validate_panel`).

    Raises:
        DataError: When the file is missing, has an unknown suffix, cannot be parsed,
            or fails validation.
    """
    return _read_panel(path, required_columns)[0]


def _read_panel(path: str | Path, required_columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """:func:`load_panel`, also returning how many exact duplicate rows were dropped."""
    source = Path(path)
    name = source.name.lower()
    if not source.is_file():
        raise DataError(f"panel file {source} does not exist")
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            frame = pd.read_parquet(source)
        elif name.endswith(_CSV_SUFFIXES):
            frame = pd.read_csv(source)
        else:
            raise DataError(f"cannot read {source}: use a .csv or .parquet file")
    except DataError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read panel file {source}: {error}") from error
    return _validate(frame, str(source), required_columns)


def has_bar_columns(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` holds daily bars: single-level columns with a price or ``volume``."""
    if isinstance(frame.columns, pd.MultiIndex):
        return False
    return any(name in frame.columns for name in (*PRICE_COLUMNS, VOLUME_COLUMN))


_Checked = tuple[pd.DataFrame, DataQualityReport | None]
"""A loaded panel and its quality report (``None`` when it holds no bars)."""


def _check_bars(frame: pd.DataFrame, source: str, duplicated_rows: int = 0) -> _Checked:
    """Clean the bars of a validated panel, warn once per kind of problem, return both.

    Args:
        frame: A validated panel (index ``(datetime, instrument)``, sorted).
        source: Where it came from, named in the warnings.
        duplicated_rows: Exact duplicate rows already dropped by validation.

    Returns:
        ``(cleaned panel, report)``; ``(frame, None)`` when ``frame`` has no bar columns.

    Raises:
        DataError: When a ``(datetime, instrument)`` pair repeats with different values.
    """
    if not has_bar_columns(frame):
        return frame, None
    cleaned, report = clean_bars(frame, source)
    if duplicated_rows:
        report = replace(report, duplicated_rows=report.duplicated_rows + duplicated_rows)
    report.warn(source, BAR_KINDS)
    return cleaned, report


def slice_panel(frame: pd.DataFrame, instruments: str | Sequence[str] = "all",
                start_time: Any = None, end_time: Any = None) -> pd.DataFrame:
    """Select instruments and an inclusive date range from a sorted panel.

    Args:
        frame: A panel indexed by ``(datetime, instrument)``, sorted by date.
        instruments: ``"all"`` or the instrument names to keep.
        start_time: First date kept (inclusive), or ``None``.
        end_time: Last date kept (inclusive), or ``None``.

    Returns:
        The selected rows (the frame itself when nothing is filtered).
    """
    if start_time is not None or end_time is not None:
        dates = frame.index.get_level_values(0)
        first = 0 if start_time is None else dates.searchsorted(pd.Timestamp(start_time), "left")
        last = len(dates) if end_time is None else dates.searchsorted(pd.Timestamp(end_time),
                                                                      "right")
        frame = frame.iloc[first:last]
    if not (isinstance(instruments, str) and instruments == "all"):
        wanted = [instruments] if isinstance(instruments, str) else list(instruments)
        frame = frame[frame.index.get_level_values(1).isin(wanted)]
    return frame


class DataLoader(ABC):
    """Something that loads a panel; built from a task cfg.

    Subclasses implement :meth:`load_all`; :meth:`load` slices it. ``cache_key``
    identifies the loaded data within a process (``None``: do not cache). Bar
    loaders also override :meth:`quality_report`.
    """

    @property
    @abstractmethod
    def cache_key(self) -> Hashable | None:
        """A hashable identity of the data this loader returns, or ``None``."""

    @abstractmethod
    def load_all(self) -> pd.DataFrame:
        """Return the whole panel, sorted; treat it as read-only."""

    def quality_report(self) -> DataQualityReport | None:
        """Return the data quality report of the whole panel (loading it if needed).

        Returns:
            The report, or ``None`` when the loaded frame holds no bars (e.g.
            precomputed features) or the loader does not check its data.

        Raises:
            DataError: When the data cannot be loaded.
        """
        return None

    def load(self, instruments: str | Sequence[str] = "all", start_time: Any = None,
             end_time: Any = None) -> pd.DataFrame:
        """Return the panel rows for ``instruments`` between the two dates (inclusive).

        Args:
            instruments: ``"all"`` or a list of instrument names.
            start_time: First date (inclusive) or ``None``.
            end_time: Last date (inclusive) or ``None``.

        Returns:
            A frame indexed by ``(datetime, instrument)``, sorted; treat it as read-only.

        Raises:
            DataError: When the data cannot be loaded.
        """
        return self.select(self.load_all(), instruments, start_time, end_time)

    def select(self, frame: pd.DataFrame, instruments: Any = "all", start_time: Any = None,
               end_time: Any = None) -> pd.DataFrame:
        """Return the rows of ``frame`` (this loader's panel, or values computed from it) for
        ``instruments`` between the two dates (inclusive).

        Handlers call it to cut what they computed on the whole history (e.g. Alpha158
        features), so a loader that knows markets (``"csi300"``) can apply them; this one
        reads ``instruments`` as :func:`slice_panel` does.

        Args:
            frame: A panel indexed by ``(datetime, instrument)``, sorted by date.
            instruments: ``"all"`` or a list of instrument names.
            start_time: First date (inclusive) or ``None``.
            end_time: Last date (inclusive) or ``None``.

        Returns:
            The selected rows.

        Raises:
            DataError: When the instruments cannot be resolved.
        """
        return slice_panel(frame, instruments, start_time, end_time)

    def calendar(self) -> pd.DatetimeIndex:
        """Return the sorted distinct dates of the panel."""
        return pd.DatetimeIndex(self.load_all().index.get_level_values(0).unique(),
                                name="datetime")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cache_key!r})"


class CheckedLoader(DataLoader):
    """A bar loader whose panel is read and cleaned once per process (cached).

    Subclasses implement :meth:`_checked`, returning the cleaned panel and its data
    quality report (through ``PANEL_CACHE``); :meth:`load_all` and
    :meth:`quality_report` read them from there.
    """

    @abstractmethod
    def _checked(self) -> _Checked:
        """The cleaned panel and its quality report, built once per data version."""

    def load_all(self) -> pd.DataFrame:
        """Return the whole panel, invalid bars blanked (cached).

        Raises:
            DataError: When the data cannot be loaded (missing, malformed, bad arguments).
        """
        return self._checked()[0]

    def quality_report(self) -> DataQualityReport | None:
        """Return the panel's data quality report (``None`` when it holds no bars).

        Raises:
            DataError: When the data cannot be loaded (missing, malformed, bad arguments).
        """
        return self._checked()[1]


class FileLoader(CheckedLoader):
    """Loads bars from a CSV or Parquet panel file (see :func:`load_panel`).

    The file is read, and its bars cleaned (see :func:`~taskroll.data.quality.clean_bars`),
    once per process while its size and modification time stay the same; the
    :class:`~taskroll.errors.DataQualityWarning` s are issued then.

    Args:
        path: The panel file.
        required_columns: Columns the file must have besides the index.
    """

    def __init__(self, path: str | Path, required_columns: Sequence[str] = ()) -> None:
        self.path = str(path)
        self.required_columns = tuple(required_columns)

    @property
    def cache_key(self) -> Hashable | None:
        """``("file", absolute path, size, mtime)``; ``None`` when the file is missing."""
        source = Path(self.path).resolve()
        try:
            stat = source.stat()
        except OSError:
            return None
        return ("file", str(source), stat.st_size, stat.st_mtime_ns, self.required_columns)

    def _checked(self) -> _Checked:
        key = self.cache_key
        if key is None:
            raise DataError(f"panel file {self.path} does not exist")

        def build() -> _Checked:
            frame, duplicated_rows = _read_panel(self.path, self.required_columns)
            return _check_bars(frame, self.path, duplicated_rows)

        checked: _Checked = PANEL_CACHE.get_or_build(key, build)
        return checked


class SyntheticLoader(CheckedLoader):
    """Loads bars from the seeded synthetic market (generated and cleaned once per process).

    Args:
        **market_kwargs: Keyword arguments of :class:`~taskroll.data.synthetic.SyntheticMarket`
            (``seed``, ``n_instruments``, ``start``, ``end``, ``bad_bar_rate``, ...).
    """

    def __init__(self, **market_kwargs: Any) -> None:
        self.market_kwargs = dict(market_kwargs)

    @property
    def cache_key(self) -> Hashable | None:
        """``("synthetic", sorted kwargs)``."""
        return ("synthetic", tuple(sorted((name, repr(value))
                                          for name, value in self.market_kwargs.items())))

    def _checked(self) -> _Checked:
        from taskroll.data.synthetic import SyntheticMarket

        def build() -> _Checked:
            try:
                market = SyntheticMarket(**self.market_kwargs)
            except TypeError as error:
                raise DataError(f"invalid SyntheticMarket arguments: {error}") from error
            arguments = ", ".join(f"{name}={value!r}"
                                  for name, value in self.market_kwargs.items())
            return _check_bars(market.bars(), f"SyntheticLoader({arguments})")

        checked: _Checked = PANEL_CACHE.get_or_build(self.cache_key, build)
        return checked


class StaticLoader(DataLoader):
    """Serves a frame given in memory (e.g. precomputed features), as Qlib's StaticDataLoader.

    A frame of bars (single-level columns with prices or volume) is cleaned on
    construction, as :class:`FileLoader` cleans a file; other frames are served as given.

    Args:
        frame: A panel indexed by ``(datetime, instrument)`` (sorted on construction),
            or a path to a CSV/Parquet panel.

    Raises:
        DataError: When the frame is not indexed by ``(datetime, instrument)``, the file
            cannot be read, or a ``(datetime, instrument)`` pair repeats with different values.
    """

    def __init__(self, frame: pd.DataFrame | str | Path) -> None:
        duplicated_rows = 0
        source = "StaticLoader frame"
        if isinstance(frame, (str, Path)):
            source = str(frame)
            frame, duplicated_rows = _read_panel(frame, ())
        elif not (isinstance(frame.index, pd.MultiIndex)
                  and list(frame.index.names) == list(INDEX_NAMES)):
            raise DataError("StaticLoader needs a frame indexed by (datetime, instrument)")
        else:
            frame = frame.sort_index()
        self.frame, self._report = _check_bars(frame, source, duplicated_rows)

    @property
    def cache_key(self) -> Hashable | None:
        """``None``: an in-memory frame is not cached."""
        return None

    def load_all(self) -> pd.DataFrame:
        """Return the frame."""
        return self.frame

    def quality_report(self) -> DataQualityReport | None:
        """Return the quality report of the bars (``None`` when the frame holds no bars)."""
        return self._report
