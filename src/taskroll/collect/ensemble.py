"""Ensembles: merge the artifacts of several models into one (Qlib's ``qlib.model.ens.ensemble``).

An ensemble is a callable taking ``{key: artifact}`` and returning one artifact:

* :class:`SingleKeyEnsemble` unwraps dicts holding a single value;
* :class:`RollingEnsemble` stitches the predictions of consecutive rolling models
  along time, the newest model winning where test windows overlap;
* :class:`AverageEnsemble` z-scores every model's predictions per date and
  averages them across models.

Predictions are Series or DataFrames indexed by ``(datetime, instrument)``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd

_logger = logging.getLogger(__name__)

DATE_LEVEL = "datetime"
#: Joins nested keys when :class:`AverageEnsemble` flattens a nested dict.
FLATTEN_SEPARATOR = "/"

Frame = pd.Series | pd.DataFrame


def _date_level(index: pd.Index) -> str | int:
    return DATE_LEVEL if DATE_LEVEL in (index.names or []) else 0


class Ensemble:
    """Base class: ``ensemble(ensemble_dict) -> merged artifact``."""

    def __call__(self, ensemble_dict: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        """Merge ``ensemble_dict`` into one artifact."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")


class SingleKeyEnsemble(Ensemble):
    """Unwrap dicts with exactly one entry, e.g. ``{"a": {"b": x}}`` becomes ``x``.

    Dicts with several entries are kept (their values are still unwrapped when
    ``recursion`` is true); non-dict input is returned unchanged. The input is not
    modified.
    """

    def __call__(self, ensemble_dict: Any, recursion: bool = True,
                 *args: Any, **kwargs: Any) -> Any:
        """Return ``ensemble_dict`` with single-entry dicts replaced by their value."""
        if not isinstance(ensemble_dict, dict):
            return ensemble_dict
        data = ensemble_dict
        if recursion:
            data = {key: self(value, recursion) for key, value in ensemble_dict.items()}
        if len(data) == 1:
            return next(iter(data.values()))
        return data


def _as_timestamp(value: Any) -> pd.Timestamp | None:
    if isinstance(value, (str, dt.date, np.datetime64, pd.Timestamp)):
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            return None
        return None if pd.isna(stamp) else stamp
    return None


def _segment_start(key: Any) -> pd.Timestamp | None:
    if isinstance(key, tuple) and key:
        return _as_timestamp(key[0])
    return _as_timestamp(key)


class RollingEnsemble(Ensemble):
    """Concatenate rolling models' predictions along time; the newest model wins overlaps.

    "Newest" is the model whose key (its test segment, ``(start, end)`` or a start
    date) starts latest; when keys are not dates, the one whose predictions start
    latest. Ties keep dict order (later entries win).

    When keys are dates, a model serves only dates from its test start on: its rows
    dated before it (e.g. predictions over its own training or validation days, made
    by a model that learnt from the labels of those days and of days after them) are
    dropped, so the prediction for day D always comes from the newest model whose test
    segment had started by D, never from one trained on data after D. (Qlib keeps such
    rows, the newest model winning them.)

    Returns:
        One frame (or Series) sorted by index, each ``(datetime, instrument)`` once.
    """

    def __call__(self, ensemble_dict: Mapping[Any, Frame],
                 *args: Any, **kwargs: Any) -> Frame:
        """Merge ``{rolling_key: prediction}`` into one prediction."""
        if not ensemble_dict:
            raise ValueError("RollingEnsemble needs at least one artifact")
        _logger.debug("RollingEnsemble keys: %s", list(ensemble_dict))
        items = list(ensemble_dict.items())
        starts = [_segment_start(key) for key, _ in items]
        keyed_by_date = all(start is not None for start in starts)
        if not keyed_by_date:
            starts = [self._first_date(frame) for _, frame in items]
        order = sorted(range(len(items)),
                       key=lambda position: (starts[position] is not None,
                                             starts[position] or pd.Timestamp.min, position))
        frames = [self._from(items[position][1], starts[position]) if keyed_by_date
                  else items[position][1] for position in order]
        merged = pd.concat(frames) if len(frames) > 1 else frames[0].copy()
        merged = merged[~merged.index.duplicated(keep="last")]  # the newest is last
        return merged.sort_index()

    @staticmethod
    def _from(frame: Frame, start: pd.Timestamp | None) -> Frame:
        """The rows of ``frame`` dated on or after ``start``."""
        if start is None or len(frame) == 0:
            return frame
        dates = pd.DatetimeIndex(frame.index.get_level_values(_date_level(frame.index)))
        return frame[np.asarray(dates >= start)]

    @staticmethod
    def _first_date(frame: Frame) -> pd.Timestamp | None:
        if len(frame) == 0:
            return None
        dates = frame.index.get_level_values(_date_level(frame.index))
        return _as_timestamp(dates.min())


def flatten_dict(nested: Mapping[Any, Any], separator: str = FLATTEN_SEPARATOR,
                 prefix: Hashable | None = None) -> dict[Hashable, Any]:
    """Flatten nested dicts: ``{"a": {"b": 1}}`` becomes ``{"a/b": 1}``.

    Tuple keys are joined element-wise, so ``{("lin", "x"): 1}`` becomes ``{"lin/x": 1}``.

    Args:
        nested: The dict to flatten.
        separator: Joins key parts.
        prefix: Key of the enclosing dict (used in recursion).

    Returns:
        A dict with no dict values.
    """
    flat: dict[Hashable, Any] = {}
    for key, value in nested.items():
        part = separator.join(map(str, key)) if isinstance(key, tuple) else key
        full = part if prefix is None else f"{prefix}{separator}{part}"
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, separator, full))
        else:
            flat[full] = value
    return flat


class AverageEnsemble(Ensemble):
    """Average models after a per-date cross-sectional z-score of each one's predictions.

    Each model's column is standardised per date (``(x - mean) / std``, sample std),
    then the models are averaged per row, ignoring missing values. Nested dicts are
    flattened first; DataFrames contribute every column.

    Returns:
        A Series named ``score``, sorted by index.
    """

    def __call__(self, ensemble_dict: Mapping[Any, Any],
                 *args: Any, **kwargs: Any) -> pd.Series:
        """Average ``{model_key: prediction}`` into one z-scored prediction."""
        flat = flatten_dict(ensemble_dict)
        if not flat:
            raise ValueError("AverageEnsemble needs at least one artifact")
        _logger.debug("AverageEnsemble keys: %s", list(flat))
        frames = [value.to_frame() if isinstance(value, pd.Series) else value
                  for value in flat.values()]
        values = pd.concat(frames, axis=1, ignore_index=True)
        level = _date_level(values.index)
        grouped = values.groupby(level=level, sort=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            scored = (values - grouped.transform("mean")) / grouped.transform("std")
        result: pd.Series = scored.mean(axis=1).sort_index()
        result.name = "score"
        return result
