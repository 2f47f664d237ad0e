"""Qlib's time-series operators over a panel laid out instrument by instrument.

:class:`Layout` sorts the ``(datetime, instrument)`` rows of a panel instrument by
instrument (each in date order) and puts results back in the panel's order;
:class:`Operators` computes Qlib's ``Ref``, ``Mean``, ``Sum``, ``Std``, ``IdxMax``/``IdxMin``,
``Slope``/``Rsquare``/``Resi`` and ``Corr`` over all instruments at once, each one pandas or
numpy call with windows clipped to each instrument's own rows (:class:`ClippedWindow`).
:mod:`taskroll.data.features` builds the Alpha158 table from them.

No look-ahead, by construction: no window spans two instruments, and pandas' running sums
restart at each instrument, so a value at a row depends only on that instrument's rows up
to and including that date. Only :meth:`Layout.on_calendar` looks forward, for labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer
from pandas.core.window.rolling import Rolling

from taskroll.errors import DataError

EPS = 1e-12
"""Added to denominators that may be zero (Qlib's ``1e-12``)."""


class Layout:
    """Rows sorted instrument by instrument (each in date order), and the way back.

    Every time-series operator works on this flat order with windows clipped to the
    instrument's own rows, so no window ever spans two instruments and pandas' running
    sums restart at each instrument: a value depends only on the same instrument's rows
    up to its own date, never on another instrument and never on a later row.

    Args:
        index: The panel's ``(datetime, instrument)`` index.
        calendar: The market's trading days, which :meth:`on_calendar` counts (``None``: the
            panel's distinct dates). A panel of a few instruments lacks the days on which
            all of them were suspended; the market calendar still has them, so a label
            does not skip them to reach a later price. Panel dates missing from it are
            added.
    """

    def __init__(self, index: pd.MultiIndex, calendar: pd.DatetimeIndex | None = None) -> None:
        instrument_codes, _ = pd.factorize(index.get_level_values(1))
        dates = index.get_level_values(0)
        if calendar is None:
            date_codes, days = pd.factorize(dates, sort=True)
        else:
            days = pd.DatetimeIndex(calendar).union(pd.DatetimeIndex(dates.unique())).unique()
            days = days.sort_values()
            date_codes = days.get_indexer(dates)
        self.order = np.lexsort((date_codes, instrument_codes))
        sorted_codes = instrument_codes[self.order]
        size = sorted_codes.size
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1] if size else np.zeros(0)
        counts = np.diff(np.r_[starts, size]).astype(np.int64)
        self.first = np.repeat(starts.astype(np.int64), counts)
        """Sorted position of the first row of each sorted row's instrument."""
        self.position = np.arange(size, dtype=np.int64) - self.first
        """Position of each sorted row in its instrument's own history (0 = first bar)."""
        self.instrument_codes = sorted_codes.astype(np.int64)
        self.date_codes = date_codes[self.order].astype(np.int64)
        """Market-calendar day number of each sorted row."""
        self.calendar_size = len(days)
        self.instrument_count = int(instrument_codes.max(initial=-1)) + 1
        self._windows: dict[int, ClippedWindow] = {}

    def sort(self, values: np.ndarray) -> np.ndarray:
        """Row values in the layout's (instrument, date) order."""
        return values[self.order]

    def rows(self, values: np.ndarray) -> np.ndarray:
        """Sorted values back in the panel's row order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def window(self, size: int) -> ClippedWindow:
        """The rolling window of ``size`` rows clipped to each instrument (cached)."""
        if size not in self._windows:
            self._windows[size] = ClippedWindow(self.first, size)
        return self._windows[size]

    def ref(self, values: np.ndarray, lag: int) -> np.ndarray:
        """Qlib ``Ref(x, lag)`` in the instrument's own rows (NaN before its first row)."""
        out = np.full_like(values, np.nan)
        if lag > 0:
            out[lag:] = values[:-lag]
            out[self.position < lag] = np.nan
        elif lag < 0:
            raise DataError("features look back only; labels use the market calendar")
        else:
            out[:] = values
        return out

    def on_calendar(self, values: np.ndarray, lead: int) -> np.ndarray:
        """The same instrument's value ``lead`` market-calendar days later (NaN without a bar).

        Counting days of the market calendar, not the instrument's rows, a suspension
        gives NaN instead of a price from weeks later.
        """
        grid = np.full((self.calendar_size + lead, self.instrument_count), np.nan)
        grid[self.date_codes, self.instrument_codes] = values
        return grid[self.date_codes + lead, self.instrument_codes]


