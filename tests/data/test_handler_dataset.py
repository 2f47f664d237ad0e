"""Alpha158 handler and DatasetH, built from Qlib-shaped task cfgs."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import (
    Alpha158,
    DataHandlerLP,
    DatasetH,
    FileLoader,
    StaticLoader,
)
from taskroll.data.features import cached_alpha158, clear_feature_cache
from taskroll.errors import DataError, TaskConfigError
from taskroll.task.spec import init_instance_by_config

SEGMENTS = {"train": ("2019-01-01", "2019-12-31"), "valid": ["2020-01-01", "2020-06-30"],
            "test": (pd.Timestamp("2020-07-01"), pd.Timestamp("2020-12-31"))}


def dataset_cfg(path: Path, **handler_kwargs: Any) -> dict[str, Any]:
    kwargs = {"start_time": "2019-01-01", "end_time": "2020-12-31",
              "fit_start_time": "2019-01-01", "fit_end_time": "2019-12-31",
              "instruments": "all",
              "data_loader": {"class": "FileLoader", "module_path": "taskroll.data.loader",
                              "kwargs": {"path": str(path)}}}
    kwargs.update(handler_kwargs)
    return {"class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {"handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                                   "kwargs": kwargs},
                       "segments": SEGMENTS}}


@pytest.fixture(scope="module")
def dataset(parquet_path: Path) -> DatasetH:
    built = init_instance_by_config(dataset_cfg(parquet_path))
    assert isinstance(built, DatasetH)
    return built


def test_qlib_shaped_cfg_builds_and_serves_two_level_columns(dataset: DatasetH) -> None:
    handler = dataset.handler
    assert isinstance(handler, Alpha158)
    raw = handler.fetch(col_set="__raw")
    assert isinstance(raw.columns, pd.MultiIndex)
    assert list(raw.columns.get_level_values(0).unique()) == ["feature", "label"]
    assert raw.columns[-1] == ("label", "LABEL0") and raw.shape[1] == 159
    assert list(raw.index.names) == ["datetime", "instrument"]
    assert raw.index.is_monotonic_increasing
    # Qlib's col_set rules: "__all" drops the group level, a group name selects and drops it,
    # a list of groups keeps both levels
    assert handler.fetch(col_set="__all").columns[0] == "KMID"
    assert list(handler.fetch(col_set="label").columns) == ["LABEL0"]
    both = handler.fetch(col_set=["feature", "label"], data_key="learn")
    assert both.columns.nlevels == 2
    series = handler.fetch(col_set="label", squeeze=True)
    assert isinstance(series, pd.Series)
    assert handler.get_cols("feature")[:2] == ["KMID", "KLEN"]
    with pytest.raises(TaskConfigError, match="column group"):
        handler.fetch(col_set="nope")
    with pytest.raises(TaskConfigError, match="data_key"):
        handler.fetch(data_key="other")


def test_default_processors_are_qlibs(dataset: DatasetH) -> None:
    """Qlib's Alpha158 defaults: no inference processor; learn drops rows without a label
    and z-scores the label per day; rows with a missing feature are kept."""
    handler = dataset.handler
    infer = handler.fetch(col_set="feature")
    raw = handler.fetch(col_set="feature", data_key="raw")
    pd.testing.assert_frame_equal(infer, raw)
    assert infer.isna().any().any(), "features keep their NaN (first rows of an instrument)"
    learn_all = handler.fetch(col_set="__raw", data_key="learn")
    assert learn_all["label"].notna().all().all()
    assert learn_all["feature"].isna().any(axis=1).sum() > 0, "rows with a NaN feature are kept"
    learn = handler.fetch(col_set="label", data_key="learn")
    assert not learn.isna().any().any(), "DropnaLabel"
    assert len(learn) < len(infer)
    day_label = learn.loc[learn.index.get_level_values(0)[500]]["LABEL0"]
    assert abs(day_label.mean()) < 1e-5 and abs(day_label.std() - 1) < 1e-4
    raw_label = handler.fetch(col_set="label", data_key="raw")
    assert raw_label.isna().any().any(), "raw labels are untouched (last two days unknown)"


def test_segments(dataset: DatasetH) -> None:
    train = dataset.prepare("train", col_set="feature")
    dates = train.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2019-01-01")
    assert dates.max() <= pd.Timestamp("2019-12-31")
    valid, test = dataset.prepare(["valid", "test"], col_set="label", data_key="learn")
    assert valid.index.get_level_values(0).max() <= pd.Timestamp("2020-06-30")
    assert test.index.get_level_values(0).min() >= pd.Timestamp("2020-07-01")
    window = dataset.prepare(slice("2020-03-02", "2020-03-06"))
    assert window.index.get_level_values(0).nunique() <= 5
    assert len(dataset.prepare(("train",))) == 1
    with pytest.raises(TaskConfigError, match="unknown segment 'tset'"):
        dataset.prepare("tset")
    with pytest.raises(TaskConfigError):
        DatasetH(dataset.handler, {"train": ("2019-01-01",)})
    with pytest.raises(TaskConfigError, match="parse"):
        DatasetH(dataset.handler, {"train": ("2019-01-01", "someday")})


def test_features_are_cached_across_handlers(parquet_path: Path) -> None:
    clear_feature_cache()
    first = init_instance_by_config(dataset_cfg(parquet_path))
    second = init_instance_by_config(dataset_cfg(parquet_path, end_time="2020-06-30"))
    full = first.handler.fetch(col_set="__raw", data_key="raw")
    part = second.handler.fetch(col_set="__raw", data_key="raw")
    assert part.index.get_level_values(0).max() <= pd.Timestamp("2020-06-30")
    pd.testing.assert_frame_equal(part, full.loc[: pd.Timestamp("2020-06-30")])


def test_instruments_filter_and_empty_range(parquet_path: Path, bars: pd.DataFrame) -> None:
    present = bars.loc["2020-01-01":"2020-02-28"].index.get_level_values("instrument").unique()
    chosen = sorted(present)[:2]
    handler = Alpha158(instruments=chosen, start_time="2020-01-01",
                       end_time="2020-02-28", data_loader=FileLoader(parquet_path))
    assert sorted(handler.fetch().index.get_level_values("instrument").unique()) == chosen
    with pytest.raises(DataError, match="no rows"):
        Alpha158(start_time="2031-01-01", data_loader=FileLoader(parquet_path))


def test_pickle_drops_data_and_rebuilds_it(dataset: DatasetH) -> None:
    blob = pickle.dumps(dataset)
    assert len(blob) < 100_000, "the data is not pickled"
    restored = pickle.loads(blob)
    pd.testing.assert_frame_equal(restored.prepare("test", col_set="feature"),
                                  dataset.prepare("test", col_set="feature"))


def test_online_style_reconfiguration(parquet_path: Path) -> None:
    built = init_instance_by_config(dataset_cfg(parquet_path, end_time="2020-06-30"))
    built.config(handler_kwargs={"end_time": "2020-12-31"},
                 segments={"test": ("2020-07-01", "2020-12-31")})
    built.setup_data(handler_kwargs={"init_type": DataHandlerLP.IT_LS})
    test = built.prepare("test", col_set="feature")
    assert test.index.get_level_values(0).max() > pd.Timestamp("2020-12-01")
    with pytest.raises(TaskConfigError):
        built.config(handler_kwargs={"colour": "red"})


def test_generic_handler_with_a_static_frame() -> None:
    index = pd.MultiIndex.from_product([pd.bdate_range("2021-01-04", periods=4), ["A", "B"]],
                                       names=["datetime", "instrument"])
    columns = pd.MultiIndex.from_tuples([("feature", "x"), ("label", "y")])
    frame = pd.DataFrame(np.arange(16, dtype=float).reshape(8, 2), index=index, columns=columns)
    handler = DataHandlerLP(data_loader=StaticLoader(frame),
                            learn_processors=[{"class": "DropnaLabel"}])
    pd.testing.assert_frame_equal(handler.fetch(col_set="__raw"), frame)
    with pytest.raises(TaskConfigError, match="data_loader"):
        DataHandlerLP()
    with pytest.raises(TaskConfigError, match="process_type"):
        DataHandlerLP(data_loader=StaticLoader(frame), process_type="mixed")


def test_features_are_computed_once_per_key(bars: pd.DataFrame) -> None:
    clear_feature_cache()
    loads: list[int] = []

    def load_bars() -> pd.DataFrame:
        loads.append(1)
        return bars

    first = cached_alpha158(("test", 1), load_bars, windows=(5,))
    second = cached_alpha158(("test", 1), load_bars, windows=(5,))
    assert len(loads) == 1 and second is first
    cached_alpha158(None, load_bars, windows=(5,))
    assert len(loads) == 2


def test_fetch_by_instrument_and_single_date(dataset: DatasetH) -> None:
    handler = dataset.handler
    name = handler.fetch().index.get_level_values("instrument")[0]
    rows = handler.fetch(name, level="instrument", col_set="label", data_key="raw")
    assert set(rows.index.get_level_values("instrument")) == {name}
    day = handler.fetch("2020-03-02")
    assert set(day.index.get_level_values("datetime")) == {pd.Timestamp("2020-03-02")}
    with pytest.raises(TaskConfigError, match="level"):
        handler.fetch(level="sector")
