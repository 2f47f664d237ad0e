"""RollingStrategy: first tasks, following tasks only once the calendar has passed the window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.collect.collector import RecorderCollector
from taskroll.config import Settings
from taskroll.online.strategy import RollingStrategy, task_segment
from taskroll.task.gen import RollingGen
from taskroll.train.trainer import TrainerR

BEGIN = pd.Timestamp("2019-08-01")
STEP = 20


def test_first_tasks_stop_at_the_begin_time(online_market: tuple[Path, pd.DatetimeIndex],
                                            online_template: Callable[[], dict[str, Any]]
                                            ) -> None:
    calendar = online_market[1]
    strategy = RollingStrategy("first", online_template(), RollingGen(step=STEP,
                                                                      calendar=calendar))
    tasks = strategy.first_tasks(end_time=BEGIN)
    tests = [task_segment(task, "test") for task in tasks]
    assert tests[0][0] == pd.Timestamp("2019-07-01")
    assert tests[-1][1] == BEGIN
    assert all(calendar.get_loc(start) - calendar.get_loc(tests[0][0]) == STEP * position
               for position, (start, _) in enumerate(tests))
    assert all(end is not None and end <= BEGIN for _, end in tests)
    unbounded = strategy.first_tasks()
    assert task_segment(unbounded[-1], "test")[1] == calendar[-1]
    assert strategy.first_tasks(end_time="2019-06-01") == []  # test starts later: skipped


def test_prepare_tasks_waits_for_the_calendar(module_settings: Settings,
                                              online_market: tuple[Path, pd.DatetimeIndex],
                                              online_template: Callable[[], dict[str, Any]]
                                              ) -> None:
    calendar = online_market[1]
    strategy = RollingStrategy("prepare", online_template(),
                               RollingGen(step=STEP, calendar=calendar))
    # no online model yet: the template's chain starts, as first_tasks would (Qlib: none)
    assert strategy.prepare_tasks(BEGIN) == strategy.first_tasks(end_time=BEGIN)
    trainer = TrainerR(experiment_name="prepare")
    models = trainer.end_train(trainer.train(strategy.first_tasks(end_time=BEGIN)))
    assert len(models) == 2
    online = strategy.prepare_online_models(models)
    assert len(online) == 1 and strategy.tool.online_models() == online
    newest = online[0].load_object("task")
    test_start = task_segment(newest, "test")[0]
    assert test_start is not None
    due = calendar[calendar.get_loc(test_start) + STEP]
    for day in calendar[(calendar >= BEGIN) & (calendar < due)]:
        assert strategy.prepare_tasks(day) == [], day
    following = strategy.prepare_tasks(due)
    assert len(following) == 1
    assert task_segment(following[0], "test") == (due, due)
    old_valid, new_valid = task_segment(newest, "valid"), task_segment(following[0], "valid")
    assert calendar.get_loc(new_valid[0]) - calendar.get_loc(old_valid[0]) == STEP
    assert calendar.get_loc(new_valid[1]) - calendar.get_loc(old_valid[1]) == STEP
    assert new_valid[1] is not None and new_valid[1] < due
    assert task_segment(following[0], "train")[0] == task_segment(newest, "train")[0]
    # several windows at once when the routine missed days; only the newest goes online
    later = calendar[calendar.get_loc(test_start) + 2 * STEP]
    two = strategy.prepare_tasks(later)
    assert [task_segment(task, "test")[0] for task in two] == [due, later]
    trained = trainer.end_train(trainer.train(two))
    assert [recorder.id for recorder in strategy.prepare_online_models(trained)] == [
        trained[1].id]
    assert strategy.prepare_online_models([]) == [trained[1]]


def test_get_collector(module_settings: Settings) -> None:
    strategy = RollingStrategy("prepare", {}, RollingGen(step=STEP))
    collector = strategy.get_collector()
    assert isinstance(collector, RecorderCollector)
    collected = collector()
    merged = collected["pred"][("LinearModel",)]
    days = merged.index.get_level_values("datetime")
    assert days.min() == pd.Timestamp("2019-07-01")
    assert not merged.index.duplicated().any()
    with pytest.raises(KeyError):
        task_segment({}, "test")
