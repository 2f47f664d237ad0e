"""No look-ahead in rolling tasks: label-horizon gaps, refit per roll, calendar-period steps.

Every property is checked over parametrized inputs on a realistic calendar (weekdays
minus holidays, one whole week closed). Positions in that calendar are trading-day
indices: with label horizon ``h`` the label of day ``t`` uses bars up to ``t + h``, so
``index(train end) + h < index(valid start)`` means the last training label is known
before validation starts.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from taskroll.errors import LookAheadWarning, TaskConfigError
from taskroll.task.calendar import weekday_calendar
from taskroll.task.gen import RollingGen, handler_mod
from taskroll.task.spec import canonical_json, task_id

T = pd.Timestamp

HOLIDAYS = [
    "2019-01-01", "2019-04-19", "2019-05-01", "2019-12-25", "2019-12-26",
    "2020-01-01", "2020-01-24", "2020-01-27", "2020-01-28", "2020-04-10", "2020-05-01",
    "2020-12-25", "2021-01-01", "2021-02-11", "2021-02-12", "2021-04-02", "2021-05-03",
    # a whole week closed: that week has no trading day at all
    "2021-10-04", "2021-10-05", "2021-10-06", "2021-10-07", "2021-10-08",
    "2021-12-24", "2021-12-27", "2022-01-03", "2022-04-15", "2022-05-02",
    "2022-12-26",
]
CALENDAR = weekday_calendar("2019-01-01", "2022-12-31").difference(pd.DatetimeIndex(HOLIDAYS))
POSITION = {day: position for position, day in enumerate(CALENDAR)}

TEMPLATE_TEST = ("2021-01-13", "2022-06-30")  # starts mid-week, mid-month, mid-quarter
HORIZONS = (0, 1, 2, 5, 20)
STEPS: tuple[int | str, ...] = (5, 20, "W", "M", "Q", "Y")
RTYPES = (RollingGen.ROLL_EX, RollingGen.ROLL_SD)


def index(day: Any) -> int:
    """Trading-day index of a day of ``CALENDAR`` (raises when it is not one)."""
    return POSITION[T(day)]


def period_key(day: pd.Timestamp, step: str) -> Any:
    """Calendar period of ``day``, computed independently of the code under test."""
    if step == "W":
        return (day - pd.Timedelta(days=day.weekday())).date()
    if step == "M":
        return (day.year, day.month)
    if step == "Q":
        return (day.year, (day.month - 1) // 3)
    return day.year


def processor(name: str, fit: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"fields_group": "feature"}
    if fit:
        kwargs.update(fit_start_time="2019-01-02", fit_end_time="2020-06-30")
    return {"class": name, "module_path": "taskroll.data.processors", "kwargs": kwargs}


def make_template(handler_extra: dict[str, Any] | None = None,
                  test: tuple[Any, Any] = TEMPLATE_TEST,
                  handler_class: Any = "NoSuchHandler") -> dict[str, Any]:
    handler_kwargs: dict[str, Any] = {
        "start_time": "2019-01-02", "end_time": "2021-01-12",
        "fit_start_time": "2019-01-02", "fit_end_time": "2020-06-30",
        "infer_processors": [processor("ZScoreNorm", True), processor("Fillna", False),
                             "DropnaFeature"],
        "learn_processors": [processor("DropnaLabel", False),
                             processor("RobustZScoreNorm", True)],
        **(handler_extra or {}),
    }
    return {
        "model": {"class": "Ridge", "module_path": "sklearn.linear_model", "kwargs": {}},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": handler_class, "module_path": "taskroll.data.handler",
                            "kwargs": handler_kwargs},
                "segments": {"train": ("2019-01-02", "2020-06-30"),
                             "valid": ("2020-07-01", "2021-01-12"),
                             "test": test},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record"}],
    }


def segments_of(task: dict[str, Any]) -> dict[str, Any]:
    return dict(task["dataset"]["kwargs"]["segments"])


def handler_kwargs_of(task: dict[str, Any]) -> dict[str, Any]:
    return dict(task["dataset"]["kwargs"]["handler"]["kwargs"])


def generate(template: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    return RollingGen(calendar=kwargs.pop("calendar", CALENDAR), **kwargs).generate(template)


# ---------------------------------------------------------------- the property test


def assert_no_look_ahead(tasks: list[dict[str, Any]], horizon: int) -> None:
    for task in tasks:
        segments = segments_of(task)
        (train_start, train_end), (valid_start, valid_end) = segments["train"], segments["valid"]
        test_start = segments["test"][0]
        assert index(train_start) <= index(train_end) and index(valid_start) <= index(valid_end)
        assert index(train_end) + horizon < index(valid_start), segments
        assert index(valid_end) + horizon < index(test_start), segments


def assert_test_windows_tile(tasks: list[dict[str, Any]], step: int | str) -> None:
    windows = [segments_of(task)["test"] for task in tasks]
    assert windows[0][0] == CALENDAR[CALENDAR.searchsorted(T(TEMPLATE_TEST[0]))]
    assert windows[-1][1] == CALENDAR[CALENDAR.searchsorted(T(TEMPLATE_TEST[1]), "right") - 1]
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert index(start) == index(end) + 1  # consecutive: no gap, no overlap
    for number, (start, end) in enumerate(windows):
        assert index(start) <= index(end)
        if isinstance(step, int):
            assert index(end) - index(start) + 1 == step or number == len(windows) - 1
            continue
        assert period_key(start, step) == period_key(end, step)  # one period per window
        before = CALENDAR[index(start) - 1]
        if number > 0:  # later windows begin on the first trading day of their period
            assert period_key(before, step) != period_key(start, step)
        if number < len(windows) - 1:  # and end on its last one
            assert period_key(CALENDAR[index(end) + 1], step) != period_key(end, step)


def assert_segments_move_with_test(tasks: list[dict[str, Any]], rtype: str) -> None:
    first = segments_of(tasks[0])
    for earlier, later in itertools.pairwise(tasks):
        old, new = segments_of(earlier), segments_of(later)
        moved = index(new["test"][0]) - index(old["test"][0])
        assert moved > 0
        for key, bound in (("valid", 0), ("valid", 1), ("train", 1)):
            assert index(new[key][bound]) - index(old[key][bound]) == moved
        if rtype == RollingGen.ROLL_EX:
            assert new["train"][0] == first["train"][0]
        else:
            assert index(new["train"][0]) - index(old["train"][0]) == moved


@pytest.mark.parametrize("rtype", RTYPES)
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("horizon", HORIZONS)
def test_rolling_tasks_never_look_ahead(horizon: int, step: int | str, rtype: str) -> None:
    template = make_template({"label_horizon": horizon})
    before = copy.deepcopy(template)
    generator = RollingGen(step=step, rtype=rtype, calendar=CALENDAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LookAheadWarning)  # the horizon is known: no warning
        tasks = generator.generate(template)
    assert template == before
    assert len(tasks) >= 2
    assert_no_look_ahead(tasks, horizon)
    assert_test_windows_tile(tasks, step)
    assert_segments_move_with_test(tasks, rtype)
    # the gap is exactly h + 1 where the template's segments were adjacent
    first = segments_of(tasks[0])
    assert index(first["train"][1]) == index("2020-07-01") - (horizon + 1)
    assert index(first["valid"][1]) == index(TEMPLATE_TEST[0]) - (horizon + 1)
    # continuing from any task, in memory or read back from a JSON store, gives the same tasks
    test_end = TEMPLATE_TEST[1]
    for position in (0, len(tasks) // 2, len(tasks) - 1):
        assert generator.gen_following_tasks(tasks[position], test_end) == tasks[position + 1:]
        stored = json.loads(canonical_json(tasks[position]))
        following = generator.gen_following_tasks(stored, test_end)
        assert [segments_of(task) for task in following] == [
            segments_of(task) for task in tasks[position + 1:]]


# ---------------------------------------------------------------- where the horizon comes from


class HorizonTwoHandler:
    """A data handler whose label uses bars up to t + 2."""

    LABEL_HORIZON = 2


class PlainHandler:
    """A data handler that does not declare its label horizon."""


def gap_of(tasks: list[dict[str, Any]]) -> int:
    segments = segments_of(tasks[0])
    return index(segments["test"][0]) - index(segments["valid"][1])


@pytest.mark.parametrize(
    ("handler_class", "handler_extra", "generator_kwargs", "gap"),
    [
        (HorizonTwoHandler, {}, {}, 3),  # the class attribute
        ("HorizonTwoHandler", {}, {}, 3),  # the class resolved from module_path + class
        (HorizonTwoHandler, {"label_horizon": 5}, {}, 6),  # the cfg's kwargs beat the class
        (HorizonTwoHandler, {"label_horizon": 5}, {"label_horizon": 0}, 1),  # the argument wins
        (PlainHandler, {}, {"label_horizon": 4}, 5),
        (PlainHandler, {}, {"label_horizon": 4, "trunc_days": 9}, 9),  # a wider gap is kept
        (HorizonTwoHandler, {}, {"trunc_days": 1, "allow_label_leak": True}, 1),
    ],
)
def test_label_horizon_sources(handler_class: Any, handler_extra: dict[str, Any],
                               generator_kwargs: dict[str, Any], gap: int,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_handlers")
    module.HorizonTwoHandler = HorizonTwoHandler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_handlers", module)
    template = make_template(handler_extra, handler_class=handler_class)
    template["dataset"]["kwargs"]["handler"]["module_path"] = "fake_handlers"
    leak = generator_kwargs.get("allow_label_leak", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = generate(template, step="M", **generator_kwargs)
    look_ahead = [item for item in caught if issubclass(item.category, LookAheadWarning)]
    assert len(look_ahead) == (1 if leak else 0)
    if leak:
        assert "allow_label_leak" in str(look_ahead[0].message)
    assert gap_of(tasks) == gap
    assert all(gap_of([task]) == gap for task in tasks)


@pytest.mark.parametrize("handler_class", ["NoSuchHandler", PlainHandler, "no.such.module.Cls"])
@pytest.mark.parametrize("step", [5, "M"])
def test_unknown_horizon_warns_once_and_does_not_truncate(handler_class: Any,
                                                          step: int | str) -> None:
    template = make_template(handler_class=handler_class)
    with pytest.warns(LookAheadWarning, match="label_horizon") as caught:
        tasks = generate(template, step=step)
    assert len([item for item in caught if issubclass(item.category, LookAheadWarning)]) == 1
    assert len(tasks) > 2
    assert segments_of(tasks[0])["train"] == (T("2019-01-02"), T("2020-06-30"))
    assert segments_of(tasks[0])["valid"] == (T("2020-07-01"), T("2021-01-12"))
    # an explicit trunc_days is used as given, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", LookAheadWarning)
        gapped = generate(template, step=step, trunc_days=4)
    assert all(gap_of([task]) == 4 for task in gapped)


def test_real_handler_cfg_with_label_horizon_kwarg() -> None:
    template = make_template({"label_horizon": 2}, handler_class="Alpha158")
    assert gap_of(generate(template, step=20)) == 3


@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("step", [5, "W"])
def test_following_tasks_of_a_stored_ungapped_task_get_the_gap(horizon: int,
                                                               step: int | str) -> None:
    """Online serving continues from tasks read back from a store (lists of date strings)."""
    stored = json.loads(canonical_json(make_template({"label_horizon": horizon})))
    stored["dataset"]["kwargs"]["segments"]["test"] = ["2021-01-13", "2021-01-15"]
    following = RollingGen(step=step, calendar=CALENDAR).gen_following_tasks(stored, "2021-06-30")
    assert len(following) > 5
    assert_no_look_ahead(following, horizon)
    assert stored["dataset"]["kwargs"]["segments"]["valid"] == ["2020-07-01", "2021-01-12"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("generator_kwargs", "handler_extra", "message"),
    [
        ({"step": "D"}, {}, r"step.*'W', 'M', 'Q', 'Y'"),
        ({"step": "2W"}, {}, r"step.*'W'"),
        ({"step": "W-MON"}, {}, r"step.*'W'"),
        ({"step": ""}, {}, r"step"),
        ({"step": "month"}, {}, r"step"),
        ({"step": 0}, {}, r"step"),
        ({"step": -5}, {}, r"step"),
        ({"step": True}, {}, r"step"),
        ({"step": 2.5}, {}, r"step"),
        ({"step": None}, {}, r"step"),
        ({"trunc_days": -1}, {}, r"trunc_days"),
        ({"trunc_days": True}, {}, r"trunc_days"),
        ({"trunc_days": 1.5}, {}, r"trunc_days"),
        ({"trunc_days": "3"}, {}, r"trunc_days"),
        ({"trunc_days": 2, "label_horizon": 2}, {}, r"trunc_days=2.*gap.*3.*allow_label_leak"),
        ({"trunc_days": 2}, {"label_horizon": 2}, r"trunc_days=2.*gap.*3.*allow_label_leak"),
        ({"trunc_days": 0}, {"label_horizon": 0}, r"trunc_days=0.*gap.*1.*allow_label_leak"),
        ({"label_horizon": -1}, {}, r"label_horizon"),
        ({"label_horizon": 1.5}, {}, r"label_horizon"),
        ({"label_horizon": True}, {}, r"label_horizon"),
        ({"label_horizon": "2"}, {}, r"label_horizon"),
        ({}, {"label_horizon": -1}, r"handler\.kwargs\.label_horizon"),
        ({}, {"label_horizon": "2"}, r"handler\.kwargs\.label_horizon"),
        ({}, {"label_horizon": True}, r"handler\.kwargs\.label_horizon"),
        ({"allow_label_leak": "yes"}, {}, r"allow_label_leak"),
        ({"refit_per_roll": 1}, {}, r"refit_per_roll"),
        # a gap that leaves no day in valid (2020-07-01..2021-01-12 holds 138 trading days)
        ({"label_horizon": 200}, {}, r"segments\.valid"),
    ],
)
@pytest.mark.parametrize("step", [5, "M"])
def test_bad_arguments_raise_task_config_error(generator_kwargs: dict[str, Any],
                                               handler_extra: dict[str, Any], message: str,
                                               step: int | str) -> None:
    template = make_template(handler_extra)
    before = copy.deepcopy(template)
    kwargs = {"step": step, **generator_kwargs}
    with pytest.raises(TaskConfigError, match=message):
        RollingGen(calendar=CALENDAR, **kwargs).generate(template)
    assert template == before


@pytest.mark.parametrize("step", ["W", "w", "M", "ME", "MS", "m", "Q", "QE", "QS", "Y", "YE",
                                  "YS", "A", "y"])
def test_period_step_aliases(step: str) -> None:
    canonical = step.upper()[0] if step.upper()[0] != "A" else "Y"
    template = make_template({"label_horizon": 2})
    assert generate(template, step=step) == generate(template, step=canonical)


# ---------------------------------------------------------------- refit per roll


def fit_times(task: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Fit range of the handler and of every processor cfg that has one, in order."""
    kwargs = handler_kwargs_of(task)
    found = [(kwargs["fit_start_time"], kwargs["fit_end_time"])]
    for key in ("infer_processors", "learn_processors"):
        for item in kwargs[key]:
            if isinstance(item, dict) and "fit_start_time" in item["kwargs"]:
                found.append((item["kwargs"]["fit_start_time"], item["kwargs"]["fit_end_time"]))
    return found


