"""Read a Qlib data folder directly (Qlib's binary day layout), without Qlib installed.

The layout, with Qlib's meaning (``qlib/data/storage/file_storage.py``)::

    PROVIDER/calendars/day.txt         one trading day per line, in order
    PROVIDER/instruments/<market>.txt  instrument<TAB>start<TAB>end, one line per listing
                                       span (an instrument may have several lines); the
                                       market name is lower-cased to find the file
    PROVIDER/features/<instrument lower-case>/<field>.day.bin
                                       little-endian float32; element 0 is the calendar
                                       index of the first value, the rest are values for
                                       consecutive calendar days from there

``$close`` is ``close.day.bin``. Qlib's data is adjusted for splits and dividends and
``factor`` is the adjustment factor; values are kept as stored, as Qlib serves them.

Markets follow Qlib's ``D.instruments(market)``: a market name (``"csi300"``, ``"all"``)
or ``{"market": name, "filter_pipe": []}`` selects the instruments of
``instruments/<market>.txt`` and keeps each one's rows within its listing spans; a list
of names selects those instruments on every day (names are matched ignoring case).

One difference from Qlib, taskroll's panel convention: a day on which every bar field of
an instrument is NaN (a suspension) has no row, as in the other loaders' panels.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskroll.data.cache import PANEL_CACHE, LRUCache
from taskroll.data.loader import CheckedLoader, _check_bars, _Checked, slice_panel
from taskroll.data.qlib_writer import QLIB_FIELDS, feature_folder_name
from taskroll.errors import DataError

__all__ = ["NO_DATA_HINT", "QlibDataLoader", "read_qlib_calendar", "read_qlib_feature",
           "read_qlib_instruments", "resolve_provider_uri"]

NO_DATA_HINT = ("point taskroll at data: taskroll.init(provider_uri='~/.qlib/qlib_data/cn_data') "
                "for a Qlib data folder (or the TASKROLL_PROVIDER_URI environment variable), "
                "a data_loader such as {'class': 'FileLoader', 'module_path': "
                "'taskroll.data.loader', 'kwargs': {'path': 'bars.parquet'}}, or, for demos, an "
                "explicit {'class': 'SyntheticLoader', 'module_path': 'taskroll.data.loader'}")
"""What to do when a handler has no data source."""

SUPPORTED_FREQ = "day"
"""The one frequency read (Qlib's ``day``)."""

Spans = dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]
"""Instrument name -> its listing spans ``(first day, last day)``, in file order."""

_MARKET_CACHE = LRUCache(capacity=16)


def resolve_provider_uri(provider_uri: str | os.PathLike[str] | None = None) -> Path:
    """Return the Qlib data folder to read: ``provider_uri``, else the configured one.

    Args:
        provider_uri: A folder (``~`` is expanded), or ``None`` for the
            ``taskroll.init(provider_uri=...)`` / ``TASKROLL_PROVIDER_URI`` setting.

    Returns:
        The absolute folder path.

    Raises:
        DataError: When nothing is configured, the folder is missing, or it has no
            ``calendars/day.txt``.
    """
    if provider_uri is None:
        from taskroll.config import get_settings

        provider_uri = get_settings().provider_uri
        if not provider_uri:
            raise DataError(f"no Qlib data folder is configured; {NO_DATA_HINT}")
    folder = Path(provider_uri).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"Qlib data folder {folder} does not exist; {NO_DATA_HINT}")
    if not (folder / "calendars" / f"{SUPPORTED_FREQ}.txt").is_file():
        raise DataError(f"{folder} is not a Qlib data folder: calendars/{SUPPORTED_FREQ}.txt "
                        "is missing")
    return folder


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _read_text(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from error
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()]


def _parse_days(texts: Sequence[str], numbers: Sequence[int], path: Path) -> pd.DatetimeIndex:
    days = pd.to_datetime(pd.Index(list(texts), dtype=object), errors="coerce", format="mixed")
    bad = np.flatnonzero(pd.isna(days))
    if len(bad):
        raise DataError(f"{path}, line {numbers[bad[0]]}: cannot parse {texts[bad[0]]!r} as a date")
    return pd.DatetimeIndex(days).as_unit("us")


