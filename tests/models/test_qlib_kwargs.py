"""The keyword arguments Qlib's LGBModel and LinearModel take: accepted with Qlib's meaning, or
refused with a clear error (never ignored)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import DataHandlerLP, DatasetH, StaticLoader
from taskroll.errors import TaskConfigError
from taskroll.models import LGBModel, LinearModel
from taskroll.task.spec import init_instance_by_config

COEF = np.array([2.0, -3.0, 0.5, 0.0])
INTERCEPT = 0.25
TRAIN = ("2021-01-04", "2021-03-31")
VALID = ("2021-04-01", "2021-04-30")
TEST = ("2021-05-03", "2021-05-31")


def dataset(noise: float = 0.0, seed: int = 0, valid: bool = False, binary: bool = False,
            valid_coef: np.ndarray | None = None) -> DatasetH:
    """``y = X @ COEF + INTERCEPT (+ noise)`` over ~100 days x 20 instruments; ``valid_coef``
    gives the valid segment another relation, ``binary`` labels ``y > 0``."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range(TRAIN[0], TEST[1])
    index = pd.MultiIndex.from_product([days, [f"I{i:02d}" for i in range(20)]],
                                       names=["datetime", "instrument"])
    features = rng.normal(size=(len(index), len(COEF)))
    coef = np.tile(COEF, (len(index), 1))
    if valid_coef is not None:
        in_valid = (index.get_level_values(0) >= VALID[0]) & (index.get_level_values(0) <= VALID[1])
        coef[in_valid] = valid_coef
    label = (features * coef).sum(axis=1) + INTERCEPT + noise * rng.normal(size=len(index))
    if binary:
        label = (label > 0).astype(float)
    columns = pd.MultiIndex.from_tuples([*(("feature", f"f{i}") for i in range(len(COEF))),
                                         ("label", "LABEL0")])
    frame = pd.DataFrame(np.column_stack([features, label]), index=index, columns=columns)
    segments = {"train": TRAIN, **({"valid": VALID} if valid else {}), "test": TEST}
    return DatasetH(DataHandlerLP(data_loader=StaticLoader(frame)), segments)


def linear(**kwargs: Any) -> LinearModel:
    model = init_instance_by_config({"class": "LinearModel", "module_path": "taskroll.models.linear",
                                     "kwargs": kwargs})
    assert isinstance(model, LinearModel)
    return model


def lgb(**kwargs: Any) -> LGBModel:
    pytest.importorskip("lightgbm")
    model = init_instance_by_config({"class": "LGBModel", "module_path": "taskroll.models.gbdt",
                                     "kwargs": kwargs})
    assert isinstance(model, LGBModel)
    return model


# LinearModel: Qlib's estimators and flags


@pytest.mark.parametrize("estimator", ["ols", "nnls", "ridge", "lasso"])
def test_fit_intercept_false_gives_zero_intercept(estimator: str) -> None:
    if estimator == "nnls":
        pytest.importorskip("scipy")
    penalty = {"alpha": 0.01} if estimator in ("ridge", "lasso") else {}
    model = linear(estimator=estimator, fit_intercept=False, **penalty)
    model.fit(dataset(noise=0.1))
    assert model.intercept_ == 0.0
    with_intercept = linear(estimator=estimator, fit_intercept=True, **penalty)
    with_intercept.fit(dataset(noise=0.1))
    assert with_intercept.intercept_ == pytest.approx(INTERCEPT, abs=0.05)


def test_ols_recovers_the_coefficients_and_ridge_shrinks_them() -> None:
    ols = linear(estimator="ols", fit_intercept=True)
    ols.fit(dataset())
    assert ols.coef_ is not None
    np.testing.assert_allclose(ols.coef_, COEF, atol=1e-9)
    norms = []
    for alpha in (1.0, 1e3, 1e5):
        ridge = linear(estimator="ridge", alpha=alpha)
        ridge.fit(dataset())
        assert ridge.coef_ is not None
        norms.append(float(np.abs(ridge.coef_).sum()))
    assert norms[0] > norms[1] > norms[2] > 0


def test_nnls_keeps_coefficients_non_negative_as_scipy() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    model = linear(estimator="nnls", fit_intercept=True)
    data = dataset(noise=0.1)
    model.fit(data)
    assert model.coef_ is not None
    frame = data.prepare("train", col_set=["feature", "label"], data_key="learn")
    design = np.column_stack([frame["feature"].to_numpy(), np.ones(len(frame))])
    expected = optimize.nnls(design, frame["label"].to_numpy().ravel())[0]
    np.testing.assert_allclose(model.coef_, expected[:-1], atol=1e-9)
    assert model.intercept_ == pytest.approx(expected[-1], abs=1e-9)
    assert model.coef_[1] == 0.0 and model.coef_[0] > 1.5  # the negative one is clipped


