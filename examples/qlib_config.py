"""Task configs in Qlib's own shape (``qlib/tests/config.py``), and demo data in Qlib's layout.

The task dicts name Qlib's modules (``qlib.contrib.model.gbdt``, ``qlib.data.dataset``,
``qlib.workflow.record_temp``, ...) and Qlib's path placeholders
(``<dataset.kwargs.segments.train.0>``): taskroll serves them with its own classes when
Qlib is not installed. Differences from Qlib's file: ``LinearModel`` stands in for
``XGBModel`` (taskroll has no XGBoost model), the dates fit the demo market, and the
LightGBM settings are sized for a small machine.

:func:`demo_provider` writes a synthetic market in Qlib's binary layout
(``calendars/day.txt``, ``instruments/*.txt``, ``features/<name>/<field>.day.bin``), so
the examples run anywhere; point ``--provider-uri`` at a real Qlib data folder
(e.g. ``~/.qlib/qlib_data/cn_data``) to run them on market data.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

CSI100_MARKET = "csi100"
CSI100_BENCH = "SH000903"  # the benchmark instrument written in the demo data

GBDT_MODEL = {
    "class": "LGBModel",
    "module_path": "qlib.contrib.model.gbdt",
    "kwargs": {"loss": "mse", "colsample_bytree": 0.8879, "learning_rate": 0.0421,
               "subsample": 0.8789, "lambda_l1": 205.6999, "lambda_l2": 580.9768,
               "max_depth": 8, "num_leaves": 31, "num_threads": 2,
               "num_boost_round": 200, "early_stopping_rounds": 20},
}
LINEAR_MODEL = {"class": "LinearModel", "module_path": "qlib.contrib.model.linear",
                "kwargs": {"estimator": "ridge", "alpha": 0.05}}
RECORD_CONFIG = [
    {"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
     "kwargs": {"dataset": "<DATASET>", "model": "<MODEL>"}},
    {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp"},
]


def dataset_config(train: tuple[str, str], valid: tuple[str, str], test: tuple[Any, Any],
                   start_time: str, end_time: str,
                   instruments: str = CSI100_MARKET) -> dict[str, Any]:
    """Qlib's ``get_dataset_config``: DatasetH over Alpha158, fit range = the train segment."""
    return {
        "class": "DatasetH",
        "module_path": "qlib.data.dataset",
        "kwargs": {
            "handler": {
                "class": "Alpha158",
                "module_path": "qlib.contrib.data.handler",
                "kwargs": {"start_time": start_time, "end_time": end_time,
                           "fit_start_time": "<dataset.kwargs.segments.train.0>",
                           "fit_end_time": "<dataset.kwargs.segments.train.1>",
                           "instruments": instruments},
            },
            "segments": {"train": train, "valid": valid, "test": test},
        },
    }


def record_task(model: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """A task with Qlib's records (SignalRecord, SigAnaRecord)."""
    return {"model": copy.deepcopy(model), "dataset": copy.deepcopy(dataset),
            "record": copy.deepcopy(RECORD_CONFIG)}


# task_manager_rolling.py: CSI100_RECORD_*_TASK_CONFIG
ROLLING_DATASET = dataset_config(train=("2016-01-01", "2017-12-31"),
                                 valid=("2018-01-01", "2018-06-29"),
                                 test=("2018-07-02", "2019-06-28"),
                                 start_time="2016-01-01", end_time="2019-06-28")
CSI100_RECORD_LGB_TASK_CONFIG = record_task(GBDT_MODEL, ROLLING_DATASET)
CSI100_RECORD_LINEAR_TASK_CONFIG = record_task(LINEAR_MODEL, ROLLING_DATASET)

# online_management_simulate.py and rolling_online_management.py: *_TASK_CONFIG_ONLINE
ONLINE_DATASET = dataset_config(train=("2016-01-01", "2018-06-29"),
                                valid=("2018-07-02", "2018-12-28"),
                                test=("2019-01-02", None),
                                start_time="2016-01-01", end_time="2019-12-31")
CSI100_RECORD_LGB_TASK_CONFIG_ONLINE = record_task(GBDT_MODEL, ONLINE_DATASET)
CSI100_RECORD_LINEAR_TASK_CONFIG_ONLINE = record_task(LINEAR_MODEL, ONLINE_DATASET)


def demo_provider(folder: str | Path, instruments: int = 60, seed: int = 0) -> Path:
    """Write a synthetic market, 2016-2019, in Qlib's layout (once); return the folder.

    ``instruments/csi100.txt`` holds two thirds of the names (one of them listed only
    from 2017), and :data:`CSI100_BENCH` is written as an index-like instrument.
    """
    target = Path(folder).expanduser()
    if (target / "calendars" / "day.txt").exists():
        return target
    import pandas as pd

    from taskroll.data import SyntheticMarket, write_qlib_data

    market = SyntheticMarket(seed=seed, n_instruments=instruments, start="2016-01-01",
                             end="2019-12-31")
    bars = market.bars()
    names = sorted(bars.index.get_level_values("instrument").unique())
    index = bars.groupby(level="datetime").mean()  # an equal-weight index as benchmark
    index = index.assign(instrument=CSI100_BENCH).set_index("instrument", append=True)
    bars = pd.concat([bars, index]).sort_index()
    members: list[Any] = list(names[: 2 * len(names) // 3])
    members[-1] = (members[-1], "2017-01-03", "2019-12-31")
    return write_qlib_data(bars.sort_index(), target, markets={CSI100_MARKET: members})
