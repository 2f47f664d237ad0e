"""Alpha158 price/volume features and the LABEL0 label, vectorised.

Qlib's Alpha158 expressions, with Qlib's names: 9 K-bar features, 4 price
ratios and 29 rolling operators over each window (158 features with the
default windows ``(5, 10, 20, 30, 60)``). As in Qlib, rolling windows accept
partial history (``min_periods=1``), and each instrument's series is the
sequence of its own rows (suspended days are absent, not NaN).

How it stays fast: the rows are sorted instrument by instrument, and every
``Ref``/``Mean``/``Std``... is one pandas or numpy call over all instruments at
once, with windows clipped to each instrument's own rows. Results are gathered
back to the ``(datetime, instrument)`` rows. The layout and the operators live in
:mod:`taskroll.data.feature_operators`; this module holds the Alpha158 table (names,
K-bar and price features, the rolling features by window), the label and the cache.

No look-ahead, by construction and proven by perturbation tests
(``tests/lookahead``): no window spans two instruments, and pandas' running sums
restart at each instrument, so a feature at a row depends only on that
instrument's bars up to and including that date, bit for bit. Only the label
looks forward, ``LABEL0 = Ref($close, -2) / Ref($close, -1) - 1`` counted in
trading days of the market calendar (NaN when a day has no bar).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from taskroll.data import feature_operators, feature_store
from taskroll.data.cache import FEATURE_CACHE
from taskroll.data.feature_operators import EPS, Layout, Operators, flag
from taskroll.data.quality import valid_values
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
REQUIRED_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Bar columns Alpha158 needs."""
OPTIONAL_COLUMNS: tuple[str, ...] = ("vwap",)
"""Bar columns Alpha158 reads when present: without ``vwap`` (e.g. Qlib data collected
from Yahoo) ``VWAP0`` is NaN, as Qlib's ``$vwap/$close`` of a missing field."""
LABEL_NAME = "LABEL0"
LABEL_HORIZON = 2
"""Trading days Alpha158's default label looks ahead: ``Ref($close, -2) / Ref($close, -1) - 1``."""


def clear_feature_cache() -> None:
    """Forget the features computed in this process."""
    FEATURE_CACHE.clear()


