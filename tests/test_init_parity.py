"""``taskroll.init`` takes Qlib's settings (provider_uri, region, mongo) and refuses the rest.

Every refused call must change neither the settings nor the environment.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import taskroll
from taskroll import config
from taskroll.data import SyntheticMarket, write_qlib_data
from taskroll.errors import TaskConfigError
from taskroll.task.calendar import TimeAdjuster, load_calendar

MARKET_MEMBERS = ["SH600000", "SH600002", "SH600004", ("SH600003", "2019-01-01", "2019-12-31")]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight instruments in Qlib's layout, with a ``csi300`` market of four of them."""
    bars = SyntheticMarket(seed=11, n_instruments=8, start="2018-01-01",
                           end="2020-06-30").bars()
    return write_qlib_data(bars, tmp_path_factory.mktemp("qlib") / "cn_data",
                           markets={"csi300": MARKET_MEMBERS})


@pytest.fixture(autouse=True)
def restored_data_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove, after the test, the data settings ``init`` exports (setenv records that they
    were absent; delenv of an absent name records nothing)."""
    for name in ("TASKROLL_PROVIDER_URI", "TASKROLL_REGION"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def taskroll_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("TASKROLL_")}


def test_provider_uri_is_qlibs_name_and_exported(isolated_settings: config.Settings,
                                                 provider: Path) -> None:
    settings = taskroll.init(provider_uri=str(provider))
    assert settings.provider_uri == str(provider.resolve())
    assert os.environ["TASKROLL_PROVIDER_URI"] == str(provider.resolve())
    assert config._from_environment().provider_uri == str(provider.resolve())
    # a later init without it keeps it, as every other setting
    assert taskroll.init(max_attempts=5).provider_uri == str(provider.resolve())
    # Qlib's per-frequency form, daily data only
    assert taskroll.init(provider_uri={"day": str(provider)}).provider_uri == str(
        provider.resolve())


def test_mongo_is_qlibs_task_store_setting(isolated_settings: config.Settings) -> None:
    settings = taskroll.init(mongo={"task_url": "mongodb://localhost:27017/",
                                    "task_db_name": "rolling_db"})
    assert (settings.task_url, settings.task_db_name) == ("mongodb://localhost:27017/",
                                                          "rolling_db")
    assert os.environ["TASKROLL_TASK_DB_NAME"] == "rolling_db"
    same = taskroll.init(task_url="mongodb://localhost:27017/",
                         mongo={"task_url": "mongodb://localhost:27017/"})
    assert same.task_url == "mongodb://localhost:27017/"


@pytest.mark.parametrize("region", ["cn", "us", "CN"])
def test_region_chooses_the_default_calendar_without_data(isolated_settings: config.Settings,
                                                          region: str) -> None:
    settings = taskroll.init(region=region)
    assert settings.region == region.lower() and os.environ["TASKROLL_REGION"] == region.lower()
    exchange = {"cn": "XSHG", "us": "XNYS"}[region.lower()]
    assert TimeAdjuster().cals.equals(load_calendar(exchange))


def test_data_wins_over_region_for_the_calendar(isolated_settings: config.Settings,
                                                provider: Path) -> None:
    taskroll.init(region="cn", provider_uri=provider)
    assert TimeAdjuster().cals.equals(load_calendar(provider / "calendars" / "day.txt"))


def test_settings_keep_no_catch_all() -> None:
    assert not hasattr(config.Settings(), "extra")


@pytest.mark.parametrize(("arguments", "message"), [
    ({"provider_uri": "/no/such/folder"}, r"provider_uri '/no/such/folder'.*does not exist"),
    ({"provider_uri": 3}, "provider_uri must be a Qlib data folder path"),
    ({"provider_uri": {"1min": "/x"}}, r"a dict needs exactly the key 'day', got \['1min'\]"),
    ({"provider_uri": "EMPTY"}, r"not a Qlib data folder \(calendars/day.txt is missing\)"),
    ({"region": "tw"}, r"region must be one of \['cn', 'us'\].*'tw'"),
    ({"mongo": {"task_url": "mongodb://a", "db": "x"}}, r"mongo: unknown key\(s\) \['db'\]"),
    ({"mongo": "mongodb://a"}, "mongo must be a dict"),
    ({"mongo": {"task_url": ""}}, r"mongo\['task_url'\] must be non-empty text"),
    ({"task_url": "sqlite:///a.db", "mongo": {"task_url": "mongodb://a"}},
     "task_url is given twice with different values"),
    ({"task_db_name": "one", "mongo": {"task_db_name": "two"}},
     "task_db_name is given twice"),
    ({"provider_url": "/x"}, r"unknown keyword\(s\) 'provider_url' \(did you mean 'provider_uri'"),
    ({"trackng_uri": "sqlite:///x.db"}, r"'trackng_uri' \(did you mean 'tracking_uri'\?\)"),
    ({"exp_manager": {"class": "MLflowExpManager"}}, r"'exp_manager'.*tracking_uri="),
    ({"zzz": 1, "kernels": 4}, r"'kernels' \(a qlib.init keyword.*'zzz'"),
    ({"lease_seconds": 0, "provider_uri": "EMPTY"}, "lease_seconds"),
])
def test_bad_init_arguments_raise_and_change_nothing(isolated_settings: config.Settings,
                                                     tmp_path: Path, arguments: dict[str, Any],
                                                     message: str) -> None:
    if arguments.get("provider_uri") == "EMPTY":
        (tmp_path / "empty").mkdir()
        arguments = {**arguments, "provider_uri": tmp_path / "empty"}
    environment = taskroll_environment()
    with pytest.raises(TaskConfigError, match=message):
        taskroll.init(**arguments)
    assert config.get_settings() == isolated_settings
    assert taskroll_environment() == environment


def qlib_documentation_task(instruments: Any = "csi300") -> dict[str, Any]:
    """A task dict as Qlib's documentation writes one: Qlib's module paths and path
    placeholders, and a handler with no data_loader (the data come from provider_uri)."""
    return {
        "model": {"class": "LinearModel", "module_path": "qlib.contrib.model.linear",
                  "kwargs": {"estimator": "ridge", "alpha": 1.0}},
        "dataset": {
            "class": "DatasetH", "module_path": "qlib.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "qlib.contrib.data.handler",
                            "kwargs": {"start_time": "2018-01-01", "end_time": "2020-06-30",
                                       "fit_start_time": "<dataset.kwargs.segments.train.0>",
                                       "fit_end_time": "<dataset.kwargs.segments.train.1>",
                                       "instruments": instruments}},
                "segments": {"train": ("2018-01-01", "2019-06-30"),
                             "valid": ("2019-07-01", "2019-12-31"),
                             "test": ("2020-01-01", "2020-06-30")},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }


def test_a_documentation_task_trains_on_the_provider(isolated_settings: config.Settings,
                                                     provider: Path) -> None:
    with pytest.raises(taskroll.DataError, match="provider_uri"):
        taskroll.task_train(qlib_documentation_task(), experiment_name="no_data")
    taskroll.init(provider_uri=provider)
    recorder = taskroll.task_train(qlib_documentation_task(), experiment_name="qlib_data")
    assert recorder.status == "FINISHED"
    pred = recorder.load_object("pred.pkl")
    dates = pred.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2020-01-01") and dates.max() <= pd.Timestamp("2020-06-30")
    # csi300 here: three members for life; SH600003 trades in 2020 but is a member only in
    # 2019; the four others trade but are not members
    assert set(pred.index.get_level_values("instrument")) == {"SH600000", "SH600002",
                                                              "SH600004"}
    assert pred.notna().all().all()


def test_trainers_and_a_worker_process_train_on_the_provider(
        isolated_settings: config.Settings, provider: Path) -> None:
    """TrainerR in-process; TrainerRM's tasks run by a worker process that gets the data
    folder only through the environment ``init`` exported."""
    taskroll.init(provider_uri=provider)
    generator = taskroll.RollingGen(step=60)  # no calendar given: the data's
    tasks = taskroll.task_generator([qlib_documentation_task()], generator)
    assert len(tasks) == 3
    local = taskroll.TrainerR(experiment_name="local")
    local_recorders = local.end_train(local.train(copy.deepcopy(tasks)))
    storing = taskroll.TrainerRM(experiment_name="pooled", task_pool="pool",
                                 skip_run_task=True)
    with taskroll.TaskManager("pool") as manager:
        manager.create_task(copy.deepcopy(tasks))
    code = ("import taskroll; "
            "taskroll.TrainerRM(experiment_name='pooled', task_pool='pool').worker()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[1])
    pooled_recorders = storing.train(copy.deepcopy(tasks))

    def predictions(recorders: list[Any]) -> list[pd.DataFrame]:
        ordered = sorted(recorders, key=lambda recorder: str(
            recorder.load_object("task")["dataset"]["kwargs"]["segments"]["test"][0]))
        return [recorder.load_object("pred.pkl") for recorder in ordered]

    for mine, theirs in zip(predictions(local_recorders), predictions(pooled_recorders),
                            strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
        assert set(mine.index.get_level_values("instrument")) <= {"SH600000", "SH600002",
                                                                  "SH600004"}


def test_bad_environment_values_are_reported_when_used(isolated_settings: config.Settings,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """As the other settings: kept as text at import, a clear error where they are used."""
    monkeypatch.setenv("TASKROLL_PROVIDER_URI", str(tmp_path / "gone"))
    monkeypatch.setattr(config._SettingsHolder, "current", config._from_environment())
    with pytest.raises(taskroll.DataError, match=r"gone does not exist.*provider_uri"):
        taskroll.task_train(qlib_documentation_task(), experiment_name="gone")
    with pytest.raises(taskroll.CalendarError, match=r"has no calendars/day\.txt"):
        TimeAdjuster()
    monkeypatch.delenv("TASKROLL_PROVIDER_URI")
    monkeypatch.setenv("TASKROLL_REGION", "mars")
    monkeypatch.setattr(config._SettingsHolder, "current", config._from_environment())
    with pytest.raises(taskroll.CalendarError, match="TASKROLL_REGION must be one of"):
        TimeAdjuster()
