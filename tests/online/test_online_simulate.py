"""OnlineManager.simulate over a synthetic market: coverage, no look-ahead, trainers agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.online.manager import OnlineManager
from taskroll.online.strategy import RollingStrategy, task_segment
from taskroll.task.gen import RollingGen
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import DelayTrainerRM, Trainer, TrainerR, TrainerRM

BEGIN = pd.Timestamp("2019-08-01")
END = pd.Timestamp("2019-09-30")
STEP = 20

TRAINERS: dict[str, Callable[[str], Trainer]] = {
    "TrainerR": lambda name: TrainerR(experiment_name=name),
    "TrainerRM": lambda name: TrainerRM(experiment_name=name, task_pool=f"{name}_pool"),
    "DelayTrainerRM": lambda name: DelayTrainerRM(experiment_name=name,
                                                  task_pool=f"{name}_pool"),
}


@pytest.fixture(scope="module")
def simulations(module_settings: Settings, online_market: tuple[Path, pd.DatetimeIndex],
                online_template: Callable[[], dict[str, Any]]) -> dict[str, OnlineManager]:
    """One simulation per trainer, each in its own experiment of one MLflow store."""
    calendar = online_market[1]
    managers = {}
    for name, make_trainer in TRAINERS.items():
        strategy = RollingStrategy(f"sim_{name}", online_template(),
                                   RollingGen(step=STEP, calendar=calendar))
        manager = OnlineManager(strategy, trainer=make_trainer(f"sim_{name}"), begin_time=BEGIN)
        manager.simulate(END)
        managers[name] = manager
    return managers


def _days(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame.index.get_level_values("datetime").unique())


def test_signals_cover_every_simulated_trading_day(
        simulations: dict[str, OnlineManager],
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    calendar = online_market[1]
    expected = calendar[(calendar >= BEGIN) & (calendar <= END)]
    for manager in simulations.values():
        signals = manager.get_signals()
        assert signals is not None
        assert list(signals.index.names) == ["datetime", "instrument"]
        assert isinstance(signals, pd.Series) and signals.name == "score"
        assert not signals.index.duplicated().any()
        days = _days(signals)
        assert set(expected) <= set(days)
        assert days.max() == END
        assert (days[days >= BEGIN] == expected).all()
        assert signals.notna().all()
        assert set(manager.history) == set(expected)


def test_each_day_is_served_by_a_model_trained_before_it(
        simulations: dict[str, OnlineManager],
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    calendar = online_market[1]
    manager = simulations["TrainerR"]
    signals = manager.get_signals()
    assert signals is not None
    experiment = R.get_exp("sim_TrainerR", create=False)
    models = sorted((task_segment(recorder.load_object("task"), "test")[0], recorder.id)
                    for recorder in experiment.list_recorders("list", status="FINISHED"))
    assert len({start for start, _ in models}) == len(models)  # one model per window
    tasks: dict[str, dict[str, Any]] = {}
    served: set[str] = set()
    for day in _days(signals):
        # the newest model whose test has started by the day serves it
        recorder_id = [run for start, run in models if start is not None and start <= day][-1]
        if day >= BEGIN:  # from the first routine on, that is the model online that day
            assert manager.history[day]["sim_TrainerR"] == [recorder_id]
        served.add(recorder_id)
        if recorder_id not in tasks:
            tasks[recorder_id] = Recorder(recorder_id).load_object("task")
        task = tasks[recorder_id]
        assert task_segment(task, "train")[1] < day
        assert task_segment(task, "valid")[1] < day
        test_start = task_segment(task, "test")[0]
        assert test_start is not None and test_start <= day
        # the newest model possible: retrained as soon as the calendar passed its window
        age = calendar.get_loc(day) - calendar.get_loc(test_start)
        assert 0 <= age < STEP
        # the signal of the day is the served model's own prediction, z-scored per day
        pred = Recorder(recorder_id).load_object("pred.pkl")["score"].xs(day, level="datetime")
        expected = (pred - pred.mean()) / pred.std()
        got = signals.xs(day, level="datetime")
        pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(),
                                       check_names=False, rtol=1e-9, atol=1e-12)
    assert len(served) >= 3  # the model online at BEGIN and two retrainings


def test_older_models_go_offline(simulations: dict[str, OnlineManager]) -> None:
    manager = simulations["TrainerR"]
    strategy = manager.strategies[0]
    online = strategy.tool.online_models()
    assert [recorder.id for recorder in online] == manager.history[END]["sim_TrainerR"]
    all_ids = {ids[0] for day in manager.history.values() for ids in day.values()}
    for recorder_id in all_ids - {online[0].id}:
        assert strategy.tool.get_online_tag(Recorder(recorder_id)) == "offline"


@pytest.mark.parametrize("name", ["TrainerRM", "DelayTrainerRM"])
def test_trainers_give_identical_signals(simulations: dict[str, OnlineManager],
                                         name: str) -> None:
    reference = simulations["TrainerR"].get_signals()
    other = simulations[name].get_signals()
    assert reference is not None and other is not None
    pd.testing.assert_series_equal(reference, other)
    assert len(_switch_days(simulations[name])) >= 3
    assert _switch_days(simulations["TrainerR"]) == _switch_days(simulations[name])


def _switch_days(manager: OnlineManager) -> list[pd.Timestamp]:
    """The days on which the online model changed."""
    days, previous = [], None
    for day, online in sorted(manager.history.items()):
        current = next(iter(online.values()))
        if current != previous:
            days.append(day)
        previous = current
    return days
