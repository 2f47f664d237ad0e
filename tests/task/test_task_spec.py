"""init_instance_by_config, fill_placeholder and task ids (taskroll.task.spec)."""

from __future__ import annotations

import copy
import datetime as dt
from collections import OrderedDict
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.errors import TaskConfigError
from taskroll.task.spec import canonical_json, fill_placeholder, init_instance_by_config, task_id


def test_init_from_dict_cfg() -> None:
    cfg = {"class": "Fraction", "module_path": "fractions",
           "kwargs": {"numerator": 1, "denominator": 3}}
    assert init_instance_by_config(cfg) == Fraction(1, 3)
    # extra kwargs are merged over the cfg's kwargs; the cfg itself is not changed
    before = copy.deepcopy(cfg)
    assert init_instance_by_config(cfg, denominator=4) == Fraction(1, 4)
    assert cfg == before
    # no module_path: a dotted class name or the default module
    assert init_instance_by_config({"class": "fractions.Fraction"}) == Fraction(0)
    assert init_instance_by_config({"class": "Fraction"}, default_module="fractions") == 0


def test_init_from_string_class_and_instance() -> None:
    assert init_instance_by_config("fractions.Fraction") == Fraction(0)
    assert init_instance_by_config("collections.OrderedDict") == OrderedDict()
    assert init_instance_by_config(Fraction, numerator=2) == Fraction(2)
    instance = Fraction(5, 7)
    assert init_instance_by_config(instance) is instance
    assert init_instance_by_config(instance, accept_types=Fraction) is instance


def test_init_errors_name_the_path() -> None:
    with pytest.raises(TaskConfigError, match=r"task\.model.*no_such_module_xyz"):
        init_instance_by_config({"class": "Model", "module_path": "no_such_module_xyz"},
                                where="task.model")
    with pytest.raises(TaskConfigError, match=r"task\.model.*NoSuchClass"):
        init_instance_by_config({"class": "NoSuchClass", "module_path": "fractions"},
                                where="task.model")
    with pytest.raises(TaskConfigError, match=r"task\.dataset.*'class'"):
        init_instance_by_config({"module_path": "fractions"}, where="task.dataset")
    with pytest.raises(TaskConfigError, match=r"task\.model.*module_path"):
        init_instance_by_config({"class": "Fraction"}, where="task.model")
    with pytest.raises(TaskConfigError, match=r"task\.model"):
        init_instance_by_config({"class": "Fraction", "module_path": "fractions",
                                 "kwargs": {"no_such_argument": 1}}, where="task.model")
    with pytest.raises(TaskConfigError, match=r"task\.model\.kwargs"):
        init_instance_by_config({"class": "Fraction", "module_path": "fractions",
                                 "kwargs": [1, 2]}, where="task.model")
    with pytest.raises(TaskConfigError, match="no_such_module_xyz"):
        init_instance_by_config("no_such_module_xyz.Thing")


