"""Benchmark RollingEnsemble and AverageEnsemble against naive reference implementations.

Synthetic random predictions: by default 20 models x 300 instruments x 1,000 days.

* AverageEnsemble: every model predicts every day (20 x 300,000 rows); the
  reference z-scores and averages one date at a time in a Python loop.
* RollingEnsemble: model ``k`` is trained for the ``k``-th block of 50 days and
  predicts that block plus the next one (50% overlap, the newest must win); the
  reference merges model after model into a Python dict.

Both references are checked to give the same answer. Run::

    python benchmarks/ensemble.py [--models 20 --instruments 300 --days 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskroll.collect.ensemble import AverageEnsemble, RollingEnsemble


def _index(dates: pd.DatetimeIndex, instruments: list[str]) -> pd.MultiIndex:
    return pd.MultiIndex.from_product([dates, instruments], names=["datetime", "instrument"])


def make_average_inputs(models: int, instruments: list[str], dates: pd.DatetimeIndex,
                        seed: int) -> dict[str, pd.DataFrame]:
    """Return ``{model: frame}``, every model predicting every date."""
    rng = np.random.default_rng(seed)
    index = _index(dates, instruments)
    return {f"model{number}": pd.DataFrame({"score": rng.standard_normal(len(index))}, index=index)
            for number in range(models)}


def make_rolling_inputs(models: int, instruments: list[str], dates: pd.DatetimeIndex,
                        seed: int) -> dict[tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame]:
    """Return ``{test_segment: frame}``; each model covers its block and the next one."""
    rng = np.random.default_rng(seed)
    block = len(dates) // models
    inputs: dict[tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame] = {}
    for number in range(models):
        covered = dates[number * block:(number + 2) * block]
        index = _index(covered, instruments)
        inputs[(covered[0], covered[-1])] = pd.DataFrame(
            {"score": rng.standard_normal(len(index))}, index=index)
    return inputs


def naive_average(inputs: dict[str, pd.DataFrame]) -> pd.Series:
    """Reference: z-score and average one date at a time in a Python loop."""
    values = pd.concat(list(inputs.values()), axis=1, ignore_index=True)
    pieces = []
    for date in values.index.get_level_values("datetime").unique():
        block = values.loc[date]
        scored = (block - block.mean()) / block.std()
        averaged = scored.mean(axis=1)
        averaged.index = pd.MultiIndex.from_product([[date], averaged.index],
                                                    names=["datetime", "instrument"])
        pieces.append(averaged)
    return pd.concat(pieces).sort_index().rename("score")


def naive_rolling(inputs: dict[tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame]) -> pd.DataFrame:
    """Reference: merge model after model (oldest first) into a Python dict."""
    merged: dict[tuple[Any, Any], float] = {}
    for segment in sorted(inputs):
        frame = inputs[segment]
        for key, value in zip(frame.index, frame["score"].to_numpy(), strict=True):
            merged[key] = value
    keys = sorted(merged)
    index = pd.MultiIndex.from_tuples(keys, names=["datetime", "instrument"])
    return pd.DataFrame({"score": [merged[key] for key in keys]}, index=index)


def best_time(function: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Return the fastest of ``repeat`` runs and the last result."""
    fastest, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest, result


def main() -> None:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the taskroll version")
    parser.add_argument("--skip-training", action="store_true",
                        help="leave out the 1 vs 2 training workers measurement")
    arguments = parser.parse_args()

    instruments = [f"SH{number:06d}" for number in range(arguments.instruments)]
    dates = pd.bdate_range("2018-01-01", periods=arguments.days)
    average_inputs = make_average_inputs(arguments.models, instruments, dates, seed=1)
    rolling_inputs = make_rolling_inputs(arguments.models, instruments, dates, seed=2)
    average_rows = sum(len(frame) for frame in average_inputs.values())
    rolling_rows = sum(len(frame) for frame in rolling_inputs.values())

    rolling_seconds, rolling = best_time(lambda: RollingEnsemble()(rolling_inputs),
                                         arguments.repeat)
    naive_rolling_seconds, reference = best_time(lambda: naive_rolling(rolling_inputs), 1)
    np.testing.assert_array_equal(rolling["score"].to_numpy(), reference["score"].to_numpy())
    assert rolling.index.equals(reference.index)

    average_seconds, averaged = best_time(lambda: AverageEnsemble()(average_inputs),
                                          arguments.repeat)
    naive_average_seconds, expected = best_time(lambda: naive_average(average_inputs), 1)
    np.testing.assert_allclose(averaged.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)

    print(f"{arguments.models} models x {arguments.instruments} instruments x "
          f"{arguments.days} days; AverageEnsemble input {average_rows:,} rows, "
          f"RollingEnsemble input {rolling_rows:,} rows (50% overlap)")
    header = f"{'operation':<42}{'seconds':>10}{'rows/s':>14}{'vs naive':>10}"
    print(header)
    print("-" * len(header))
    table = [
        ("RollingEnsemble (taskroll, vectorised)", rolling_seconds, rolling_rows,
         naive_rolling_seconds),
        ("RollingEnsemble (naive dict merge)", naive_rolling_seconds, rolling_rows,
         naive_rolling_seconds),
        ("AverageEnsemble (taskroll, vectorised)", average_seconds, average_rows,
         naive_average_seconds),
        ("AverageEnsemble (naive loop over dates)", naive_average_seconds, average_rows,
         naive_average_seconds),
    ]
    for name, seconds, rows, naive_seconds in table:
        print(f"{name:<42}{seconds:>10.3f}{rows / seconds:>14,.0f}"
              f"{naive_seconds / seconds:>9.1f}x")
    if not arguments.skip_training:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import training_workers

        print()
        training_workers.print_rows(training_workers.measure())


if __name__ == "__main__":
    main()
