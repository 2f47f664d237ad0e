"""Processors: learnable or stateless transforms of a handler's data, with Qlib's names.

A processor is fitted on the handler's fit range (``fit(df)``), then applied to
any frame (``processor(df)`` returns a new frame). Frames have 2-level columns
``(group, name)`` such as ``("feature", "KMID")`` and ``("label", "LABEL0")``;
``fields_group`` picks one group (``"feature"``, ``"label"``), several, or all
columns (``None``). Cross-sectional processors work per date and need no fit.

In task cfgs: ``{"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}}``
(the module defaults to this one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError, TaskConfigError

FieldsGroup = str | Sequence[str] | None


def _columns(df: pd.DataFrame, fields_group: FieldsGroup) -> pd.Index:
    """The columns of ``df`` in ``fields_group`` (all columns for ``None``)."""
    if fields_group is None:
        return df.columns
    if not isinstance(df.columns, pd.MultiIndex):
        raise DataError(f"fields_group={fields_group!r} needs 2-level (group, name) columns")
    groups = [fields_group] if isinstance(fields_group, str) else list(fields_group)
    mask = df.columns.get_level_values(0).isin(groups)
    return df.columns[mask]


def _block(df: pd.DataFrame, columns: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(positions, values)`` of ``columns`` in ``df`` (values shaped rows x columns)."""
    positions = df.columns.get_indexer(columns)
    return positions, df.iloc[:, positions].to_numpy()


def _replace(df: pd.DataFrame, positions: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A new frame equal to ``df`` with the columns at ``positions`` replaced by ``values``.

    Avoids copying the columns that do not change (frames here hold ~160 float columns
    over ~10^5-10^6 rows, so a needless copy costs more than the transform).
    """
    width = df.shape[1]
    values = np.asarray(values)
    if np.array_equal(positions, np.arange(width)):
        return pd.DataFrame(values, index=df.index, columns=df.columns, copy=False)
    if len(positions) <= 4:  # e.g. the label: swap single columns into a shallow copy
        out = df.copy(deep=False)
        for offset, position in enumerate(positions):
            out.isetitem(int(position), values[:, offset])
        return out
    new = pd.DataFrame(values, index=df.index, columns=df.columns[positions], copy=False)
    rest = np.setdiff1d(np.arange(width), positions)
    if np.array_equal(positions, np.arange(len(positions))):
        return pd.concat([new, df.iloc[:, rest]], axis=1)
    if np.array_equal(positions, np.arange(width - len(positions), width)):
        return pd.concat([df.iloc[:, rest], new], axis=1)
    out = df.copy()
    for offset, position in enumerate(positions):
        out.isetitem(int(position), values[:, offset])
    return out


def _date_groups(index: pd.Index) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Return ``(order, starts, codes)`` grouping rows by date (index level 0).

    ``order`` is ``None`` when rows are already grouped by date (the handler's case);
    otherwise it sorts them. ``starts`` are the first row of each date in sorted order
    and ``codes`` the date number of each sorted row.
    """
    dates = index.get_level_values(0) if isinstance(index, pd.MultiIndex) else index
    codes, _ = pd.factorize(dates, sort=True)
    order: np.ndarray | None = None
    if len(codes) > 1 and (np.diff(codes) < 0).any():
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
    if len(codes) == 0:
        return order, np.zeros(0, np.int64), codes
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1].astype(np.int64)
    return order, starts, codes