def read_qlib_calendar(provider_uri: str | os.PathLike[str] | None = None,
                       freq: str = SUPPORTED_FREQ) -> pd.DatetimeIndex:
    """Read ``calendars/<freq>.txt`` of a Qlib data folder.

    Args:
        provider_uri: The folder, or ``None`` for the configured one.
        freq: Only ``"day"`` is supported.

    Returns:
        The trading days, in file order (strictly increasing).

    Raises:
        DataError: For a missing folder or file, an unsupported ``freq``, an unparseable
            line, an empty calendar, or days out of order or repeated.
    """
    _check_freq(freq)
    path = resolve_provider_uri(provider_uri) / "calendars" / f"{freq}.txt"
    key = ("calendar", _stat_key(path))

    def build() -> pd.DatetimeIndex:
        lines = _read_text(path, "Qlib calendar")
        if not lines:
            raise DataError(f"Qlib calendar {path} is empty")
        days = _parse_days([text for _, text in lines], [number for number, _ in lines], path)
        steps = np.flatnonzero(np.diff(days.asi8) <= 0)
        if len(steps):
            raise DataError(f"{path}, line {lines[steps[0] + 1][0]}: {lines[steps[0] + 1][1]} "
                            f"does not follow {lines[steps[0]][1]}; days must increase")
        return days.rename(None)

    calendar: pd.DatetimeIndex = _MARKET_CACHE.get_or_build(key, build)
    return calendar


def _check_freq(freq: str) -> None:
    if freq != SUPPORTED_FREQ:
        raise DataError(f"only Qlib's {SUPPORTED_FREQ!r} data is read, got freq={freq!r}")


def read_qlib_instruments(provider_uri: str | os.PathLike[str] | None = None,
                          market: str = "all", freq: str = SUPPORTED_FREQ) -> Spans:
    """Read ``instruments/<market>.txt``: each instrument's listing spans.

    Args:
        provider_uri: The folder, or ``None`` for the configured one.
        market: The market name (``"all"``, ``"csi300"``); lower-cased to find the file.
        freq: Only ``"day"`` is supported.

    Returns:
        Instrument name (as written in the file) -> ``[(first day, last day), ...]``.

    Raises:
        DataError: For a missing market file (naming the markets there are) or a line that
            is not ``instrument<TAB>start<TAB>end`` with ``start <= end``.
    """
    _check_freq(freq)
    folder = resolve_provider_uri(provider_uri) / "instruments"
    if not market or any(separator in market for separator in ("/", "\\", "..")):
        raise DataError(f"invalid market name {market!r}")
    path = folder / f"{market.lower()}.txt"
    key = ("instruments", _stat_key(path))
    if key[1] is None:
        known = sorted(item.stem for item in folder.glob("*.txt")) if folder.is_dir() else []
        raise DataError(f"market {market!r}: {path} does not exist; markets there: {known}")

    def build() -> Spans:
        lines = _read_text(path, "Qlib instruments file")
        parts = [text.split("\t") for _, text in lines]
        for (number, text), fields in zip(lines, parts, strict=True):
            if len(fields) < 3 or not fields[0].strip():
                raise DataError(f"{path}, line {number}: expected instrument<TAB>start<TAB>end, "
                                f"got {text!r}")
        numbers = [number for number, _ in lines]
        starts = _parse_days([fields[1].strip() for fields in parts], numbers, path)
        ends = _parse_days([fields[2].strip() for fields in parts], numbers, path)
        backwards = np.flatnonzero(starts > ends)
        if len(backwards):
            number, text = lines[backwards[0]]
            raise DataError(f"{path}, line {number}: the span {text!r} ends before it starts")
        spans: Spans = {}
        for fields, start, end in zip(parts, starts, ends, strict=True):
            spans.setdefault(fields[0].strip(), []).append((start, end))
        return spans

    spans: Spans = _MARKET_CACHE.get_or_build(key, build)
    return spans


def read_qlib_feature(path: str | os.PathLike[str],
                      calendar_length: int) -> tuple[int, np.ndarray]:
    """Read one ``<field>.day.bin`` file.

    Args:
        path: The file.
        calendar_length: Days in the calendar, to check the values fit in it.

    Returns:
        ``(calendar index of the first value, float32 values)``.

    Raises:
        DataError: When the file cannot be read, its size is not a whole number of float32
            values (a truncated file), it is empty, its start index is not a whole number in
            the calendar, or its values run past the calendar's last day.
    """
    source = Path(path)
    try:
        size = source.stat().st_size
        if size % 4:
            raise DataError(f"{source} is truncated: {size} bytes is not a whole number of "
                            "float32 values")
        if size == 0:
            raise DataError(f"{source} is empty: it needs at least its start index")
        array = np.fromfile(source, dtype="<f4")
    except OSError as error:
        raise DataError(f"cannot read {source}: {error}") from error
    start = float(array[0])
    if not (np.isfinite(start) and start == int(start) and 0 <= start < calendar_length):
        raise DataError(f"{source}: start index {start!r} is not a day of the calendar "
                        f"(0..{calendar_length - 1})")
    values = array[1:]
    if int(start) + len(values) > calendar_length:
        raise DataError(f"{source}: {len(values)} values from calendar day {int(start)} run past "
                        f"the calendar's last day (index {calendar_length - 1})")
    return int(start), values


