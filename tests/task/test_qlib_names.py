"""Qlib task dicts as they are: Qlib's names served by taskroll's classes, Qlib's placeholders."""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import taskroll
from taskroll.config import Settings
from taskroll.data.dataset import DatasetH
from taskroll.data.handler import Alpha158, DataHandlerLP
from taskroll.data.processors import DropnaFeature, RobustZScoreNorm
from taskroll.errors import TaskConfigError
from taskroll.models import LGBModel, LinearModel
from taskroll.task import qlib_names
from taskroll.task.spec import (
    fill_placeholder,
    get_callable_by_config,
    init_instance_by_config,
    set_allowed_modules,
)
from taskroll.train import record

MARKET = {"seed": 3, "n_instruments": 30, "start": "2016-01-01", "end": "2018-12-31"}
SYNTHETIC_LOADER = {"class": "SyntheticLoader", "module_path": "taskroll.data.loader",
                    "kwargs": MARKET}


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No allowlist, no Qlib on the path, and no stand-in logged yet."""
    monkeypatch.setattr(qlib_names._Logged, "pairs", set())
    monkeypatch.delenv("TASKROLL_ALLOWED_MODULES", raising=False)
    set_allowed_modules(None)
    yield
    set_allowed_modules(None)


def qlib_cfg(module_path: str, name: str, **kwargs: Any) -> dict[str, Any]:
    return {"class": name, "module_path": module_path, "kwargs": kwargs}


@pytest.mark.parametrize(("module_path", "name", "served_by"), [
    ("qlib.contrib.model.gbdt", "LGBModel", LGBModel),
    ("qlib.contrib.model", "LGBModel", LGBModel),
    ("qlib.contrib.model.linear", "LinearModel", LinearModel),
    ("qlib.data.dataset", "DatasetH", DatasetH),
    ("qlib.data.dataset", "DataHandlerLP", DataHandlerLP),
    ("qlib.data.dataset.handler", "DataHandlerLP", DataHandlerLP),
    ("qlib.contrib.data.handler", "Alpha158", Alpha158),
    ("qlib.workflow.record_temp", "SignalRecord", record.SignalRecord),
    ("qlib.workflow.record_temp", "SigAnaRecord", record.SigAnaRecord),
    ("qlib.data.dataset.processor", "RobustZScoreNorm", RobustZScoreNorm),
    ("qlib.data.dataset.processor", "DropnaProcessor", DropnaFeature),
])
def test_qlib_names_resolve_to_taskroll_classes(module_path: str, name: str,
                                                served_by: type) -> None:
    factory, _ = get_callable_by_config(qlib_cfg(module_path, name))
    assert factory is served_by
    # the "module.Name" string form is served too
    assert get_callable_by_config(f"{module_path}.{name}")[0] is served_by


def test_every_processor_stand_in_exists() -> None:
    for (module_path, name), entry in qlib_names.QLIB_NAMES.items():
        if module_path == "qlib.data.dataset.processor" and entry.target:
            assert get_callable_by_config(qlib_cfg(module_path, name))[0].__name__ == entry.name


def test_port_ana_record_maps_or_names_what_is_missing() -> None:
    cfg = qlib_cfg("qlib.workflow.record_temp", "PortAnaRecord")
    if hasattr(record, "PortAnaRecord"):
        assert get_callable_by_config(cfg)[0] is record.PortAnaRecord
    else:
        with pytest.raises(TaskConfigError, match=r"taskroll\.train\.record\.PortAnaRecord"):
            get_callable_by_config(cfg)


def test_missing_stand_in_target_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ("qlib.workflow.record_temp", "PortAnaRecord")
    table = dict(qlib_names.QLIB_NAMES)
    table[key] = qlib_names.StandIn("taskroll.train.record.NoSuchRecord")
    table[("qlib.contrib.model.gbdt", "Ghost")] = qlib_names.StandIn("taskroll.no_module.Ghost")
    monkeypatch.setattr(qlib_names, "QLIB_NAMES", table)
    with pytest.raises(TaskConfigError, match=r"'taskroll\.train\.record' has no 'NoSuchRecord'"):
        get_callable_by_config(qlib_cfg(*key), where="task.record[2]")
    with pytest.raises(TaskConfigError, match=r"task\.model: .*taskroll\.no_module\.Ghost"):
        get_callable_by_config(qlib_cfg("qlib.contrib.model.gbdt", "Ghost"), where="task.model")


def test_qlib_defaults_under_the_task_kwargs() -> None:
    linear = init_instance_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel"))
    assert (linear.estimator, linear.alpha, linear.fit_intercept) == ("ols", 0.0, False)
    ridge = init_instance_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel",
                                             estimator="ridge", alpha=0.5))
    assert (ridge.estimator, ridge.alpha, ridge.fit_intercept) == ("ridge", 0.5, False)
    # taskroll's own name keeps taskroll's defaults
    own = init_instance_by_config(qlib_cfg("taskroll.models.linear", "LinearModel"))
    assert (own.estimator, own.fit_intercept) == ("ridge", True)
    # Qlib's LGBModel hands LightGBM only the objective (and verbosity): LightGBM's defaults
    lgb = init_instance_by_config(qlib_cfg("qlib.contrib.model.gbdt", "LGBModel",
                                           num_leaves=7))
    assert lgb.params == {"verbosity": -1, "objective": "regression", "num_leaves": 7}
    assert (lgb.num_boost_round, lgb.early_stopping_rounds) == (1000, 50)
    robust = init_instance_by_config(qlib_cfg("qlib.data.dataset.processor",
                                              "RobustZScoreNorm"))
    assert robust.clip_outlier is True


@pytest.mark.parametrize(("module_path", "name", "message"), [
    ("qlib.contrib.data.handler", "Alpha360", "no Alpha360 handler"),
    ("qlib.data.dataset.processor", "TanhProcess", "no processor TanhProcess"),
    ("qlib.data.dataset.loader", "QlibDataLoader", "provider_uri"),
    ("qlib.contrib.model.xgboost", "XGBModel", "no stand-in for 'qlib.contrib.model.xgboost"),
])
def test_qlib_names_without_equivalent_are_refused(module_path: str, name: str,
                                                   message: str) -> None:
    with pytest.raises(TaskConfigError, match=message) as caught:
        init_instance_by_config(qlib_cfg(module_path, name), where="task.dataset")
    assert str(caught.value).startswith("task.dataset: Qlib is not installed")


def test_each_stand_in_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskroll.task.qlib_names")
    for _ in range(3):
        get_callable_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel"))
        get_callable_by_config(qlib_cfg("qlib.contrib.model.gbdt", "LGBModel"))
    messages = [entry.getMessage() for entry in caplog.records]
    assert len(messages) == 2
    assert all(entry.levelno == logging.WARNING for entry in caplog.records)
    assert "qlib.contrib.model.linear.LinearModel is served by taskroll's " \
           "taskroll.models.linear.LinearModel" in messages[0]
    assert "taskroll.models.gbdt.LGBModel" in messages[1]


@pytest.mark.parametrize("prefixes", ["taskroll.", "taskroll.models", "qlib.",
                                      "qlib.contrib.model.linear"])
def test_allowlist_admits_the_written_or_the_served_module(prefixes: str) -> None:
    set_allowed_modules(prefixes)
    model = init_instance_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel"))
    assert isinstance(model, LinearModel)


def test_allowlist_refuses_when_neither_is_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", "mylab.,taskroll.data")
    with pytest.raises(TaskConfigError, match=r"'qlib\.contrib\.model\.linear' \(nor "
                                              r"'taskroll\.models\.linear'.*not allowed"):
        init_instance_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel"))
    # the same allowlist admits a Qlib dataset name served from taskroll.data
    assert get_callable_by_config(qlib_cfg("qlib.data.dataset", "DatasetH"))[0] is DatasetH


@pytest.fixture
def installed_qlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ``qlib`` package importable from ``tmp_path`` (removed afterwards)."""
    package = tmp_path / "qlib" / "contrib" / "model"
    package.mkdir(parents=True)
    for folder in (tmp_path / "qlib", tmp_path / "qlib" / "contrib", package):
        (folder / "__init__.py").write_text("")
    (package / "gbdt.py").write_text("class LGBModel:\n    def __init__(self, **kwargs):\n"
                                     "        self.kwargs = kwargs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [name for name in sys.modules if name == "qlib" or name.startswith("qlib.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_installed_qlib_keeps_its_own_classes(installed_qlib: Path) -> None:
    assert qlib_names.qlib_importable()
    model = init_instance_by_config(qlib_cfg("qlib.contrib.model.gbdt", "LGBModel", loss="mse"))
    assert type(model).__module__ == "qlib.contrib.model.gbdt"
    assert model.kwargs == {"loss": "mse"}  # no stand-in defaults either
    # with Qlib's own module imported, only the name written counts for the allowlist
    set_allowed_modules("taskroll.")
    with pytest.raises(TaskConfigError, match="not allowed"):
        init_instance_by_config(qlib_cfg("qlib.contrib.model.gbdt", "LGBModel"))


def test_without_qlib_nothing_is_importable() -> None:
    assert not qlib_names.qlib_importable()


def test_unknown_keyword_names_the_closest() -> None:
    with pytest.raises(TaskConfigError, match=r"unknown keyword argument 'fit_intercep' "
                                              r"\(did you mean 'fit_intercept'\?\)"):
        init_instance_by_config(qlib_cfg("qlib.contrib.model.linear", "LinearModel",
                                         fit_intercep=True), where="task.model")


# Qlib's placeholders, as qlib.utils.fill_placeholder fills them


QLIB_DOC_CONFIG: dict[str, Any] = {  # the example of qlib.utils.get_item_from_obj
    "dataset": {"class": "DatasetH",
                "kwargs": {"handler": {"class": "Alpha158",
                                       "kwargs": {"end_time": "2020-08-01",
                                                  "fit_end_time": "<dataset.kwargs.segments.train.1>",
                                                  "fit_start_time": "<dataset.kwargs.segments.train.0>",
                                                  "instruments": "csi100",
                                                  "start_time": "2008-01-01"},
                                       "module_path": "qlib.contrib.data.handler"},
                           "segments": {"test": ("2017-01-03", "2019-04-08"),
                                        "train": ("2008-01-02", "2014-12-31"),
                                        "valid": ("2015-01-05", "2016-12-30")}}},
    "record": [{"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
}


def test_fill_placeholder_paths_and_user_values_as_qlib() -> None:
    model, dataset = object(), object()
    before = copy.deepcopy(QLIB_DOC_CONFIG)
    filled = fill_placeholder(QLIB_DOC_CONFIG, {"<MODEL>": model, "<DATASET>": dataset})
    handler = filled["dataset"]["kwargs"]["handler"]["kwargs"]
    assert (handler["fit_start_time"], handler["fit_end_time"]) == ("2008-01-02", "2014-12-31")
    assert filled["record"][0]["kwargs"]["model"] is model
    assert filled["record"][0]["kwargs"]["dataset"] is dataset
    assert before == QLIB_DOC_CONFIG


@pytest.mark.parametrize(("value", "expected"), [
    ("<a.list.1>", "second"),            # digits index lists
    ("<a.pair.0>", 1),                   # and tuples
    ("<a.nested>", {"deep": ["first", "x"], "model": "M"}),  # filled inside, as Qlib
    ("<a.missing>", "<a.missing>"),      # a path to nothing stays as it is
    ("<a.list.9>", "<a.list.9>"),
    ("<a.list.x>", "<a.list.x>"),
    ("<a.number.0>", "<a.number.0>"),
    ("see <MODEL>", "see <MODEL>"),      # whole values only
    ("<MODEL> ", "<MODEL> "),
    ("<loop>", ["<loop>"]),              # a self-reference is filled once, not forever
])
def test_fill_placeholder_path_rules(value: str, expected: Any) -> None:
    config = {"a": {"list": ["first", "second"], "pair": (1, 2), "number": 5,
                    "nested": {"deep": ["<a.list.0>", "x"], "model": "<MODEL>"}},
              "loop": ["<loop>"], "target": [{"value": value}]}
    assert fill_placeholder(config, {"<MODEL>": "M"})["target"][0]["value"] == expected


@pytest.mark.parametrize("key", ["MODEL", "<>", "<a<b>", 3])
def test_fill_placeholder_refuses_malformed_keys(key: Any) -> None:
    with pytest.raises(TaskConfigError, match="not of the form"):
        fill_placeholder({"model": "x"}, {key: 1})


# A task dict shaped as Qlib's documentation writes it, trained by taskroll


def qlib_lightgbm_task() -> dict[str, Any]:
    """examples/benchmarks/LightGBM/workflow_config_lightgbm_Alpha158.yaml's task, with
    qlib/tests/config.py's placeholders, on synthetic data and dates."""
    return {
        "model": {"class": "LGBModel", "module_path": "qlib.contrib.model.gbdt",
                  "kwargs": {"loss": "mse", "colsample_bytree": 0.8879, "learning_rate": 0.2,
                             "subsample": 0.8789, "lambda_l1": 205.6999,
                             "lambda_l2": 580.9768, "max_depth": 8, "num_leaves": 210,
                             "num_threads": 2}},
        "dataset": {"class": "DatasetH", "module_path": "qlib.data.dataset",
                    "kwargs": {"handler": {"class": "Alpha158",
                                           "module_path": "qlib.contrib.data.handler",
                                           "kwargs": {
                                               "start_time": "2016-01-01",
                                               "end_time": "2018-12-31",
                                               "fit_start_time": "<dataset.kwargs.segments.train.0>",
                                               "fit_end_time": "<dataset.kwargs.segments.train.1>",
                                               "instruments": "all",
                                               "data_loader": SYNTHETIC_LOADER}},
                               "segments": {"train": ["2016-01-01", "2017-06-30"],
                                            "valid": ["2017-07-01", "2017-12-31"],
                                            "test": ["2018-01-01", "2018-12-31"]}}},
        "record": [{"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
                   {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp",
                    "kwargs": {"ana_long_short": False, "ann_scaler": 252}}],
    }


def test_qlib_task_dict_trains_with_task_train(isolated_settings: Settings) -> None:
    task = qlib_lightgbm_task()  # as Qlib writes it, path placeholders included
    recorder = taskroll.task_train(task, experiment_name="qlib_dict")
    model = recorder.load_object("params.pkl")
    assert isinstance(model, LGBModel)
    assert model.params["feature_fraction" if "feature_fraction" in model.params
                        else "colsample_bytree"] == 0.8879
    assert "bagging_freq" not in model.params and model.params["num_threads"] == 2
    assert 0 < model.model.best_iteration < 1000  # stopped early on the valid segment
    pred = recorder.load_object("pred.pkl")
    dates = pred.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2018-01-01") and dates.max() <= pd.Timestamp("2018-12-31")
    assert pred.index.get_level_values("instrument").nunique() > 20
    assert set(recorder.list_metrics()) >= {"IC", "ICIR", "Rank IC", "Rank ICIR"}


def test_qlib_task_dict_trains_with_trainer_r_and_trainer_rm(isolated_settings: Settings) -> None:
    task = qlib_lightgbm_task()
    task["model"] = {"class": "LinearModel", "module_path": "qlib.contrib.model.linear",
                     "kwargs": {"estimator": "ridge", "alpha": 0.05}}
    task["dataset"]["kwargs"]["handler"]["kwargs"]["infer_processors"] = [
        {"class": "ProcessInf", "module_path": "qlib.data.dataset.processor"},
        {"class": "CSZScoreNorm", "module_path": "qlib.data.dataset.processor",
         "kwargs": {"fields_group": "feature"}},
        {"class": "Fillna", "module_path": "qlib.data.dataset.processor",
         "kwargs": {"fields_group": "feature"}}]
    in_memory = taskroll.TrainerR(experiment_name="qlib_r")
    pooled = taskroll.TrainerRM(experiment_name="qlib_rm", task_pool="qlib_pool")
    predictions = []
    for trainer in (in_memory, pooled):
        recorders = trainer.end_train(trainer.train([copy.deepcopy(task)]))
        assert len(recorders) == 1
        model = recorders[0].load_object("params.pkl")
        assert isinstance(model, LinearModel) and model.fit_intercept is False  # Qlib's default
        predictions.append(recorders[0].load_object("pred.pkl"))
    assert predictions[0].index.get_level_values("datetime").min() >= pd.Timestamp("2018-01-01")
    pd.testing.assert_frame_equal(predictions[0], predictions[1])
