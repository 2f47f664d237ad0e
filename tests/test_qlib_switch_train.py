"""A Qlib user's trainer and collector calls, as Qlib 0.9.7 answers them.

``qlib/model/trainer.py`` (``task_train`` with no experiment or recorder name) and
``qlib/workflow/task/collect.py`` (``RecorderCollector`` with ``status=None`` or an
experiment that does not exist yet). Real MLflow SQLite stores and a real training.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskroll.collect import RecorderCollector
from taskroll.config import Settings
from taskroll.data import SyntheticMarket
from taskroll.train.experiment import DEFAULT_EXPERIMENT_NAME, R
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import TrainerR


@pytest.fixture(autouse=True)
def no_active_run() -> Iterator[None]:
    """Each test starts and ends without an active run (the facade is process-wide)."""
    R.end_exp()
    yield
    R.end_exp()


def _task(path: Path) -> dict[str, Any]:
    handler = {"class": "Alpha158", "module_path": "taskroll.data.handler",
               "kwargs": {"start_time": "2019-01-01", "end_time": "2019-12-31",
                          "fit_start_time": "2019-01-01", "fit_end_time": "2019-06-28",
                          "instruments": "all", "windows": [5],
                          "data_loader": {"class": "FileLoader",
                                          "module_path": "taskroll.data.loader",
                                          "kwargs": {"path": str(path)}}}}
    return {"model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                      "kwargs": {"alpha": 1.0}},
            "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                        "kwargs": {"handler": handler,
                                   "segments": {"train": ["2019-01-01", "2019-06-28"],
                                                "valid": ["2019-07-01", "2019-09-30"],
                                                "test": ["2019-10-08", "2019-12-31"]}}},
            "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                        "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}]}


def test_trainer_without_names_uses_qlibs_default_experiment_and_run_name(
        isolated_settings: Settings, tmp_path: Path) -> None:
    market = SyntheticMarket(seed=3, n_instruments=6, start="2019-01-01", end="2019-12-31")
    path = market.save(tmp_path / "bars.parquet")
    recorders = TrainerR().train(_task(path))
    assert len(recorders) == 1
    recorder = recorders[0]
    default = R.get_exp(experiment_name=DEFAULT_EXPERIMENT_NAME, create=False)
    assert recorder.experiment_id == default.id
    assert recorder.name == "mlflow_recorder"
    assert recorder.status == Recorder.STATUS_FINISHED
    assert recorder.load_object("pred.pkl").shape[0] > 0


def _run(experiment: str, status: str, value: int) -> Recorder:
    with R.start(experiment_name=experiment, recorder_name=f"{status}{value}") as recorder:
        R.save_objects(**{"pred.pkl": value})
    if status != Recorder.STATUS_FINISHED:
        recorder.end_run(status)
    return recorder


def test_collector_with_status_none_collects_every_status(isolated_settings: Settings) -> None:
    finished = _run("statuses", Recorder.STATUS_FINISHED, 1)
    failed = _run("statuses", Recorder.STATUS_FAILED, 2)
    assert RecorderCollector("statuses").collect()["pred"] == {finished.id: 1}
    every = RecorderCollector("statuses", status=None).collect()["pred"]
    assert every == {finished.id: 1, failed.id: 2}


def test_collector_of_an_experiment_not_made_yet_collects_nothing(
        isolated_settings: Settings) -> None:
    assert RecorderCollector("not_made_yet").collect() == {}
    assert RecorderCollector("not_made_yet").get_exp_name() == "not_made_yet"
