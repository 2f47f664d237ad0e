"""PortAnaRecord end to end through task_train on real MLflow, and its config errors."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pandas as pd
import pytest

import taskroll
from taskroll.backtest import Exchange, TopkDropoutStrategy, backtest_daily
from taskroll.config import Settings
from taskroll.data.loader import SyntheticLoader
from taskroll.errors import TaskConfigError
from taskroll.train import record
from taskroll.train.port_record import PortAnaRecord, build_exchange, default_config

MARKET = {"seed": 3, "n_instruments": 12, "start": "2020-01-01", "end": "2021-03-31"}
BENCHMARK = "SH600000"
PORT_CONFIG: dict[str, Any] = {
    "strategy": {"class": "TopkDropoutStrategy", "module_path": "qlib.contrib.strategy",
                 "kwargs": {"signal": "<PRED>", "topk": 4, "n_drop": 1}},
    "backtest": {"start_time": None, "end_time": None, "account": 1000000,
                 "benchmark": BENCHMARK,
                 "exchange_kwargs": {"limit_threshold": 0.095, "deal_price": "close",
                                     "open_cost": 0.0005, "close_cost": 0.0015,
                                     "min_cost": 5}},
}


def port_task() -> dict[str, Any]:
    """A Qlib-shaped task whose record list holds SignalRecord then PortAnaRecord."""
    loader = {"class": "SyntheticLoader", "module_path": "taskroll.data.loader",
              "kwargs": MARKET}
    return {
        "model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                  "kwargs": {"alpha": 1.0}},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": "2020-01-01", "end_time": "2021-03-31",
                                       "fit_start_time": "2020-01-01",
                                       "fit_end_time": "2020-09-30", "windows": [5, 10],
                                       "data_loader": loader}},
                "segments": {"train": ("2020-01-01", "2020-09-30"),
                             "valid": ("2020-10-01", "2020-12-31"),
                             "test": ("2021-01-01", "2021-03-31")},
            },
        },
        "record": [
            {"class": "SignalRecord", "module_path": "taskroll.train.record",
             "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
            {"class": "PortAnaRecord", "module_path": "taskroll.train.record",
             "kwargs": {"config": PORT_CONFIG}},
        ],
    }


def test_port_ana_record_is_importable_from_qlibs_place() -> None:
    assert record.PortAnaRecord is PortAnaRecord
    with pytest.raises(AttributeError):
        record.NoSuchRecord  # noqa: B018 - the lazy module attribute refuses unknown names


def test_task_train_records_the_portfolio_analysis(isolated_settings: Settings) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorder = taskroll.task_train(port_task(), experiment_name="backtest")
    assert any("no backtest end_time" in str(item.message) for item in caught)
    names = set(recorder.list_artifacts("portfolio_analysis"))
    assert {f"portfolio_analysis/{name}" for name in (
        "report_normal_1day.pkl", "positions_normal_1day.pkl", "port_analysis_1day.pkl",
        "report_graph_1day.png")} <= names
    report = recorder.load_object("portfolio_analysis/report_normal_1day.pkl")
    pred = recorder.load_object("pred.pkl")
    pred_dates = pred.index.get_level_values("datetime").unique().sort_values()
    # Qlib's default range: the first prediction day to the day before the last one.
    assert report.index[0] == pred_dates[0] and report.index[-1] == pred_dates[-2]
    # The same backtest run here, on the same bars and predictions, gives the same report.
    bars = SyntheticLoader(**MARKET).load_all()
    exchange = Exchange(bars, **PORT_CONFIG["backtest"]["exchange_kwargs"])
    expected, _ = backtest_daily(pred, exchange, TopkDropoutStrategy(topk=4, n_drop=1),
                                 pred_dates[0], pred_dates[-2], account=1000000,
                                 benchmark=BENCHMARK)
    pd.testing.assert_frame_equal(report, expected)
    positions = recorder.load_object("portfolio_analysis/positions_normal_1day.pkl")
    assert max(len(frame) for frame in positions.values()) >= 4
    assert report["turnover"].sum() > 0 and report["cost"].sum() > 0
    analysis = recorder.load_object("portfolio_analysis/port_analysis_1day.pkl")
    metrics = recorder.list_metrics()
    for kind in ("excess_return_without_cost", "excess_return_with_cost"):
        for metric in ("mean", "std", "annualized_return", "information_ratio",
                       "max_drawdown"):
            assert metrics[f"1day.{kind}.{metric}"] == pytest.approx(
                analysis.loc[(kind, metric), "risk"])
    excess = report["return"] - report["bench"] - report["cost"]
    assert metrics["1day.excess_return_with_cost.annualized_return"] == pytest.approx(
        excess.mean() * 238)


def test_prices_from_the_run_or_given_and_skip_existing(isolated_settings: Settings) -> None:
    task = port_task()
    task["record"] = task["record"][:1]
    recorder = taskroll.task_train(task, experiment_name="backtest")
    config = copy.deepcopy(PORT_CONFIG)
    config["backtest"].update(start_time="2021-01-04", end_time="2021-02-26", benchmark=None)
    # No dataset, no prices: the bars come from the run's pickled dataset's loader.
    PortAnaRecord(recorder, config=config).generate()
    from_run = recorder.load_object("portfolio_analysis/report_normal_1day.pkl")
    bars = SyntheticLoader(**MARKET).load_all()
    PortAnaRecord(recorder, config=config, prices=bars).generate()
    report = recorder.load_object("portfolio_analysis/report_normal_1day.pkl")
    pd.testing.assert_frame_equal(report, from_run)
    assert report.index[0] == pd.Timestamp("2021-01-04")
    assert report.index[-1] == pd.Timestamp("2021-02-26")
    assert (report["bench"] == 0).all()
    first_metrics = recorder.list_metrics()
    config["backtest"]["end_time"] = "2021-01-29"
    PortAnaRecord(recorder, config=config, prices=bars, skip_existing=True).generate()
    assert len(recorder.load_object("portfolio_analysis/report_normal_1day.pkl")) == len(report)
    assert recorder.list_metrics() == first_metrics


def test_without_pred_it_says_to_run_signal_record_first(isolated_settings: Settings) -> None:
    task = port_task()
    task["record"] = task["record"][1:]
    with pytest.raises(FileNotFoundError, match="SignalRecord"):
        taskroll.task_train(task, experiment_name="backtest")


@pytest.mark.filterwarnings("ignore:PortAnaRecord. no backtest end_time")
def test_unknown_benchmark_is_a_clear_error(isolated_settings: Settings) -> None:
    task = port_task()
    task["record"][1]["kwargs"] = {}  # Qlib's default config: benchmark SH000300
    with pytest.raises(TaskConfigError, match="SH000300"):
        taskroll.task_train(task, experiment_name="backtest")


def _changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    config = copy.deepcopy(default_config())
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return config


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"config": []}, "config must be a dict"),
    ({"config": {"strategy": {}}}, "needs 'strategy' and 'backtest'"),
    ({"config": {**default_config(), "report": {}}}, "unsupported key"),
    ({"config": _changed(("strategy", "class"), "WeightStrategyBase")}, "only TopkDropout"),
    ({"config": _changed(("strategy", "module_path"), "my.strategies")}, "only TopkDropout"),
    ({"config": _changed(("strategy", "kwargs", "topk"), 0)}, "topk"),
    ({"config": _changed(("strategy", "kwargs", "n_drop"), "5")}, "n_drop"),
    ({"config": _changed(("strategy", "kwargs", "method_sell"), "random")}, "method_sell"),
    ({"config": _changed(("strategy", "kwargs", "risk"), 1)}, "bad TopkDropoutStrategy"),
    ({"config": _changed(("strategy", "kwargs", "signal"), "<MODEL>")}, "signal"),
    ({"config": _changed(("backtest", "pos_type"), "Position")}, "unsupported key"),
    ({"config": {**default_config(), "executor": {
        "class": "NestedExecutor", "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True}}}},
     "SimulatorExecutor"),
    ({"config": {**default_config(), "executor": {
        "class": "SimulatorExecutor", "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "30min", "generate_portfolio_metrics": True}}}},
     "SimulatorExecutor"),
    ({"risk_analysis_freq": "week"}, "risk_analysis_freq"),
    ({"indicator_analysis_freq": "day"}, "indicator"),
])
def test_bad_configs_are_refused_when_the_record_is_built(kwargs: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        PortAnaRecord(None, **kwargs)


def test_qlibs_daily_executor_is_accepted() -> None:
    config = {**default_config(), "executor": {
        "class": "SimulatorExecutor", "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True}}}
    assert PortAnaRecord(None, config=config).strategy.topk == 50


BARS = pd.DataFrame({"close": [1.0, 2.0], "open": [1.0, 2.0]}, index=pd.MultiIndex.from_tuples(
    [(pd.Timestamp("2021-01-04"), "A"), (pd.Timestamp("2021-01-05"), "A")],
    names=["datetime", "instrument"]))


@pytest.mark.parametrize(("exchange_kwargs", "message"), [
    ({"limit_threshold": ("$a", "$b")}, "limit_threshold"),
    ({"limit_threshold": -0.1}, "limit_threshold"),
    ({"deal_price": "$mid"}, "unknown deal price"),
    ({"deal_price": ("close",)}, "pair"),
    ({"deal_price": "vwap"}, "lack column"),
    ({"open_cost": -0.001}, "open_cost"),
    ({"min_cost": "5"}, "min_cost"),
    ({"impact_cost": 0.1}, "impact_cost"),
    ({"trade_unit": 100}, "trade_unit"),
    ({"freq": "1min"}, "freq"),
    ({"volume_threshold": ("cum", "$volume")}, "unsupported key"),
])
def test_bad_exchange_kwargs(exchange_kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        build_exchange(BARS, exchange_kwargs)


def test_neutral_exchange_kwargs_are_accepted() -> None:
    exchange = build_exchange(BARS, {"impact_cost": 0, "trade_unit": None, "freq": "day",
                                     "deal_price": ("$open", "$close")})
    assert (exchange.buy_price, exchange.sell_price) == ("open", "close")