def _rolling_features(ops: Operators, price: dict[str, np.ndarray], window: int,
                      wanted: set[str]) -> dict[str, Callable[[], np.ndarray]]:
    """Lazy builders of every rolling feature for one window, keyed by operator."""
    close, high, low, volume = price["close"], price["high"], price["low"], price["volume"]
    d = window
    change = close - ops.ref(close, 1)
    abs_change_sum = ops.sum(np.abs(change), d) + EPS
    volume_change = volume - ops.ref(volume, 1)
    abs_volume_change_sum = ops.sum(np.abs(volume_change), d) + EPS
    cache: dict[str, np.ndarray] = {}

    def once(key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def regression() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slope = once("slope", lambda: np.stack(ops.regression(close, d)))
        return slope[0], slope[1], slope[2]

    def highest() -> np.ndarray:
        return once("max", lambda: ops.rolling(high, d).max().to_numpy())

    def lowest() -> np.ndarray:
        return once("min", lambda: ops.rolling(low, d).min().to_numpy())

    def up_share() -> np.ndarray:
        return once("sump", lambda: ops.sum(np.maximum(change, 0.0), d) / abs_change_sum)

    def down_share() -> np.ndarray:
        return once("sumn", lambda: ops.sum(np.maximum(-change, 0.0), d) / abs_change_sum)

    def count_up() -> np.ndarray:
        return once("cntp", lambda: ops.mean(flag(close > ops.ref(close, 1), close), d))

    def count_down() -> np.ndarray:
        return once("cntn", lambda: ops.mean(flag(close < ops.ref(close, 1), close), d))

    def idx_max() -> np.ndarray:
        return once("imax", lambda: ops.idx_extreme(high, d, True))

    def idx_min() -> np.ndarray:
        return once("imin", lambda: ops.idx_extreme(low, d, False))

    def weighted_volume() -> np.ndarray:
        flow = np.abs(close / ops.ref(close, 1) - 1.0) * volume
        return ops.std(flow, d) / (ops.mean(flow, d) + EPS)

    def volume_up() -> np.ndarray:
        return once("vsump", lambda: ops.sum(np.maximum(volume_change, 0.0), d)
                    / abs_volume_change_sum)

    def volume_down() -> np.ndarray:
        return once("vsumn", lambda: ops.sum(np.maximum(-volume_change, 0.0), d)
                    / abs_volume_change_sum)

    builders: dict[str, Callable[[], np.ndarray]] = {
        "ROC": lambda: ops.ref(close, d) / close,
        "MA": lambda: ops.mean(close, d) / close,
        "STD": lambda: ops.std(close, d) / close,
        "BETA": lambda: regression()[0] / close,
        "RSQR": lambda: regression()[1],
        "RESI": lambda: regression()[2] / close,
        "MAX": lambda: highest() / close,
        "MIN": lambda: lowest() / close,
        "QTLU": lambda: ops.rolling(close, d).quantile(0.8).to_numpy() / close,
        "QTLD": lambda: ops.rolling(close, d).quantile(0.2).to_numpy() / close,
        "RANK": lambda: ops.rolling(close, d).rank(pct=True).to_numpy(),
        "RSV": lambda: (close - lowest()) / (highest() - lowest() + EPS),
        "IMAX": lambda: idx_max() / d,
        "IMIN": lambda: idx_min() / d,
        "IMXD": lambda: (idx_max() - idx_min()) / d,
        "CORR": lambda: ops.corr(close, np.log(volume + 1.0), d),
        "CORD": lambda: ops.corr(close / ops.ref(close, 1),
                              np.log(volume / ops.ref(volume, 1) + 1.0), d),
        "CNTP": count_up,
        "CNTN": count_down,
        "CNTD": lambda: count_up() - count_down(),
        "SUMP": up_share,
        "SUMN": down_share,
        "SUMD": lambda: up_share() - down_share(),
        "VMA": lambda: ops.mean(volume, d) / (volume + EPS),
        "VSTD": lambda: ops.std(volume, d) / (volume + EPS),
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


def label_values(close: np.ndarray, layout: Layout, horizon: int = LABEL_HORIZON) -> np.ndarray:
    """Qlib's label ``Ref($close, -horizon) / Ref($close, -1) - 1`` on the market calendar.

    For ``horizon >= 2`` the return from the close of trading day ``t+1`` to the close of
    ``t+horizon`` (buy the day after the signal, hold); for ``horizon == 1`` the return from
    ``t`` to ``t+1``. Days count the market calendar (the panel's distinct dates): when the
    instrument has no valid bar on one of those days the label is NaN, never a later price.

    Args:
        close: Close prices in layout order.
        layout: The panel's layout.
        horizon: Trading days after ``t`` that the label reaches (``>= 1``).

    Returns:
        The labels in layout order.
    """
    start = layout.on_calendar(close, 1) if horizon >= 2 else close
    end = layout.on_calendar(close, horizon)
    result: np.ndarray = end / start - 1.0
    return result


def _check_horizon(horizon: int) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise DataError(f"label_horizon must be an int >= 1, got {horizon!r}")
    return int(horizon)


def compute_alpha158(bars: pd.DataFrame, windows: Sequence[int] = DEFAULT_WINDOWS,
                     rolling_operators: Sequence[str] | None = None,
                     dtype: type[np.floating] = np.float32,
                     label_horizon: int = LABEL_HORIZON,
                     calendar: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """Compute Alpha158 features and ``LABEL0`` for every row of ``bars``.

    Each feature at a row uses only that instrument's bars up to and including that
    row's date (windows count the instrument's own rows, as Qlib); the label uses the
    next ``label_horizon`` days of the market calendar (see :func:`label_values`).
    Invalid bars (a price missing or ``<= 0``, volume missing or ``<= 0``) are treated as
    missing, so they give NaN, never inf.

    Args:
        bars: A panel indexed by ``(datetime, instrument)`` with columns
            ``open, high, low, close, volume`` and, when there is one, ``vwap``.
        windows: Rolling windows.
        rolling_operators: Rolling operators to include (default: all 29).
        dtype: Float type of the result (float32 by default, as Qlib).
        label_horizon: Trading days the label looks ahead (2: Qlib's default label).
        calendar: The market calendar the label counts (``None``: the panel's distinct
            dates). Give the data source's calendar (a Qlib folder's ``day.txt``) when
            ``bars`` may lack a trading day, e.g. bars of a few instruments all suspended
            that day: the label is then NaN, as Qlib's, not a price from a later day.

    Returns:
        A frame with the index of ``bars`` and 2-level columns ``("feature", name)``
        for each feature followed by ``("label", "LABEL0")``.

    Raises:
        DataError: When a required bar column is missing, or for a bad window, operator
            or horizon.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in bars.columns]
    if missing:
        raise DataError(f"Alpha158 needs bar column(s) {missing}; got {list(bars.columns)}")
    names = alpha158_names(windows, rolling_operators)
    horizon = _check_horizon(label_horizon)
    wanted = set(ROLLING_OPERATORS if rolling_operators is None else rolling_operators)
    if not isinstance(bars.index, pd.MultiIndex) or bars.index.nlevels != 2:
        raise DataError("Alpha158 needs bars indexed by (datetime, instrument)")
    layout = Layout(bars.index, calendar)
    ops = Operators(layout)
    price = {name: layout.sort(values) for name, values in _valid_bars(bars).items()}
    # column-major, so that each feature is written contiguously and pandas keeps the block
    out = np.empty((len(bars), len(names) + 1), dtype=dtype, order="F")
    column = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for values in _kbar_and_price(price):
            out[:, column] = layout.rows(values)
            column += 1
        for window in windows:
            builders = _rolling_features(ops, price, int(window), wanted)
            for op, build in builders.items():
                out[:, names.index(f"{op}{int(window)}")] = layout.rows(build())
        out[:, -1] = layout.rows(label_values(price["close"], layout, horizon))
    columns = pd.MultiIndex.from_tuples(
        [*(("feature", name) for name in names), ("label", LABEL_NAME)])
    return pd.DataFrame(out, index=bars.index, columns=columns)


def _valid_bars(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """The required bar columns as float arrays, every invalid bar (the rule of
    :func:`~taskroll.data.quality.clean_bars`) set to NaN, so raw frames are safe too."""
    values = {name: bars[name].to_numpy(dtype=float)
              for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in bars.columns}
    valid = np.ones(len(bars), dtype=bool)
    for column in values.values():
        valid &= valid_values(column)
    if not valid.all():
        values = {name: np.where(valid, column, np.nan) for name, column in values.items()}
    for name in OPTIONAL_COLUMNS:
        values.setdefault(name, np.full(len(bars), np.nan))
    return values


def _kbar_and_price(price: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The 9 K-bar features then OPEN0, HIGH0, LOW0, VWAP0 (Qlib's order)."""
    open_, high, low, close = price["open"], price["high"], price["low"], price["close"]
    body_top, body_bottom = np.maximum(open_, close), np.minimum(open_, close)
    span = high - low + EPS
    return [
        (close - open_) / open_, (high - low) / open_, (close - open_) / span,
        (high - body_top) / open_, (high - body_top) / span,
        (body_bottom - low) / open_, (body_bottom - low) / span,
        (2 * close - high - low) / open_, (2 * close - high - low) / span,
        open_ / close, high / close, low / close, price["vwap"] / close,
    ]


def cached_alpha158(key: Hashable | None, load_bars: Callable[[], pd.DataFrame],
                    windows: Sequence[int] = DEFAULT_WINDOWS,
                    rolling_operators: Sequence[str] | None = None,
                    label_horizon: int = LABEL_HORIZON,
                    calendar: Callable[[], pd.DatetimeIndex] | None = None) -> pd.DataFrame:
    """Return :func:`compute_alpha158` of ``load_bars()``, cached per process under ``key``
    and on disk across processes (see :mod:`taskroll.data.feature_store`).

    Args:
        key: Identity of the bars (e.g. a loader's ``cache_key``); ``None`` disables caching.
        load_bars: Returns the bars when the features are not cached.
        windows: Rolling windows.
        rolling_operators: Rolling operators to include.
        label_horizon: Trading days the label looks ahead.
        calendar: Returns the market calendar the label counts (``None``: the panel's
            dates); called only when the features are computed. It must be determined
            by ``key``, as the bars are.

    Returns:
        The feature frame; treat it as read-only.

    Raises:
        DataError: When the bars lack a required column.
    """
    operators = None if rolling_operators is None else tuple(rolling_operators)
    window_key = tuple(int(window) for window in windows)
    horizon = _check_horizon(label_horizon)

    def build() -> pd.DataFrame:
        return compute_alpha158(load_bars(), window_key, operators, label_horizon=horizon,
                                calendar=None if calendar is None else calendar())

    if key is None:
        return build()
    config = {"features": "alpha158", "windows": window_key, "operators": operators,
              "label_horizon": horizon, "dtype": "float32", "code": _code_digest()}
    frame: pd.DataFrame = FEATURE_CACHE.get_or_build(
        ("alpha158", key, window_key, operators, horizon),
        lambda: feature_store.get_or_build(key, config, build))
    return frame


@functools.cache
def _code_digest() -> str:
    """Digest of the source of this module and of the operators it uses: features stored
    on disk by older code are not read."""
    digest = hashlib.sha256()
    for source in (__file__, feature_operators.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]
