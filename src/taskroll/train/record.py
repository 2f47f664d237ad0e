"""Records: what a trained task leaves in its recorder (Qlib's ``qlib.workflow.record_temp``).

A record template is run after ``model.fit`` inside a recorded run:
:class:`SignalRecord` saves the model's test predictions (``pred.pkl``) and the
raw labels (``label.pkl``); :class:`SigAnaRecord` reads them back and logs the
signal's information coefficients (``IC``, ``ICIR``, ``Rank IC``, ``Rank ICIR``)
with the daily series under ``sig_analysis/``.

Predictions and labels are indexed by ``(datetime, instrument)``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from taskroll.train.port_record import PortAnaRecord
from taskroll.train.record_base import RecordTemp, SignalRecord
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

__all__ = ["DATE_LEVEL", "PortAnaRecord", "RecordTemp", "SigAnaRecord", "SignalRecord",
           "calc_ic", "calc_long_short_return"]

DATE_LEVEL = "datetime"


def _pearson_by_date(frame: pd.DataFrame, level: str | int) -> pd.Series:
    """Per-date Pearson correlation of columns ``x`` and ``y`` (complete rows only)."""
    grouped = frame.groupby(level=level, sort=True)
    centred_x = frame["x"] - grouped["x"].transform("mean")
    centred_y = frame["y"] - grouped["y"].transform("mean")
    sums = pd.DataFrame({
        "xy": centred_x * centred_y,
        "xx": centred_x * centred_x,
        "yy": centred_y * centred_y,
    }).groupby(frame.index.get_level_values(level), sort=True).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation: pd.Series = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])
    counts = grouped.size()
    # Fewer than two points, or a constant side, has no correlation (pandas agrees: NaN).
    correlation = correlation.where((counts >= 2) & (sums["xx"] > 0) & (sums["yy"] > 0))
    return correlation.clip(-1.0, 1.0)


def calc_ic(pred: pd.Series, label: pd.Series, date_col: str = DATE_LEVEL,
            dropna: bool = False) -> tuple[pd.Series, pd.Series]:
    """Per-date information coefficient (Pearson) and rank IC (Spearman) of a signal.

    Vectorised over dates with ``groupby``; rows where either side is missing are
    ignored, as :meth:`pandas.Series.corr` does.

    Args:
        pred: Signal indexed by ``(datetime, instrument)``.
        label: Realised label with the same index layout.
        date_col: Index level holding the date (level 0 when absent).
        dropna: Drop dates whose IC is undefined (fewer than two instruments, or a
            constant signal or label); otherwise they are kept as ``NaN``.

    Returns:
        ``(ic, rank_ic)``, two Series indexed by date.
    """
    frame = pd.DataFrame({"x": pred, "y": label})
    level: str | int = date_col if date_col in (frame.index.names or []) else 0
    all_dates = frame.index.get_level_values(level).unique().sort_values()
    complete = frame.dropna()
    if complete.empty:
        empty = pd.Series(np.nan, index=all_dates, dtype=float)
        return (empty.dropna(), empty.dropna()) if dropna else (empty, empty.copy())
    ic = _pearson_by_date(complete, level).reindex(all_dates)
    ranks = complete.groupby(level=level).rank(method="average")
    rank_ic = _pearson_by_date(ranks, level).reindex(all_dates)
    ic.name, rank_ic.name = "IC", "Rank IC"
    if dropna:
        return ic.dropna(), rank_ic.dropna()
    return ic, rank_ic


def calc_long_short_return(pred: pd.Series, label: pd.Series, date_col: str = DATE_LEVEL,
                           quantile: float = 0.2,
                           dropna: bool = False) -> tuple[pd.Series, pd.Series]:
    """Per-date long-short and average return of a signal (Qlib's ``calc_long_short_return``).

    Each date, the top ``quantile`` of instruments by signal is bought and the bottom
    one sold; the long-short return is half their label difference.

    Args:
        pred: Signal indexed by ``(datetime, instrument)``.
        label: Realised return with the same index.
        date_col: Index level holding the date.
        quantile: Fraction of instruments on each side.
        dropna: Drop rows with a missing signal or label first.

    Returns:
        ``(long_short, long_average)`` Series indexed by date.
    """
    frame = pd.DataFrame({"pred": pred, "label": label})
    if dropna:
        frame = frame.dropna()
    level: str | int = date_col if date_col in (frame.index.names or []) else 0
    grouped = frame.groupby(level=level)
    picks = (grouped["pred"].transform("size") * quantile).astype(int)
    top_rank = grouped["pred"].rank(method="first", ascending=False)
    bottom_rank = grouped["pred"].rank(method="first", ascending=True)
    dates = frame.index.get_level_values(level)
    long_mean = frame["label"].where(top_rank <= picks).groupby(dates).mean()
    short_mean = frame["label"].where(bottom_rank <= picks).groupby(dates).mean()
    return (long_mean - short_mean) / 2, grouped["label"].mean()


def _ratio(mean: float, deviation: float) -> float:
    # Zero dispersion leaves an information ratio undefined: NaN, not inf (which MLflow
    # would store as 1.8e308).
    if not np.isfinite(deviation) or deviation == 0:
        return float("nan")
    return float(mean) / float(deviation)


class SigAnaRecord(RecordTemp):
    """Signal analysis: IC, ICIR, Rank IC, Rank ICIR (and optionally long-short returns).

    Metrics are means over dates (``IC``) and mean / sample std (``ICIR``); a ratio
    whose std is zero or undefined is logged as NaN.

    Args:
        recorder: A run that already holds ``pred.pkl`` and ``label.pkl``.
        ana_long_short: Also compute long-short / long-average annualised returns.
        ann_scaler: Periods per year used to annualise.
        label_col: Position of the label column in ``label.pkl``.
        skip_existing: Do nothing when this record's artifacts already exist.
    """

    artifact_path = "sig_analysis"
    depend_cls = SignalRecord

    def __init__(self, recorder: Recorder | None, ana_long_short: bool = False,
                 ann_scaler: int = 252, label_col: int = 0, skip_existing: bool = False):
        super().__init__(recorder)
        self.ana_long_short = ana_long_short
        self.ann_scaler = ann_scaler
        self.label_col = label_col
        self.skip_existing = skip_existing

    def generate(self, label: pd.DataFrame | None = None, **kwargs: Any) -> None:
        """Compute the IC family from the saved predictions and labels; log and save it.

        Args:
            label: Labels to use instead of ``label.pkl``.
            **kwargs: Ignored (uniform record interface).

        Raises:
            FileNotFoundError: When ``pred.pkl`` or ``label.pkl`` is missing.
        """
        if self.skip_existing and self.results_exist():
            _logger.info("SigAnaRecord: results exist in run %s, skipped", self.recorder.id)
            return
        if label is None:
            self.check()
            label = self.load("label.pkl")
        if not isinstance(label, pd.DataFrame) or label.empty:
            warnings.warn("SigAnaRecord: empty label, nothing analysed", RuntimeWarning,
                          stacklevel=2)
            return
        pred = self.load("pred.pkl")
        signal = pred.iloc[:, 0] if isinstance(pred, pd.DataFrame) else pred
        truth = label.iloc[:, self.label_col]
        ic, rank_ic = calc_ic(signal, truth)
        metrics = {
            "IC": ic.mean(),
            "ICIR": _ratio(ic.mean(), ic.std()),
            "Rank IC": rank_ic.mean(),
            "Rank ICIR": _ratio(rank_ic.mean(), rank_ic.std()),
        }
        objects: dict[str, Any] = {"ic.pkl": ic, "ric.pkl": rank_ic}
        if self.ana_long_short:
            long_short, long_average = calc_long_short_return(signal, truth)
            scale = float(self.ann_scaler)
            metrics.update({
                "Long-Short Ann Return": long_short.mean() * scale,
                "Long-Short Ann Sharpe":
                    _ratio(long_short.mean(), long_short.std()) * scale**0.5,
                "Long-Avg Ann Return": long_average.mean() * scale,
                "Long-Avg Ann Sharpe":
                    _ratio(long_average.mean(), long_average.std()) * scale**0.5,
            })
            objects.update({"long_short_r.pkl": long_short, "long_avg_r.pkl": long_average})
        self.recorder.log_metrics(None, **{name: float(value) for name, value in metrics.items()})
        self.save(**objects)
        _logger.info("SigAnaRecord: %s", metrics)

    def list(self) -> list[str]:
        """Return the artifact paths this record writes."""
        names = ["ic.pkl", "ric.pkl"]
        if self.ana_long_short:
            names += ["long_short_r.pkl", "long_avg_r.pkl"]
        return [self.get_path(name) for name in names]
