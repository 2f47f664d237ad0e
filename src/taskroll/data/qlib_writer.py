"""Write a bar panel in Qlib's binary day layout (what ``QlibDataLoader`` reads).

The layout, as Qlib's ``dump_bin`` writes it::

    FOLDER/calendars/day.txt                    one trading day per line (YYYY-MM-DD)
    FOLDER/instruments/all.txt                  instrument<TAB>first day<TAB>last day
    FOLDER/instruments/<market>.txt             the same, one line per listing span
    FOLDER/features/<instrument lower-case>/<field>.day.bin

A ``.bin`` file is a little-endian float32 array: element 0 is the calendar index of
the instrument's first day (as a float), the others are the field's values for
consecutive calendar days from there (NaN on days without a bar).

Used by the tests and the examples to build Qlib-layout data without Qlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from taskroll.data.loader import validate_panel
from taskroll.errors import DataError

__all__ = ["QLIB_FIELDS", "MarketMember", "feature_folder_name", "write_qlib_data"]

QLIB_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap", "factor")
"""Bar columns written (and read back) as ``<field>.day.bin``, those present."""

MarketMember: TypeAlias = str | tuple[str, Any, Any]
"""A market's member: an instrument name (its whole life in the panel), or
``(instrument, first day, last day)`` for one listing span (repeat it for several)."""

# Windows device names Qlib prefixes in folder names (Qlib's ``code_to_fname``)
_RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(10)),
                             *(f"LPT{n}" for n in range(10))})


def feature_folder_name(instrument: str) -> str:
    """Return the ``features/`` folder name of ``instrument``, as Qlib names it.

    Lower-case, with Qlib's ``_qlib_`` prefix for Windows device names (``CON``, ``NUL``...).
    """
    name = f"_qlib_{instrument}" if instrument.upper() in _RESERVED_NAMES else instrument
    return name.lower()


def _day_text(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d")


def _spans_of(member: MarketMember, lives: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]],
              market: str) -> tuple[str, str, str]:
    """One ``instrument, first, last`` line of a market file."""
    if isinstance(member, str):
        if member not in lives:
            raise DataError(f"market {market!r}: instrument {member!r} is not in the bars")
        first, last = lives[member]
        return member, _day_text(first), _day_text(last)
    if not (isinstance(member, tuple) and len(member) == 3 and isinstance(member[0], str)):
        raise DataError(f"market {market!r}: a member is an instrument name or "
                        f"(instrument, first day, last day), got {member!r}")
    instrument, first_day, last_day = member
    try:
        first, last = pd.Timestamp(first_day), pd.Timestamp(last_day)
    except (ValueError, TypeError) as error:
        raise DataError(f"market {market!r}: cannot parse the span of {member!r}") from error
    if pd.isna(first) or pd.isna(last) or first > last:
        raise DataError(f"market {market!r}: span {member!r} must run from a day to a later one")
    return instrument, _day_text(first), _day_text(last)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_qlib_data(bars: pd.DataFrame, folder: str | Path,
                    markets: Mapping[str, Sequence[MarketMember]] | None = None) -> Path:
    """Write ``bars`` to ``folder`` in Qlib's binary day layout.

    The calendar is the bars' distinct dates; each instrument's ``.bin`` files run from
    its first to its last bar, NaN on the calendar days between without a bar
    (suspensions). Values are stored as float32, as Qlib stores them. Existing files of
    the same names are replaced; other files in ``folder`` are left alone.

    Args:
        bars: A panel indexed by ``(datetime, instrument)`` (or with those columns) with
            any of the columns in :data:`QLIB_FIELDS`; other columns are not written.
        folder: The data folder (created when missing); what ``taskroll.init(provider_uri=...)``
            is given afterwards.
        markets: Market name (e.g. ``"csi300"``) to members: instrument names (listed for
            their whole life in the bars) or ``(instrument, first day, last day)`` spans.
            ``instruments/all.txt`` is always written, from the bars.

    Returns:
        The folder, as a ``Path``.

    Raises:
        DataError: When the bars are not a valid panel, hold none of the fields, or a
            market names an unknown instrument or a malformed span.
    """
    panel = validate_panel(bars, "write_qlib_data bars")
    fields = [name for name in QLIB_FIELDS if name in panel.columns]
    if not fields:
        raise DataError(f"write_qlib_data: the bars have none of the fields {list(QLIB_FIELDS)}")
    if panel.empty:
        raise DataError("write_qlib_data: the bars are empty")
    dates = panel.index.get_level_values(0)
    calendar = pd.DatetimeIndex(dates.unique()).sort_values()
    positions = calendar.get_indexer(dates)
    instruments = panel.index.get_level_values(1)
    lives: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {
        str(name): (calendar[group.min()], calendar[group.max()])
        for name, group in pd.Series(positions).groupby(np.asarray(instruments))}
    member_lines: dict[str, list[str]] = {}
    for market, members in (markets or {}).items():
        if not market or market.lower() == "all" or "/" in market or "\\" in market:
            raise DataError(f"write_qlib_data: invalid market name {market!r} "
                            "('all' is written from the bars)")
        member_lines[market] = ["\t".join(_spans_of(member, lives, market))
                                for member in members]

    root = Path(folder)
    for sub in ("calendars", "instruments", "features"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_lines(root / "calendars" / "day.txt", [_day_text(day) for day in calendar])
    _write_lines(root / "instruments" / "all.txt",
                 [f"{name}\t{_day_text(first)}\t{_day_text(last)}"
                  for name, (first, last) in sorted(lives.items())])
    for market, lines in member_lines.items():
        _write_lines(root / "instruments" / f"{market.lower()}.txt", lines)
    values = panel[fields].to_numpy(dtype=np.float64)
    order = np.lexsort((positions, np.asarray(instruments)))
    sorted_names = np.asarray(instruments)[order]
    boundaries = np.flatnonzero(sorted_names[1:] != sorted_names[:-1]) + 1
    for rows in np.split(order, boundaries):
        name = str(instruments[rows[0]])
        days = positions[rows]
        first = int(days[0])
        grid = np.full((int(days[-1]) - first + 1, len(fields)), np.nan)
        grid[days - first] = values[rows]
        target = root / "features" / feature_folder_name(name)
        target.mkdir(exist_ok=True)
        for column, field in enumerate(fields):
            array = np.concatenate(([float(first)], grid[:, column])).astype("<f4")
            array.tofile(target / f"{field}.day.bin")
    return root