def non_fit_processors(task: dict[str, Any]) -> list[Any]:
    kwargs = handler_kwargs_of(task)
    return [item for key in ("infer_processors", "learn_processors") for item in kwargs[key]
            if not (isinstance(item, dict) and "fit_start_time" in item["kwargs"])]


@pytest.mark.parametrize("task_copy_func", [copy.deepcopy, copy.copy])
@pytest.mark.parametrize("rtype", RTYPES)
@pytest.mark.parametrize("step", [5, "M"])
@pytest.mark.parametrize("horizon", [0, 2, 20])
def test_refit_per_roll_follows_each_train_segment(horizon: int, step: int | str, rtype: str,
                                                   task_copy_func: Callable[[Any], Any]) -> None:
    template = make_template({"label_horizon": horizon})
    before = copy.deepcopy(template)
    tasks = generate(template, step=step, rtype=rtype, task_copy_func=task_copy_func)
    assert template == before
    trains = {segments_of(task)["train"] for task in tasks}
    assert len(trains) == len(tasks)  # every roll has its own train segment ...
    for task in tasks:  # ... and every fit range follows it
        assert fit_times(task) == [segments_of(task)["train"]] * 3
        assert non_fit_processors(task) == non_fit_processors(template)
    # opting out keeps the template's fit ranges in every task
    kept = generate(template, step=step, rtype=rtype, task_copy_func=task_copy_func,
                    refit_per_roll=False)
    assert template == before
    for task in kept:
        assert fit_times(task) == [("2019-01-02", "2020-06-30")] * 3
    assert [segments_of(task) for task in kept] == [segments_of(task) for task in tasks]


