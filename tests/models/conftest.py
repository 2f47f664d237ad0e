"""A small synthetic-market dataset, built from a Qlib-shaped cfg, shared by model tests."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from taskroll.data import DatasetH
from taskroll.task.spec import init_instance_by_config

MARKET = {"seed": 1, "n_instruments": 80, "start": "2016-01-01", "end": "2019-12-31"}
DATASET_CFG = {
    "class": "DatasetH", "module_path": "taskroll.data.dataset",
    "kwargs": {
        "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                    "kwargs": {"start_time": "2016-01-01", "end_time": "2019-12-31",
                               "fit_start_time": "2016-01-01", "fit_end_time": "2017-12-31",
                               "instruments": "all",
                               "data_loader": {"class": "SyntheticLoader",
                                               "module_path": "taskroll.data.loader",
                                               "kwargs": MARKET}}},
        "segments": {"train": ("2016-01-01", "2017-12-31"),
                     "valid": ("2018-01-01", "2018-12-31"),
                     "test": ("2019-01-01", "2019-12-31")},
    },
}


@pytest.fixture(scope="session")
def market_dataset() -> DatasetH:
    dataset = init_instance_by_config(DATASET_CFG)
    assert isinstance(dataset, DatasetH)
    return dataset


@pytest.fixture(scope="session")
def information_coefficient() -> Callable[[pd.Series, DatasetH], float]:
    """Mean daily Spearman correlation of scores with the raw test label."""

    def compute(scores: pd.Series, dataset: DatasetH) -> float:
        label = dataset.prepare("test", col_set="label", data_key="raw")["LABEL0"]
        joined = pd.concat([scores, label], axis=1).dropna()
        daily = joined.groupby(level="datetime").apply(
            lambda day: day["score"].corr(day["LABEL0"], method="spearman"))
        return float(daily.mean())

    return compute
