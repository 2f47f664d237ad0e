"""The model contract: ``fit(dataset)`` then ``predict(dataset, segment)`` (Qlib's ``Model``).

A model trains on the ``train`` segment of a :class:`~taskroll.data.dataset.DatasetH`
(learn data: ``col_set=["feature", "label"]``, ``data_key="learn"``) and predicts on
inference data (``col_set="feature"``, ``data_key="infer"``), returning a Series named
``score`` indexed by ``(datetime, instrument)``. Models are picklable once fitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from taskroll.errors import DataError, TaskrollError

SCORE_NAME = "score"


class NotFittedError(TaskrollError, ValueError):
    """A model was asked to predict before it was fitted."""


@runtime_checkable
class Reweighter(Protocol):
    """Gives a weight to each training row (Qlib's ``Reweighter``)."""

    def reweight(self, data: pd.DataFrame) -> Any:
        """Return one non-negative weight per row of ``data`` (array-like or Series)."""


class Model(ABC):
    """Base of taskroll models.

    Subclasses implement :meth:`fit` and :meth:`predict`; calling a model predicts.
    """

    @abstractmethod
    def fit(self, dataset: Any, reweighter: Reweighter | None = None) -> None:
        """Train on ``dataset`` (its ``train`` segment, and ``valid`` where used).

        Args:
            dataset: A :class:`~taskroll.data.dataset.DatasetH` (or anything with ``prepare``
                and ``segments``).
            reweighter: Optional per-row training weights.

        Raises:
            DataError: When the training data is empty or malformed.
        """

    @abstractmethod
    def predict(self, dataset: Any, segment: str | slice = "test") -> pd.Series:
        """Score the rows of ``segment``.

        Args:
            dataset: The dataset to read features from.
            segment: A segment name or a date slice.

        Returns:
            Scores named ``"score"`` indexed by ``(datetime, instrument)``.

        Raises:
            NotFittedError: When the model is not fitted.
        """

    def __call__(self, dataset: Any, segment: str | slice = "test") -> pd.Series:
        """Alias of :meth:`predict`."""
        return self.predict(dataset, segment)


def learn_data(dataset: Any, segment: str, reweighter: Reweighter | None = None,
               fill_features: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Return ``(features, label, weights, feature_names)`` of a segment's learn data.

    As Qlib, only rows whose label is missing are dropped; a missing feature stays NaN
    (LightGBM handles it) unless ``fill_features`` gives a value for it.

    Args:
        dataset: The dataset.
        segment: The segment name, e.g. ``"train"``.
        reweighter: Optional sample weights.
        fill_features: Replacement of missing features, or ``None`` to keep them NaN.

    Raises:
        DataError: When the segment has no labelled row or more than one label column.
    """
    frame = dataset.prepare(segment, col_set=["feature", "label"], data_key="learn")
    frame = frame[frame["label"].notna().all(axis=1).to_numpy()]
    if frame.empty:
        raise DataError(f"the {segment!r} segment has no labelled rows; check the dataset's "
                        "segments and handler dates")
    features, label = frame["feature"], frame["label"]
    if label.shape[1] != 1:
        raise DataError(f"expected one label column, got {list(label.columns)}")
    weights = None
    if reweighter is not None:
        weights = np.asarray(reweighter.reweight(frame), dtype=np.float64).reshape(-1)
        if weights.shape[0] != len(frame):
            raise DataError(f"reweighter gave {weights.shape[0]} weights for {len(frame)} rows")
    names = [str(name) for name in features.columns]
    values = features.to_numpy(dtype=np.float64)
    if fill_features is not None:
        values = np.where(np.isfinite(values), values, fill_features)
    return values, label.to_numpy(dtype=np.float64).ravel(), weights, names


def infer_features(dataset: Any, segment: str | slice) -> pd.DataFrame:
    """Return the inference features of ``segment`` (``"feature"`` columns, ``"infer"`` data)."""
    frame: pd.DataFrame = dataset.prepare(segment, col_set="feature", data_key="infer")
    return frame


def as_scores(values: np.ndarray, index: pd.Index) -> pd.Series:
    """Wrap predictions as the ``score`` Series."""
    return pd.Series(np.asarray(values, dtype=np.float64), index=index, name=SCORE_NAME)
