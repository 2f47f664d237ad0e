"""Look-ahead attacks on collection and the backtest.

* ``RollingEnsemble`` stitches rolling models; when a model's predictions also cover
  days before its test segment (its training and validation days: a model predicting
  the handler's whole range), the prediction for day D must still come from a model
  whose test had started by D, trained on nothing after D. Real models are trained
  twice, on the panel and with every bar after D scrambled: the stitched predictions up
  to D are bit-identical.
* The daily backtest trades on day t with the scores of the day before, at day t's
  prices: its report up to D is unchanged when the bars after D and the scores from D on
  are scrambled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.backtest.exchange import Exchange
from taskroll.backtest.simulator import backtest_daily
from taskroll.backtest.strategy import TopkDropoutStrategy
from taskroll.collect import AverageEnsemble, RollingEnsemble
from taskroll.data import clear_caches
from taskroll.task.gen import RollingGen
from taskroll.task.spec import init_instance_by_config

from .perturb import assert_identical, on_or_before, scramble_after

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

STEP = 40
PROCESSORS = [{"class": "ProcessInf"},
              {"class": "CSZScoreNorm", "kwargs": {"fields_group": "feature"}},
              {"class": "Fillna", "kwargs": {"fields_group": "feature"}}]


MODELS = {
    # trained on train and valid
    "linear": {"class": "LinearModel", "module_path": "taskroll.models.linear",
               "kwargs": {"alpha": 1.0, "include_valid": True}},
    # stopped early on valid
    "lgb": {"class": "LGBModel", "module_path": "taskroll.models.gbdt",
            "kwargs": {"num_boost_round": 30, "early_stopping_rounds": 5,
                       "min_data_in_leaf": 20}},
}


def template(path: Path, calendar: pd.DatetimeIndex, model: str) -> dict[str, Any]:
    """A model on Alpha158 with a 2-day label; three test windows of 40 days from the
    400th day on."""
    def day(position: int) -> str:
        return str(calendar[position].date())

    return {
        "model": MODELS[model],
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": day(0), "end_time": day(-1),
                                       "fit_start_time": day(0), "fit_end_time": day(299),
                                       "windows": [5, 20], "infer_processors": PROCESSORS,
                                       "data_loader": {"class": "FileLoader",
                                                       "module_path": "taskroll.data.loader",
                                                       "kwargs": {"path": str(path)}}}},
                "segments": {"train": (day(0), day(299)), "valid": (day(300), day(399)),
                             "test": (day(400), day(400 + 3 * STEP - 1))},
            },
        },
    }


def rolling_predictions(path: Path, calendar: pd.DatetimeIndex, model_name: str
                        ) -> dict[tuple[pd.Timestamp, pd.Timestamp], pd.Series]:
    """Each rolling model's predictions over the handler's whole range, keyed by its test
    segment (as ``model_and_test_segment_key`` keys them)."""
    clear_caches()
    tasks = RollingGen(step=STEP, calendar=calendar).generate(
        template(path, calendar, model_name))
    assert len(tasks) == 3
    result = {}
    for task in tasks:
        dataset = init_instance_by_config(task["dataset"])
        model = init_instance_by_config(task["model"])
        model.fit(dataset)
        test = task["dataset"]["kwargs"]["segments"]["test"]
        result[(pd.Timestamp(test[0]), pd.Timestamp(test[1]))] = model.predict(
            dataset, slice(None, None))
    return result


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_rolling_ensemble_serves_each_day_from_a_model_trained_before_it(
        dirty: pd.DataFrame, tmp_path: Path, model_name: str) -> None:
    calendar = pd.DatetimeIndex(dirty.index.get_level_values(0).unique())
    original, perturbed = tmp_path / "original.parquet", tmp_path / "perturbed.parquet"
    dirty.to_parquet(original)
    first_models = rolling_predictions(original, calendar, model_name)
    starts = sorted(start for start, _ in first_models)
    # the cut: in the first test window, before the later models' valid segments end
    cut = calendar[calendar.get_loc(starts[0]) + 10]
    scramble_after(dirty, cut, seed=17).to_parquet(perturbed)
    second_models = rolling_predictions(perturbed, calendar, model_name)
    stitched = [RollingEnsemble()(models) for models in (first_models, second_models)]
    assert_identical(on_or_before(stitched[0], cut), on_or_before(stitched[1], cut))
    served_days = calendar.get_loc(cut) - calendar.get_loc(starts[0]) + 1  # the first test days
    assert on_or_before(stitched[0], cut).index.get_level_values(0).nunique() == served_days
    # each day from the test start on comes from the newest model whose test had started
    served = stitched[0]
    for (start, _), prediction in first_models.items():
        newer = [other for other in starts if other > start]
        until = newer[0] if newer else calendar[-1] + pd.Timedelta(days=1)
        dates = served.index.get_level_values(0)
        mine = served[(dates >= start) & (dates < until)]
        assert len(mine) > 0
        assert_identical(mine, prediction.loc[mine.index])
    # the average of two stitched models keeps the property
    averaged = [AverageEnsemble()({"a": one, "b": one * 2.0 + 1.0}) for one in stitched]
    assert_identical(on_or_before(averaged[0], cut), on_or_before(averaged[1], cut))


def scramble_scores(scores: pd.Series, date: pd.Timestamp, seed: int) -> pd.Series:
    """Scores dated on or after ``date`` replaced by noise."""
    rng = np.random.default_rng(seed)
    changed = scores.copy()
    later = np.asarray(changed.index.get_level_values(0) >= date)
    changed[later] = rng.normal(size=int(later.sum()))
    return changed


@pytest.mark.parametrize("deal_price", ["close", "open"])
@pytest.mark.parametrize("limit_threshold", [None, 0.05])
def test_backtest_report_up_to_the_cut_ignores_later_bars_and_same_day_scores(
        dirty: pd.DataFrame, deal_price: str, limit_threshold: float | None) -> None:
    calendar = pd.DatetimeIndex(dirty.index.get_level_values(0).unique())
    rng = np.random.default_rng(3)
    scores = pd.Series(rng.normal(size=len(dirty)), index=dirty.index, name="score")
    start, cut = calendar[100], calendar[260]
    reports = []
    for bars, signal in ((dirty, scores),
                         (scramble_after(dirty, cut, seed=2), scramble_scores(scores, cut, 4))):
        exchange = Exchange(bars, deal_price=deal_price, limit_threshold=limit_threshold,
                            min_cost=0.0)
        report, positions = backtest_daily(signal, exchange, TopkDropoutStrategy(topk=5, n_drop=2),
                                           start_time=start, end_time=calendar[300],
                                           benchmark="SH600000")
        reports.append(report)
        assert len(positions) == len(report)
    assert reports[0].loc[:cut, "turnover"].gt(0).sum() > 50
    assert_identical(reports[0].loc[:cut], reports[1].loc[:cut])
    assert not reports[0].loc[cut:].iloc[1:].equals(reports[1].loc[cut:].iloc[1:])


def test_a_bad_bar_is_not_tradable(dirty: pd.DataFrame) -> None:
    """A price of 0 (a bad bar) is no price: the instrument is not traded that day."""
    calendar = pd.DatetimeIndex(dirty.index.get_level_values(0).unique())
    bars = dirty.copy()
    day, name = calendar[150], "SH600001"
    bars.loc[(day, name), ["open", "close"]] = [0.0, 0.0]
    exchange = Exchange(bars, deal_price="open", min_cost=0.0)
    assert not exchange.is_tradable(name, day)
    scores = pd.Series(0.0, index=bars.index, name="score")
    scores[scores.index.get_level_values(1) == name] = 1.0  # the strategy wants it every day
    report, positions = backtest_daily(scores, exchange, TopkDropoutStrategy(topk=1, n_drop=1),
                                       start_time=day, end_time=calendar[151])
    assert name not in positions[day].index
    assert np.isfinite(report.to_numpy()).all()
