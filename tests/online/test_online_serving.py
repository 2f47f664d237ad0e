"""Online serving left running: gaps between routines, in-sample rows, reuse, recovery.

Each reported problem is a test here: holes after a gap between routines, a model
writing predictions before its test start, windows retrained after a crash, runs
left ``RUNNING``, and a switch of tags that shows no online model. The central
property: ``simulate`` over a span equals any sequence of daily routines over it,
skipped days included, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.data.cache import clear_caches
from taskroll.online.manager import OnlineManager
from taskroll.online.models import fail_interrupted_runs, window_key
from taskroll.online.strategy import RollingStrategy, task_segment
from taskroll.online.tool import OnlineToolR
from taskroll.online.update import LabelUpdater, PredUpdater
from taskroll.task.gen import RollingGen
from taskroll.train.experiment import R
from taskroll.train.process import HOST_TAG, PID_START_TAG, PID_TAG, process_tags
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import DelayTrainerR, TrainerR, task_train

from .conftest import make_template, trained_per_window

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

BEGIN = pd.Timestamp("2019-08-01")
END = pd.Timestamp("2019-10-15")
STEP = 20


def _manager(name: str, calendar: pd.DatetimeIndex, template: dict[str, Any],
             trainer: Any = None, begin: pd.Timestamp = BEGIN) -> OnlineManager:
    strategy = RollingStrategy(name, template, RollingGen(step=STEP, calendar=calendar))
    return OnlineManager(strategy, trainer=trainer or TrainerR(experiment_name=name),
                         begin_time=begin)


def _days(signals: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(signals.index.get_level_values("datetime").unique())


@pytest.fixture(scope="module")
def simulated(module_settings: Settings, online_market: tuple[Path, pd.DatetimeIndex],
              online_template: Callable[[], dict[str, Any]]) -> pd.Series:
    """The reference: ``simulate`` from BEGIN to END."""
    manager = _manager("serving_simulated", online_market[1], online_template())
    return manager.simulate(END)


def test_gap_between_routines_leaves_no_hole(
        simulated: pd.Series, online_market: tuple[Path, pd.DatetimeIndex],
        online_template: Callable[[], dict[str, Any]]) -> None:
    calendar = online_market[1]
    manager = _manager("serving_gap", calendar, online_template())
    manager.first_train()
    manager.routine(BEGIN)
    manager.routine(END)  # 50 trading days later, two windows started meanwhile
    signals = manager.get_signals()
    expected = calendar[(calendar >= pd.Timestamp("2019-07-01")) & (calendar <= END)]
    assert list(_days(signals)) == list(expected)
    assert not signals.index.duplicated().any()
    pd.testing.assert_series_equal(signals, simulated)
    assert set(trained_per_window("serving_gap").values()) == {1}


@pytest.mark.parametrize("seed", [1, 2])
def test_simulate_equals_routines_with_random_skipped_days(
        simulated: pd.Series, online_market: tuple[Path, pd.DatetimeIndex],
        online_template: Callable[[], dict[str, Any]], seed: int) -> None:
    calendar = online_market[1]
    span = list(calendar[(calendar > BEGIN) & (calendar < END)])
    chosen = sorted(random.Random(seed).sample(span, k=len(span) // 4))
    name = f"serving_skips_{seed}"
    manager = _manager(name, calendar, online_template())
    manager.first_train()
    for day in [BEGIN, *chosen, END]:
        manager.routine(day)
    pd.testing.assert_series_equal(manager.get_signals(), simulated)
    assert set(trained_per_window(name).values()) == {1}


def test_routine_twice_on_a_day_changes_nothing(
        online_market: tuple[Path, pd.DatetimeIndex], module_settings: Settings,
        online_template: Callable[[], dict[str, Any]]) -> None:
    manager = _manager("serving_twice", online_market[1], online_template())
    manager.first_train()
    day = pd.Timestamp("2019-08-27")  # a roll day: a window starts on 2019-08-26
    manager.routine(day)
    signals = manager.get_signals().copy()
    runs = {recorder.id for recorder in R.list_recorders("serving_twice", rtype="list")}
    online = [recorder.id for recorder in manager.strategies[0].tool.online_models()]
    assert len(manager.routine(day)) == 0
    manager.first_train()  # e.g. a restart that believes nothing is online: reuses
    assert {recorder.id for recorder in R.list_recorders("serving_twice", rtype="list")} == runs
    assert [recorder.id for recorder in manager.strategies[0].tool.online_models()] == online
    pd.testing.assert_series_equal(manager.get_signals(), signals)
    # the whole history is a function of the models: rebuilt, it is the same
    pd.testing.assert_series_equal(manager.rebuild_signals(day), signals)


def test_a_model_never_predicts_before_its_test_start(
        online_market: tuple[Path, pd.DatetimeIndex], module_settings: Settings,
        online_template: Callable[[], dict[str, Any]]) -> None:
    manager = _manager("serving_in_sample", online_market[1], online_template())
    manager.first_train()
    tool: OnlineToolR = manager.strategies[0].tool  # type: ignore[assignment]
    [online] = tool.online_models()
    start = task_segment(online.load_object("task"), "test")[0]
    assert start is not None
    # the reported case: an empty pred.pkl was filled from the first day of the data
    online.save_objects(**{"pred.pkl": online.load_object("pred.pkl").iloc[:0]})
    added = tool.update_online_pred(to_date="2019-08-30")
    pred = online.load_object("pred.pkl")
    days = pred.index.get_level_values("datetime")
    assert added[online.id] == len(pred) > 0
    assert days.min() == start
    # an explicit from_date before the test start is clipped to it
    PredUpdater(online, to_date="2019-08-30", from_date="2016-01-01").update()
    assert online.load_object("pred.pkl").index.get_level_values("datetime").min() == start
    # an unreadable pred.pkl (a write cut short) is rebuilt from the test start
    (Path(online.artifact_uri.removeprefix("file://")) / "pred.pkl").write_bytes(b"\x80\x04cut")
    tool.update_online_pred(to_date="2019-08-30")
    pd.testing.assert_frame_equal(online.load_object("pred.pkl"), pred)


def test_switch_never_shows_zero_online_models(
        online_market: tuple[Path, pd.DatetimeIndex], module_settings: Settings,
        online_template: Callable[[], dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _manager("serving_switch", online_market[1], online_template())
    manager.first_train()
    tool: OnlineToolR = manager.strategies[0].tool  # type: ignore[assignment]
    seen: list[int] = []
    original = OnlineToolR.set_online_tag

    def watched(self: OnlineToolR, tag: str, recorder: Any) -> None:
        original(self, tag, recorder)
        seen.append(len(tool.online_models()))

    monkeypatch.setattr(OnlineToolR, "set_online_tag", watched)
    manager.routine("2019-08-27")  # a new window goes online
    assert seen and min(seen) >= 1
    assert len(tool.online_models()) == 1


def test_a_half_done_switch_is_completed(
        online_market: tuple[Path, pd.DatetimeIndex], module_settings: Settings,
        online_template: Callable[[], dict[str, Any]]) -> None:
    manager = _manager("serving_half_switch", online_market[1], online_template())
    manager.first_train()
    tool: OnlineToolR = manager.strategies[0].tool  # type: ignore[assignment]
    every = R.list_recorders("serving_half_switch", rtype="list")
    tool.set_online_tag(tool.ONLINE_TAG, every)  # as if killed between the two tag writes
    manager.routine(BEGIN)
    [online] = tool.online_models()
    starts = [task_segment(recorder.load_object("task"), "test")[0] for recorder in every]
    newest = max(start for start in starts if start is not None)
    assert task_segment(online.load_object("task"), "test")[0] == newest


def test_interrupted_runs_are_marked_failed(module_settings: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    own = process_tags()
    cases = {
        "dead": {**own, PID_TAG: str(dead.pid), PID_START_TAG: ""},
        "alive": own,
        "reused_pid": {**own, PID_START_TAG: "1"},  # our pid, but another start time
        "other_host": {**own, HOST_TAG: "another-host.example"},
    }
    ids = {}
    for name, tags in cases.items():
        recorder = R.get_exp("serving_interrupted").create_recorder(name)
        recorder.set_tags(**tags)
        ids[name] = recorder.id
    assert sorted(fail_interrupted_runs("serving_interrupted")) == sorted(
        [ids["dead"], ids["reused_pid"]])
    assert Recorder(ids["alive"]).status == "RUNNING"
    assert Recorder(ids["other_host"]).status == "RUNNING"
    assert fail_interrupted_runs("serving_interrupted", stale_after=0.0) == [ids["other_host"]]
    assert Recorder(ids["dead"]).status == "FAILED"
    assert Recorder(ids["alive"]).status == "RUNNING"
    assert fail_interrupted_runs("no_such_experiment") == []


def test_window_key_ignores_only_the_test_end(online_template: Callable[[], dict[str, Any]],
                                               online_market: tuple[Path, pd.DatetimeIndex]
                                               ) -> None:
    generator = RollingGen(step=STEP, calendar=online_market[1])
    [first, second, *_] = generator.generate(online_template())
    short = generator.gen_following_tasks(first, "2019-07-30")[0]
    long = generator.gen_following_tasks(first, "2019-09-30")[0]
    assert task_segment(short, "test") != task_segment(long, "test")
    assert window_key(short) == window_key(long) == window_key(second)
    assert window_key(first) != window_key(second)


def test_delayed_simulation_fits_in_one_batch_and_agrees(
        simulated: pd.Series, online_market: tuple[Path, pd.DatetimeIndex],
        online_template: Callable[[], dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    original = DelayTrainerR.end_train

    def counted(self: DelayTrainerR, models: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append(len(models))
        return original(self, models, *args, **kwargs)

    monkeypatch.setattr(DelayTrainerR, "end_train", counted)
    manager = _manager("serving_delay", online_market[1], online_template(),
                       trainer=DelayTrainerR(experiment_name="serving_delay"))
    signals = manager.simulate(END)
    assert len(batches) == 1 and batches[0] == len(trained_per_window("serving_delay"))
    pd.testing.assert_series_equal(signals, simulated)


def test_qlib_api_add_strategy_pickle_and_open_end(
        tmp_path: Path, online_market: tuple[Path, pd.DatetimeIndex],
        module_settings: Settings, online_template: Callable[[], dict[str, Any]]) -> None:
    calendar = online_market[1]
    begin = calendar[-10]
    manager = _manager("serving_api_a", calendar, online_template(), begin=begin)
    other = RollingStrategy("serving_api_b", online_template(),
                            RollingGen(step=STEP, calendar=calendar))
    manager.add_strategy(other)
    assert [strategy.name_id for strategy in manager.strategies] == ["serving_api_a",
                                                                     "serving_api_b"]
    assert other.tool.online_models()
    with pytest.raises(ValueError, match="unique"):
        manager.add_strategy(RollingStrategy("serving_api_b", online_template(),
                                             RollingGen(step=STEP, calendar=calendar)))
    signals = manager.simulate()  # end_time=None: the last calendar day up to today
    assert isinstance(signals, pd.Series) and signals.name == "score"
    assert _days(signals).max() == calendar[-1]
    saved = manager.to_pickle(tmp_path / "manager.pkl")
    loaded = OnlineManager.load(saved)
    pd.testing.assert_series_equal(loaded.get_signals(), signals)
    assert loaded.history.keys() == manager.history.keys()
    (tmp_path / "other.pkl").write_bytes(__import__("pickle").dumps({"not": "a manager"}))
    with pytest.raises(TypeError, match="not an OnlineManager"):
        OnlineManager.load(tmp_path / "other.pkl")
    assert not [path for path in os.listdir(tmp_path) if path.endswith(".tmp")]


def test_labels_are_filled_in_as_data_arrives(
        tmp_path: Path, online_market: tuple[Path, pd.DatetimeIndex], module_settings: Settings,
        online_template: Callable[[], dict[str, Any]]) -> None:
    calendar = online_market[1]
    bars = pd.read_parquet(online_market[0])
    cut = pd.Timestamp("2019-08-30")
    path = tmp_path / "bars.parquet"
    bars[bars.index.get_level_values("datetime") <= cut].to_parquet(path)  # the data so far
    template = make_template(path)
    template["dataset"]["kwargs"]["segments"]["test"] = ("2019-07-01", str(cut.date()))
    template["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"] = str(cut.date())
    recorder = task_train(template, experiment_name="serving_labels")
    before = recorder.load_object("label.pkl")
    days = calendar[(calendar >= pd.Timestamp("2019-07-01")) & (calendar <= cut)]
    labelled = before.index.get_level_values("datetime").unique()
    assert list(labelled) == list(days[:-2])  # a 2-day horizon: the last days not realised

    bars.to_parquet(path)  # two weeks of new bars arrive
    clear_caches()
    LabelUpdater(recorder, to_date=cut).update()
    after = recorder.load_object("label.pkl")
    assert list(after.index.get_level_values("datetime").unique()) == list(days)
    assert after.iloc[:, 0].notna().all()
    pd.testing.assert_frame_equal(after.loc[before.index], before)  # realised rows unchanged
    # no label is ever written before the model's test start
    LabelUpdater(recorder, to_date=cut, from_date="2018-01-01").update()
    assert recorder.load_object("label.pkl").index.get_level_values("datetime").min() == (
        pd.Timestamp("2019-07-01"))
