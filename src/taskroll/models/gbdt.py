"""A LightGBM model (``pip install "taskroll[lgb]"``), imported lazily."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError, TaskConfigError, require
from taskroll.models.base import (
    Model,
    NotFittedError,
    Reweighter,
    as_scores,
    infer_features,
    learn_data,
)

_LOSSES = {"mse": "regression", "mae": "regression_l1", "huber": "huber",
           "binary": "binary"}


class LGBModel(Model):
    """Gradient-boosted trees with LightGBM (Qlib's ``LGBModel``).

    Trains on the ``train`` segment and, when the dataset has a ``valid`` segment,
    stops early on it. Defaults are set for speed: 31 leaves, learning rate 0.05,
    200 rounds, early stopping after 20, one thread (so that parallel workers do not
    oversubscribe the cores), a fixed seed.

    Args:
        loss: ``"mse"``, ``"mae"``, ``"huber"`` or ``"binary"``.
        num_boost_round: Maximum number of boosting rounds.
        early_stopping_rounds: Rounds without improvement on ``valid`` before stopping.
        **params: Further LightGBM parameters (e.g. ``num_leaves``, ``learning_rate``,
            ``num_threads``, ``colsample_bytree``), overriding the defaults.

    Raises:
        TaskConfigError: For an unknown loss.
    """

    DEFAULT_PARAMS: dict[str, Any] = {
        "num_leaves": 31, "learning_rate": 0.05, "num_threads": 1, "min_data_in_leaf": 100,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "max_bin": 63,
        "seed": 0, "deterministic": True, "verbosity": -1,
    }

    def __init__(self, loss: str = "mse", num_boost_round: int = 200,
                 early_stopping_rounds: int = 20, **params: Any) -> None:
        if loss not in _LOSSES:
            raise TaskConfigError(f"LGBModel loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.num_boost_round = int(num_boost_round)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.params: dict[str, Any] = {**self.DEFAULT_PARAMS, "objective": _LOSSES[loss],
                                       **params}
        self.model: Any = None
        self.evals_result: dict[str, Any] = {}
        self.feature_names_: list[str] = []

    def _datasets(self, lgb: Any, dataset: Any, reweighter: Reweighter | None
                  ) -> list[tuple[Any, str]]:
        names = ["train", *(["valid"] if "valid" in getattr(dataset, "segments", {}) else [])]
        built: list[tuple[Any, str]] = []
        for name in names:
            features, label, weights, columns = learn_data(dataset, name, reweighter)
            self.feature_names_ = columns
            reference = built[0][0] if built else None
            built.append((lgb.Dataset(features, label=label, weight=weights,
                                      reference=reference, free_raw_data=True), name))
        return built

    def fit(self, dataset: Any, reweighter: Reweighter | None = None,
            num_boost_round: int | None = None, early_stopping_rounds: int | None = None,
            verbose_eval: int = 0) -> None:
        """Train on ``train``, early-stopping on ``valid`` when the dataset has one.

        Args:
            dataset: The dataset.
            reweighter: Optional per-row training weights.
            num_boost_round: Overrides the constructor's value.
            early_stopping_rounds: Overrides the constructor's value.
            verbose_eval: Log the evaluation every this many rounds (0: silent).

        Raises:
            MissingDependencyError: When lightgbm is not installed.
            DataError: When a segment has no complete rows.
        """
        lgb: Any = require("lightgbm", "lgb")
        sets = self._datasets(lgb, dataset, reweighter)
        self.evals_result = {}
        callbacks = [lgb.record_evaluation(self.evals_result)]
        if verbose_eval:
            callbacks.append(lgb.log_evaluation(period=verbose_eval))
        rounds = self.num_boost_round if num_boost_round is None else num_boost_round
        patience = (self.early_stopping_rounds if early_stopping_rounds is None
                    else early_stopping_rounds)
        if len(sets) > 1 and patience > 0:
            callbacks.append(lgb.early_stopping(patience, verbose=False))
        self.model = lgb.train(self.params, sets[0][0], num_boost_round=rounds,
                               valid_sets=[data for data, _ in sets],
                               valid_names=[name for _, name in sets], callbacks=callbacks)

    def finetune(self, dataset: Any, num_boost_round: int = 10,
                 reweighter: Reweighter | None = None) -> None:
        """Continue boosting the fitted model on ``train`` for ``num_boost_round`` rounds.

        Raises:
            NotFittedError: When the model is not fitted.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        lgb: Any = require("lightgbm", "lgb")
        train, _ = self._datasets(lgb, dataset, reweighter)[0]
        self.model = lgb.train(self.params, train, num_boost_round=num_boost_round,
                               init_model=self.model, keep_training_booster=True)

    def predict(self, dataset: Any, segment: str | slice = "test") -> pd.Series:
        """Return the boosted trees' predictions for the rows of ``segment``.

        Raises:
            NotFittedError: When called before :meth:`fit`.
            DataError: When the features differ in number from those fitted on.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        features = infer_features(dataset, segment)
        expected = self.model.num_feature()
        if features.shape[1] != expected:
            raise DataError(f"LGBModel was fitted on {expected} features but segment "
                            f"{segment!r} has {features.shape[1]}")
        values = self.model.predict(features.to_numpy(dtype=np.float64))
        return as_scores(values, features.index)

    def get_feature_importance(self, importance_type: str = "split") -> pd.Series:
        """Return feature importances, largest first.

        Raises:
            NotFittedError: When the model is not fitted.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        values = self.model.feature_importance(importance_type=importance_type)
        names = self.feature_names_ or [f"f{index}" for index in range(len(values))]
        return pd.Series(values, index=names).sort_values(ascending=False)
