"""Data quality of bar panels: count the problems, blank invalid bars, warn once per kind.

:func:`clean_bars` takes a validated panel of daily bars and returns it with every
invalid bar blanked (all its bar columns NaN, the row kept) together with a
:class:`DataQualityReport` of what it found:

* invalid price bars: a price (``open``, ``high``, ``low``, ``close``; ``vwap``
  when present) missing, non-finite or ``<= 0``;
* zero-volume bars: ``volume`` missing, non-finite, zero or negative on a row
  whose prices are valid;
* exact duplicate rows (same index and values), dropped; conflicting duplicates
  raise :class:`~taskroll.errors.DataError`;
* suspended days: instrument-days missing between an instrument's first and last
  bar, on the panel's calendar (its sorted distinct dates);
* late listings: instruments whose first bar is after the panel's first date.

A handler adds the feature checks (constant and all-NaN features) with
:meth:`DataQualityReport.with_features`. :meth:`DataQualityReport.warn` issues one
:class:`~taskroll.errors.DataQualityWarning` per non-zero kind.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError, DataQualityWarning

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "vwap")
"""Price columns checked by :func:`clean_bars` (those present)."""

VOLUME_COLUMN = "volume"
"""The volume column checked by :func:`clean_bars`."""

KEPT_COLUMNS: tuple[str, ...] = ("factor",)
"""Numeric columns an invalid bar keeps (the adjustment factor stays valid)."""

BAR_KINDS: tuple[str, ...] = ("invalid_price_bars", "zero_volume_bars", "duplicated_rows",
                              "suspended_days", "late_listings")
"""Report fields counted from the bars (what the loaders warn about)."""

FEATURE_KINDS: tuple[str, ...] = ("constant_features", "all_nan_features")
"""Report fields filled by :meth:`DataQualityReport.with_features`."""

KINDS: tuple[str, ...] = BAR_KINDS + FEATURE_KINDS
"""Every kind of problem a report counts (the field names)."""

_DESCRIPTIONS = {
    "invalid_price_bars": "bar(s) with a missing, non-finite or non-positive price, set to NaN",
    "zero_volume_bars": "bar(s) with valid prices but a missing, zero or negative volume, "
                        "set to NaN",
    "duplicated_rows": "exact duplicate (datetime, instrument) row(s) dropped",
    "suspended_days": "instrument-day(s) missing between an instrument's first and last bar "
                      "(suspensions or gaps)",
    "late_listings": "instrument(s) whose first bar is after the panel's first date",
    "constant_features": "constant feature(s)",
    "all_nan_features": "feature(s) that are NaN on every row",
}
_NAMES_SHOWN = 5


@dataclass(frozen=True)
class DataQualityReport:
    """What was wrong with a panel (counts), and which features carry no information.

    Attributes:
        rows: Rows in the panel after dropping exact duplicates.
        instruments: Distinct instruments in the panel.
        invalid_price_bars: Rows with a price (open, high, low, close; vwap when
            present) missing, non-finite or ``<= 0``.
        zero_volume_bars: Rows with valid prices whose volume is missing,
            non-finite, zero or negative.
        duplicated_rows: Exact duplicate ``(datetime, instrument, values)`` rows dropped.
        suspended_days: Instrument-days missing between each instrument's first and
            last bar, on the panel's calendar (its sorted distinct dates).
        late_listings: Instruments whose first bar is after the panel's first date.
        constant_features: Features with exactly one distinct non-NaN value.
        all_nan_features: Features that are NaN on every row.
    """

    rows: int
    instruments: int
    invalid_price_bars: int
    zero_volume_bars: int
    duplicated_rows: int
    suspended_days: int
    late_listings: int
    constant_features: tuple[str, ...] = ()
    all_nan_features: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dict (feature names as lists)."""
        result: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            result[field.name] = [str(name) for name in value] if isinstance(value, tuple) \
                else int(value)
        return result

    def count(self, kind: str) -> int:
        """Return how many problems of ``kind`` (a field name in :data:`KINDS`) the report holds.

        Raises:
            ValueError: For an unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown data quality kind {kind!r}; use one of {', '.join(KINDS)}")
        value = getattr(self, kind)
        return len(value) if isinstance(value, tuple) else int(value)

    def warn(self, source: str, kinds: Iterable[str] | None = None) -> None:
        """Issue one :class:`~taskroll.errors.DataQualityWarning` per non-zero kind.

        Each message names ``source``, the kind and its count (and the first few
        feature names for the feature kinds).

        Args:
            source: Where the data came from (a file, a loader), for the messages.
            kinds: Field names to consider (see :data:`KINDS`); ``None``: all of them.

        Raises:
            ValueError: For an unknown kind.
        """
        if kinds is None:
            chosen: tuple[str, ...] = KINDS
        else:
            chosen = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for kind in chosen:
            count = self.count(kind)
            if not count:
                continue
            message = f"{source}: {count} {_DESCRIPTIONS[kind]} [{kind}]"
            if kind in FEATURE_KINDS:
                names: tuple[str, ...] = getattr(self, kind)
                shown = ", ".join(names[:_NAMES_SHOWN])
                more = f", ... (+{len(names) - _NAMES_SHOWN} more)" if len(names) > _NAMES_SHOWN \
                    else ""
                message += f": {shown}{more}"
            warnings.warn(message, DataQualityWarning, stacklevel=2)

    def with_features(self, frame: pd.DataFrame) -> DataQualityReport:
        """Return a copy whose feature fields describe the features of ``frame``.

        Args:
            frame: A processed frame; with 2-level columns its ``("feature", name)``
                columns are checked, with single-level columns every column.

        Returns:
            A copy with ``constant_features`` (exactly one distinct non-NaN value
            over all rows) and ``all_nan_features`` (no non-NaN value) set; the two
            are disjoint, in column order.
        """
        constant: list[str] = []
        all_nan: list[str] = []
        for name, column in _feature_columns(frame):
            distinct = _distinct_up_to_two(column)
            if distinct == 0:
                all_nan.append(name)
            elif distinct == 1:
                constant.append(name)
        return dataclasses.replace(self, constant_features=tuple(constant),
                                   all_nan_features=tuple(all_nan))


def _feature_columns(frame: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """``(name, column)`` pairs of the features of ``frame``."""
    pairs: list[tuple[str, pd.Series]] = []
    multi = isinstance(frame.columns, pd.MultiIndex) and frame.columns.nlevels >= 2
    for position, key in enumerate(frame.columns):
        if multi:
            if key[0] != "feature":
                continue
            name = str(key[1]) if len(key) == 2 else "/".join(str(part) for part in key[1:])
        else:
            name = str(key)
        pairs.append((name, frame.iloc[:, position]))
    return pairs


def _distinct_up_to_two(column: pd.Series) -> int:
    """0 when ``column`` has no non-NaN value, 1 when it has one distinct value, else 2."""
    dtype = column.dtype
    if pd.api.types.is_float_dtype(dtype) and isinstance(dtype, np.dtype):
        values = column.to_numpy()
        if values.size == 0:
            return 0
        # fmin / fmax skip NaN (NaN only when every value is NaN) and warn about nothing
        low, high = np.fmin.reduce(values), np.fmax.reduce(values)
        if np.isnan(low):
            return 0
        return 1 if low == high else 2
    return min(int(column.nunique(dropna=True)), 2)


def _may_repeat(index: pd.Index) -> bool:
    """Whether ``index`` may hold a repeated entry (``False`` is certain)."""
    if isinstance(index, pd.MultiIndex) and index.nlevels == 2 and len(index) > 1:
        # a sorted panel: repeats are neighbours; one int64 key per row, read in order
        key = (np.asarray(index.codes[0], dtype=np.int64) * (len(index.levels[1]) + 1)
               + np.asarray(index.codes[1], dtype=np.int64))
        step = np.diff(key)
        if (step >= 0).all():
            return not (step > 0).all()
    return not index.is_unique


def drop_duplicate_rows(frame: pd.DataFrame, source: str = "panel") -> tuple[pd.DataFrame, int]:
    """Drop exact duplicate rows (same index and same values) of an indexed panel.

    Args:
        frame: A frame indexed by ``(datetime, instrument)``.
        source: Where it came from, for error messages.

    Returns:
        ``(frame without the repeats, how many rows were dropped)``; the frame
        itself when its index has no repeat.

    Raises:
        DataError: When a ``(datetime, instrument)`` pair repeats with different values.
    """
    if not _may_repeat(frame.index):
        return frame, 0
    repeated = frame.index.duplicated(keep=False)
    if not repeated.any():
        return frame, 0
    subset = frame[repeated]
    exact = subset.reset_index().duplicated(keep="first").to_numpy()
    remaining = subset.index[~exact]
    conflicting = remaining.duplicated(keep="first")
    if conflicting.any():
        examples = list(dict.fromkeys(remaining[conflicting]))[:3]
        raise DataError(f"{source}: {int(conflicting.sum())} duplicate (datetime, instrument) "
                        f"row(s) with different values, e.g. {examples}; keep one row per "
                        "instrument and day")
    drop = np.zeros(len(frame), dtype=bool)
    drop[np.flatnonzero(repeated)[exact]] = True
    return frame[~drop], int(exact.sum())


def _as_float(column: pd.Series) -> tuple[np.ndarray, bool]:
    """``(float64 values, whether the column had to be parsed)``; unparseable values are NaN."""
    dtype = column.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), False
    parsed = pd.to_numeric(column, errors="coerce")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan), True


def _is_blanked(column: pd.Series) -> bool:
    """Whether an invalid bar sets this column to NaN (numeric, not boolean)."""
    dtype = column.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _index_codes(index: pd.Index) -> tuple[np.ndarray, int, np.ndarray, int]:
    """``(day positions on the sorted distinct dates, days, instrument codes, code count)``."""
    if isinstance(index, pd.MultiIndex) and index.nlevels >= 2 \
            and not (np.any(index.codes[0] < 0) or np.any(index.codes[1] < 0)):
        # the codes are already there; rank the used date levels in sorted order
        day_codes = np.asarray(index.codes[0])
        levels = index.levels[0]
        used = np.zeros(len(levels), dtype=bool)
        used[day_codes] = True
        order = np.argsort(np.asarray(levels), kind="stable")
        rank = np.empty(len(levels), dtype=np.int64)
        rank[order] = np.cumsum(used[order]) - 1
        return (rank[day_codes], int(used.sum()), np.asarray(index.codes[1]),
                len(index.levels[1]))
    day_positions, days = pd.factorize(index.get_level_values(0), sort=True)
    instrument_codes, instruments = pd.factorize(index.get_level_values(1))
    return day_positions, len(days), instrument_codes, len(instruments)


def _listing_counts(index: pd.Index) -> tuple[int, int, int]:
    """``(instruments, suspended days, late listings)`` of a ``(datetime, instrument)`` index."""
    if len(index) == 0:
        return 0, 0, 0
    day_positions, _, instrument_codes, count = _index_codes(index)
    present = np.bincount(instrument_codes, minlength=count)
    first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(count, -1, dtype=np.int64)
    np.minimum.at(first, instrument_codes, day_positions)
    np.maximum.at(last, instrument_codes, day_positions)
    listed = present > 0
    suspended = int((last[listed] - first[listed] + 1 - present[listed]).sum())
    return int(listed.sum()), suspended, int((first[listed] > 0).sum())


def _blank_rows(frame: pd.DataFrame, invalid: np.ndarray,
                parsed: dict[int, np.ndarray]) -> pd.DataFrame:
    """A new frame: ``frame`` with blanked columns NaN on ``invalid`` rows, parsed columns set."""
    rows = np.flatnonzero(invalid)
    names = list(frame.columns)
    blanked = [position for position, name in enumerate(names)
               if position in parsed
               or (name not in KEPT_COLUMNS and _is_blanked(frame.iloc[:, position]))]
    if not parsed and all(dtype == np.float64 for dtype in frame.dtypes):
        # one copy of the whole block (column-major, as pandas keeps it), then NaN in place
        values = np.asfortranarray(frame.to_numpy(dtype=np.float64, copy=True))
        values[np.ix_(rows, np.asarray(blanked, dtype=np.int64))] = np.nan
        return pd.DataFrame(values, index=frame.index, columns=frame.columns, copy=False)
    result = frame.copy(deep=False)
    for position in blanked:
        values = parsed[position] if position in parsed \
            else frame.iloc[:, position].to_numpy(dtype=np.float64, na_value=np.nan)
        # np.where builds a new array: the input's data is never written
        result.isetitem(position, np.where(invalid, np.nan, values))
    return result


def valid_values(values: np.ndarray) -> np.ndarray:
    """Whether each price or volume is usable: finite and ``> 0`` (NaN is not).

    The one rule behind :func:`clean_bars` and the features' own masking.
    """
    with np.errstate(invalid="ignore"):
        valid: np.ndarray = (values > 0.0) & (values < np.inf)
    return valid


def clean_bars(frame: pd.DataFrame, source: str = "panel") -> tuple[pd.DataFrame, DataQualityReport]:
    """Blank the invalid bars of a panel and count its problems.

    A bar is invalid when a price (``open``, ``high``, ``low``, ``close``, ``vwap``;
    those present) is missing, non-finite or ``<= 0``, or when ``volume`` (when
    present) is missing, non-finite, zero or negative. Every numeric column of an
    invalid bar except ``factor`` is set to NaN (so the bar columns become float);
    the row is kept. Each row is judged on its own. Exact duplicate rows are dropped
    (conflicting ones raise). Price or volume columns that are not numeric are
    parsed (unparseable values are missing).

    Args:
        frame: A validated panel indexed by ``(datetime, instrument)``, sorted; it is
            not modified.
        source: Where the panel came from, for error messages.

    Returns:
        ``(cleaned panel, report)``; the panel is ``frame`` itself when nothing
        needed a change.

    Raises:
        DataError: When a ``(datetime, instrument)`` pair repeats with different values.
    """
    frame, duplicated = drop_duplicate_rows(frame, source)
    rows = len(frame)
    invalid_price = np.zeros(rows, dtype=bool)
    invalid_volume = np.zeros(rows, dtype=bool)
    parsed: dict[int, np.ndarray] = {}
    names = list(frame.columns)
    for position, name in enumerate(names):
        if name not in PRICE_COLUMNS and name != VOLUME_COLUMN:
            continue
        values, was_parsed = _as_float(frame.iloc[:, position])
        if was_parsed:
            parsed[position] = values
        valid = valid_values(values)
        if name == VOLUME_COLUMN:
            invalid_volume |= ~valid
        else:
            invalid_price |= ~valid
    invalid = invalid_price | invalid_volume
    result = _blank_rows(frame, invalid, parsed) if parsed or invalid.any() else frame
    instruments, suspended, late = _listing_counts(frame.index)
    report = DataQualityReport(
        rows=rows, instruments=instruments, invalid_price_bars=int(invalid_price.sum()),
        zero_volume_bars=int((invalid_volume & ~invalid_price).sum()),
        duplicated_rows=duplicated, suspended_days=suspended, late_listings=late)
    return result, report
