"""LGBModel on the synthetic market."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pandas as pd
import pytest

from taskroll.data import DatasetH
from taskroll.errors import TaskConfigError
from taskroll.models import LGBModel, NotFittedError
from taskroll.task.spec import init_instance_by_config

pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def fitted(market_dataset: DatasetH) -> LGBModel:
    model = init_instance_by_config({"class": "LGBModel", "module_path": "taskroll.models.gbdt",
                                     "kwargs": {"loss": "mse"}})
    assert isinstance(model, LGBModel)
    model.fit(market_dataset)
    return model


def test_positive_ic(fitted: LGBModel, market_dataset: DatasetH,
                     information_coefficient: Callable[[pd.Series, DatasetH], float]) -> None:
    scores = fitted.predict(market_dataset)
    assert scores.name == "score" and scores.index.names == ["datetime", "instrument"]
    assert 0.005 < information_coefficient(scores, market_dataset) < 0.2


def test_early_stopping_uses_valid(fitted: LGBModel) -> None:
    assert set(fitted.evals_result) == {"train", "valid"}
    assert fitted.model.best_iteration < fitted.num_boost_round


def test_defaults_are_fast_and_single_threaded() -> None:
    model = LGBModel(num_leaves=15)
    assert model.params["num_threads"] == 1
    assert model.params["num_leaves"] == 15 and model.params["objective"] == "regression"
    with pytest.raises(TaskConfigError):
        LGBModel(loss="poisson-ish")


def test_without_valid_trains_all_rounds(market_dataset: DatasetH) -> None:
    only_train = DatasetH(market_dataset.handler,
                          {"train": market_dataset.segments["train"],
                           "test": market_dataset.segments["test"]})
    model = LGBModel(num_boost_round=12, num_leaves=7)
    model.fit(only_train)
    assert model.model.current_iteration() == 12
    model.finetune(only_train, num_boost_round=3)
    assert model.model.current_iteration() == 15
    importance = model.get_feature_importance()
    assert importance.index[0] in set(market_dataset.handler.get_cols("feature"))


def test_deterministic_and_picklable(fitted: LGBModel, market_dataset: DatasetH) -> None:
    again = LGBModel(loss="mse")
    again.fit(market_dataset)
    pd.testing.assert_series_equal(again.predict(market_dataset), fitted.predict(market_dataset))
    restored = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_series_equal(restored.predict(market_dataset),
                                   fitted.predict(market_dataset))


def test_predict_before_fit() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        LGBModel().predict(None)
    with pytest.raises(NotFittedError):
        LGBModel().get_feature_importance()
