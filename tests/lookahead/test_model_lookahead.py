"""No look-ahead in a trained model's predictions.

A task whose segments keep the gap of the label horizon is trained twice: on the dirty
panel, and on the same panel with every bar after D scrambled. For D the day before the
test segment (a roll), the first test day (the roll day) and a later test day, every
prediction for a date <= D must be bit-identical: the model, its processors' fitted
state and the features it reads for those dates saw nothing after D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.data import clear_caches
from taskroll.task.spec import init_instance_by_config

from .perturb import assert_identical, on_or_before, scramble_after

HORIZON = 2
MODELS = {
    "linear": {"class": "LinearModel", "module_path": "taskroll.models.linear",
               "kwargs": {"alpha": 1.0}},
    "lgb": {"class": "LGBModel", "module_path": "taskroll.models.gbdt",
            "kwargs": {"num_boost_round": 20, "early_stopping_rounds": 5,
                       "min_data_in_leaf": 20}},
}
PROCESSORS = {
    "per-day": [{"class": "ProcessInf"}, {"class": "CSZScoreNorm", "kwargs": {"fields_group": "feature"}},
                {"class": "Fillna", "kwargs": {"fields_group": "feature"}}],
    "fitted": [{"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature",
                                                       "clip_outlier": True}},
               {"class": "Fillna", "kwargs": {"fields_group": "feature"}}],
}


def segments(calendar: pd.DatetimeIndex, test_start: int) -> dict[str, tuple[str, str]]:
    """Train / valid / test with the gap a 2-day label needs (end + 2 < next start)."""
    def day(position: int) -> str:
        return str(calendar[position].date())

    valid_start = test_start - 60
    return {"train": (day(0), day(valid_start - HORIZON - 1)),
            "valid": (day(valid_start), day(test_start - HORIZON - 1)),
            "test": (day(test_start), day(len(calendar) - 1))}


def dataset_config(path: Path, spans: dict[str, tuple[str, str]],
                   processors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "class": "DatasetH", "module_path": "taskroll.data.dataset",
        "kwargs": {
            "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                        "kwargs": {"start_time": spans["train"][0], "end_time": spans["test"][1],
                                   "fit_start_time": spans["train"][0],
                                   "fit_end_time": spans["train"][1],
                                   "windows": [5, 20], "infer_processors": processors,
                                   "data_loader": {"class": "FileLoader",
                                                   "module_path": "taskroll.data.loader",
                                                   "kwargs": {"path": str(path)}}}},
            "segments": spans,
        },
    }


def predictions(path: Path, spans: dict[str, tuple[str, str]], model_name: str,
                processors: list[dict[str, Any]]) -> pd.Series:
    """Train the model on ``path`` and predict every day of the handler's range."""
    dataset = init_instance_by_config(dataset_config(path, spans, processors))
    model = init_instance_by_config(MODELS[model_name])
    model.fit(dataset)
    scores: pd.Series = model.predict(dataset, slice(spans["train"][0], spans["test"][1]))
    return scores


@pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")
@pytest.mark.parametrize("processing", sorted(PROCESSORS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("offset", [-1, 0, 7], ids=["day-before-roll", "roll-day", "in-test"])
def test_predictions_on_or_before_the_cut_do_not_change(
        dirty: pd.DataFrame, tmp_path: Path, model_name: str, processing: str,
        offset: int) -> None:
    calendar = pd.DatetimeIndex(dirty.index.get_level_values(0).unique())
    test_start = len(calendar) - 120
    spans = segments(calendar, test_start)
    cut = calendar[test_start + offset]
    original = tmp_path / "original.parquet"
    perturbed = tmp_path / "perturbed.parquet"
    dirty.to_parquet(original)
    scramble_after(dirty, cut, seed=offset + 10).to_parquet(perturbed)
    clear_caches()
    first = predictions(original, spans, model_name, PROCESSORS[processing])
    second = predictions(perturbed, spans, model_name, PROCESSORS[processing])
    assert len(on_or_before(first, cut)) > 1000
    assert_identical(on_or_before(first, cut), on_or_before(second, cut))
    # and the scramble did reach the predictions after the cut
    later = first.index.get_level_values(0) > cut
    common = first[later].index.intersection(second.index)
    assert (first.loc[common] != second.loc[common]).any()


@pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")
def test_without_the_gap_the_labels_leak(dirty: pd.DataFrame, tmp_path: Path) -> None:
    """The control: training up to the day before the test start lets the last labels
    use the first test days, and the perturbation shows it."""
    calendar = pd.DatetimeIndex(dirty.index.get_level_values(0).unique())
    test_start = len(calendar) - 120
    spans = segments(calendar, test_start)
    spans["train"] = (spans["train"][0], str(calendar[test_start - 1].date()))
    cut = calendar[test_start - 1]
    original, perturbed = tmp_path / "original.parquet", tmp_path / "perturbed.parquet"
    dirty.to_parquet(original)
    scramble_after(dirty, cut, seed=9).to_parquet(perturbed)
    clear_caches()
    first = predictions(original, spans, "linear", PROCESSORS["per-day"])
    second = predictions(perturbed, spans, "linear", PROCESSORS["per-day"])
    with pytest.raises(AssertionError, match="differ"):
        assert_identical(on_or_before(first, cut), on_or_before(second, cut))
