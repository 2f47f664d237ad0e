"""Records: what a trained task leaves in its recorder (Qlib's ``qlib.workflow.record_temp``).

A record template is run after ``model.fit`` inside a recorded run:
:class:`SignalRecord` saves the model's test predictions (``pred.pkl``) and the
raw labels (``label.pkl``); :class:`SigAnaRecord` reads them back and logs the
signal's information coefficients (``IC``, ``ICIR``, ``Rank IC``, ``Rank ICIR``)
with the daily series under ``sig_analysis/``.

Predictions and labels are indexed by ``(datetime, instrument)``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from taskroll.errors import RecorderError
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

DATE_LEVEL = "datetime"


def __getattr__(name: str) -> Any:
    # PortAnaRecord lives in port_record.py, which imports this module: resolving it lazily
    # keeps ``taskroll.train.record.PortAnaRecord`` (Qlib's place) without an import circle.
    if name == "PortAnaRecord":
        from taskroll.train.port_record import PortAnaRecord

        return PortAnaRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


class RecordTemp:
    """Base of record templates: artifacts written into one recorder under ``artifact_path``.

    Subclasses set :attr:`artifact_path` (a folder inside the run's artifacts, or
    ``None`` for the root) and :attr:`depend_cls` (a record whose artifacts they read),
    and implement :meth:`generate` and :meth:`list`.

    Args:
        recorder: The run the record writes into.
    """

    artifact_path: ClassVar[str | None] = None
    depend_cls: ClassVar[type[RecordTemp] | None] = None

    def __init__(self, recorder: Recorder | None):
        self._recorder = recorder

    @classmethod
    def get_path(cls, path: str | None = None) -> str:
        """Return ``path`` inside this record's artifact folder."""
        parts = [part for part in (cls.artifact_path, path) if part]
        return "/".join(parts)

    @property
    def recorder(self) -> Recorder:
        """The recorder; raises :class:`RecorderError` when the record has none."""
        if self._recorder is None:
            raise RecorderError(f"{type(self).__name__} has no recorder; pass recorder=...")
        return self._recorder

    def save(self, **objects: Any) -> None:
        """Pickle ``name=object`` pairs into this record's artifact folder."""
        self.recorder.save_objects(artifact_path=self.get_path() or None, **objects)

    def generate(self, **kwargs: Any) -> None:
        """Compute and save this record's artifacts."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate()")

    def load(self, name: str, parents: bool = True) -> Any:
        """Load an artifact of this record, else (``parents``) of the records it depends on.

        Raises:
            RecorderError: When no record in the chain has it.
        """
        try:
            return self.recorder.load_object(self.get_path(name))
        except RecorderError:
            if not parents or self.depend_cls is None:
                raise
            return self._as_dependency(self.depend_cls).load(name, parents=True)

    def list(self) -> list[str]:
        """Return the artifact paths this record writes."""
        return []

    def _as_dependency(self, dependency: type[RecordTemp]) -> RecordTemp:
        # Qlib's class_casting: the same record seen as the class it depends on, so the
        # dependency's paths and loading apply without knowing its constructor.
        proxy = copy.copy(self)
        proxy.__class__ = dependency
        return proxy

    def check(self, include_self: bool = False, parents: bool = True) -> None:
        """Check that the artifacts this record needs exist.

        Args:
            include_self: Check this record's own artifacts too.
            parents: Check the artifacts of the records it depends on.

        Raises:
            FileNotFoundError: Naming the first missing artifact.
        """
        needed: list[str] = []
        if include_self:
            needed += self.list()
        dependency = self.depend_cls
        while parents and dependency is not None:
            needed += self._as_dependency(dependency).list()
            dependency = dependency.depend_cls
        existing = self._existing_artifacts(needed)
        for path in needed:
            if path not in existing:
                raise FileNotFoundError(f"{type(self).__name__}: artifact {path!r} is missing "
                                        f"from run {self.recorder.id}")

    def _existing_artifacts(self, paths: Sequence[str]) -> set[str]:
        folders = {path.rsplit("/", 1)[0] if "/" in path else None for path in paths}
        existing: set[str] = set()
        for folder in folders:
            existing.update(self.recorder.list_artifacts(folder))
        return existing


class SignalRecord(RecordTemp):
    """Save the model's test predictions (``pred.pkl``) and raw labels (``label.pkl``).

    Args:
        model: Fitted model with ``predict(dataset, segment="test")``.
        dataset: Dataset with ``prepare("test", col_set="label", data_key="learn")``.
        recorder: The run to write into.
    """

    def __init__(self, model: Any = None, dataset: Any = None, recorder: Recorder | None = None):
        super().__init__(recorder)
        self.model = model
        self.dataset = dataset

    @staticmethod
    def generate_label(dataset: Any) -> pd.DataFrame | None:
        """Return the test labels of ``dataset``, or ``None`` (with a warning) when unavailable."""
        try:
            label = dataset.prepare("test", col_set="label", data_key="learn")
        except Exception as error:  # a dataset without labels is legal; the signal still is
            warnings.warn(f"SignalRecord: no test label ({error}); label.pkl is skipped",
                          RuntimeWarning, stacklevel=3)
            return None
        if isinstance(label, pd.Series):
            label = label.to_frame("label")
        return label if isinstance(label, pd.DataFrame) else None

    def generate(self, **kwargs: Any) -> None:
        """Predict the test segment and save ``pred.pkl`` (column ``score``) and ``label.pkl``.

        Raises:
            RecorderError: When model or dataset is missing or the prediction is not a
                Series/DataFrame.
        """
        if self.model is None or self.dataset is None:
            raise RecorderError("SignalRecord needs model and dataset")
        pred = self.model.predict(self.dataset, segment="test")
        if isinstance(pred, pd.Series):
            pred = pred.to_frame("score")
        if not isinstance(pred, pd.DataFrame):
            raise RecorderError(f"model.predict returned {type(pred).__name__}, "
                                "expected a pandas Series or DataFrame")
        self.save(**{"pred.pkl": pred})
        _logger.info("SignalRecord: saved %d predictions to run %s", len(pred), self.recorder.id)
        label = self.generate_label(self.dataset)
        if label is not None:
            self.save(**{"label.pkl": label})

    def list(self) -> list[str]:
        """Return ``["pred.pkl", "label.pkl"]``."""
        return ["pred.pkl", "label.pkl"]


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
        if self.skip_existing:
            try:
                self.check(include_self=True, parents=False)
            except FileNotFoundError:
                pass
            else:
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