class ClippedWindow(BaseIndexer):
    """Trailing windows of ``window_size`` rows that never start before the row's instrument.

    Args:
        first: Sorted position of the first row of each sorted row's instrument
            (:attr:`Layout.first`).
        window_size: Rows per window.
    """

    def __init__(self, first: np.ndarray, window_size: int) -> None:
        super().__init__(window_size=window_size)
        end = np.arange(1, first.size + 1, dtype=np.int64)
        self._bounds = (np.maximum(end - window_size, first), end)

    def get_window_bounds(self, num_values: int = 0, min_periods: int | None = None,
                          center: bool | None = None, closed: str | None = None,
                          step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the precomputed ``(start, end)`` bounds (end exclusive)."""
        return self._bounds


class Operators:
    """Qlib's time-series operators over one layout (flat arrays in layout order).

    Args:
        layout: The panel's layout; every array passed in is in its sorted order.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def rolling(self, values: np.ndarray, window: int) -> Rolling[pd.Series[float]]:
        """A pandas rolling object over ``window`` rows of each instrument (partial at first)."""
        return pd.Series(values).rolling(self.layout.window(window), min_periods=1)

    def mean(self, values: np.ndarray, window: int) -> np.ndarray:
        """Qlib ``Mean``: rolling mean over ``window`` rows of each instrument."""
        return self.rolling(values, window).mean().to_numpy()

    def sum(self, values: np.ndarray, window: int) -> np.ndarray:
        """Qlib ``Sum``: rolling sum over ``window`` rows of each instrument."""
        return self.rolling(values, window).sum().to_numpy()

    def std(self, values: np.ndarray, window: int) -> np.ndarray:
        """Qlib ``Std``: rolling sample standard deviation over ``window`` rows."""
        return self.rolling(values, window).std().to_numpy()

    def ref(self, values: np.ndarray, lag: int) -> np.ndarray:
        """Qlib ``Ref(x, lag)`` (see :meth:`Layout.ref`)."""
        return self.layout.ref(values, lag)

    def idx_extreme(self, values: np.ndarray, window: int, largest: bool) -> np.ndarray:
        """Qlib ``IdxMax``/``IdxMin``: 1-based position of the extreme in the window (first wins)."""
        rolling = self.rolling(values, window)
        extreme = (rolling.max() if largest else rolling.min()).to_numpy()
        size = values.shape[0]
        position = self.layout.position
        best = np.full(size, -1, dtype=np.int64)
        # newest to oldest, overwriting: the oldest row equal to the extreme wins, as argmax
        for lag in range(min(window, size)):
            hit = (values[: size - lag] == extreme[lag:]) & (position[lag:] >= lag)
            np.copyto(best[lag:], position[: size - lag], where=hit)
        window_start = np.maximum(position - window + 1, 0)
        result: np.ndarray = (best - window_start + 1).astype(float)
        result[(best < 0) | np.isnan(values)] = np.nan
        return result

    def regression(self, values: np.ndarray,
                   window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rolling regression of ``values`` on time: Qlib ``Slope``, ``Rsquare`` and ``Resi``."""
        time = np.where(np.isnan(values), np.nan, self.layout.position.astype(float))
        count = self.sum(np.where(np.isnan(values), np.nan, 1.0), window)
        mean_t, mean_x = self.mean(time, window), self.mean(values, window)
        cov = self.mean(time * values, window) - mean_t * mean_x
        var_t = self.mean(time * time, window) - mean_t**2
        var_x = self.mean(values * values, window) - mean_x**2
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where((count > 1) & (var_t > 0), cov / var_t, np.nan)
            rsquare = np.where((count > 1) & (var_x > EPS), cov**2 / (var_t * var_x), np.nan)
        residual = values - (mean_x + slope * (time - mean_t))
        return slope, np.clip(rsquare, 0.0, 1.0), residual

    def corr(self, left: np.ndarray, right: np.ndarray, window: int) -> np.ndarray:
        """Qlib ``Corr``: rolling Pearson correlation, NaN when either side is constant."""
        both = ~(np.isnan(left) | np.isnan(right))
        left = np.where(both, left, np.nan)
        right = np.where(both, right, np.nan)
        mean_l, mean_r = self.mean(left, window), self.mean(right, window)
        cov = self.mean(left * right, window) - mean_l * mean_r
        var_l = self.mean(left * left, window) - mean_l**2
        var_r = self.mean(right * right, window) - mean_r**2
        count = self.sum(both.astype(float), window)
        scale_l = np.maximum(np.abs(mean_l), 1.0) ** 2 * 1e-10
        scale_r = np.maximum(np.abs(mean_r), 1.0) ** 2 * 1e-10
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov / np.sqrt(var_l * var_r)
        corr[(count < 2) | (var_l <= scale_l) | (var_r <= scale_r)] = np.nan
        clipped: np.ndarray = np.clip(corr, -1.0, 1.0)
        return clipped


def flag(condition: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A comparison as 1.0/0.0 (NaN compares false, as in Qlib), NaN where there is no bar."""
    return np.where(np.isnan(values), np.nan, condition.astype(float))
