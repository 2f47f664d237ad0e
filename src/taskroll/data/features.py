"""Alpha158 price/volume features and the LABEL0 label, vectorised.

Qlib's Alpha158 expressions, with Qlib's names: 9 K-bar features, 4 price
ratios and 29 rolling operators over each window (158 features with the
default windows ``(5, 10, 20, 30, 60)``). As in Qlib, rolling windows accept
partial history (``min_periods=1``), and each instrument's series is the
sequence of its own rows (suspended days are absent, not NaN).

How it stays fast: the panel is laid out as a 2-D array, one column per
instrument and one row per position in that instrument's own history, so every
``Ref``/``Mean``/``Std``... is one pandas or numpy call over all instruments at
once and never mixes two instruments. Results are gathered back to the
``(datetime, instrument)`` rows.

No look-ahead: every feature at a row uses only that instrument's rows up to
and including that date. Only the label looks forward:
``LABEL0 = Ref($close, -2) / Ref($close, -1) - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import pandas as pd
from pandas.core.window.rolling import Rolling

from taskroll.data.cache import FEATURE_CACHE
from taskroll.errors import DataError

DEFAULT_WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
KBAR_FEATURES: tuple[str, ...] = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2",
                                  "KSFT", "KSFT2")
PRICE_FEATURES: tuple[str, ...] = ("OPEN", "HIGH", "LOW", "VWAP")
ROLLING_OPERATORS: tuple[str, ...] = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV",
    "IMAX", "IMIN", "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD",
    "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap")
LABEL_NAME = "LABEL0"
_EPS = 1e-12

def clear_feature_cache() -> None:
    """Forget the features computed in this process."""
    FEATURE_CACHE.clear()


class _Layout:
    """Maps panel rows to a (position in own history, instrument) grid and back.

    Each grid column is one instrument's own rows, preceded by ``pad`` NaN rows.
    Flattened column by column, the grid is one long series in which a rolling
    window of up to ``pad + 1`` rows never reaches the previous instrument, so each
    rolling statistic is a single pandas call.
    """

    def __init__(self, index: pd.MultiIndex, pad: int) -> None:
        instrument_codes, _ = pd.factorize(index.get_level_values(1))
        dates = index.get_level_values(0).to_numpy()
        order = np.lexsort((dates, instrument_codes))
        sorted_codes = instrument_codes[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
        counts = np.diff(np.r_[starts, sorted_codes.size])
        position = np.empty(sorted_codes.size, dtype=np.int64)
        position[order] = np.arange(sorted_codes.size) - np.repeat(starts, counts) + pad
        length = int(counts.max()) if counts.size else 0
        self.shape = (pad + length, int(instrument_codes.max(initial=-1)) + 1)
        # index of each row in the column-major flattening of the grid
        self.flat = instrument_codes.astype(np.int64) * self.shape[0] + position

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Scatter row values into a Fortran-ordered grid (NaN where there is no row)."""
        out = np.full(self.shape, np.nan, order="F")
        out.ravel(order="K")[self.flat] = values
        return out

    def rows(self, grid: np.ndarray) -> np.ndarray:
        """Gather grid values back into row order."""
        return np.take(np.asfortranarray(grid).ravel(order="K"), self.flat)


def _ref(values: np.ndarray, lag: int) -> np.ndarray:
    """Qlib ``Ref(x, lag)``: the value ``lag`` rows earlier (negative: later)."""
    out = np.full_like(values, np.nan)
    if lag > 0:
        out[lag:] = values[:-lag]
    elif lag < 0:
        out[:lag] = values[-lag:]
    else:
        out[:] = values
    return out


def _rolling(values: np.ndarray, window: int) -> Rolling[pd.Series[float]]:
    """One rolling window over the whole (padded, column-major) grid."""
    return pd.Series(np.asfortranarray(values).ravel(order="K")).rolling(window, min_periods=1)


def _grid(result: pd.Series[float], like: np.ndarray) -> np.ndarray:
    return result.to_numpy().reshape(like.shape, order="F")


def _mean(values: np.ndarray, window: int) -> np.ndarray:
    return _grid(_rolling(values, window).mean(), values)


def _sum(values: np.ndarray, window: int) -> np.ndarray:
    return _grid(_rolling(values, window).sum(), values)


