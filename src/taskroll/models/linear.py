"""A linear model in pure numpy: closed-form ridge or ordinary least squares."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError, TaskConfigError
from taskroll.models.base import (
    Model,
    NotFittedError,
    Reweighter,
    as_scores,
    infer_features,
    learn_data,
)


class LinearModel(Model):
    """Linear regression of the label on the features (Qlib's ``LinearModel``).

    Solves ``min_w sum_i s_i (y_i - b - x_i w)^2 + alpha |w|^2`` in closed form
    (``s_i`` the reweighter's weights, 1 by default; the intercept ``b`` is not
    penalised). A missing or infinite feature counts as 0 in training and prediction
    (the cross-sectional mean after per-day z-scoring); rows are dropped only for a
    missing label, as Qlib's default processors do. ``"ols"`` is the same with
    ``alpha = 0`` (least squares via ``numpy.linalg.lstsq``, so collinear features are
    fine).

    Args:
        estimator: ``"ridge"`` or ``"ols"``.
        alpha: Ridge penalty (ignored by ``"ols"``).
        fit_intercept: Fit an intercept.
        include_valid: Also train on the ``valid`` segment when present.

    Raises:
        TaskConfigError: For an unknown estimator or a negative ``alpha``.
    """

    ESTIMATORS = ("ridge", "ols")

    def __init__(self, estimator: str = "ridge", alpha: float = 1.0, fit_intercept: bool = True,
                 include_valid: bool = False) -> None:
        if estimator not in self.ESTIMATORS:
            raise TaskConfigError(f"LinearModel estimator must be one of {self.ESTIMATORS}, "
                                  f"got {estimator!r}")
        if alpha < 0:
            raise TaskConfigError(f"LinearModel alpha must be >= 0, got {alpha}")
        self.estimator = estimator
        self.alpha = float(alpha)
        self.fit_intercept = fit_intercept
        self.include_valid = include_valid
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0
        self.feature_names_: list[str] = []

    def fit(self, dataset: Any, reweighter: Reweighter | None = None) -> None:
        """Fit on the ``train`` segment (plus ``valid`` with ``include_valid``).

        Raises:
            DataError: When the training data is empty.
        """
        features, label, weights, names = learn_data(dataset, "train", reweighter, 0.0)
        if self.include_valid and "valid" in getattr(dataset, "segments", {}):
            more = learn_data(dataset, "valid", reweighter, 0.0)
            features = np.vstack([features, more[0]])
            label = np.concatenate([label, more[1]])
            weights = None if weights is None or more[2] is None else np.concatenate(
                [weights, more[2]])
        self.coef_, self.intercept_ = self._solve(features, label, weights)
        self.feature_names_ = names

    def _solve(self, features: np.ndarray, label: np.ndarray,
               weights: np.ndarray | None) -> tuple[np.ndarray, float]:
        if weights is None:
            weights = np.ones(len(label))
        total = weights.sum()
        if self.fit_intercept:
            x_mean = weights @ features / total
            y_mean = float(weights @ label / total)
        else:
            x_mean, y_mean = np.zeros(features.shape[1]), 0.0
        root = np.sqrt(weights)[:, None]
        x_centred = (features - x_mean) * root
        y_centred = (label - y_mean) * root[:, 0]
        if self.estimator == "ols" or self.alpha == 0:
            coef = np.linalg.lstsq(x_centred, y_centred, rcond=None)[0]
        else:
            gram = x_centred.T @ x_centred + self.alpha * np.eye(features.shape[1])
            coef = np.linalg.solve(gram, x_centred.T @ y_centred)
        return coef, y_mean - float(x_mean @ coef)

    def predict(self, dataset: Any, segment: str | slice = "test") -> pd.Series:
        """Return ``features @ coef_ + intercept_`` for the rows of ``segment``.

        Raises:
            NotFittedError: When called before :meth:`fit`.
            DataError: When the features differ in number from those fitted on.
        """
        if self.coef_ is None:
            raise NotFittedError("LinearModel is not fitted yet; call fit(dataset) first")
        features = infer_features(dataset, segment)
        if features.shape[1] != self.coef_.shape[0]:
            raise DataError(f"LinearModel was fitted on {self.coef_.shape[0]} features but "
                            f"segment {segment!r} has {features.shape[1]}")
        values = features.to_numpy(dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0.0)
        return as_scores(_row_products(values, self.coef_, self.intercept_), features.index)


def _row_products(values: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """``values @ coef + intercept``, each row's result independent of the other rows.

    A BLAS matrix-vector product may round a row differently depending on how many rows
    the matrix has and where they sit in memory; column-by-column accumulation performs
    the same operations, in the same order, on every row, so a prediction for a day is
    bit-identical whatever other days are predicted with it (see ``tests/lookahead``).
    """
    total = np.full(values.shape[0], intercept, dtype=np.float64)
    for column, weight in enumerate(coef):
        total += values[:, column] * weight
    return total
