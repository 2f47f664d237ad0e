"""The demo's report: the IC table (per window and per ensemble) and the IC plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from taskroll.train.record import calc_ic
from taskroll.train.recorder import Recorder

TABLE_COLUMNS = ["model", "window", "test_start", "test_end", "IC", "Rank IC"]


def _date(value: object) -> str:
    return str(pd.Timestamp(str(value)).date())


def window_rows(recorders: Sequence[Recorder]) -> pd.DataFrame:
    """One row per trained window: model, test segment and the recorder's IC / Rank IC metrics.

    Args:
        recorders: Finished recorders holding a ``task`` artifact and ``IC`` / ``Rank IC``
            metrics (written by ``SigAnaRecord``).

    Returns:
        A frame with :data:`TABLE_COLUMNS`, sorted by model then test start; ``window``
        numbers the windows of each model from 1.
    """
    rows = []
    for recorder in recorders:
        task = recorder.load_object("task")
        start, end = task["dataset"]["kwargs"]["segments"]["test"]
        metrics = recorder.list_metrics()
        rows.append({"model": task["model"]["class"], "test_start": _date(start),
                     "test_end": _date(end), "IC": float(metrics.get("IC", math.nan)),
                     "Rank IC": float(metrics.get("Rank IC", math.nan))})
    frame = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if c != "window"])
    frame = frame.sort_values(["model", "test_start"], kind="stable").reset_index(drop=True)
    frame["window"] = (frame.groupby("model").cumcount() + 1).astype(str)
    return frame[TABLE_COLUMNS]


def ensemble_ic(name: str, signal: pd.Series,
                label: pd.Series) -> tuple[pd.Series, pd.DataFrame]:
    """Daily IC of an ensembled signal against the labels, and its summary table row.

    Args:
        name: Row name (shown in the ``model`` column; ``window`` is ``"ensemble"``).
        signal: Ensembled prediction indexed by ``(datetime, instrument)``.
        label: Realised labels with the same index layout.

    Returns:
        ``(daily IC, one-row frame with mean IC and mean Rank IC over the test dates)``.
    """
    ic, rank_ic = calc_ic(signal, label.reindex(signal.index), dropna=True)
    dates = ic.index
    row = pd.DataFrame([{"model": name, "window": "ensemble",
                         "test_start": _date(dates.min()) if len(dates) else "",
                         "test_end": _date(dates.max()) if len(dates) else "",
                         "IC": float(ic.mean()), "Rank IC": float(rank_ic.mean())}],
                       columns=TABLE_COLUMNS)
    return ic, row


def format_table(table: pd.DataFrame) -> str:
    """Render the IC table as aligned text with four decimals."""
    return table.to_string(index=False, float_format=lambda value: f"{value:+.4f}")


def plot_ic(daily_ic: pd.DataFrame, path: Path) -> Path:
    """Save a two-panel PNG: daily IC (20-day mean) and cumulative IC of each ensemble.

    Args:
        daily_ic: Daily IC, one column per ensemble, indexed by date.
        path: Target PNG file.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                         constrained_layout=True)
    for column in daily_ic.columns:
        series = daily_ic[column].dropna()
        line = top.plot(series.index, series.values, linewidth=0.6, alpha=0.35)[0]
        top.plot(series.index, series.rolling(20, min_periods=5).mean().values,
                 color=line.get_color(), linewidth=1.6, label=f"{column} (20-day mean)")
        bottom.plot(series.index, series.cumsum().values, color=line.get_color(),
                    linewidth=1.6, label=f"{column} (mean {series.mean():+.4f})")
    top.axhline(0.0, color="black", linewidth=0.6)
    bottom.axhline(0.0, color="black", linewidth=0.6)
    top.set_title("Daily IC of the ensembles (thin: daily, thick: 20-day mean)")
    top.set_ylabel("IC")
    bottom.set_title("Cumulative IC")
    bottom.set_ylabel("cumulative IC")
    bottom.set_xlabel("date")
    top.legend(loc="upper left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
