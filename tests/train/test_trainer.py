"""task_train and the trainers on a small synthetic market, real MLflow and a real SQLite pool."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.data import Alpha158, SyntheticMarket
from taskroll.data.quality import DataQualityReport
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager
from taskroll.store.references import RecorderReference
from taskroll.task.gen import RollingGen, task_generator
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import (
    DelayTrainerR,
    DelayTrainerRM,
    TrainerR,
    TrainerRM,
    task_train,
)


class QualityAlpha158(Alpha158):
    """Alpha158 with a ``quality_report()`` (until ``DataHandlerLP`` has its own)."""

    def quality_report(self) -> DataQualityReport | None:
        return self.data_loader.quality_report()


class BrokenQualityAlpha158(Alpha158):
    """Alpha158 whose quality report fails."""

    def quality_report(self) -> DataQualityReport | None:
        raise RuntimeError("no report today")


@pytest.fixture(scope="module")
def market_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DatetimeIndex]:
    market = SyntheticMarket(seed=3, n_instruments=30, start="2018-01-01", end="2020-06-30")
    path = market.save(tmp_path_factory.mktemp("market") / "bars.parquet")
    return path, market.calendar


def qlib_style_task(path: Path, model: str = "LinearModel") -> dict[str, Any]:
    """A task dict in Qlib's shape: class / module_path / kwargs and dataset segments."""
    module = "taskroll.models.linear" if model == "LinearModel" else "taskroll.models.gbdt"
    kwargs: dict[str, Any] = {"alpha": 1.0} if model == "LinearModel" else {"num_boost_round": 20}
    return {
        "model": {"class": model, "module_path": module, "kwargs": kwargs},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": "2018-01-01", "end_time": "2020-03-31",
                                       "fit_start_time": "2018-01-01",
                                       "fit_end_time": "2019-06-30", "instruments": "all",
                                       "windows": [5, 10],
                                       "data_loader": {"class": "FileLoader",
                                                       "module_path": "taskroll.data.loader",
                                                       "kwargs": {"path": str(path)}}}},
                "segments": {"train": ("2018-01-01", "2019-06-30"),
                             "valid": ("2019-07-01", "2019-09-30"),
                             "test": ("2019-10-01", "2020-03-31")},
            },
        },
        "record": [
            {"class": "SignalRecord", "module_path": "taskroll.train.record",
             "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
            {"class": "SigAnaRecord", "module_path": "taskroll.train.record", "kwargs": {}},
        ],
    }


def rolling_tasks(path: Path, calendar: pd.DatetimeIndex) -> list[dict[str, Any]]:
    return task_generator([qlib_style_task(path)], RollingGen(step=65, calendar=calendar))


def predictions(recorders: list[Recorder]) -> list[pd.DataFrame]:
    ordered = sorted(recorders, key=lambda r: str(r.load_object("task")["dataset"]["kwargs"]
                                                  ["segments"]["test"][0]))
    return [recorder.load_object("pred.pkl") for recorder in ordered]


def test_task_train_writes_artifacts_and_metrics(isolated_settings: Settings,
                                                 market_file: tuple[Path, Any]) -> None:
    task = qlib_style_task(market_file[0])
    recorder = task_train(task, experiment_name="single")
    assert recorder.status == "FINISHED"
    artifacts = set(recorder.list_artifacts())
    assert {"task", "params.pkl", "dataset", "pred.pkl", "label.pkl"} <= artifacts
    assert any(name.startswith("sig_analysis") for name in artifacts)
    metrics = recorder.list_metrics()
    assert {"IC", "ICIR", "Rank IC", "Rank ICIR"} <= set(metrics)
    assert -1.0 <= metrics["IC"] <= 1.0
    pred = recorder.load_object("pred.pkl")
    dates = pred.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2019-10-01") and dates.max() <= pd.Timestamp("2020-03-31")
    assert recorder.load_object("task") == task
    assert recorder.load_object("params.pkl").predict is not None


def test_bad_task_fails_the_run_with_a_clear_error(isolated_settings: Settings,
                                                   market_file: tuple[Path, Any]) -> None:
    task = qlib_style_task(market_file[0])
    task["model"]["class"] = "NoSuchModel"
    with pytest.raises(TaskConfigError, match=r"task\.model.*NoSuchModel"):
        task_train(task, experiment_name="broken")
    runs = R.list_recorders("broken", rtype="list")
    assert [run.status for run in runs] == ["FAILED"]


