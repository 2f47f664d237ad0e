"""Evaluation of the signals an online manager served, against the labels realised since.

Inputs are a served ``signals`` and the realised ``labels``, each a Series (or a
one-column DataFrame) indexed by ``(datetime, instrument)``. Definitions:

* Only ``(day, instrument)`` rows where both signal and label are finite are used.
  A served day (a day in the signal index) without such a row is left out of
  ``daily`` and counted in ``summary["days_without_label"]``; ``summary["days"]``
  is the number of days evaluated (the rows of ``daily``).
* ``ic``, ``rank_ic``: per-day Pearson and Spearman correlation of signal and label
  (:func:`taskroll.train.record.calc_ic`); NaN for a day with fewer than 2 rows or
  a constant signal or label.
* Each day the rows are ordered by signal descending, ties by instrument ascending
  (one total order, so the result is deterministic and the two sides never
  overlap). With ``k = min(topk, count // 2)``, the long set is the first ``k``
  instruments and the short set the last ``k``. ``long`` and ``short`` are the
  mean labels of those sets and ``long_short = long - short``; NaN when
  ``count < 2``.
* ``turnover`` on day t (after the first evaluated day) is
  ``(|L_t - L_prev| + |S_t - S_prev|) / (|L_t| + |S_t|)``, with L, S the long and
  short instrument sets and ``prev`` the previous evaluated day: the fraction of
  the book replaced. NaN on the first evaluated day and on a day with empty sets.
* Summary: ``ic_mean``, ``ic_std``, ``icir = ic_mean / ic_std`` (likewise
  ``rank_ic_*``, ``rank_icir``), ``long_short_mean``, ``long_short_annualized =
  mean * annualization``, ``long_short_sharpe = mean / std * sqrt(annualization)``,
  ``max_drawdown`` (the deepest fall, a non-positive number, of the cumulative sum
  of ``long_short`` measured from its running peak, the start at 0 included),
  ``turnover_mean``, ``days``, ``days_without_label``, ``topk`` and ``first_day``
  / ``last_day`` (ISO dates, ``""`` when no day was evaluated). Means and
  standard deviations (sample, ddof=1) skip NaN days; a ratio whose denominator
  is 0 or NaN is NaN.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from taskroll.errors import DataError
from taskroll.train.record import calc_ic

DATE_LEVEL = "datetime"
INSTRUMENT_LEVEL = "instrument"
DAILY_COLUMNS = ("ic", "rank_ic", "long", "short", "long_short", "turnover", "count")

Summary = dict[str, float | int | str]


@dataclass(frozen=True)
class ServedReport:
    """Daily and summary evaluation of served signals (definitions in the module docstring).

    Attributes:
        daily: One row per evaluated day, indexed by ``datetime``, with columns
            ``ic, rank_ic, long, short, long_short, turnover, count``.
        summary: Aggregates over the evaluated days.
    """

    daily: pd.DataFrame
    summary: Summary

    def save(self, folder: Path | str) -> dict[str, Path]:
        """Write ``report.csv`` (daily), ``report.json`` (summary) and ``report.png``.

        Each file is written to a temporary file in ``folder`` and moved into place
        with :func:`os.replace`, so a reader never sees a half-written report. In the
        JSON (sorted keys, indent 2) a non-finite float is written as ``null``.

        Args:
            folder: Target folder, created when missing.

        Returns:
            ``{"csv": path, "json": path, "png": path}``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"csv": folder / "report.csv", "json": folder / "report.json",
                 "png": folder / "report.png"}
        with _atomic_open(paths["csv"], "w") as handle:
            self.daily.to_csv(handle, index_label=DATE_LEVEL)
        plain = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                 for key, value in self.summary.items()}
        with _atomic_open(paths["json"], "w") as handle:
            json.dump(plain, handle, sort_keys=True, indent=2, allow_nan=False)
            handle.write("\n")
        plot_report(self, paths["png"])
        return paths

    def to_text(self) -> str:
        """Render the summary as a two-column text table for a terminal.

        Returns:
            One ``key  value`` line per summary entry, keys sorted.
        """
        width = max((len(key) for key in self.summary), default=0)
        lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
        for key in sorted(self.summary):
            value = self.summary[key]
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            lines.append(f"{key.ljust(width)}  {shown}")
        return "\n".join(lines)