def _cs_zscore(values: np.ndarray, index: pd.Index) -> np.ndarray:
    """Per-date ``(x - mean) / std`` (sample std, NaN ignored) of each column of ``values``."""
    if values.size == 0:
        return values
    order, starts, codes = _date_groups(index)
    ordered = values if order is None else values[order]
    result = np.empty(ordered.shape, dtype=values.dtype, order="F")
    sizes = np.diff(np.r_[starts, len(codes)]).astype(np.float64)[None, :]
    # a few columns at a time, column-major: temporaries stay small and reductions stream
    step = 8
    for first in range(0, ordered.shape[1], step):
        data = ordered[:, first:first + step].T.astype(np.float64)
        missing = np.isnan(data)
        any_missing = bool(missing.any())
        number = sizes
        if any_missing:
            data[missing] = 0.0
            number = np.add.reduceat(~missing, starts, axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.add.reduceat(data, starts, axis=1) / number
            data -= mean[:, codes]
            if any_missing:
                data[missing] = 0.0
            std = np.sqrt(np.add.reduceat(data * data, starts, axis=1) / (number - 1.0))
            std[std == 0] = np.nan
            data /= std[:, codes]
        if any_missing:
            data[missing] = np.nan
        result[:, first:first + step] = data.T
    if order is not None:
        restored = np.empty_like(result)
        restored[order] = result
        result = restored
    return result


class Processor:
    """Base processor: ``fit`` learns state from the fit range, ``__call__`` transforms.

    Subclasses override :meth:`__call__` and, when they learn state, :meth:`fit`.
    """

    def fit(self, df: pd.DataFrame | None = None) -> None:
        """Learn state from ``df`` (the handler passes its fit-range rows); a no-op here."""

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return the transformed frame; ``df`` is left unchanged."""
        raise NotImplementedError

    def is_for_infer(self) -> bool:
        """Whether the processor may be used on inference data (Qlib's flag)."""
        return True

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                           if not key.startswith("_"))
        return f"{type(self).__name__}({fields})"


def check_for_infer(processor: Any, where: str) -> None:
    """Refuse a processor not meant for inference data (Qlib raises too).

    ``DropnaLabel`` on inference data would drop the last days of the test segment only
    because their labels, made of later prices, are unknown yet: which rows exist for
    day D would depend on the days after D.

    Args:
        processor: A processor of ``infer_processors``.
        where: Its place in the cfg, for the message.

    Raises:
        TaskConfigError: When ``processor.is_for_infer()`` is false.
    """
    if not getattr(processor, "is_for_infer", lambda: True)():
        raise TaskConfigError(f"{where}: {type(processor).__name__} is not for inference data "
                              "(which rows it keeps depends on later days); put it in "
                              "learn_processors")


def check_fit_end(processor: Any, fit_end_time: Any, where: str) -> None:
    """Refuse to fit a processor that learns state on a fit range without an end.

    Fitted on every row of a handler, ``ZScoreNorm`` and friends would normalise day D
    with statistics of the days after D (the test segment). A processor learns state
    when it overrides :meth:`Processor.fit`.

    Args:
        processor: A processor the handler is about to fit.
        fit_end_time: The handler's fit end (``None``: none).
        where: Its place in the cfg, for the message.

    Raises:
        TaskConfigError: When neither ``fit_end_time`` nor the processor's own
            ``fit_end_time`` is set.
    """
    learns = getattr(type(processor), "fit", Processor.fit) is not Processor.fit
    if learns and fit_end_time is None and getattr(processor, "fit_end_time", None) is None:
        raise TaskConfigError(
            f"{where}: {type(processor).__name__} learns from its fit range, which has no "
            "end: fitted on every row it would use days after those it normalises "
            "(look-ahead); give the handler's (or the processor's) fit_start_time and "
            "fit_end_time, e.g. the train segment")


class Fillna(Processor):
    """Replace NaN with ``fill_value`` in ``fields_group`` (all columns by default).

    Args:
        fields_group: Column group(s) to fill, or ``None`` for all.
        fill_value: The replacement value.
    """

    def __init__(self, fields_group: FieldsGroup = None, fill_value: float = 0.0) -> None:
        self.fields_group = fields_group
        self.fill_value = fill_value

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with NaN in the chosen columns replaced."""
        positions, values = _block(df, _columns(df, self.fields_group))
        missing = np.isnan(values) if values.dtype.kind == "f" else pd.isna(values)
        if not missing.any():
            return df
        return _replace(df, positions, np.where(missing, self.fill_value, values))


class DropnaLabel(Processor):
    """Drop rows whose label is missing (learn data only).

    Args:
        fields_group: The label group name.
    """

    def __init__(self, fields_group: FieldsGroup = "label") -> None:
        self.fields_group = fields_group

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return the rows of ``df`` where every label column is present."""
        columns = _columns(df, self.fields_group)
        return df.loc[df[columns].notna().all(axis=1).to_numpy()]

    def is_for_infer(self) -> bool:
        """``False``: inference rows must not be dropped for want of a label."""
        return False


class DropnaFeature(Processor):
    """Drop rows with any missing feature.

    Args:
        fields_group: The feature group name.
    """

    def __init__(self, fields_group: FieldsGroup = "feature") -> None:
        self.fields_group = fields_group

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return the rows of ``df`` where every chosen column is present."""
        columns = _columns(df, self.fields_group)
        return df.loc[df[columns].notna().all(axis=1).to_numpy()]


class ProcessInf(Processor):
    """Replace +/-inf by the mean of the finite values of the same column on the same date.

    Args:
        fields_group: Column group(s) to clean, or ``None`` for all.
    """

    def __init__(self, fields_group: FieldsGroup = None) -> None:
        self.fields_group = fields_group

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with infinite values replaced (NaN when a date has no finite value)."""
        positions, values = _block(df, _columns(df, self.fields_group))
        infinite = np.isinf(values)
        if not infinite.any():
            return df
        finite = pd.DataFrame(np.where(infinite, np.nan, values), index=df.index)
        means = finite.groupby(level=0, sort=False).transform("mean").to_numpy()
        return _replace(df, positions, np.where(infinite, means, values))


class CSZScoreNorm(Processor):
    """Cross-sectional z-score: per date, ``(x - mean) / std`` of each column.

    ``std`` is the sample standard deviation (``ddof=1``, as pandas); NaN values are
    ignored and stay NaN; a column constant on a date becomes NaN there.

    Args:
        fields_group: Column group(s) to normalise, or ``None`` for all.
        method: ``"zscore"`` (mean/std) or ``"robust"`` (median / 1.4826 MAD).
    """

    def __init__(self, fields_group: FieldsGroup = None, method: str = "zscore") -> None:
        if method not in ("zscore", "robust"):
            raise DataError(f"CSZScoreNorm method must be 'zscore' or 'robust', got {method!r}")
        self.fields_group = fields_group
        self.method = method

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with the chosen columns normalised per date."""
        positions, values = _block(df, _columns(df, self.fields_group))
        if self.method == "zscore":
            return _replace(df, positions, _cs_zscore(values, df.index))
        block = pd.DataFrame(values, index=df.index)
        median = block.groupby(level=0, sort=False).transform("median")
        mad = (block - median).abs().groupby(level=0, sort=False).transform("median")
        robust = (block - median) / (mad * 1.4826).replace(0.0, np.nan)
        return _replace(df, positions, robust.to_numpy())


class CSRankNorm(Processor):
    """Cross-sectional rank: per date, ``(rank_pct - 0.5) * 3.46`` (about unit variance).

    Args:
        fields_group: Column group(s) to normalise, or ``None`` for all.
    """

    def __init__(self, fields_group: FieldsGroup = None) -> None:
        self.fields_group = fields_group

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with the chosen columns replaced by centred per-date ranks."""
        positions, values = _block(df, _columns(df, self.fields_group))
        block = pd.DataFrame(values, index=df.index)
        ranks = block.groupby(level=0, sort=False).rank(pct=True).to_numpy()
        return _replace(df, positions, (ranks - 0.5) * 3.46)


class _FittedNorm(Processor):
    """Shared code of the normalisers learnt on the fit range."""

    def __init__(self, fit_start_time: Any = None, fit_end_time: Any = None,
                 fields_group: FieldsGroup = None, clip_outlier: bool = False) -> None:
        self.fit_start_time = fit_start_time
        self.fit_end_time = fit_end_time
        self.fields_group = fields_group
        self.clip_outlier = clip_outlier
        self._center: pd.Series | None = None
        self._scale: pd.Series | None = None

    def _fit_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        dates = df.index.get_level_values(0)
        mask = np.ones(len(df), dtype=bool)
        if self.fit_start_time is not None:
            mask &= dates >= pd.Timestamp(self.fit_start_time)
        if self.fit_end_time is not None:
            mask &= dates <= pd.Timestamp(self.fit_end_time)
        rows = df.loc[mask, _columns(df, self.fields_group)]
        if rows.empty:
            raise DataError(f"{type(self).__name__}: no rows in the fit range "
                            f"{self.fit_start_time}..{self.fit_end_time}")
        return rows

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` normalised with the fitted centre and scale.

        Raises:
            DataError: When called before :meth:`fit`.
        """
        if self._center is None or self._scale is None:
            raise DataError(f"{type(self).__name__} must be fitted before use")
        positions, values = _block(df, _columns(df, self.fields_group))
        if len(self._center) != len(positions):
            raise DataError(f"{type(self).__name__} was fitted on {len(self._center)} columns, "
                            f"got {len(positions)}")
        normed = (values - self._center.to_numpy()) / self._scale.to_numpy()
        if self.clip_outlier:
            normed = np.clip(normed, -3.0, 3.0)
        return _replace(df, positions, normed)


class ZScoreNorm(_FittedNorm):
    """``(x - mean) / std`` per column, with mean and std learnt on the fit range.

    Args:
        fit_start_time: First date of the fit range (``None``: all rows given to fit).
        fit_end_time: Last date of the fit range.
        fields_group: Column group(s) to normalise, or ``None`` for all.
        clip_outlier: Clip the result to [-3, 3].
    """

    def fit(self, df: pd.DataFrame | None = None) -> None:
        """Learn the per-column mean and std on the fit-range rows of ``df``."""
        if df is None:
            raise DataError("ZScoreNorm.fit needs data")
        rows = self._fit_rows(df)
        self._center = rows.mean()
        self._scale = rows.std().replace(0.0, 1.0).fillna(1.0)


class RobustZScoreNorm(_FittedNorm):
    """``(x - median) / (1.4826 * MAD)`` per column, learnt on the fit range (Qlib's default).

    Args:
        fit_start_time: First date of the fit range (``None``: all rows given to fit).
        fit_end_time: Last date of the fit range.
        fields_group: Column group(s) to normalise, or ``None`` for all.
        clip_outlier: Clip the result to [-3, 3].
    """

    def fit(self, df: pd.DataFrame | None = None) -> None:
        """Learn the per-column median and MAD on the fit-range rows of ``df``."""
        if df is None:
            raise DataError("RobustZScoreNorm.fit needs data")
        rows = self._fit_rows(df)
        self._center = rows.median()
        mad = (rows - self._center).abs().median() * 1.4826
        self._scale = mad.replace(0.0, 1.0).fillna(1.0) + 1e-12
