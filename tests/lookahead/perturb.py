"""Perturbations for no-look-ahead tests: change every bar strictly after a date.

A result for dates <= D computed without look-ahead must not change, bit for bit,
when everything after D is replaced: values scrambled, bars removed, bars added.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")


def scramble_after(bars: pd.DataFrame, date: pd.Timestamp | str, seed: int = 0) -> pd.DataFrame:
    """Return ``bars`` with every row strictly after ``date`` replaced by noise.

    Rows on or before ``date`` are kept bit for bit. After it: every value is
    multiplied by a random factor (prices stay positive and volumes non-negative), a
    tenth of the rows are dropped, and some instruments gain rows on dates they had
    none (new listings, ended suspensions).
    """
    cut = pd.Timestamp(date)
    rng = np.random.default_rng(seed)
    dates = bars.index.get_level_values(0)
    before, after = bars[dates <= cut], bars[dates > cut]
    if after.empty:
        return bars.copy()
    noise = after.copy()
    numeric = [column for column in noise.columns if noise[column].dtype.kind == "f"]
    factors = np.exp(rng.normal(0.0, 0.5, (len(noise), len(numeric))))
    noise[numeric] = noise[numeric].to_numpy() * factors
    noise = noise[rng.random(len(noise)) > 0.1]
    # new rows: every instrument on every later date where it had none, for a few dates
    later_dates = after.index.get_level_values(0).unique()
    instruments = bars.index.get_level_values(1).unique()
    picked = later_dates[rng.random(len(later_dates)) < 0.2]
    full = pd.MultiIndex.from_product([picked, instruments], names=bars.index.names)
    missing = full.difference(noise.index)
    if len(missing):
        template = noise.iloc[rng.integers(0, len(noise), len(missing))] if len(noise) else None
        if template is not None:
            extra = template.copy()
            extra.index = missing
            noise = pd.concat([noise, extra])
    return pd.concat([before, noise]).sort_index()


def on_or_before(frame: pd.DataFrame | pd.Series, date: pd.Timestamp | str
                 ) -> pd.DataFrame | pd.Series:
    """The rows of ``frame`` whose first index level is on or before ``date``."""
    return frame[frame.index.get_level_values(0) <= pd.Timestamp(date)]


def assert_identical(left: pd.DataFrame | pd.Series, right: pd.DataFrame | pd.Series) -> None:
    """Exact equality: same index, same columns, same bits (NaN equal to NaN)."""
    assert left.index.equals(right.index), "the rows differ"
    if isinstance(left, pd.DataFrame):
        assert isinstance(right, pd.DataFrame)
        assert left.columns.equals(right.columns), "the columns differ"
    a, b = np.asarray(left.to_numpy()), np.asarray(right.to_numpy())
    assert a.dtype == b.dtype, f"dtypes differ: {a.dtype} vs {b.dtype}"
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else (a == b)
    if not same.all():
        rows, *columns = np.nonzero(~same)
        where = [left.index[int(row)] for row in rows[:3]]
        detail = ""
        if columns and isinstance(left, pd.DataFrame):
            names = [left.columns[int(column)] for column in columns[0][:3]]
            detail = f" in columns {names}"
            pairs = [(a[int(r), int(c)], b[int(r), int(c)]) for r, c in zip(rows[:3], columns[0][:3],
                                                                               strict=True)]
        else:
            pairs = [(a[int(r)], b[int(r)]) for r in rows[:3]]
        raise AssertionError(f"{int((~same).sum())} value(s) differ, e.g. at {where}{detail}: "
                             f"{pairs}")