def test_lasso_single_feature_is_the_soft_threshold() -> None:
    data = dataset(noise=0.5)
    frame = data.prepare("train", col_set=["feature", "label"], data_key="learn")
    x = frame["feature"]["f0"].to_numpy()
    y = frame["label"].to_numpy().ravel()
    x_centred, y_centred = x - x.mean(), y - y.mean()
    gram, correlation = x_centred @ x_centred / len(x), x_centred @ y_centred / len(x)
    alpha = 0.3
    expected = np.sign(correlation) * max(abs(correlation) - alpha, 0) / gram
    handler = DataHandlerLP(data_loader=StaticLoader(frame.loc[:, [("feature", "f0"),
                                                                 ("label", "LABEL0")]]))
    model = linear(estimator="lasso", alpha=alpha)
    model.fit(DatasetH(handler, {"train": TRAIN}))
    assert model.coef_ is not None
    assert model.coef_[0] == pytest.approx(expected, rel=1e-9)
    assert model.intercept_ == pytest.approx(y.mean() - expected * x.mean(), rel=1e-9)


def test_lasso_zeroes_coefficients_at_its_optimum() -> None:
    data = dataset(noise=0.5)
    alpha = 0.6
    model = linear(estimator="lasso", alpha=alpha)
    model.fit(data)
    coef = model.coef_
    assert coef is not None
    # 0.5 and 0 are below the penalty: zeroed; 2 and -3 are kept, shrunk by about alpha
    assert coef[2] == 0.0 and coef[3] == 0.0
    assert coef[0] == pytest.approx(2.0 - alpha, abs=0.1)
    assert coef[1] == pytest.approx(-3.0 + alpha, abs=0.1)
    # optimality (KKT) of (1/2n)|y - b - Xw|^2 + alpha |w|_1
    frame = data.prepare("train", col_set=["feature", "label"], data_key="learn")
    x = frame["feature"].to_numpy()
    y = frame["label"].to_numpy().ravel()
    x_centred, y_centred = x - x.mean(axis=0), y - y.mean()
    gradient = x_centred.T @ (y_centred - x_centred @ coef) / len(y)
    nonzero = coef != 0
    np.testing.assert_allclose(gradient[nonzero], alpha * np.sign(coef[nonzero]), atol=1e-8)
    assert np.all(np.abs(gradient[~nonzero]) <= alpha + 1e-8)
    huge = linear(estimator="lasso", alpha=100.0)
    huge.fit(data)
    assert huge.coef_ is not None and not huge.coef_.any()


def test_include_valid_trains_on_the_valid_segment_too() -> None:
    data = dataset(valid=True, valid_coef=np.array([-2.0, 3.0, 0.5, 1.0]))
    alone = linear(estimator="ols")
    alone.fit(data)
    both = linear(estimator="ols", include_valid=True)
    both.fit(data)
    assert alone.coef_ is not None and both.coef_ is not None
    np.testing.assert_allclose(alone.coef_, COEF, atol=1e-9)
    assert not np.allclose(both.coef_, COEF, atol=0.1)


# LGBModel: Qlib's arguments and LightGBM's parameters

def test_qlib_defaults_for_rounds_and_early_stopping() -> None:
    model = LGBModel()
    assert (model.num_boost_round, model.early_stopping_rounds, model.loss) == (1000, 50, "mse")


def test_num_boost_round_gives_that_many_trees() -> None:
    model = lgb(num_boost_round=5, min_data_in_leaf=5)
    model.fit(dataset(noise=0.1))  # no valid segment: nothing stops it early
    assert model.model.num_trees() == 5


def test_early_stopping_stops_on_the_valid_segment() -> None:
    model = lgb(num_boost_round=500, early_stopping_rounds=3, learning_rate=0.5,
                min_data_in_leaf=5)
    model.fit(dataset(noise=2.0, valid=True))
    assert set(model.evals_result) == {"train", "valid"}
    # LightGBM evaluated 3 rounds past the best one, then kept the trees up to the best
    rounds = len(model.evals_result["valid"]["l2"])
    assert rounds == model.model.best_iteration + 3 < 500
    assert model.model.current_iteration() == model.model.best_iteration
    never = lgb(num_boost_round=40, early_stopping_rounds=0, learning_rate=0.5,
                min_data_in_leaf=5)
    never.fit(dataset(noise=2.0, valid=True))
    assert never.model.current_iteration() == 40


def test_binary_loss_gives_probabilities() -> None:
    model = lgb(loss="binary", num_boost_round=20, min_data_in_leaf=5)
    data = dataset(noise=0.1, binary=True)
    model.fit(data)
    scores = model.predict(data)
    assert model.params["objective"] == "binary"
    assert scores.between(0, 1).all() and scores.min() < 0.2 and scores.max() > 0.8


