"""A linear model in numpy: ordinary, non-negative (scipy), ridge or lasso least squares."""

from __future__ import annotations

import importlib.util
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
    """Linear regression of the label on the features (Qlib's ``LinearModel``, same arguments).

    The estimators mean what they mean in Qlib (which uses scikit-learn; this is numpy,
    and scipy for ``nnls``), with ``s_i`` the reweighter's weights (1 by default):

    * ``"ols"``: ``min_w sum_i s_i (y_i - b - x_i w)^2`` (least squares via
      ``numpy.linalg.lstsq``, so collinear features are fine);
    * ``"nnls"``: the same with every ``w >= 0``; as Qlib, the intercept is one more
      non-negative coefficient on a column of ones (weights are supported, Qlib
      refuses them);
    * ``"ridge"``: ``min_w sum_i s_i (y_i - b - x_i w)^2 + alpha |w|_2^2`` (closed form);
    * ``"lasso"``: ``min_w sum_i s_i (y_i - b - x_i w)^2 / (2 sum_i s_i) + alpha |w|_1``
      (scikit-learn's scaling; coordinate descent to convergence).

    The intercept ``b`` is never penalised. A missing or infinite feature counts as 0 in
    training and prediction (the cross-sectional mean after per-day z-scoring); rows are
    dropped only for a missing label, as Qlib's default processors do (Qlib's model
    itself drops rows with any missing value).

    Defaults differ from Qlib's (ordinary least squares, ``alpha=0``, no intercept): a
    task naming ``qlib.contrib.model.linear`` gets Qlib's defaults when Qlib is not
    installed (see :mod:`taskroll.task.qlib_names`).

    Args:
        estimator: ``"ridge"``, ``"ols"``, ``"nnls"`` or ``"lasso"``.
        alpha: The ridge or lasso penalty; ``None`` gives 1.0 for those and 0 for the
            others. As Qlib, a non-zero ``alpha`` with ``"ols"`` or ``"nnls"`` is refused.
        fit_intercept: Fit an intercept.
        include_valid: Also train on the ``valid`` segment when present.

    Raises:
        TaskConfigError: For an unknown estimator, a negative ``alpha`` or one the
            estimator has no use for, non-boolean flags, or ``"nnls"`` without scipy.
    """

    OLS = "ols"
    NNLS = "nnls"
    RIDGE = "ridge"
    LASSO = "lasso"
    ESTIMATORS = (RIDGE, OLS, NNLS, LASSO)
    #: Coordinate descent stops when no coefficient moves by more than this (relative).
    LASSO_TOLERANCE = 1e-10
    LASSO_MAX_SWEEPS = 10_000

    def __init__(self, estimator: str = "ridge", alpha: float | None = None,
                 fit_intercept: bool = True, include_valid: bool = False) -> None:
        if estimator not in self.ESTIMATORS:
            raise TaskConfigError(f"LinearModel estimator must be one of {self.ESTIMATORS}, "
                                  f"got {estimator!r}")
        penalised = estimator in (self.RIDGE, self.LASSO)
        if alpha is None:
            alpha = 1.0 if penalised else 0.0
        if (isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating))
                or not alpha >= 0):
            raise TaskConfigError(f"LinearModel alpha must be a number >= 0, got {alpha!r}")
        if alpha != 0 and not penalised:
            raise TaskConfigError(f"LinearModel alpha={alpha} has no meaning for estimator "
                                  f"{estimator!r} (as Qlib: only 'ridge' and 'lasso' take one)")
        for name, flag in (("fit_intercept", fit_intercept), ("include_valid", include_valid)):
            if not isinstance(flag, bool):
                raise TaskConfigError(f"LinearModel {name} must be true or false, got {flag!r}")
        if estimator == self.NNLS and importlib.util.find_spec("scipy") is None:
            raise TaskConfigError("LinearModel estimator 'nnls' needs scipy: pip install scipy")
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
        if self.estimator == self.NNLS:
            return _nnls(features, label, weights, self.fit_intercept)
        total = weights.sum()
        if self.fit_intercept:
            x_mean = weights @ features / total
            y_mean = float(weights @ label / total)
        else:
            x_mean, y_mean = np.zeros(features.shape[1]), 0.0
        root = np.sqrt(weights)[:, None]
        x_centred = (features - x_mean) * root
        y_centred = (label - y_mean) * root[:, 0]
        if self.estimator == self.LASSO and self.alpha > 0:
            coef = _lasso(x_centred.T @ x_centred / total, x_centred.T @ y_centred / total,
                          self.alpha, self.LASSO_TOLERANCE, self.LASSO_MAX_SWEEPS)
        elif self.alpha == 0:
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


def _nnls(features: np.ndarray, label: np.ndarray, weights: np.ndarray,
          fit_intercept: bool) -> tuple[np.ndarray, float]:
    """Non-negative least squares; the intercept, as in Qlib, is a non-negative coefficient."""
    from scipy.optimize import nnls

    if fit_intercept:
        features = np.column_stack([features, np.ones(len(features))])
    root = np.sqrt(weights)
    coef = np.asarray(nnls(features * root[:, None], label * root)[0], dtype=np.float64)
    if fit_intercept:
        return coef[:-1], float(coef[-1])
    return coef, 0.0


def _lasso(gram: np.ndarray, correlation: np.ndarray, alpha: float, tolerance: float,
           max_sweeps: int) -> np.ndarray:
    """Minimise ``w'Gw/2 - c'w + alpha |w|_1`` by cyclic coordinate descent.

    With ``G = X'SX / sum(s)`` and ``c = X'Sy / sum(s)`` (centred data) this is
    scikit-learn's lasso objective up to a constant. A column without variance keeps a
    zero coefficient.
    """
    coef = np.zeros(len(correlation))
    diagonal = np.diag(gram)
    for _ in range(max_sweeps):
        largest_step = 0.0
        for column in range(len(coef)):
            if diagonal[column] <= 0:
                continue
            partial = correlation[column] - gram[column] @ coef + diagonal[column] * coef[column]
            new = np.sign(partial) * max(abs(partial) - alpha, 0.0) / diagonal[column]
            largest_step = max(largest_step, abs(new - coef[column]))
            coef[column] = new
        if largest_step <= tolerance * max(1.0, float(np.abs(coef).max())):
            break
    return coef