@pytest.mark.parametrize(
    "handler_kwargs",
    [
        {"fit_end_time": "2020-06-30"},  # one of the two is enough
        {"fit_start_time": None, "start_time": "2019-01-02"},
        {"infer_processors": [processor("ZScoreNorm", True)]},
        {"learn_processors": [{"class": "Odd", "kwargs": {"fit_end_time": None}}]},
    ],
)
def test_handler_mod_refits_any_fit_range(handler_kwargs: dict[str, Any]) -> None:
    template = make_template({"label_horizon": 2})
    template["dataset"]["kwargs"]["handler"]["kwargs"] = {"label_horizon": 2, **handler_kwargs}
    before = copy.deepcopy(template)
    generator = RollingGen(step="Q", calendar=CALENDAR)
    for task in generator.generate(template):
        train = segments_of(task)["train"]
        kwargs = handler_kwargs_of(task)
        if "fit_start_time" in handler_kwargs or "fit_end_time" in handler_kwargs:
            assert (kwargs["fit_start_time"], kwargs["fit_end_time"]) == train
        for key in ("infer_processors", "learn_processors"):
            for item in kwargs.get(key, []):
                assert (item["kwargs"]["fit_start_time"], item["kwargs"]["fit_end_time"]) == train
    assert template == before
    # handler_mod itself reads the opt-out from the generator it is given
    task = copy.deepcopy(template)
    handler_mod(task, RollingGen(step=5, calendar=CALENDAR, refit_per_roll=False))
    assert task == before


