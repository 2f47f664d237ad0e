"""The end-to-end row of ``vs_qlib.py``: a rolling Alpha158 + LightGBM retrain, both libraries.

:func:`prepare` (taskroll side, once) writes one synthetic market in Qlib's layout with
``taskroll.data.write_qlib_data`` and derives a task template whose ``RollingGen``
expansion gives ``windows`` test windows. Each side then, in a fresh process:

* ``init(provider_uri=FOLDER)`` (``qlib.init``, with ``kernels=threads`` and its MLflow
  store in an SQLite file in the run's folder, as taskroll's default: MLflow 3 refuses
  Qlib's default file store; ``taskroll.init``);
* generates the tasks from the *same* task dict (Qlib's module paths; in ``.venv``, where
  Qlib is not importable, taskroll serves them with its own classes) with its own
  ``RollingGen(step, ROLL_EX)`` and ``task_generator``;
* trains window after window with its own ``TrainerR`` (``train([task])`` then
  ``end_train``), timing each window; ``LGBModel.fit`` is wrapped to time the fitting
  (in both libraries ``fit`` also slices the train and valid data from the handler);
* writes the concatenated test predictions, each window's segments and the raw Alpha158
  features of one day (handler built after the timed part) for :func:`summarise`.

Parameters (``params``): ``provider``, ``template``, ``step``, ``feature_day`` and
``output``. Both sides get the same ``OMP_NUM_THREADS``-style caps from the driver, and
taskroll's on-disk feature cache (``TASKROLL_FEATURE_CACHE``) is a fresh folder per run,
so every run starts cold (within a run, taskroll reuses the features across windows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vs_qlib_side import timed

#: LightGBM settings of Qlib's own benchmark task (``qlib/tests/config.py``), with the
#: thread count set by the driver; the same dict goes to both libraries.
LIGHTGBM_KWARGS: dict[str, Any] = {
    "loss": "mse", "colsample_bytree": 0.8879, "learning_rate": 0.0421, "subsample": 0.8789,
    "lambda_l1": 205.6999, "lambda_l2": 580.9768, "max_depth": 8, "num_leaves": 210,
}
GAP_DAYS = 3
"""Trading days between train end and valid start, and valid end and test start:
Alpha158's label horizon (2) + 1, so taskroll's default label gap cuts nothing and
both libraries generate the same segments."""


def prepare(folder: Path, instruments: int, days: int, windows: int, threads: int,
            boost_rounds: int | None, seed: int = 7) -> dict[str, Any]:
    """Write the market and return the shared parameters (run in the taskroll venv).

    Args:
        folder: Where the Qlib-layout data folder is written.
        instruments: Instruments in the market.
        days: Trading days kept (the first ``days`` of the synthetic calendar).
        windows: Rolling test windows.
        threads: LightGBM ``num_threads``.
        boost_rounds: ``num_boost_round`` (``None``: LightGBM model's default, 1000).
        seed: Seed of the synthetic market.

    Returns:
        ``{"provider", "template", "step", "feature_day", "bars_close"}``; the last is
        the path of a pickled close panel (dates x instruments) for the label of :func:`ic`.
    """
    from taskroll.data import SyntheticMarket, write_qlib_data

    years = days / 240 + 1
    end = pd.Timestamp("2015-01-01") + pd.DateOffset(days=int(years * 366))
    bars = SyntheticMarket(seed=seed, n_instruments=instruments, start="2015-01-01",
                           end=end).bars()
    dates = bars.index.get_level_values("datetime").unique().sort_values()
    if len(dates) < days:
        raise RuntimeError(f"synthetic market has {len(dates)} days, {days} needed")
    calendar = dates[:days]
    bars = bars[bars.index.get_level_values("datetime") <= calendar[-1]]
    provider = write_qlib_data(bars, folder)
    close_path = folder.parent / "close.pkl"
    bars["close"].unstack("instrument").to_pickle(close_path)
    test_start = days * 7 // 12
    step = (days - test_start) // windows
    valid_start = test_start - GAP_DAYS - max(step, 20)
    train_end = valid_start - GAP_DAYS - 1

    def day(position: int) -> str:
        return str(calendar[position].strftime("%Y-%m-%d"))

    kwargs = {**LIGHTGBM_KWARGS, "num_threads": threads}
    if boost_rounds is not None:
        kwargs.update(num_boost_round=boost_rounds, early_stopping_rounds=max(boost_rounds // 5, 1))
    template = {
        "model": {"class": "LGBModel", "module_path": "qlib.contrib.model.gbdt", "kwargs": kwargs},
        "dataset": {
            "class": "DatasetH", "module_path": "qlib.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "qlib.contrib.data.handler",
                            "kwargs": {"start_time": day(0),
                                       "end_time": day(test_start + windows * step - 1),
                                       "fit_start_time": "<dataset.kwargs.segments.train.0>",
                                       "fit_end_time": "<dataset.kwargs.segments.train.1>",
                                       "instruments": "all"}},
                "segments": {"train": [day(0), day(train_end)],
                             "valid": [day(valid_start), day(test_start - GAP_DAYS - 1)],
                             "test": [day(test_start), day(test_start + windows * step - 1)]},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }
    return {"provider": str(provider), "template": template, "step": step,
            "feature_day": day(test_start), "bars_close": str(close_path)}


def _fit_timer(model_class: Any, spent: list[float]) -> None:
    """Wrap ``model_class.fit`` so that each call adds its seconds to ``spent``."""
    original: Callable[..., Any] = model_class.fit

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        seconds, result = timed(lambda: original(self, *args, **kwargs))
        spent.append(seconds)
        return result

    model_class.fit = fit


def _train_windows(library: str, params: dict[str, Any], rolling_gen: Any,
                   task_generator: Callable[..., list[dict[str, Any]]], trainer_class: Any,
                   spent: list[float]) -> dict[str, Any]:
    tasks = task_generator([params["template"]],
                           rolling_gen(step=int(params["step"]), rtype=rolling_gen.ROLL_EX))
    window_seconds: list[float] = []
    segments: list[dict[str, list[str | None]]] = []
    predictions: list[pd.DataFrame] = []
    for number, task in enumerate(tasks):
        trainer = trainer_class(experiment_name=f"vs_qlib_{library}_{number}")

        def train(task: dict[str, Any] = task, trainer: Any = trainer) -> Any:
            return trainer.end_train(trainer.train([task]))

        seconds, recorders = timed(train)
        window_seconds.append(seconds)
        task_segments = task["dataset"]["kwargs"]["segments"]
        segments.append({key: [str(pd.Timestamp(value).date()) if value is not None else None
                               for value in span] for key, span in task_segments.items()})
        predictions.append(recorders[0].load_object("pred.pkl"))
    output = Path(params["output"])
    pd.concat(predictions).sort_index().to_pickle(output / f"{library}_pred.pkl")
    return {"windows": window_seconds, "total": sum(window_seconds), "fit": sum(spent),
            "fits": len(spent), "segments": segments}


def _write_features(library: str, params: dict[str, Any], handler_class: Any,
                    raw_key: str) -> None:
    day = params["feature_day"]
    start = params["template"]["dataset"]["kwargs"]["handler"]["kwargs"]["start_time"]
    handler = handler_class(instruments="all", start_time=start, end_time=day,
                            fit_start_time=start, fit_end_time=day)
    frame = handler.fetch(slice(day, day), col_set="feature", data_key=raw_key)
    frame.to_pickle(Path(params["output"]) / f"{library}_features.pkl")


def run_qlib(params: dict[str, Any]) -> dict[str, Any]:
    """Roll and retrain with Qlib 0.9.7."""
    import qlib

    threads = int(params["template"]["model"]["kwargs"]["num_threads"])
    # MLflow 3 refuses Qlib's default file store; an SQLite file, as taskroll's default
    tracking = f"sqlite:///{Path.cwd() / 'mlruns.db'}"
    qlib.init(provider_uri=params["provider"], region="cn", kernels=threads,
              logging_level=logging.WARNING,
              exp_manager={"class": "MLflowExpManager", "module_path": "qlib.workflow.expm",
                           "kwargs": {"uri": tracking, "default_exp_name": "Experiment"}})
    from qlib.contrib.data.handler import Alpha158
    from qlib.contrib.model.gbdt import LGBModel
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.model.trainer import TrainerR
    from qlib.workflow.task.gen import RollingGen, task_generator

    spent: list[float] = []
    _fit_timer(LGBModel, spent)
    result = _train_windows("qlib", params, RollingGen, task_generator, TrainerR, spent)
    _write_features("qlib", params, Alpha158, DataHandlerLP.DK_R)
    return result


def run_taskroll(params: dict[str, Any]) -> dict[str, Any]:
    """Roll and retrain with taskroll (Qlib's names served by taskroll's classes)."""
    import taskroll
    from taskroll.data.handler import Alpha158, DataHandlerLP
    from taskroll.models.gbdt import LGBModel

    taskroll.init(provider_uri=params["provider"], region="cn")
    spent: list[float] = []
    _fit_timer(LGBModel, spent)
    result = _train_windows("taskroll", params, taskroll.RollingGen, taskroll.task_generator,
                            taskroll.TrainerR, spent)
    _write_features("taskroll", params, Alpha158, DataHandlerLP.DK_R)
    return result


def ic(predictions: pd.DataFrame, close: pd.DataFrame) -> float:
    """Mean daily Pearson IC of ``score`` against Alpha158's label from the written bars.

    The label is ``close[t+2] / close[t+1] - 1`` over the market's trading days (NaN when a
    bar is missing), the same for both libraries' predictions.
    """
    label = pd.Series((close.shift(-2) / close.shift(-1) - 1).stack(), name="label")
    label.index = label.index.set_names(["datetime", "instrument"])
    joined = predictions[["score"]].join(label, how="inner").dropna()
    daily = joined.groupby(level="datetime").apply(
        lambda day: day["score"].corr(day["label"]) if len(day) > 2 else np.nan)
    return float(daily.mean())


def feature_correlation(output: Path) -> str:
    """Per-feature correlation across instruments of the two sides' features on one day."""
    mine = pd.read_pickle(output / "taskroll_features.pkl")
    theirs = pd.read_pickle(output / "qlib_features.pkl")
    mine = mine.droplevel("datetime") if "datetime" in mine.index.names else mine
    theirs = theirs.droplevel("datetime") if "datetime" in theirs.index.names else theirs
    columns = [column for column in mine.columns if column in theirs.columns]
    rows = mine.index.intersection(theirs.index)
    correlations = pd.Series({column: mine.loc[rows, column].astype(float).corr(
        theirs.loc[rows, column].astype(float)) for column in columns}).dropna()
    if correlations.empty:
        return f"no comparable feature ({len(columns)} shared columns, {len(rows)} instruments)"
    return (f"{len(correlations)}/{len(mine.columns)} features on {len(rows)} instruments: "
            f"corr median {correlations.median():.4f}, min {correlations.min():.4f} "
            f"({correlations.idxmin()})")
