"""Look-ahead attacks on the data path: Qlib-layout folders, new data versions, processors.

* Bars written in Qlib's binary layout, then a new version of the folder with later days
  appended (and instruments listed after the cut): features for old dates, and labels
  whose horizon ends by the cut, are bit-identical, whatever the universe read.
* Labels count the folder's calendar (``calendars/day.txt``), not the dates of the
  instruments loaded: an instrument read alone, suspended the day after ``t``, has a NaN
  label at ``t``, not a return reaching past the cut.
* A processor that drops rows for want of a label cannot be an inference processor (the
  rows served for day D would depend on later prices), and a processor that learns state
  cannot be fitted on a range without an end (it would normalise D with later days).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import Alpha158, QlibDataLoader, StaticLoader, clear_caches, write_qlib_data
from taskroll.errors import TaskConfigError

from .perturb import assert_identical, on_or_before, scramble_after

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

HORIZON = 2
LABEL = ("label", "LABEL0")
WINDOWS = (5, 20)


def calendar_of(bars: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(bars.index.get_level_values(0).unique())


def qlib_frame(folder: Path, universe: Any, instruments: Any = "all") -> pd.DataFrame:
    """Alpha158 features and label of every day, read from a Qlib folder."""
    clear_caches()
    handler = Alpha158(instruments=instruments, windows=WINDOWS,
                       data_loader=QlibDataLoader(folder, universe=universe))
    frame = handler.fetch(col_set="__raw", data_key="raw")
    assert isinstance(frame, pd.DataFrame)
    return frame


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    features = [column for column in frame.columns if column[0] == "feature"]
    return frame[features], frame[LABEL]


def suspended_instrument(bars: pd.DataFrame) -> tuple[str, pd.Timestamp]:
    """An instrument and a day it has no bar, well inside its life, on a market day."""
    calendar = calendar_of(bars)
    for name in bars.index.get_level_values(1).unique():
        own = pd.DatetimeIndex(bars.xs(name, level=1).index)
        inside = calendar[(calendar > own[30]) & (calendar < own[-30])]
        gaps = inside.difference(own)
        if len(gaps):
            return str(name), gaps[0]
    raise AssertionError("the dirty market has suspensions")


@pytest.mark.parametrize("universe", [None, "all", "listed"])
def test_a_new_data_version_leaves_old_dates_alone(dirty: pd.DataFrame, tmp_path: Path,
                                                   universe: str | None) -> None:
    """Version 1 ends on the cut; version 2 appends scrambled days, new listings included
    (the scramble adds rows of instruments on days they had none)."""
    calendar = calendar_of(dirty)
    cut = calendar[250]  # three instruments are first listed after it
    old = on_or_before(dirty, cut)
    assert isinstance(old, pd.DataFrame)
    new = scramble_after(dirty, cut, seed=21)
    names = sorted(set(old.index.get_level_values(1)))
    wanted: Any = names[:6] if universe == "listed" else universe
    first = qlib_frame(write_qlib_data(old, tmp_path / "v1"), wanted)
    second = qlib_frame(write_qlib_data(new, tmp_path / "v2"), wanted)
    assert second.index.get_level_values(0).max() > cut  # the new version has more days
    if universe is None:  # and instruments first listed after the cut
        assert set(second.index.get_level_values(1)) > set(first.index.get_level_values(1))
    features, labels = split(first)
    new_features, new_labels = split(second)
    assert_identical(features, on_or_before(new_features, cut))
    last_complete = calendar[calendar.get_loc(cut) - HORIZON]
    assert on_or_before(labels, last_complete).notna().sum() > 1000
    assert_identical(on_or_before(labels, last_complete), on_or_before(new_labels, last_complete))


@pytest.mark.parametrize("reader", ["universe", "handler-instruments"])
def test_labels_count_the_folder_calendar_not_the_dates_loaded(dirty: pd.DataFrame,
                                                               tmp_path: Path,
                                                               reader: str) -> None:
    """An instrument read alone: the days it is suspended are still market days."""
    name, suspended = suspended_instrument(dirty)
    calendar = calendar_of(dirty)
    cut = calendar[calendar.get_loc(suspended) + 1]
    last_complete = calendar[calendar.get_loc(cut) - HORIZON]
    universe: Any = [name] if reader == "universe" else None
    instruments: Any = "all" if reader == "universe" else [name]
    frames = [qlib_frame(write_qlib_data(bars, tmp_path / folder), universe, instruments)
              for folder, bars in (("original", dirty),
                                   ("perturbed", scramble_after(dirty, cut, seed=5)))]
    labels = [on_or_before(frame[LABEL], last_complete) for frame in frames]
    assert len(labels[0]) > 50
    assert_identical(labels[0], labels[1])
    # the two days before the suspension have no label (a bar is missing in their horizon)
    before = calendar[calendar.get_loc(suspended) - 2:calendar.get_loc(suspended)]
    own = labels[0].xs(name, level=1)
    assert own.reindex(before).isna().all()
    # and they are missing exactly where the labels of the whole market are (values differ
    # in their last bits: the folder stores float32 prices)
    whole = Alpha158(windows=WINDOWS, data_loader=StaticLoader(dirty)).fetch(
        col_set="label", data_key="raw").xs(name, level=1).iloc[:, 0]
    alone = frames[0][LABEL].xs(name, level=1)
    common = alone.index.intersection(whole.index)
    assert len(common) > 300
    assert (alone[common].isna() == whole[common].isna()).all()


def test_inference_processors_cannot_drop_rows_for_want_of_a_label(dirty: pd.DataFrame) -> None:
    processors = [{"class": "DropnaLabel"}]
    with pytest.raises(TaskConfigError, match=r"infer_processors\[0\].*DropnaLabel.*learn"):
        Alpha158(windows=WINDOWS, data_loader=StaticLoader(dirty), infer_processors=processors)
    # as a learning processor it is fine, and the inference rows near the end of the data
    # (whose labels are unknown) are all served
    handler = Alpha158(windows=WINDOWS, data_loader=StaticLoader(dirty),
                       learn_processors=processors)
    infer = handler.fetch(col_set="label", data_key="infer")
    learn = handler.fetch(col_set="label", data_key="learn")
    last_day = calendar_of(dirty)[-1]
    assert len(on_or_before(infer, last_day)) == len(dirty)
    assert infer.iloc[:, 0].isna().sum() > 0
    assert learn.iloc[:, 0].notna().all()


@pytest.mark.parametrize("processor", ["ZScoreNorm", "RobustZScoreNorm"])
@pytest.mark.parametrize("where", ["infer_processors", "learn_processors"])
def test_fitted_processors_need_a_fit_range_with_an_end(dirty: pd.DataFrame, processor: str,
                                                        where: str) -> None:
    """Fitted on every row, the normalisation of day D would use the days after D."""
    calendar = calendar_of(dirty)
    cut = calendar[300]
    config = [{"class": processor, "kwargs": {"fields_group": "feature"}}]
    with pytest.raises(TaskConfigError, match=rf"{where}\[0\].*{processor}.*fit_end_time"):
        Alpha158(windows=WINDOWS, data_loader=StaticLoader(dirty), **{where: config})
    # with an end (the handler's, or the processor's own), rows up to the cut are unchanged
    fit_end = str(calendar[200].date())
    for handler_fit, processor_fit in (({"fit_end_time": fit_end}, {}),
                                       ({}, {"fit_end_time": fit_end})):
        frames = []
        for bars in (dirty, scramble_after(dirty, cut, seed=8)):
            kwargs = {where: [{"class": processor,
                               "kwargs": {"fields_group": "feature", **processor_fit}}]}
            handler = Alpha158(windows=WINDOWS, data_loader=StaticLoader(bars), **handler_fit,
                               **kwargs)
            frames.append(handler.fetch(col_set="feature",
                                        data_key="infer" if where == "infer_processors"
                                        else "learn"))
        last_complete = calendar[calendar.get_loc(cut) - HORIZON]
        assert_identical(on_or_before(frames[0], last_complete),
                         on_or_before(frames[1], last_complete))
        assert np.isfinite(frames[0].to_numpy()).sum() > 1000