@pytest.mark.parametrize(("name", "value", "canonical"), [
    ("colsample_bytree", 0.5, "feature_fraction"),
    ("subsample", 0.7, "bagging_fraction"),
    ("learning_rate", 0.3, "learning_rate"),
    ("lambda_l1", 2.5, "lambda_l1"),
    ("lambda_l2", 7.5, "lambda_l2"),
    ("max_depth", 2, "max_depth"),
    ("num_leaves", 3, "num_leaves"),
    ("num_threads", 2, "num_threads"),
    ("nthread", 2, "num_threads"),
])
def test_lightgbm_parameters_reach_lightgbm(name: str, value: Any, canonical: str) -> None:
    model = lgb(num_boost_round=3, min_data_in_leaf=5, **{name: value})
    # a taskroll default set under another alias of the same parameter is dropped
    assert canonical == name or canonical not in model.params
    model.fit(dataset(noise=0.1))
    assert f"[{canonical}: {value}]" in model.model.model_to_string()


@pytest.mark.parametrize(("name", "value", "most_leaves"), [
    ("num_leaves", 3, 3), ("max_depth", 1, 2), ("max_depth", 2, 4)])
def test_tree_size_parameters_bound_the_trees(name: str, value: int, most_leaves: int) -> None:
    model = lgb(**{"num_boost_round": 5, "min_data_in_leaf": 5, "num_leaves": 31, name: value})
    model.fit(dataset(noise=0.1))
    leaves = [tree["num_leaves"] for tree in model.model.dump_model()["tree_info"]]
    assert max(leaves) == most_leaves


def test_base_params_replace_taskroll_defaults() -> None:
    assert lgb().params["num_threads"] == 1  # taskroll's fast default
    plain = lgb(base_params={"verbosity": -1})
    assert plain.params == {"verbosity": -1, "objective": "regression"}


# Refused, with a clear error


@pytest.mark.parametrize(("model", "kwargs", "message"), [
    ("LinearModel", {"estimator": "sgd"}, "estimator must be one of"),
    ("LinearModel", {"alpha": -1}, "alpha must be a number >= 0"),
    ("LinearModel", {"alpha": "big"}, "alpha must be a number >= 0"),
    ("LinearModel", {"alpha": float("nan")}, "alpha must be a number >= 0"),
    ("LinearModel", {"estimator": "ols", "alpha": 0.5}, "no meaning for estimator 'ols'"),
    ("LinearModel", {"estimator": "nnls", "alpha": 0.5}, "no meaning for estimator 'nnls'"),
    ("LinearModel", {"fit_intercept": "yes"}, "fit_intercept must be true or false"),
    ("LinearModel", {"include_valid": 1}, "include_valid must be true or false"),
    ("LinearModel", {"alpah": 1.0}, r"'alpah' \(did you mean 'alpha'\?\)"),
    ("LinearModel", {"normalize": True}, "unknown keyword argument 'normalize'"),
    ("LGBModel", {"loss": "huberish"}, "loss must be one of"),
    ("LGBModel", {"num_boost_round": -1}, "num_boost_round must be an integer >= 0"),
    ("LGBModel", {"num_boost_round": 2.5}, "num_boost_round must be an integer >= 0"),
    ("LGBModel", {"num_boost_round": True}, "num_boost_round must be an integer >= 0"),
    ("LGBModel", {"early_stopping_rounds": "10"}, "early_stopping_rounds must be an integer"),
    ("LGBModel", {"colsample_bytre": 0.5}, "'colsample_bytre'.*did you mean 'colsample_bytree'"),
    ("LGBModel", {"early_stoping_rounds": 5}, "did you mean 'early_stopping_rounds'"),
    ("LGBModel", {"estimator": "gbdt"}, "unknown keyword argument 'estimator'"),
    ("LGBModel", {"base_params": {"leaves": 4}}, "base_params: unknown keyword argument"),
])
def test_bad_kwargs_are_refused(model: str, kwargs: dict[str, Any], message: str) -> None:
    module = "taskroll.models.linear" if model == "LinearModel" else "taskroll.models.gbdt"
    if model == "LGBModel":
        pytest.importorskip("lightgbm")  # LightGBM's own table of parameter names
    with pytest.raises(TaskConfigError, match=message):
        init_instance_by_config({"class": model, "module_path": module, "kwargs": kwargs},
                                where="task.model")


def test_values_lightgbm_refuses_are_a_config_error() -> None:
    model = lgb(num_leaves=-3, num_boost_round=2)
    with pytest.raises(TaskConfigError, match="LightGBM refused"):
        model.fit(dataset())


def test_numpy_integers_are_integers() -> None:
    model = lgb(num_boost_round=np.int64(7), early_stopping_rounds=np.int32(3))
    assert (model.num_boost_round, model.early_stopping_rounds) == (7, 3)
    assert type(model.num_boost_round) is int
    assert linear(alpha=np.int64(2)).alpha == 2.0