def test_rolling_tasks_through_trainers_agree(isolated_settings: Settings,
                                              market_file: tuple[Path, Any]) -> None:
    tasks = rolling_tasks(*market_file)
    assert len(tasks) == 2
    local = TrainerR(experiment_name="local")
    local_recorders = local.end_train(local.train(copy.deepcopy(tasks)))
    assert all(r.list_tags()["train_status"] == "end_task_train" for r in local_recorders)

    pooled = TrainerRM(experiment_name="pooled", task_pool="pooled_pool")
    pooled_recorders = pooled.end_train(pooled.train(copy.deepcopy(tasks)))
    with TaskManager("pooled_pool") as manager:
        assert manager.task_stat() == {"done": 2}
        stored = [task["res"] for task in manager.query()]
        # the pool holds inert references; the train layer makes them live
        assert all(isinstance(reference, RecorderReference) for reference in stored)
        assert {Recorder.from_reference(reference) for reference in stored} == set(
            pooled_recorders)
    tags = pooled_recorders[0].list_tags()
    assert tags["train_status"] == "end_task_train" and tags[TrainerRM.TM_ID]

    for mine, theirs in zip(predictions(local_recorders), predictions(pooled_recorders),
                            strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
    # training the same tasks again reuses the pool's finished work
    assert {r.id for r in pooled.train(copy.deepcopy(tasks))} == {r.id for r in pooled_recorders}


def test_delayed_trainers(isolated_settings: Settings, market_file: tuple[Path, Any]) -> None:
    tasks = rolling_tasks(*market_file)
    delayed = DelayTrainerR(experiment_name="delayed")
    prepared = delayed.train(copy.deepcopy(tasks))
    assert all("pred.pkl" not in r.list_artifacts() for r in prepared)
    finished = delayed.end_train(prepared)
    assert all("pred.pkl" in r.list_artifacts() for r in finished)

    pooled = DelayTrainerRM(experiment_name="delayed_pool")
    prepared = pooled.train(copy.deepcopy(tasks))
    with TaskManager("delayed_pool") as manager:
        assert manager.task_stat() == {"part_done": 2}
        finished = pooled.end_train(prepared)
        assert manager.task_stat() == {"done": 2}
    assert all("pred.pkl" in r.list_artifacts() for r in finished)
    for mine, theirs in zip(predictions(finished), predictions(delayed.end_train(prepared)),
                            strict=True):
        assert mine.shape == theirs.shape


def test_pool_worker_shares_the_work(isolated_settings: Settings,
                                     market_file: tuple[Path, Any]) -> None:
    tasks = rolling_tasks(*market_file)
    storing = TrainerRM(experiment_name="shared", skip_run_task=True)
    with TaskManager("shared") as manager:
        manager.create_task(tasks)
    TrainerRM(experiment_name="shared").worker()
    recorders = storing.train(tasks)
    assert len(recorders) == 2 and all(r.status == "FINISHED" for r in recorders)


def read_artifact_text(recorder: Recorder, name: str, folder: Path) -> str:
    path = recorder.client.download_artifacts(recorder.id, name, str(folder))
    return Path(path).read_text(encoding="utf-8")


def test_task_train_logs_the_data_quality_report(isolated_settings: Settings,
                                                 tmp_path: Path) -> None:
    market = SyntheticMarket(seed=4, n_instruments=20, start="2018-01-01", end="2020-06-30",
                             bad_bar_rate=0.005, duplicate_rows=3)
    path = market.save(tmp_path / "dirty.parquet")
    task = qlib_style_task(path)
    handler_class = Alpha158 if callable(getattr(Alpha158, "quality_report", None)) \
        else QualityAlpha158
    task["dataset"]["kwargs"]["handler"]["class"] = handler_class
    recorder = task_train(task, experiment_name="quality")
    assert recorder.status == "FINISHED"
    assert "data_quality.json" in recorder.list_artifacts()
    report = json.loads(read_artifact_text(recorder, "data_quality.json", tmp_path / "download"))
    assert report["duplicated_rows"] == 3
    assert report["invalid_price_bars"] + report["zero_volume_bars"] == round(
        0.005 * report["rows"])
    assert report["instruments"] == 20 and report["suspended_days"] > 0
    assert {"constant_features", "all_nan_features"} <= set(report)
    # the dirty bars reach no prediction as inf
    pred = recorder.load_object("pred.pkl")
    assert pd.api.types.is_numeric_dtype(pred.iloc[:, 0])
    assert not pred.isin([float("inf"), float("-inf")]).any().any()


def test_a_failing_quality_report_does_not_fail_the_training(
        isolated_settings: Settings, market_file: tuple[Path, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    task = qlib_style_task(market_file[0])
    task["dataset"]["kwargs"]["handler"]["class"] = BrokenQualityAlpha158
    with caplog.at_level(logging.WARNING, logger="taskroll.train.trainer"):
        recorder = task_train(task, experiment_name="quality_broken")
    assert recorder.status == "FINISHED"
    assert "data_quality.json" not in recorder.list_artifacts()
    assert "pred.pkl" in recorder.list_artifacts()
    assert any("data_quality.json" in record.getMessage() and "no report today"
               in record.getMessage() for record in caplog.records)
