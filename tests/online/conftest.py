"""Fixtures of the online tests: a small synthetic market and a Qlib-style rolling template."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import taskroll
from taskroll import config
from taskroll.data import SyntheticMarket

from ..conftest import clear_taskroll_environment

BEGIN = pd.Timestamp("2019-08-01")
STEP = 20


@pytest.fixture(scope="session")
def online_market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DatetimeIndex]:
    """30 instruments, 2018-01..2020-03, saved as Parquet; returns (path, calendar)."""
    market = SyntheticMarket(seed=7, n_instruments=30, start="2018-01-01", end="2020-03-31")
    path = market.save(tmp_path_factory.mktemp("online_market") / "bars.parquet")
    return path, pd.DatetimeIndex(market.calendar)


def make_template(path: Path | str) -> dict[str, Any]:
    """A rolling template: train 2018-01..2019-03, valid 2019-04..06, test from 2019-07-01."""
    return {
        "model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                  "kwargs": {"alpha": 1.0}},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": "2018-01-01", "end_time": "2019-07-31",
                                       "fit_start_time": "2018-01-01",
                                       "fit_end_time": "2019-03-29", "instruments": "all",
                                       "windows": [5, 10],
                                       "data_loader": {"class": "FileLoader",
                                                       "module_path": "taskroll.data.loader",
                                                       "kwargs": {"path": str(path)}}}},
                "segments": {"train": ("2018-01-01", "2019-03-29"),
                             "valid": ("2019-04-01", "2019-06-28"),
                             "test": ("2019-07-01", None)},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }


@pytest.fixture(scope="session")
def online_template(online_market: tuple[Path, pd.DatetimeIndex]
                    ) -> Callable[[], dict[str, Any]]:
    """Factory of fresh copies of the rolling template over the session's market."""
    template = make_template(online_market[0])
    return lambda: copy.deepcopy(template)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[config.Settings]:
    """Like ``isolated_settings`` but shared by a module (one MLflow store, one pool)."""
    root = tmp_path_factory.mktemp("online_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config._SettingsHolder, "current", config.Settings())
        clear_taskroll_environment(patch)
        yield taskroll.init(task_url=f"sqlite:///{root / 'tasks.db'}",
                            tracking_uri=f"sqlite:///{root / 'mlruns.db'}")


def trained_per_window(experiment: str) -> dict[str, int]:
    """Trained models per window of an experiment (one each when nothing was retrained)."""
    from taskroll.online.models import list_models

    counts: dict[str, int] = {}
    for model in list_models(experiment):
        if model.trained:
            counts[model.window] = counts.get(model.window, 0) + 1
    return counts