def _market_of(instruments: Any) -> str | None:
    """The market name ``instruments`` asks for, or ``None`` for a list of names."""
    if isinstance(instruments, str):
        return instruments
    if isinstance(instruments, Mapping):
        if "market" not in instruments or not isinstance(instruments["market"], str):
            raise DataError(f"instruments {instruments!r}: a dict needs a 'market' name")
        if instruments.get("filter_pipe"):
            raise DataError(f"instruments {instruments!r}: Qlib's dynamic filters "
                            "(filter_pipe) are not supported; list the instruments instead")
        return str(instruments["market"])
    return None


class QlibDataLoader(CheckedLoader):
    """Loads bars from a Qlib data folder (see the module docstring for the layout).

    The panel has the columns of :data:`~taskroll.data.qlib_writer.QLIB_FIELDS` that the
    folder holds (``open, high, low, close, volume, vwap, factor``), as float64 copies
    of the stored float32 values. It is read, and its bars cleaned, once per process
    while no file it was read from changes (size or modification time).

    Args:
        provider_uri: The Qlib data folder; ``None`` uses ``taskroll.init(provider_uri=...)``
            (resolved now, so the loader keeps reading the same folder).
        freq: Only ``"day"`` is supported.
        universe: The instruments the panel holds: a market name or a list of names;
            ``None`` (default): every instrument of every ``instruments/*.txt`` file. A
            handler built without a ``data_loader`` passes its own ``instruments``, so
            features are computed only for them.

    Raises:
        DataError: When the folder is missing or not a Qlib data folder, or ``freq`` is
            not ``"day"``.
    """

    def __init__(self, provider_uri: str | os.PathLike[str] | None = None,
                 freq: str = SUPPORTED_FREQ, universe: Any = None) -> None:
        _check_freq(freq)
        self.provider_uri = str(resolve_provider_uri(provider_uri))
        self.freq = freq
        self.universe = universe if universe is None or isinstance(universe, (str, Mapping)) \
            else tuple(str(name) for name in universe)

    # -- reading --------------------------------------------------------------------------------

    def _universe_names(self) -> list[str]:
        market = _market_of(self.universe) if self.universe is not None else None
        if market is not None:
            return list(read_qlib_instruments(self.provider_uri, market, self.freq))
        every: dict[str, None] = {}
        for path in sorted((Path(self.provider_uri) / "instruments").glob("*.txt")):
            every.update(dict.fromkeys(read_qlib_instruments(self.provider_uri, path.stem,
                                                             self.freq)))
        if self.universe is None:
            return list(every)
        by_lower = {name.lower(): name for name in every}
        return [by_lower.get(name.lower(), name) for name in self.universe]

    def _files(self) -> list[Path]:
        root = Path(self.provider_uri)
        files = [root / "calendars" / f"{self.freq}.txt"]
        files += sorted((root / "instruments").glob("*.txt"))
        features = root / "features"
        if features.is_dir():
            for folder in sorted(os.scandir(features), key=lambda entry: entry.name):
                if folder.is_dir():
                    files += sorted(Path(folder.path).glob(f"*.{self.freq}.bin"))
        return files

    @property
    def cache_key(self) -> Hashable | None:
        """``("qlib", folder, universe, (path, size, mtime) of every file read)``."""
        universe = self.universe if not isinstance(self.universe, Mapping) \
            else tuple(sorted((str(key), repr(value)) for key, value in self.universe.items()))
        return ("qlib", self.provider_uri, self.freq, universe,
                tuple(_stat_key(path) for path in self._files()))

    def _read(self) -> pd.DataFrame:
        calendar = read_qlib_calendar(self.provider_uri, self.freq)
        names = sorted(set(self._universe_names()))
        root = Path(self.provider_uri) / "features"
        present = [field for field in QLIB_FIELDS if any(
            (root / feature_folder_name(name) / f"{field}.{self.freq}.bin").is_file()
            for name in names)]
        if not present:
            raise DataError(f"{self.provider_uri}: no features/<instrument>/<field>."
                            f"{self.freq}.bin file for any of {len(names)} instrument(s)")
        blocks: list[np.ndarray] = []
        day_codes: list[np.ndarray] = []
        name_codes: list[np.ndarray] = []
        for code, name in enumerate(names):
            read = {}
            for field in present:
                path = root / feature_folder_name(name) / f"{field}.{self.freq}.bin"
                if path.is_file():
                    read[field] = read_qlib_feature(path, len(calendar))
            if not read:  # listed without data: no rows, as in Qlib
                continue
            first = min(start for start, _ in read.values())
            last = max(start + len(values) for start, values in read.values())
            block = np.full((last - first, len(present)), np.nan)
            for column, field in enumerate(present):
                if field in read:
                    start, values = read[field]
                    block[start - first:start - first + len(values), column] = values
            blocks.append(block)
            day_codes.append(np.arange(first, last))
            name_codes.append(np.full(last - first, code))
        values = np.concatenate(blocks) if blocks else np.empty((0, len(present)))
        days = np.concatenate(day_codes) if day_codes else np.empty(0, dtype=np.int64)
        codes = np.concatenate(name_codes) if name_codes else np.empty(0, dtype=np.int64)
        bar_columns = [column for column, field in enumerate(present) if field != "factor"]
        keep = ~np.isnan(values[:, bar_columns]).all(axis=1)  # a suspension: no row
        order = np.lexsort((codes[keep], days[keep]))
        levels: list[Any] = [calendar, pd.Index(names, dtype=str)]
        level_codes: list[Any] = [days[keep][order], codes[keep][order]]
        index = pd.MultiIndex(levels=levels, codes=level_codes, names=["datetime", "instrument"])
        return pd.DataFrame(values[keep][order], index=index.remove_unused_levels(),
                            columns=present)

    def _checked(self) -> _Checked:
        def build() -> _Checked:
            return _check_bars(self._read(), f"Qlib data {self.provider_uri}")

        checked: _Checked = PANEL_CACHE.get_or_build(self.cache_key, build)
        return checked

    def calendar(self) -> pd.DatetimeIndex:
        """Return the folder's trading calendar (``calendars/day.txt``)."""
        return pd.DatetimeIndex(read_qlib_calendar(self.provider_uri, self.freq),
                                name="datetime")

    def select(self, frame: pd.DataFrame, instruments: Any = "all", start_time: Any = None,
               end_time: Any = None) -> pd.DataFrame:
        """Return the rows of ``frame`` for a market or a list, between two dates (inclusive).

        Args:
            frame: A panel indexed by ``(datetime, instrument)``, sorted by date.
            instruments: A market name (``"all"``, ``"csi300"``: its instruments within their
                listing spans), ``{"market": name, "filter_pipe": []}``, or a list of
                instrument names (ignoring case; every day).
            start_time: First date (inclusive) or ``None``.
            end_time: Last date (inclusive) or ``None``.

        Returns:
            The selected rows.

        Raises:
            DataError: For a missing or malformed market file, or Qlib's dynamic filters.
        """
        frame = slice_panel(frame, "all", start_time, end_time)
        market = _market_of(instruments)
        present = frame.index.get_level_values(1)
        if market is None:
            wanted = {str(name).lower() for name in instruments}
            return frame[np.asarray(present.str.lower().isin(wanted))]
        spans = read_qlib_instruments(self.provider_uri, market, self.freq)
        dates = frame.index.get_level_values(0).to_numpy()
        # one span table per distinct instrument, then spread over the rows by their codes
        # (a per-row lookup of names is what made this slow)
        if not isinstance(frame.index, pd.MultiIndex):
            raise DataError("QlibDataLoader.select needs a (datetime, instrument) MultiIndex")
        names = frame.index.levels[1]
        codes = frame.index.codes[1]
        keep = np.zeros(len(frame), dtype=bool)
        depth = max((len(listed) for listed in spans.values()), default=0)
        for rank in range(depth):  # the rank-th span of every instrument at once
            firsts = np.full(len(names), np.datetime64("NaT"), dtype="datetime64[ns]")
            lasts = firsts.copy()
            for position, name in enumerate(names):
                listed = spans.get(name)
                if listed is not None and len(listed) > rank:
                    firsts[position] = np.datetime64(pd.Timestamp(listed[rank][0]), "ns")
                    lasts[position] = np.datetime64(pd.Timestamp(listed[rank][1]), "ns")
            keep |= (dates >= firsts[codes]) & (dates <= lasts[codes])
        return frame[keep]

    def __repr__(self) -> str:
        return f"QlibDataLoader({self.provider_uri!r}, universe={self.universe!r})"