# ---------------------------------------------------------------- perturbing the future


def perturbed(calendar: pd.DatetimeIndex, cut: pd.Timestamp, add_from: pd.Timestamp
              ) -> pd.DatetimeIndex:
    """``calendar`` up to ``cut``; after it some days removed and Saturdays from ``add_from`` on."""
    later = calendar[calendar > cut]
    removed = later[1::4]
    saturdays = pd.date_range(max(add_from, cut + pd.Timedelta(days=1)), calendar[-1],
                              freq="W-SAT")[::2]
    result = calendar.difference(removed).union(saturdays)
    assert (result[result <= cut] == calendar[calendar <= cut]).all()
    assert not result[result > cut].equals(later)
    return result


def period_end(day: pd.Timestamp, step: int | str) -> pd.Timestamp:
    """Last calendar date of ``day``'s period (``day`` itself for integer steps)."""
    if isinstance(step, int):
        return day
    offsets = {"W": pd.offsets.Week(weekday=6), "M": pd.offsets.MonthEnd(),
               "Q": pd.offsets.QuarterEnd(startingMonth=12), "Y": pd.offsets.YearEnd()}
    rolled: pd.Timestamp = offsets[step].rollforward(day)
    return rolled


@pytest.mark.parametrize("additions", ["after_period", "right_after_cut"])
@pytest.mark.parametrize("rtype", RTYPES)
@pytest.mark.parametrize("step", [5, 20, "W", "M", "Q"])
def test_tasks_do_not_depend_on_days_after_the_cut(step: int | str, rtype: str,
                                                   additions: str) -> None:
    template = make_template({"label_horizon": 2})
    baseline = generate(template, step=step, rtype=rtype)
    starts = [segments_of(task)["test"][0] for task in baseline]
    cuts: list[pd.Timestamp] = []
    for roll in (1, 2, len(baseline) // 2, len(baseline) - 1):
        roll_day = starts[roll]
        cuts += [CALENDAR[index(roll_day) - 1], roll_day,  # the day before a roll, a roll day
                 CALENDAR[index(roll_day) + 1]]  # and a day inside a window
    for cut in cuts:
        # Additions inside the cut's own period change the last trading day of that period,
        # which is where a period window ends by definition; so they come after the period
        # in the first variant and right after the cut in the second.
        add_from = period_end(cut, step) + pd.Timedelta(days=1) if additions == "after_period" \
            else cut + pd.Timedelta(days=1)
        changed = generate(template, step=step, rtype=rtype,
                           calendar=perturbed(CALENDAR, cut, add_from))
        window_ends_are_stable = isinstance(step, int) or additions == "after_period"
        for run, other in ((baseline, changed), (changed, baseline)):
            for position, task in enumerate(run):
                test_start, test_end = segments_of(task)["test"]
                if test_end <= cut and window_ends_are_stable:
                    assert other[position] == task
                    assert task_id(other[position]) == task_id(task)
                if test_start <= cut:
                    mine, theirs = segments_of(task), segments_of(other[position])
                    assert (mine["train"], mine["valid"], mine["test"][0]) == (
                        theirs["train"], theirs["valid"], theirs["test"][0])
                    assert fit_times(other[position]) == fit_times(task)


# ---------------------------------------------------------------- a worked example


def test_worked_example_monthly_steps_with_horizon_two() -> None:
    """Label close[t+2]/close[t+1]-1 (h = 2) rolled monthly; 2024-03-29 is a holiday."""
    calendar = weekday_calendar("2024-01-01", "2024-04-30").difference(
        pd.DatetimeIndex(["2024-01-01", "2024-03-29"]))
    template = make_template({"label_horizon": 2})
    template["dataset"]["kwargs"]["segments"] = {"train": ("2024-01-02", "2024-01-31"),
                                                 "valid": ("2024-02-01", "2024-02-14"),
                                                 "test": ("2024-02-15", "2024-04-30")}
    tasks = generate(template, step="M", calendar=calendar)
    expected = [
        # train ends 3 trading days before valid starts: the label of 01-29 uses 01-31
        (("2024-01-02", "2024-01-29"), ("2024-02-01", "2024-02-12"), ("2024-02-15", "2024-02-29")),
        # the test start moved 11 trading days, and so do train's end and valid
        (("2024-01-02", "2024-02-13"), ("2024-02-16", "2024-02-27"), ("2024-03-01", "2024-03-28")),
        (("2024-01-02", "2024-03-12"), ("2024-03-15", "2024-03-26"), ("2024-04-01", "2024-04-30")),
    ]
    assert [tuple(segments_of(task)[key] for key in ("train", "valid", "test"))
            for task in tasks] == [tuple((T(start), T(end)) for start, end in task)
                                   for task in expected]
    assert [fit_times(task)[0] for task in tasks] == [
        (T(start), T(end)) for (start, end), _, _ in expected]
