"""OnlineToolR: online tags and prediction updates without retraining."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.online.tool import OnlineToolR
from taskroll.task.spec import init_instance_by_config
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import task_train

TEST = ("2019-07-01", "2019-08-30")


def _short_task(template: dict[str, Any]) -> dict[str, Any]:
    template["dataset"]["kwargs"]["segments"]["test"] = TEST
    template["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"] = TEST[1]
    return template


@pytest.fixture(scope="module")
def trained(module_settings: Settings,
            online_template: Callable[[], dict[str, Any]]) -> tuple[Recorder, Recorder]:
    first = task_train(_short_task(online_template()), experiment_name="tool")
    second = task_train(_short_task(online_template()), experiment_name="tool")
    return first, second


def test_tags(trained: tuple[Recorder, Recorder]) -> None:
    first, second = trained
    tool = OnlineToolR("tool")
    assert tool.get_online_tag(first) == tool.OFFLINE_TAG  # untagged
    assert tool.online_models() == []
    tool.set_online_tag(tool.ONLINE_TAG, [first, second])
    assert {recorder.id for recorder in tool.online_models()} == {first.id, second.id}
    tool.reset_online_tag(second)
    assert [recorder.id for recorder in tool.online_models()] == [second.id]
    assert tool.get_online_tag(first) == "offline"
    assert first.list_tags()[OnlineToolR.ONLINE_KEY] == "offline"
    with pytest.raises(ValueError, match="online tag"):
        tool.set_online_tag("maybe", first)
    assert OnlineToolR("no_such_experiment").online_models() == []


def test_update_online_pred_extends_without_retraining(
        trained: tuple[Recorder, Recorder],
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    first, second = trained
    tool = OnlineToolR("tool")
    tool.reset_online_tag(first)
    before = first.load_object("pred.pkl")
    runs_before = len(R.list_recorders("tool", rtype="list"))
    added = tool.update_online_pred(to_date="2019-09-30")
    after = first.load_object("pred.pkl")
    calendar = online_market[1]
    new_days = calendar[(calendar > pd.Timestamp(TEST[1]))
                        & (calendar <= pd.Timestamp("2019-09-30"))]
    assert added == {first.id: len(after) - len(before)} and added[first.id] > 0
    assert len(R.list_recorders("tool", rtype="list")) == runs_before  # no new run
    pd.testing.assert_frame_equal(after.loc[before.index], before)  # old rows unchanged
    after_days = after.index.get_level_values("datetime").unique()
    assert list(after_days[after_days > pd.Timestamp(TEST[1])]) == list(new_days)
    assert second.load_object("pred.pkl").equals(before)  # offline models are not updated

    # the appended rows equal a prediction of the saved model on a fresh dataset
    task = first.load_object("task")
    handler = task["dataset"]["kwargs"]["handler"]
    handler["kwargs"]["end_time"] = "2019-09-30"
    dataset = init_instance_by_config(
        {**task["dataset"], "kwargs": {**task["dataset"]["kwargs"], "handler": handler,
                                       "segments": {"test": (new_days[0], new_days[-1])}}})
    fresh = first.load_object("params.pkl").predict(dataset, segment="test")
    appended = after[after.index.get_level_values("datetime") > pd.Timestamp(TEST[1])]
    pd.testing.assert_series_equal(appended["score"], fresh.rename("score"),
                                   check_names=False, rtol=1e-9)

    # up to date: nothing to add; from_date re-predicts the same days in place
    assert tool.update_online_pred(to_date="2019-09-30") == {first.id: 0}
    assert tool.update_online_pred(to_date="2019-09-30", from_date=new_days[0]) == {
        first.id: len(appended)}
    pd.testing.assert_frame_equal(first.load_object("pred.pkl"), after)
    # to_date=None: up to the last day of the data
    tool.update_online_pred()
    last = first.load_object("pred.pkl").index.get_level_values("datetime").max()
    assert last == calendar[-1]
