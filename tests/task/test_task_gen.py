"""RollingGen, MultiHorizonGenBase, task_generator and handler_mod on a small weekday calendar."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pandas as pd
import pytest

from taskroll.errors import CalendarError, TaskConfigError
from taskroll.task.calendar import TimeAdjuster, load_calendar, weekday_calendar
from taskroll.task.gen import (
    MultiHorizonGenBase,
    RollingGen,
    TaskGen,
    handler_mod,
    task_generator,
    trunc_segments,
)
from taskroll.task.spec import canonical_json

T = pd.Timestamp

# The template's handler ("Alpha") declares no label horizon, so RollingGen warns that it
# cannot derive the label gap; these tests pin the behaviour without one (see
# test_rolling_leakage.py for the gap and the warning itself).
pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.LookAheadWarning")

# 30 weekdays: Mon 2024-01-01 .. Fri 2024-02-09 (six full weeks).
CALENDAR = weekday_calendar("2024-01-01", "2024-02-09")


def make_template(test: tuple[Any, Any] = ("2024-01-22", "2024-02-09")) -> dict[str, Any]:
    return {
        "model": {"class": "Ridge", "module_path": "sklearn.linear_model",
                  "kwargs": {"loss": "mse"}},
        "dataset": {
            "class": "DatasetH",
            "module_path": "taskroll.data",
            "kwargs": {
                "handler": {"class": "Alpha", "module_path": "taskroll.data",
                            "kwargs": {"start_time": "2024-01-01", "end_time": "2024-01-19"}},
                "segments": {"train": ("2024-01-01", "2024-01-12"),
                             "valid": ("2024-01-15", "2024-01-19"),
                             "test": test},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train"}],
    }


def segments_of(task: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return dict(task["dataset"]["kwargs"]["segments"])


def seg(start: str, end: str | None) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    return (T(start), None if end is None else T(end))


def test_rolling_expanding_segments() -> None:
    tasks = RollingGen(step=5, rtype=RollingGen.ROLL_EX, calendar=CALENDAR).generate(
        make_template())
    assert [segments_of(task) for task in tasks] == [
        {"train": seg("2024-01-01", "2024-01-12"), "valid": seg("2024-01-15", "2024-01-19"),
         "test": seg("2024-01-22", "2024-01-26")},
        {"train": seg("2024-01-01", "2024-01-19"), "valid": seg("2024-01-22", "2024-01-26"),
         "test": seg("2024-01-29", "2024-02-02")},
        {"train": seg("2024-01-01", "2024-01-26"), "valid": seg("2024-01-29", "2024-02-02"),
         "test": seg("2024-02-05", "2024-02-09")},
    ]
    for task in tasks:
        for start, end in segments_of(task).values():
            assert type(start) is pd.Timestamp and type(end) is pd.Timestamp


def test_rolling_sliding_segments() -> None:
    tasks = RollingGen(step=5, rtype=RollingGen.ROLL_SD, calendar=CALENDAR).generate(
        make_template())
    assert [segments_of(task) for task in tasks] == [
        {"train": seg("2024-01-01", "2024-01-12"), "valid": seg("2024-01-15", "2024-01-19"),
         "test": seg("2024-01-22", "2024-01-26")},
        {"train": seg("2024-01-08", "2024-01-19"), "valid": seg("2024-01-22", "2024-01-26"),
         "test": seg("2024-01-29", "2024-02-02")},
        {"train": seg("2024-01-15", "2024-01-26"), "valid": seg("2024-01-29", "2024-02-02"),
         "test": seg("2024-02-05", "2024-02-09")},
    ]


def test_last_window_clipped_to_test_end() -> None:
    generator = RollingGen(step=5, calendar=CALENDAR)
    tasks = generator.generate(make_template(test=("2024-01-22", "2024-02-07")))
    assert [segments_of(task)["test"] for task in tasks] == [
        seg("2024-01-22", "2024-01-26"), seg("2024-01-29", "2024-02-02"),
        seg("2024-02-05", "2024-02-07")]
    # a test period shorter than one step gives one clipped window
    short = generator.generate(make_template(test=("2024-01-20", "2024-01-24")))
    assert [segments_of(task)["test"] for task in short] == [seg("2024-01-22", "2024-01-24")]


def test_open_test_end_runs_to_calendar_end() -> None:
    tasks = RollingGen(step=7, calendar=CALENDAR).generate(make_template(test=("2024-01-22", None)))
    assert [segments_of(task)["test"] for task in tasks] == [
        seg("2024-01-22", "2024-01-30"), seg("2024-01-31", "2024-02-08"),
        seg("2024-02-09", "2024-02-09")]
    # the handler end follows the (bounded) test windows
    assert tasks[-1]["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"] == T("2024-02-09")


def test_trunc_days() -> None:
    # each segment ends 2 trading days before the next one starts: train before valid
    # (Qlib only cuts relative to the test start, which left train ending on 01-12)
    tasks = RollingGen(step=5, trunc_days=2, calendar=CALENDAR).generate(make_template())
    assert [segments_of(task) for task in tasks] == [
        {"train": seg("2024-01-01", "2024-01-11"), "valid": seg("2024-01-15", "2024-01-18"),
         "test": seg("2024-01-22", "2024-01-26")},
        {"train": seg("2024-01-01", "2024-01-18"), "valid": seg("2024-01-22", "2024-01-25"),
         "test": seg("2024-01-29", "2024-02-02")},
        {"train": seg("2024-01-01", "2024-01-25"), "valid": seg("2024-01-29", "2024-02-01"),
         "test": seg("2024-02-05", "2024-02-09")},
    ]


def test_trunc_segments_in_place() -> None:
    adjuster = TimeAdjuster(CALENDAR)
    segments: dict[str, Any] = {"train": seg("2024-01-01", "2024-01-19"),
                                "test": seg("2024-01-22", "2024-01-26")}
    trunc_segments(adjuster, segments, 3)
    assert segments == {"train": seg("2024-01-01", "2024-01-17"),
                        "test": seg("2024-01-22", "2024-01-26")}


def test_handler_mod_widens_end_and_start() -> None:
    template = make_template()
    template["dataset"]["kwargs"]["handler"]["kwargs"]["start_time"] = "2024-01-10"
    tasks = RollingGen(step=5, calendar=CALENDAR).generate(template)
    handler_times = [(task["dataset"]["kwargs"]["handler"]["kwargs"]["start_time"],
                      task["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"])
                     for task in tasks]
    assert handler_times == [(T("2024-01-01"), T("2024-01-26")),
                             (T("2024-01-01"), T("2024-02-02")),
                             (T("2024-01-01"), T("2024-02-09"))]
    # a handler range that already covers the segments is kept as written
    wide = make_template()
    wide["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"] = "2030-01-01"
    first = RollingGen(step=5, calendar=CALENDAR).generate(wide)[0]
    assert first["dataset"]["kwargs"]["handler"]["kwargs"] == {
        "start_time": "2024-01-01", "end_time": "2030-01-01"}
    # unbounded handler ends stay unbounded
    open_ended = make_template()
    open_ended["dataset"]["kwargs"]["handler"]["kwargs"] = {"end_time": None}
    first = RollingGen(step=5, calendar=CALENDAR).generate(open_ended)[0]
    assert first["dataset"]["kwargs"]["handler"]["kwargs"] == {"end_time": None}


def test_handler_mod_without_handler_dict() -> None:
    generator = RollingGen(step=5, calendar=CALENDAR)
    for handler in (object(), "file:///tmp/handler.pkl"):
        template = make_template()
        template["dataset"]["kwargs"]["handler"] = handler
        tasks = generator.generate(template)
        assert len(tasks) == 3
        assert type(tasks[0]["dataset"]["kwargs"]["handler"]) is type(handler)
    template = make_template()
    del template["dataset"]["kwargs"]["handler"]
    assert len(generator.generate(template)) == 3
    handler_mod({"model": {}}, generator)  # nothing to change, no error
    broken = make_template()
    broken["dataset"]["kwargs"]["handler"]["kwargs"]["end_time"] = "yesterday-ish"
    with pytest.raises(TaskConfigError, match=r"handler\.kwargs\.end_time"):
        generator.generate(broken)


def test_gen_following_tasks_continues() -> None:
    generator = RollingGen(step=5, calendar=CALENDAR)
    tasks = generator.generate(make_template())
    assert generator.gen_following_tasks(tasks[0], T("2024-02-09")) == tasks[1:]
    assert generator.gen_following_tasks(tasks[-1], "2024-02-09") == []
    # a template that stopped early is continued later, when more test days are wanted
    early = generator.generate(make_template(test=("2024-01-22", "2024-02-02")))
    assert len(early) == 2
    later = generator.gen_following_tasks(early[-1], None)
    assert [segments_of(task) for task in later] == [segments_of(tasks[2])]
    # a task read back from a JSON store (lists of date strings) continues the same way
    stored = json.loads(canonical_json(tasks[0]))
    assert stored["dataset"]["kwargs"]["segments"]["test"] == ["2024-01-22", "2024-01-26"]
    following = generator.gen_following_tasks(stored, "2024-02-09")
    assert [segments_of(task) for task in following] == [segments_of(task) for task in tasks[1:]]


def test_gen_following_after_a_clipped_window_keeps_full_steps() -> None:
    generator = RollingGen(step=5, calendar=CALENDAR)
    clipped = generator.generate(make_template(test=("2024-01-22", "2024-01-24")))[0]
    assert segments_of(clipped)["test"] == seg("2024-01-22", "2024-01-24")
    following = generator.gen_following_tasks(clipped, "2024-02-09")
    assert [segments_of(task)["test"] for task in following] == [
        seg("2024-01-29", "2024-02-02"), seg("2024-02-05", "2024-02-09")]


def test_template_not_mutated() -> None:
    template = make_template()
    before = copy.deepcopy(template)
    RollingGen(step=5, trunc_days=1, calendar=CALENDAR).generate(template)
    assert template == before
    # even with a shallow copy function the template keeps its segments and handler
    RollingGen(step=5, calendar=CALENDAR, task_copy_func=copy.copy).generate(template)
    assert template == before


def test_calendar_argument_forms() -> None:
    adjuster = TimeAdjuster(CALENDAR)
    from_adjuster = RollingGen(step=5, calendar=adjuster)
    assert from_adjuster.ta is adjuster
    from_dates = RollingGen(step=5, calendar=[str(day.date()) for day in CALENDAR])
    assert from_dates.generate(make_template()) == from_adjuster.generate(make_template())
    default = RollingGen(step=5)  # weekday calendar 2000..2035
    assert default.generate(make_template()) == from_adjuster.generate(make_template())


def test_rolling_into_years_past_xshg_data() -> None:
    calendar = load_calendar("XSHG", start="2026-01-01", end="2027-12-31")
    template = make_template(test=("2026-12-01", "2027-02-26"))
    template["dataset"]["kwargs"]["segments"].update(
        train=("2026-01-05", "2026-10-30"), valid=("2026-11-02", "2026-11-27"))
    tasks = RollingGen(step=20, calendar=calendar).generate(template)
    tests = [segments_of(task)["test"] for task in tasks]
    assert tests[0][0] == T("2026-12-01") and tests[-1][1] == T("2027-02-26")
    for start, end in tests:
        assert start in calendar and end in calendar and start.day_of_week < 5
    assert all(later[0] > earlier[1] for earlier, later in itertools.pairwise(tests))


class LossGen(TaskGen):
    """Swap the model's loss: one task per loss."""

    def __init__(self, losses: list[str]) -> None:
        self.losses = losses

    def generate(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        tasks = []
        for loss in self.losses:
            new_task = copy.deepcopy(task)
            new_task["model"]["kwargs"]["loss"] = loss
            tasks.append(new_task)
        return tasks


def test_task_generator_product() -> None:
    rolling = RollingGen(step=5, calendar=CALENDAR)
    tasks = task_generator([make_template()], [rolling, LossGen(["mse", "huber"])])
    assert len(tasks) == 6
    assert [(segments_of(task)["test"][0], task["model"]["kwargs"]["loss"]) for task in tasks] == [
        (T("2024-01-22"), "mse"), (T("2024-01-22"), "huber"),
        (T("2024-01-29"), "mse"), (T("2024-01-29"), "huber"),
        (T("2024-02-05"), "mse"), (T("2024-02-05"), "huber")]
    # a single task and a single generator; __call__ is generate
    assert task_generator(make_template(), rolling) == rolling(make_template())
    two_templates = task_generator([make_template(), make_template()], [LossGen(["a", "b"])])
    assert len(two_templates) == 4


class LabelHorizonGen(MultiHorizonGenBase):
    def set_horizon(self, task: dict[str, Any], hr: int) -> None:
        task["dataset"]["kwargs"]["label"] = f"Ref($close, -{hr + 1}) / Ref($close, -1) - 1"


def test_multi_horizon() -> None:
    template = make_template()
    before = copy.deepcopy(template)
    tasks = LabelHorizonGen(horizon=[1, 5], label_leak_n=2, calendar=CALENDAR).generate(template)
    assert template == before
    assert [task["dataset"]["kwargs"]["label"] for task in tasks] == [
        "Ref($close, -2) / Ref($close, -1) - 1", "Ref($close, -6) / Ref($close, -1) - 1"]
    # horizon 1: end 3 trading days before the test start; horizon 5: 7 days before
    assert segments_of(tasks[0]) == {"train": seg("2024-01-01", "2024-01-12"),
                                     "valid": seg("2024-01-15", "2024-01-17"),
                                     "test": seg("2024-01-22", "2024-02-09")}
    assert segments_of(tasks[1]) == {"train": seg("2024-01-01", "2024-01-11"),
                                     "valid": seg("2024-01-11", "2024-01-11"),
                                     "test": seg("2024-01-22", "2024-02-09")}
    assert LabelHorizonGen(calendar=CALENDAR).horizon == [5]  # Qlib's default
    with pytest.raises(TypeError):
        MultiHorizonGenBase()  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda task: task["dataset"]["kwargs"].pop("segments"), "task.dataset.kwargs.segments"),
        (lambda task: task.pop("dataset"), "task.dataset"),
        (lambda task: task["dataset"]["kwargs"]["segments"].pop("test"),
         "task.dataset.kwargs.segments.test"),
        (lambda task: task["dataset"]["kwargs"]["segments"].pop("train"),
         "task.dataset.kwargs.segments.train"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(
            train=("2024-01-12", "2024-01-01")), "task.dataset.kwargs.segments.train"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(
            valid=("2024-01-15", "soon")), r"task.dataset.kwargs.segments.valid\[1\]"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(
            valid=("2024-01-15", 20240119)), r"task.dataset.kwargs.segments.valid\[1\]"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(test="2024-01-22"),
         "task.dataset.kwargs.segments.test"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(
            test=(None, "2024-02-09")), r"task.dataset.kwargs.segments.test\[0\]"),
        (lambda task: task["dataset"]["kwargs"]["segments"].update(
            test=("2024-01-27", "2024-01-28")), "task.dataset.kwargs.segments.test"),
    ],
)
def test_malformed_segments_raise_task_config_error(mutate: Any, path: str) -> None:
    template = make_template()
    mutate(template)
    with pytest.raises(TaskConfigError, match=path):
        RollingGen(step=5, calendar=CALENDAR).generate(template)


def test_segments_outside_calendar_raise_calendar_error() -> None:
    template = make_template(test=("2024-03-01", "2024-03-29"))
    with pytest.raises(CalendarError, match=r"task\.dataset\.kwargs\.segments\.test"):
        RollingGen(step=5, calendar=CALENDAR).generate(template)


@pytest.mark.parametrize("kwargs", [{"step": 0}, {"step": 2.5}, {"rtype": "rolling"},
                                    {"trunc_days": -1}])
def test_bad_generator_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TaskConfigError):
        RollingGen(calendar=CALENDAR, **kwargs)
