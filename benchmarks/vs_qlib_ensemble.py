"""The ensemble rows of ``vs_qlib.py``: RollingEnsemble and AverageEnsemble, both libraries.

Parameters (``params``): ``models``, ``instruments``, ``days`` and ``output`` (a folder
where each side writes its two results, ``<library>_rolling.pkl`` and
``<library>_average.pkl``, for :func:`compare`).

The inputs are what Qlib's collectors hand to the ensembles (``RecorderCollector`` with
``RollingGroup`` and a ``(model, test segment)`` key): for RollingEnsemble
``{(test start, test end): pred}`` where model ``k`` predicts its block of days and the
next one (50% overlap: the newest must win); for AverageEnsemble ``{model name: pred}``,
every model predicting every day. A ``pred`` is Qlib's ``pred.pkl``: a frame with one
``score`` column indexed by ``(datetime, instrument)``. Both sides build the same inputs
from the same seeds; only the ensemble call is timed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vs_qlib_side import timed

Segment = tuple[pd.Timestamp, pd.Timestamp]


def _index(dates: pd.DatetimeIndex, instruments: list[str]) -> pd.MultiIndex:
    return pd.MultiIndex.from_product([dates, instruments], names=["datetime", "instrument"])


def make_inputs(models: int, instruments: int, days: int) -> tuple[dict[Segment, pd.DataFrame],
                                                                  dict[str, pd.DataFrame]]:
    """Return the RollingEnsemble and AverageEnsemble inputs (fixed seeds).

    Args:
        models: Number of models (rolling windows, and averaged models).
        instruments: Instruments per day.
        days: Business days from 2018-01-01.

    Returns:
        ``({(test start, test end): pred}, {model name: pred})``.
    """
    names = [f"SH{number:06d}" for number in range(instruments)]
    dates = pd.bdate_range("2018-01-01", periods=days)
    generator = np.random.default_rng(2)
    block = max(len(dates) // models, 1)
    rolling: dict[Segment, pd.DataFrame] = {}
    for number in range(models):
        covered = dates[number * block:(number + 2) * block]
        index = _index(covered, names)
        rolling[(covered[0], covered[-1])] = pd.DataFrame(
            {"score": generator.standard_normal(len(index))}, index=index)
    generator = np.random.default_rng(1)
    index = _index(dates, names)
    average = {f"model{number}": pd.DataFrame({"score": generator.standard_normal(len(index))},
                                              index=index) for number in range(models)}
    return rolling, average


def _measure(library: str, params: dict[str, Any], rolling_ensemble: Any,
             average_ensemble: Any) -> dict[str, Any]:
    rolling, average = make_inputs(int(params["models"]), int(params["instruments"]),
                                   int(params["days"]))
    rolling_seconds, rolling_result = timed(lambda: rolling_ensemble()(rolling))
    average_seconds, average_result = timed(lambda: average_ensemble()(average))
    output = Path(params["output"])
    rolling_result.to_pickle(output / f"{library}_rolling.pkl")
    average_result.to_pickle(output / f"{library}_average.pkl")
    return {"rolling": rolling_seconds, "average": average_seconds,
            "rolling_rows": sum(len(frame) for frame in rolling.values()),
            "average_rows": sum(len(frame) for frame in average.values())}


def run_qlib(params: dict[str, Any]) -> dict[str, Any]:
    """Time Qlib's ``qlib.model.ens.ensemble`` classes."""
    import qlib
    from qlib.model.ens.ensemble import AverageEnsemble, RollingEnsemble

    qlib.init(logging_level=logging.WARNING)
    return _measure("qlib", params, RollingEnsemble, AverageEnsemble)


def run_taskroll(params: dict[str, Any]) -> dict[str, Any]:
    """Time taskroll's ``taskroll.collect`` classes."""
    from taskroll.collect import AverageEnsemble, RollingEnsemble

    return _measure("taskroll", params, RollingEnsemble, AverageEnsemble)


def compare(output: Path, kind: str) -> str:
    """Compare the two sides' results of ``kind`` (``rolling``/``average``); return a verdict.

    ``assert_frame_equal``/``assert_series_equal`` with ``check_exact=True``; Qlib's
    AverageEnsemble returns an unnamed Series where taskroll names it ``score``, so the
    name is set before comparing. When not exactly equal, the verdict gives the largest
    absolute difference, ``close`` when it is at most 1e-12 with NaN in the same places
    (or the assertion's first line when the shapes or indexes differ).
    """
    mine = pd.read_pickle(output / f"taskroll_{kind}.pkl")
    theirs = pd.read_pickle(output / f"qlib_{kind}.pkl")
    if isinstance(mine, pd.Series) and isinstance(theirs, pd.Series):
        theirs = theirs.copy()
        theirs.name = mine.name
    try:
        if isinstance(mine, pd.Series):
            pd.testing.assert_series_equal(mine, theirs, check_exact=True)
        else:
            pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    except AssertionError as error:
        if mine.shape == theirs.shape and mine.index.equals(theirs.index):
            left, right = np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float)
            same_missing = bool(np.array_equal(np.isnan(left), np.isnan(right)))
            difference = float(np.nanmax(np.abs(left - right)))
            close = same_missing and difference <= 1e-12
            return (f"{'close' if close else 'DIFFERENT'}, not bit-exact: max |diff| "
                    f"{difference:.1e}{'' if same_missing else ', NaN positions differ'}")
        return "DIFFERENT: " + str(error).strip().splitlines()[0]
    return "equal (exact)"
