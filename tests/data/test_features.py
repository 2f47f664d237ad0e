"""Alpha158 features: Qlib's definitions (checked against a slow oracle), no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskroll.data import SyntheticMarket, alpha158_names, compute_alpha158
from taskroll.errors import DataError

EPS = 1e-12


# -- a slow, obvious oracle: Qlib's expressions on one instrument's own rows ----------------------

def _roll(series: pd.Series, window: int):  # type: ignore[no-untyped-def]
    return series.rolling(window, min_periods=1)


def _windows(series: pd.Series, window: int) -> list[np.ndarray]:
    values = series.to_numpy()
    return [values[max(0, end - window + 1): end + 1] for end in range(len(values))]


def _regression(window: np.ndarray) -> tuple[float, float, float]:
    y = window[~np.isnan(window)]
    if len(y) < 2:
        return np.nan, np.nan, np.nan
    x = np.arange(len(y), dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    total = ((y - y.mean()) ** 2).sum()
    return slope, 1 - ((y - fitted) ** 2).sum() / total, y[-1] - fitted[-1]


def _rank_last(window: np.ndarray) -> float:
    """``percentileofscore(window, window[-1], kind="rank") / 100``."""
    x = window[~np.isnan(window)]
    last = window[-1]
    return (np.sum(x < last) + (np.sum(x == last) + 1) / 2) / len(x)


def _corr(left: pd.Series, right: pd.Series, window: int) -> pd.Series:
    out = []
    for a, b in zip(_windows(left, window), _windows(right, window), strict=True):
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = a[keep], b[keep]
        if len(a) < 2 or np.isclose(a.std(), 0) or np.isclose(b.std(), 0):
            out.append(np.nan)
        else:
            out.append(np.corrcoef(a, b)[0, 1])
    return pd.Series(out, index=left.index)


def oracle(bars: pd.DataFrame, d: int) -> pd.DataFrame:
    o, h, lo, c, v = (bars[name] for name in ("open", "high", "low", "close", "volume"))
    prev = c.shift(1)
    regress = [_regression(window) for window in _windows(c, d)]
    out = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + EPS),
        "KUP": (h - np.maximum(o, c)) / o, "KLOW2": (np.minimum(o, c) - lo) / (h - lo + EPS),
        "KSFT": (2 * c - h - lo) / o, "VWAP0": bars["vwap"] / c,
        f"ROC{d}": c.shift(d) / c, f"MA{d}": _roll(c, d).mean() / c,
        f"STD{d}": _roll(c, d).std() / c,
        f"BETA{d}": pd.Series([r[0] for r in regress], index=c.index) / c,
        f"RSQR{d}": pd.Series([r[1] for r in regress], index=c.index),
        f"RESI{d}": pd.Series([r[2] for r in regress], index=c.index) / c,
        f"MAX{d}": _roll(h, d).max() / c, f"MIN{d}": _roll(lo, d).min() / c,
        f"QTLU{d}": _roll(c, d).quantile(0.8) / c,
        f"RANK{d}": _roll(c, d).apply(_rank_last, raw=True),
        f"RSV{d}": (c - _roll(lo, d).min()) / (_roll(h, d).max() - _roll(lo, d).min() + EPS),
        f"IMAX{d}": _roll(h, d).apply(lambda x: np.argmax(x) + 1, raw=True) / d,
        f"IMIN{d}": _roll(lo, d).apply(lambda x: np.argmin(x) + 1, raw=True) / d,
        f"CORR{d}": _corr(c, np.log(v + 1), d),
        f"CORD{d}": _corr(c / prev, np.log(v / v.shift(1) + 1), d),
        f"CNTP{d}": _roll((c > prev).astype(float), d).mean(),
        f"SUMP{d}": _roll(np.maximum(c - prev, 0), d).sum() / (_roll((c - prev).abs(), d).sum()
                                                               + EPS),
        f"VMA{d}": _roll(v, d).mean() / (v + EPS), f"VSTD{d}": _roll(v, d).std() / (v + EPS),
    }
    flow = (c / prev - 1).abs() * v
    out[f"WVMA{d}"] = _roll(flow, d).std() / (_roll(flow, d).mean() + EPS)
    dv = v - v.shift(1)
    out[f"VSUMN{d}"] = _roll(np.maximum(-dv, 0), d).sum() / (_roll(dv.abs(), d).sum() + EPS)
    return pd.DataFrame(out)


# -- tests ----------------------------------------------------------------------------------------

def test_names_follow_qlib() -> None:
    names = alpha158_names()
    assert len(names) == 158 and len(set(names)) == 158
    assert names[:13] == ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT",
                          "KSFT2", "OPEN0", "HIGH0", "LOW0", "VWAP0"]
    assert names[13:18] == ["ROC5", "ROC10", "ROC20", "ROC30", "ROC60"]
    assert {"RSQR20", "QTLU30", "RANK60", "CORD10", "WVMA5", "VSUMD60"} <= set(names)
    assert alpha158_names((5,), ["MA", "STD"])[-2:] == ["MA5", "STD5"]
    with pytest.raises(DataError, match="unknown"):
        alpha158_names(rolling_operators=["NOPE"])


def test_features_match_the_oracle_per_instrument() -> None:
    market = SyntheticMarket(seed=3, n_instruments=5, start="2020-01-01", end="2020-09-30",
                             suspension_rate=6.0, listing_fraction=0.4)
    bars = market.bars()
    features = compute_alpha158(bars, windows=(5, 20), dtype=np.float64)
    assert features.index.equals(bars.index)
    calendar = bars.index.get_level_values("datetime").unique()
    for instrument, rows in bars.groupby(level="instrument"):
        own = rows.droplevel("instrument")
        mine = features.xs(instrument, level="instrument")["feature"]
        for window in (5, 20):
            expected = oracle(own, window)
            for name in expected.columns:
                np.testing.assert_allclose(mine[name].to_numpy(), expected[name].to_numpy(),
                                           rtol=1e-6, atol=1e-9, err_msg=f"{instrument} {name}")
        label = features.xs(instrument, level="instrument")[("label", "LABEL0")]
        # the label counts days of the market calendar: NaN when t+1 or t+2 has no bar
        on_calendar = own["close"].reindex(calendar)
        expected_label = (on_calendar.shift(-2) / on_calendar.shift(-1) - 1).reindex(own.index)
        np.testing.assert_allclose(label.to_numpy(), expected_label.to_numpy(), rtol=1e-12)
        assert expected_label.isna().sum() >= 2


def test_default_output_shape_and_dtype(bars: pd.DataFrame) -> None:
    features = compute_alpha158(bars)
    assert features.shape == (len(bars), 159)
    assert list(features.columns[:2]) == [("feature", "KMID"), ("feature", "KLEN")]
    assert features.columns[-1] == ("label", "LABEL0")
    assert (features.dtypes == np.float32).all()
    # rolling windows are partial early on, as in Qlib (min_periods=1), so few values are
    # missing; Ref($close, d) has none for an instrument's first d rows
    missing = features["feature"].isna().mean()
    assert missing.drop(index=[f"ROC{d}" for d in (5, 10, 20, 30, 60)]).max() < 0.01
    assert missing["ROC60"] > missing["ROC5"] > 0


def test_no_look_ahead(bars: pd.DataFrame) -> None:
    cutoff = pd.Timestamp("2020-03-31")
    features = compute_alpha158(bars, dtype=np.float64)
    dates = bars.index.get_level_values("datetime")
    altered = bars.copy()
    future = dates > cutoff
    rng = np.random.default_rng(0)
    for column in ("open", "high", "low", "close", "vwap", "volume"):
        altered.loc[future, column] *= rng.uniform(0.5, 1.5, future.sum())
    # and drop some future rows entirely
    altered = altered[~(future & (rng.random(len(altered)) < 0.3))]
    changed = compute_alpha158(altered, dtype=np.float64)
    changed_past = changed.index.get_level_values(0) <= cutoff
    past = dates <= cutoff
    pd.testing.assert_frame_equal(changed.loc[changed_past, "feature"],
                                  features.loc[past, "feature"])
    # the label looks forward by design: it changes near the cutoff
    label_diff = (changed.loc[changed_past, ("label", "LABEL0")]
                  - features.loc[past, ("label", "LABEL0")]).abs()
    assert label_diff.max() > 0


def test_row_order_does_not_matter(bars: pd.DataFrame) -> None:
    features = compute_alpha158(bars, windows=(5,), dtype=np.float64)
    shuffled = bars.sample(frac=1.0, random_state=1)
    again = compute_alpha158(shuffled, windows=(5,), dtype=np.float64)
    pd.testing.assert_frame_equal(again.sort_index(), features)


def test_missing_bar_column_raises(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="volume"):
        compute_alpha158(bars.drop(columns="volume"))


def test_without_vwap_only_vwap0_is_missing(bars: pd.DataFrame) -> None:
    """Qlib data collected without vwap: VWAP0 is NaN (as Qlib's), every other column
    is unchanged, and no bar becomes invalid for lack of it."""
    full = compute_alpha158(bars, windows=(5,), dtype=np.float64)
    without = compute_alpha158(bars.drop(columns="vwap"), windows=(5,), dtype=np.float64)
    assert without[("feature", "VWAP0")].isna().all()
    others = [column for column in full.columns if column != ("feature", "VWAP0")]
    pd.testing.assert_frame_equal(without[others], full[others])
