"""LinearModel: exact recovery on hand-made data, and a positive IC on the synthetic market."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from taskroll.data import DataHandlerLP, DatasetH, StaticLoader
from taskroll.errors import DataError, TaskConfigError, TaskrollError
from taskroll.models import LinearModel, NotFittedError
from taskroll.task.spec import init_instance_by_config

COEF = np.array([2.0, -3.0, 0.5])
INTERCEPT = 0.25


def handmade_dataset(noise: float = 0.0, seed: int = 0) -> DatasetH:
    """y = X @ COEF + INTERCEPT (+ noise) over 60 days x 20 instruments."""
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product(
        [pd.bdate_range("2021-01-04", periods=60), [f"I{i:02d}" for i in range(20)]],
        names=["datetime", "instrument"])
    features = rng.normal(size=(len(index), 3))
    label = features @ COEF + INTERCEPT + noise * rng.normal(size=len(index))
    columns = pd.MultiIndex.from_tuples([("feature", "f0"), ("feature", "f1"), ("feature", "f2"),
                                         ("label", "LABEL0")])
    frame = pd.DataFrame(np.column_stack([features, label]), index=index, columns=columns)
    handler = DataHandlerLP(data_loader=StaticLoader(frame))
    return DatasetH(handler, {"train": ("2021-01-04", "2021-02-26"),
                              "test": ("2021-03-01", "2021-03-31")})


def test_ols_recovers_known_coefficients() -> None:
    dataset = handmade_dataset()
    model = LinearModel(estimator="ols")
    model.fit(dataset)
    assert model.coef_ is not None
    np.testing.assert_allclose(model.coef_, COEF, atol=1e-10)
    assert model.intercept_ == pytest.approx(INTERCEPT, abs=1e-10)
    assert model.feature_names_ == ["f0", "f1", "f2"]
    scores = model.predict(dataset)
    features = dataset.prepare("test", col_set="feature")
    label = dataset.prepare("test", col_set="label")["LABEL0"]
    assert scores.name == "score"
    assert scores.index.equals(features.index)
    np.testing.assert_allclose(scores.to_numpy(), label.to_numpy(), atol=1e-9)


def test_ridge_is_close_with_a_small_penalty_and_shrinks_with_a_large_one() -> None:
    dataset = handmade_dataset(noise=0.1)
    small = LinearModel(alpha=1.0)
    small.fit(dataset)
    assert small.coef_ is not None
    np.testing.assert_allclose(small.coef_, COEF, atol=0.02)
    large = LinearModel(alpha=1e5)
    large.fit(dataset)
    assert large.coef_ is not None
    assert np.abs(large.coef_).sum() < 0.2 * np.abs(COEF).sum()
    no_intercept = LinearModel(estimator="ols", fit_intercept=False)
    no_intercept.fit(dataset)
    assert no_intercept.intercept_ == 0.0


class HalfWeights:
    """Weight 1 on the first 30 days, 0 after."""

    def reweight(self, data: pd.DataFrame) -> np.ndarray:
        dates = data.index.get_level_values("datetime")
        return (dates < pd.Timestamp("2021-02-15")).astype(float)


def test_reweighter_weights_rows() -> None:
    dataset = handmade_dataset()
    # corrupt the label after mid-February: only zero-weighted rows are wrong
    frame = dataset.handler.fetch(col_set="__raw", data_key="raw").copy()
    late = frame.index.get_level_values("datetime") >= pd.Timestamp("2021-02-15")
    frame.loc[late, ("label", "LABEL0")] = 100.0
    corrupted = DatasetH(DataHandlerLP(data_loader=StaticLoader(frame)), dataset.segments)
    model = LinearModel(estimator="ols")
    model.fit(corrupted, reweighter=HalfWeights())
    assert model.coef_ is not None
    np.testing.assert_allclose(model.coef_, COEF, atol=1e-9)


def test_predict_before_fit_and_bad_arguments() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        LinearModel().predict(handmade_dataset())
    assert issubclass(NotFittedError, TaskrollError)
    with pytest.raises(TaskConfigError):
        LinearModel(estimator="sgd")
    with pytest.raises(TaskConfigError):
        LinearModel(alpha=-1)


def test_empty_training_segment_raises() -> None:
    dataset = handmade_dataset()
    empty = DatasetH(dataset.handler, {"train": ("2030-01-01", "2030-12-31")})
    with pytest.raises(DataError, match="train"):
        LinearModel().fit(empty)


def test_positive_ic_on_the_synthetic_market(
        market_dataset: DatasetH,
        information_coefficient: Callable[[pd.Series, DatasetH], float]) -> None:
    model = init_instance_by_config({"class": "LinearModel",
                                     "module_path": "taskroll.models.linear",
                                     "kwargs": {"alpha": 1.0}})
    model.fit(market_dataset)
    scores = model.predict(market_dataset)
    assert scores.index.names == ["datetime", "instrument"]
    assert scores.notna().all()
    assert 0.005 < information_coefficient(scores, market_dataset) < 0.15
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_series_equal(restored.predict(market_dataset), scores)
    pd.testing.assert_series_equal(model(market_dataset, "test"), scores)