def test_fill_placeholder_nested_and_input_unchanged() -> None:
    model, dataset = object(), object()
    config: dict[str, Any] = {
        "record": [{"class": "SignalRecord",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
        "pair": ("<MODEL>", "keep"),
        "deep": {"list": [["<DATASET>"]], "other": "<OTHER>", "number": 3},
    }
    before = copy.deepcopy(config)
    filled = fill_placeholder(config, {"<MODEL>": model, "<DATASET>": dataset})
    assert filled["record"][0]["kwargs"]["model"] is model
    assert filled["record"][0]["kwargs"]["dataset"] is dataset
    assert filled["pair"] == (model, "keep")
    assert filled["deep"]["list"][0][0] is dataset
    assert filled["deep"]["other"] == "<OTHER>" and filled["deep"]["number"] == 3
    assert config == before


def make_task(segment_test: Any, step: Any = 40, lr: Any = 0.5) -> dict[str, Any]:
    return {
        "model": {"class": "Ridge", "module_path": "taskroll.models", "kwargs": {"alpha": lr}},
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data",
                    "kwargs": {"segments": {"train": ("2020-01-01", "2020-06-30"),
                                            "test": segment_test}, "step": step}},
    }


def test_task_id_equal_for_equal_tasks() -> None:
    plain = make_task(["2020-07-01", "2020-12-31"])
    same_forms = [
        make_task(("2020-07-01", "2020-12-31")),
        make_task((pd.Timestamp("2020-07-01"), pd.Timestamp("2020-12-31"))),
        make_task([dt.date(2020, 7, 1), dt.datetime(2020, 12, 31)]),
        make_task(["2020-07-01", np.datetime64("2020-12-31")]),
        make_task(("2020-07-01", "2020-12-31"), step=np.int64(40), lr=np.float64(0.5)),
        make_task(("2020-07-01", "2020-12-31"), step=40.0),
    ]
    for task in same_forms:
        assert task_id(task) == task_id(plain), canonical_json(task)
    reordered = {"dataset": plain["dataset"], "model": plain["model"]}
    assert task_id(reordered) == task_id(plain)
    assert len(task_id(plain)) == 64


def test_task_id_differs_for_different_tasks() -> None:
    base = task_id(make_task(("2020-07-01", "2020-12-31")))
    assert task_id(make_task(("2020-07-01", "2020-12-30"))) != base
    assert task_id(make_task(("2020-07-01", "2020-12-31"), step=20)) != base
    assert task_id(make_task(("2020-07-01", "2020-12-31"), lr=0.25)) != base
    assert task_id(make_task(("2020-07-01", pd.Timestamp("2020-12-31 15:00")))) != base


def test_task_id_rejects_non_data_values() -> None:
    with pytest.raises(TaskConfigError, match=r"task\.model"):
        task_id({"model": object()})
    with pytest.raises(TaskConfigError, match="keys must be strings"):
        task_id({"model": {1: "a"}})


#: Ids computed before non-finite floats got a tagged canonical form: they must never change.
PINNED_IDS = [
    ({"model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                "kwargs": {"alpha": 0.5, "fit_intercept": True}}},
     "2af64e00533f37cec7133c14a4719f32d199f6e311c92b464b35837a7e985744"),
    ({"segments": {"train": (dt.date(2018, 1, 1), dt.datetime(2019, 3, 29)),
                   "test": [dt.datetime(2019, 7, 1, 9, 30), None]}},
     "36fcbd3bcc285893ecb630bf5296591d21f74277c460a5127d0f9b36939f1e58"),
    ({"a": 1.0, "b": 2, "c": -3.25, "d": [1e300, 0.1], "e": "nan-ish", "f": "inf",
      "g": "∞ unicode"},
     "c35ee869212a4519c318255aea211c3ecb2536a64f0c3b748f736d135a60b4dd"),
    ({}, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
]


@pytest.mark.parametrize(("task", "expected"), PINNED_IDS)
def test_existing_task_ids_never_change(task: Any, expected: str) -> None:
    assert task_id(task) == expected


@pytest.mark.parametrize(("number", "text"), [
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"),
    (np.float64("nan"), "nan"), (np.float32("inf"), "inf"),
])
def test_non_finite_floats_and_their_spelling_get_distinct_ids(number: Any, text: str) -> None:
    assert task_id({"lr": number}) != task_id({"lr": text})
    assert task_id({"lr": [number]}) != task_id({"lr": [text]})
    # the same non-finite float always gets the same id
    assert task_id({"lr": number}) == task_id({"lr": float(text)})


def test_nan_inf_and_minus_inf_are_distinct() -> None:
    ids = {task_id({"lr": float(text)}) for text in ("nan", "inf", "-inf")}
    assert len(ids) == 3


def test_reserved_key_cannot_forge_a_tagged_float() -> None:
    with pytest.raises(TaskConfigError, match="__taskroll__"):
        task_id({"lr": {"__taskroll__": "float", "value": "nan"}})
