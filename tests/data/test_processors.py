"""Processors on small hand-computed frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskroll.data import (
    CSRankNorm,
    CSZScoreNorm,
    DropnaFeature,
    DropnaLabel,
    Fillna,
    ProcessInf,
    Processor,
    RobustZScoreNorm,
    ZScoreNorm,
)
from taskroll.errors import DataError
from taskroll.task.spec import init_instance_by_config

NAN = np.nan


def frame(feature_a: list[float], feature_b: list[float], label: list[float],
          dates: list[str] | None = None, instruments: list[str] | None = None) -> pd.DataFrame:
    """A frame over 2 dates x 3 instruments (or the given rows)."""
    dates = dates or ["2020-01-02"] * 3 + ["2020-01-03"] * 3
    instruments = instruments or ["A", "B", "C"] * 2
    index = pd.MultiIndex.from_arrays([pd.to_datetime(dates), instruments],
                                      names=["datetime", "instrument"])
    columns = pd.MultiIndex.from_tuples([("feature", "a"), ("feature", "b"), ("label", "y")])
    return pd.DataFrame(np.array([feature_a, feature_b, label]).T, index=index,
                        columns=columns)


def test_cs_zscore_per_date_mean_zero_std_one() -> None:
    df = frame([1, 2, 3, 10, 20, 60], [5, 5, 8, -1, 0, 1], [0.1, 0.2, 0.3, 1, 2, 3])
    out = CSZScoreNorm(fields_group="feature")(df)
    np.testing.assert_allclose(out[("feature", "a")].to_numpy()[:3], [-1, 0, 1])
    expected = (np.array([10, 20, 60]) - 30) / np.std([10, 20, 60], ddof=1)
    np.testing.assert_allclose(out[("feature", "a")].to_numpy()[3:], expected)
    for _, day in out["feature"].groupby(level="datetime"):
        np.testing.assert_allclose(day.mean(), 0, atol=1e-12)
        np.testing.assert_allclose(day.std(ddof=1), 1)
    pd.testing.assert_series_equal(out[("label", "y")], df[("label", "y")])
    assert df[("feature", "a")].tolist() == [1, 2, 3, 10, 20, 60], "input left unchanged"


def test_cs_zscore_ignores_nan_handles_constant_and_unsorted_rows() -> None:
    df = frame([1, NAN, 3, 4, 4, 4], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0])
    out = CSZScoreNorm()(df)
    a = out[("feature", "a")].to_numpy()
    np.testing.assert_allclose(a[:3], [-1 / np.sqrt(2), NAN, 1 / np.sqrt(2)])
    assert np.isnan(a[3:]).all(), "a constant column has no z-score"
    shuffled = df.iloc[[4, 0, 5, 2, 1, 3]]
    pd.testing.assert_frame_equal(CSZScoreNorm()(shuffled), out.iloc[[4, 0, 5, 2, 1, 3]])
    with pytest.raises(DataError):
        CSZScoreNorm(method="minmax")


def test_cs_zscore_robust() -> None:
    df = frame([1, 2, 100, 1, 2, 3], [1, 2, 3, 1, 2, 3], [0] * 6)
    out = CSZScoreNorm(fields_group="feature", method="robust")(df)
    np.testing.assert_allclose(out[("feature", "a")].to_numpy()[:3],
                               [-1 / 1.4826, 0, 98 / 1.4826])


def test_cs_rank_norm() -> None:
    df = frame([3, 1, 2, 5, 5, 1], [0] * 6, [0] * 6)
    out = CSRankNorm(fields_group="feature")(df)
    ranks = np.array([3, 1, 2, 2.5, 2.5, 1]) / 3
    np.testing.assert_allclose(out[("feature", "a")].to_numpy(), (ranks - 0.5) * 3.46)


def test_fillna_only_in_its_group() -> None:
    df = frame([1, NAN, 3, NAN, 5, 6], [NAN, 2, 3, 4, 5, 6], [0.1, NAN, 0.3, 0.4, 0.5, NAN])
    out = Fillna(fields_group="feature")(df)
    assert out[("feature", "a")].tolist() == [1, 0, 3, 0, 5, 6]
    assert out[("feature", "b")].tolist()[0] == 0
    assert out[("label", "y")].isna().sum() == 2
    everything = Fillna(fill_value=-1)(df)
    assert not everything.isna().any().any()
    assert everything[("label", "y")].tolist()[1] == -1


def test_dropna_label_and_feature() -> None:
    df = frame([1, NAN, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0.1, 0.2, NAN, 0.4, 0.5, NAN])
    kept = DropnaLabel()(df)
    assert list(kept.index.get_level_values("instrument")) == ["A", "B", "A", "B"]
    assert not DropnaLabel().is_for_infer() and Fillna().is_for_infer()
    assert len(DropnaFeature()(df)) == 5


def test_process_inf_uses_the_date_mean_of_finite_values() -> None:
    df = frame([1, np.inf, 3, -np.inf, 5, 7], [1, 2, 3, 4, 5, 6], [0] * 6)
    out = ProcessInf()(df)
    assert out[("feature", "a")].tolist() == [1, 2, 3, 6, 5, 7]
    clean = frame([1, 2, 3, 4, 5, 6], [1] * 6, [0] * 6)
    assert ProcessInf()(clean) is clean


def test_fitted_norms_learn_on_the_fit_range_only() -> None:
    df = frame([1, 2, 3, 100, 200, 300], [1, 1, 1, 1, 1, 1], [0] * 6)
    norm = ZScoreNorm(fit_start_time="2020-01-02", fit_end_time="2020-01-02",
                      fields_group="feature")
    with pytest.raises(DataError, match="fitted"):
        norm(df)
    norm.fit(df)
    out = norm(df)
    np.testing.assert_allclose(out[("feature", "a")].to_numpy(), [-1, 0, 1, 98, 198, 298])
    assert out[("feature", "b")].tolist() == [0] * 6  # zero spread: scale 1
    robust = RobustZScoreNorm(fit_end_time="2020-01-02", fields_group="feature",
                              clip_outlier=True)
    robust.fit(df)
    clipped = robust(df)[("feature", "a")].to_numpy()
    np.testing.assert_allclose(clipped[:3], np.array([-1, 0, 1]) / 1.4826, rtol=1e-9)
    assert clipped[3:].tolist() == [3, 3, 3]
    with pytest.raises(DataError, match="no rows"):
        ZScoreNorm(fit_start_time="2030-01-01").fit(df)


def test_processors_build_from_qlib_style_cfgs() -> None:
    built = init_instance_by_config({"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}},
                                    default_module="taskroll.data.processors")
    assert isinstance(built, CSZScoreNorm) and built.fields_group == "label"
    assert isinstance(built, Processor)
    assert "fields_group='label'" in repr(built)
    with pytest.raises(DataError, match="2-level"):
        Fillna(fields_group="feature")(pd.DataFrame({"a": [1.0]}))