def _std(values: np.ndarray, window: int) -> np.ndarray:
    return _grid(_rolling(values, window).std(), values)


def _flag(condition: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A comparison as 1.0/0.0 (NaN compares false, as in Qlib), NaN where there is no bar."""
    return np.where(np.isnan(values), np.nan, condition.astype(float))


def _idx_extreme(values: np.ndarray, window: int, largest: bool, first_row: int) -> np.ndarray:
    """Qlib ``IdxMax``/``IdxMin``: 1-based position of the extreme in the window (first wins).

    ``first_row`` is the grid row of each instrument's first bar (windows start there at the
    earliest, as Qlib's partial windows do).
    """
    rolling = _rolling(values, window)
    extreme = _grid(rolling.max() if largest else rolling.min(), values)
    rows = np.arange(values.shape[0])[:, None]
    best_row = np.full(values.shape, -1, dtype=np.int64, order="F")
    # newest to oldest, overwriting: the oldest row equal to the extreme wins, as argmax
    for lag in range(window):
        hit = values[: values.shape[0] - lag] == extreme[lag:]
        np.copyto(best_row[lag:], rows[: values.shape[0] - lag], where=hit)
    window_start = np.maximum(rows - window + 1, first_row)
    result = (best_row - window_start + 1).astype(float)
    result[(best_row < 0) | np.isnan(values)] = np.nan
    return result


def _regression(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling regression of ``values`` on time: Qlib ``Slope``, ``Rsquare`` and ``Resi``."""
    time = np.broadcast_to(np.arange(values.shape[0], dtype=float)[:, None], values.shape)
    time = np.where(np.isnan(values), np.nan, time)
    count = _sum(np.where(np.isnan(values), np.nan, 1.0), window)
    mean_t, mean_x = _mean(time, window), _mean(values, window)
    cov = _mean(time * values, window) - mean_t * mean_x
    var_t = _mean(time * time, window) - mean_t**2
    var_x = _mean(values * values, window) - mean_x**2
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where((count > 1) & (var_t > 0), cov / var_t, np.nan)
        rsquare = np.where((count > 1) & (var_x > _EPS), cov**2 / (var_t * var_x), np.nan)
    residual = values - (mean_x + slope * (time - mean_t))
    return slope, np.clip(rsquare, 0.0, 1.0), residual


def _corr(left: np.ndarray, right: np.ndarray, window: int) -> np.ndarray:
    """Qlib ``Corr``: rolling Pearson correlation, NaN when either side is constant."""
    both = ~(np.isnan(left) | np.isnan(right))
    left = np.where(both, left, np.nan)
    right = np.where(both, right, np.nan)
    mean_l, mean_r = _mean(left, window), _mean(right, window)
    cov = _mean(left * right, window) - mean_l * mean_r
    var_l = _mean(left * left, window) - mean_l**2
    var_r = _mean(right * right, window) - mean_r**2
    count = _sum(both.astype(float), window)
    scale_l = np.maximum(np.abs(mean_l), 1.0) ** 2 * 1e-10
    scale_r = np.maximum(np.abs(mean_r), 1.0) ** 2 * 1e-10
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.sqrt(var_l * var_r)
    corr[(count < 2) | (var_l <= scale_l) | (var_r <= scale_r)] = np.nan
    clipped: np.ndarray = np.clip(corr, -1.0, 1.0)
    return clipped


def _rolling_features(price: dict[str, np.ndarray], window: int, wanted: set[str],
                      first_row: int) -> dict[str, Callable[[], np.ndarray]]:
    """Lazy builders of every rolling feature for one window, keyed by operator."""
    close, high, low, volume = price["close"], price["high"], price["low"], price["volume"]
    d = window
    change = close - _ref(close, 1)
    abs_change_sum = _sum(np.abs(change), d) + _EPS
    volume_change = volume - _ref(volume, 1)
    abs_volume_change_sum = _sum(np.abs(volume_change), d) + _EPS
    cache: dict[str, np.ndarray] = {}

    def once(key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def regression() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slope = once("slope", lambda: np.stack(_regression(close, d)))
        return slope[0], slope[1], slope[2]

    def highest() -> np.ndarray:
        return once("max", lambda: _grid(_rolling(high, d).max(), high))

    def lowest() -> np.ndarray:
        return once("min", lambda: _grid(_rolling(low, d).min(), low))

    def up_share() -> np.ndarray:
        return once("sump", lambda: _sum(np.maximum(change, 0.0), d) / abs_change_sum)

    def down_share() -> np.ndarray:
        return once("sumn", lambda: _sum(np.maximum(-change, 0.0), d) / abs_change_sum)

    def count_up() -> np.ndarray:
        return once("cntp", lambda: _mean(_flag(close > _ref(close, 1), close), d))

    def count_down() -> np.ndarray:
        return once("cntn", lambda: _mean(_flag(close < _ref(close, 1), close), d))

    def idx_max() -> np.ndarray:
        return once("imax", lambda: _idx_extreme(high, d, True, first_row))

    def idx_min() -> np.ndarray:
        return once("imin", lambda: _idx_extreme(low, d, False, first_row))

    def weighted_volume() -> np.ndarray:
        flow = np.abs(close / _ref(close, 1) - 1.0) * volume
        return _std(flow, d) / (_mean(flow, d) + _EPS)

    def volume_up() -> np.ndarray:
        return once("vsump", lambda: _sum(np.maximum(volume_change, 0.0), d)
                    / abs_volume_change_sum)

    def volume_down() -> np.ndarray:
        return once("vsumn", lambda: _sum(np.maximum(-volume_change, 0.0), d)
                    / abs_volume_change_sum)

    builders: dict[str, Callable[[], np.ndarray]] = {
        "ROC": lambda: _ref(close, d) / close,
        "MA": lambda: _mean(close, d) / close,
        "STD": lambda: _std(close, d) / close,
        "BETA": lambda: regression()[0] / close,
        "RSQR": lambda: regression()[1],
        "RESI": lambda: regression()[2] / close,
        "MAX": lambda: highest() / close,
        "MIN": lambda: lowest() / close,
        "QTLU": lambda: _grid(_rolling(close, d).quantile(0.8), close) / close,
        "QTLD": lambda: _grid(_rolling(close, d).quantile(0.2), close) / close,
        "RANK": lambda: _grid(_rolling(close, d).rank(pct=True), close),
        "RSV": lambda: (close - lowest()) / (highest() - lowest() + _EPS),
        "IMAX": lambda: idx_max() / d,
        "IMIN": lambda: idx_min() / d,
        "IMXD": lambda: (idx_max() - idx_min()) / d,
        "CORR": lambda: _corr(close, np.log(volume + 1.0), d),
        "CORD": lambda: _corr(close / _ref(close, 1),
                              np.log(volume / _ref(volume, 1) + 1.0), d),
        "CNTP": count_up,
        "CNTN": count_down,
        "CNTD": lambda: count_up() - count_down(),
        "SUMP": up_share,
        "SUMN": down_share,
        "SUMD": lambda: up_share() - down_share(),
        "VMA": lambda: _mean(volume, d) / (volume + _EPS),
        "VSTD": lambda: _std(volume, d) / (volume + _EPS),
        "WVMA": weighted_volume,
        "VSUMP": volume_up,
        "VSUMN": volume_down,
        "VSUMD": lambda: volume_up() - volume_down(),
    }
    return {name: build for name, build in builders.items() if name in wanted}


def alpha158_names(windows: Sequence[int] = DEFAULT_WINDOWS,
                   rolling_operators: Sequence[str] | None = None) -> list[str]:
    """Return the feature names in Qlib's order (K-bar, price, then operator-by-window).

    Args:
        windows: Rolling windows, e.g. ``(5, 10, 20, 30, 60)``.
        rolling_operators: Operators to include (default: all of ``ROLLING_OPERATORS``).

    Returns:
        Names such as ``KMID``, ``OPEN0``, ``ROC5``, ``MA60``.

    Raises:
        DataError: For an unknown operator or a window below 1.
    """
    operators = ROLLING_OPERATORS if rolling_operators is None else tuple(rolling_operators)
    unknown = sorted(set(operators) - set(ROLLING_OPERATORS))
    if unknown:
        raise DataError(f"unknown Alpha158 rolling operator(s) {unknown}; "
                        f"known: {list(ROLLING_OPERATORS)}")
    if any(int(window) < 1 for window in windows):
        raise DataError(f"rolling windows must be >= 1, got {list(windows)}")
    names = [*KBAR_FEATURES, *(f"{name}0" for name in PRICE_FEATURES)]
    names += [f"{op}{int(window)}" for op in ROLLING_OPERATORS if op in operators
              for window in windows]
    return names


def compute_alpha158(bars: pd.DataFrame, windows: Sequence[int] = DEFAULT_WINDOWS,
                     rolling_operators: Sequence[str] | None = None,
                     dtype: type[np.floating] = np.float32) -> pd.DataFrame:
    """Compute Alpha158 features and ``LABEL0`` for every row of ``bars``.

    Args:
        bars: A panel indexed by ``(datetime, instrument)`` with columns
            ``open, high, low, close, volume, vwap``.
        windows: Rolling windows.
        rolling_operators: Rolling operators to include (default: all 29).
        dtype: Float type of the result (float32 by default, as Qlib).

    Returns:
        A frame with the index of ``bars`` and 2-level columns ``("feature", name)``
        for each feature followed by ``("label", "LABEL0")``. Infinite values (e.g.
        a zero price) are kept; processors handle them.

    Raises:
        DataError: When a required bar column is missing.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in bars.columns]
    if missing:
        raise DataError(f"Alpha158 needs bar column(s) {missing}; got {list(bars.columns)}")
    names = alpha158_names(windows, rolling_operators)
    wanted = set(ROLLING_OPERATORS if rolling_operators is None else rolling_operators)
    if not isinstance(bars.index, pd.MultiIndex) or bars.index.nlevels != 2:
        raise DataError("Alpha158 needs bars indexed by (datetime, instrument)")
    pad = max((int(window) for window in windows), default=1)
    layout = _Layout(bars.index, pad)
    price = {name: layout.grid(bars[name].to_numpy(dtype=float)) for name in REQUIRED_COLUMNS}
    # column-major, so that each feature is written contiguously and pandas keeps the block
    out = np.empty((len(bars), len(names) + 1), dtype=dtype, order="F")
    column = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for values in _kbar_and_price(price):
            out[:, column] = layout.rows(values)
            column += 1
        for window in windows:
            builders = _rolling_features(price, int(window), wanted, pad)
            for op, build in builders.items():
                out[:, names.index(f"{op}{int(window)}")] = layout.rows(build())
        close = price["close"]
        out[:, -1] = layout.rows(_ref(close, -2) / _ref(close, -1) - 1.0)
    columns = pd.MultiIndex.from_tuples(
        [*(("feature", name) for name in names), ("label", LABEL_NAME)])
    return pd.DataFrame(out, index=bars.index, columns=columns)


def _kbar_and_price(price: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The 9 K-bar features then OPEN0, HIGH0, LOW0, VWAP0 (Qlib's order)."""
    open_, high, low, close = price["open"], price["high"], price["low"], price["close"]
    body_top, body_bottom = np.maximum(open_, close), np.minimum(open_, close)
    span = high - low + _EPS
    return [
        (close - open_) / open_, (high - low) / open_, (close - open_) / span,
        (high - body_top) / open_, (high - body_top) / span,
        (body_bottom - low) / open_, (body_bottom - low) / span,
        (2 * close - high - low) / open_, (2 * close - high - low) / span,
        open_ / close, high / close, low / close, price["vwap"] / close,
    ]


def cached_alpha158(key: Hashable | None, load_bars: Callable[[], pd.DataFrame],
                    windows: Sequence[int] = DEFAULT_WINDOWS,
                    rolling_operators: Sequence[str] | None = None) -> pd.DataFrame:
    """Return :func:`compute_alpha158` of ``load_bars()``, cached per process under ``key``.

    Args:
        key: Identity of the bars (e.g. a loader's ``cache_key``); ``None`` disables caching.
        load_bars: Returns the bars when the features are not cached.
        windows: Rolling windows.
        rolling_operators: Rolling operators to include.

    Returns:
        The feature frame; treat it as read-only.

    Raises:
        DataError: When the bars lack a required column.
    """
    operators = None if rolling_operators is None else tuple(rolling_operators)
    window_key = tuple(int(window) for window in windows)
    if key is None:
        return compute_alpha158(load_bars(), window_key, operators)
    frame: pd.DataFrame = FEATURE_CACHE.get_or_build(
        ("alpha158", key, window_key, operators),
        lambda: compute_alpha158(load_bars(), window_key, operators))
    return frame