@contextmanager
def _atomic_open(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Open a fresh temporary file next to ``path``; on success move it onto ``path``."""
    # Exclusive creation with open() (not mkstemp) so the file gets the usual umask permissions.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, mode.replace("w", "x")) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _as_series(values: pd.Series | pd.DataFrame, name: str) -> pd.Series:
    """Check one input and return it as a float Series indexed by (datetime, instrument)."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise DataError(f"{name} must have exactly one column, got {values.shape[1]}: "
                            f"{list(values.columns)}; select the column to evaluate")
        values = values.iloc[:, 0]
    if not isinstance(values, pd.Series):
        raise DataError(f"{name} must be a pandas Series or a one-column DataFrame, "
                        f"got {type(values).__name__}")
    index = values.index
    if not isinstance(index, pd.MultiIndex) or index.nlevels != 2:
        raise DataError(f"{name} must be indexed by a 2-level MultiIndex (datetime, instrument), "
                        f"got {index.nlevels} level(s)")
    if index.duplicated().any():
        raise DataError(f"{name} has duplicated (datetime, instrument) entries, e.g. "
                        f"{index[index.duplicated()][0]}; keep one row per day and instrument")
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(index.get_level_values(0)))
        numbers = pd.to_numeric(values, errors="raise").astype(float)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} needs dates in level 0 and numeric values: {error}") from error
    new_index = pd.MultiIndex.from_arrays([dates, index.get_level_values(1)],
                                          names=[DATE_LEVEL, INSTRUMENT_LEVEL])
    return pd.Series(numbers.to_numpy(), index=new_index, name=name)


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 or not finite."""
    usable = math.isfinite(denominator) and denominator != 0
    return float(numerator / denominator) if usable else math.nan


def _book(complete: pd.DataFrame, topk: int) -> tuple[pd.DataFrame, pd.Series]:
    """Per-day long/short/long_short means and turnover of the top/bottom-k book."""
    ordered = complete.reset_index().sort_values(
        [DATE_LEVEL, "signal", INSTRUMENT_LEVEL], ascending=[True, False, True], kind="mergesort")
    by_day = ordered.groupby(DATE_LEVEL, sort=True)
    position = by_day.cumcount()
    count = by_day["signal"].transform("size")
    picks = np.minimum(topk, count // 2)
    ordered["side"] = np.where(position < picks, "long",
                               np.where(position >= count - picks, "short", ""))
    chosen = ordered[ordered["side"] != ""]
    days = pd.DatetimeIndex(by_day.size().index, name=DATE_LEVEL)
    means = chosen.pivot_table(index=DATE_LEVEL, columns="side", values="label", aggfunc="mean")
    book = means.reindex(index=days, columns=["long", "short"]).astype(float)
    book["long_short"] = book["long"] - book["short"]
    members = chosen.groupby([DATE_LEVEL, "side"])[INSTRUMENT_LEVEL].agg(frozenset)
    replaced: dict[pd.Timestamp, float] = {}
    previous: tuple[frozenset[object], frozenset[object]] | None = None
    for day in days:
        long_set = members.get((day, "long"), frozenset())
        short_set = members.get((day, "short"), frozenset())
        size = len(long_set) + len(short_set)
        if previous is not None and size > 0:
            replaced[day] = (len(long_set - previous[0]) + len(short_set - previous[1])) / size
        previous = (long_set, short_set)
    return book, pd.Series(replaced, index=days, dtype=float)


def _summarize(daily: pd.DataFrame, days_without_label: int, topk: int, annualization: int) -> Summary:
    """Aggregate the daily table into the summary dictionary."""
    def stat(column: str, how: str) -> float:
        value = getattr(daily[column].dropna(), how)()
        return float(value) if pd.notna(value) else math.nan

    long_short = daily["long_short"].dropna()
    drawdown = math.nan
    if not long_short.empty:
        wealth = np.concatenate([[0.0], long_short.cumsum().to_numpy()])
        drawdown = float(min(0.0, (wealth - np.maximum.accumulate(wealth)).min()))
    means = {column: stat(column, "mean") for column in ("ic", "rank_ic", "long_short", "turnover")}
    deviations = {column: stat(column, "std") for column in ("ic", "rank_ic", "long_short")}
    return {
        "ic_mean": means["ic"], "ic_std": deviations["ic"],
        "icir": _ratio(means["ic"], deviations["ic"]),
        "rank_ic_mean": means["rank_ic"], "rank_ic_std": deviations["rank_ic"],
        "rank_icir": _ratio(means["rank_ic"], deviations["rank_ic"]),
        "long_short_mean": means["long_short"],
        "long_short_annualized": means["long_short"] * annualization,
        "long_short_sharpe": _ratio(means["long_short"], deviations["long_short"])
        * math.sqrt(annualization),
        "max_drawdown": drawdown, "turnover_mean": means["turnover"],
        "days": len(daily), "days_without_label": days_without_label, "topk": topk,
        "first_day": pd.Timestamp(daily.index[0]).date().isoformat() if len(daily) else "",
        "last_day": pd.Timestamp(daily.index[-1]).date().isoformat() if len(daily) else "",
    }


def evaluate_signals(signals: pd.Series | pd.DataFrame, labels: pd.Series | pd.DataFrame,
                     topk: int = 50, annualization: int = 252) -> ServedReport:
    """Evaluate served signals against realised labels (definitions in the module docstring).

    Args:
        signals: Score served each day, indexed by ``(datetime, instrument)``.
        labels: Realised forward return, same index layout; NaN where not realised yet.
        topk: Most instruments held on each side of the long-short book.
        annualization: Trading days per year for the annualised return and Sharpe.

    Returns:
        The :class:`ServedReport` with the daily table and the summary.

    Raises:
        DataError: (a ``ValueError``) when an input is not a Series or one-column
            DataFrame on a 2-level index, has duplicated index entries, the two
            share no ``(datetime, instrument)`` entry, or ``topk`` or
            ``annualization`` is below 1.
    """
    for name, value in (("topk", topk), ("annualization", annualization)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    signal = _as_series(signals, "signals").sort_index()
    label = _as_series(labels, "labels")
    if signal.index.intersection(label.index).empty:
        raise DataError("signals and labels share no (datetime, instrument) entry; "
                        "check that both use the same dates and instrument codes")
    frame = pd.DataFrame({"signal": signal, "label": label.reindex(signal.index)})
    complete = frame[np.isfinite(frame["signal"]) & np.isfinite(frame["label"])]
    served_days = signal.index.get_level_values(DATE_LEVEL).unique()
    ic, rank_ic = calc_ic(complete["signal"], complete["label"], date_col=DATE_LEVEL)
    # A constant column can leave a rounding residue after centring; force the documented NaN.
    distinct = complete.groupby(level=DATE_LEVEL).nunique().min(axis=1)
    book, turnover = _book(complete, int(topk))
    daily = pd.DataFrame({
        "ic": ic.where(distinct >= 2), "rank_ic": rank_ic.where(distinct >= 2),
        "long": book["long"], "short": book["short"], "long_short": book["long_short"],
        "turnover": turnover,
        "count": complete.groupby(level=DATE_LEVEL).size(),
    }, index=book.index, columns=list(DAILY_COLUMNS)).astype({"count": "int64"})
    daily.index.name = DATE_LEVEL
    summary = _summarize(daily, len(served_days) - len(daily), int(topk), int(annualization))
    return ServedReport(daily=daily, summary=summary)


def plot_report(report: ServedReport, path: Path | str) -> Path:
    """Draw the report as a 3-panel PNG: cumulative IC, cumulative returns, turnover.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas, never pyplot's global
    state; the file is written atomically (temporary file, then :func:`os.replace`).

    Args:
        report: The report to draw.
        path: Target PNG file; its folder is created when missing.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    daily = report.daily
    figure = Figure(figsize=(10, 9), constrained_layout=True)
    FigureCanvasAgg(figure)
    correlation, returns, turnover = figure.subplots(3, 1, sharex=True)
    for column, label in (("ic", "IC"), ("rank_ic", "rank IC")):
        correlation.plot(daily.index, daily[column].fillna(0.0).cumsum(), label=label)
    for column in ("long_short", "long", "short"):
        returns.plot(daily.index, daily[column].fillna(0.0).cumsum(), label=column)
    turnover.plot(daily.index, daily["turnover"], label="turnover")
    titles = ("Cumulative IC", "Cumulative return", "Daily turnover (fraction of book replaced)")
    for axes, title in zip((correlation, returns, turnover), titles, strict=True):
        axes.set_title(title)
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.legend(loc="upper left", fontsize=8)
    turnover.set_xlabel(DATE_LEVEL)
    with _atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    return path
