"""PortAnaRecord: backtest a recorder's predictions (Qlib's ``record_temp.PortAnaRecord``).

It reads the ``pred.pkl`` of :class:`~taskroll.train.record.SignalRecord`, runs the
daily top-k dropout backtest of :mod:`taskroll.backtest` and writes, under
``portfolio_analysis/`` (Qlib's artifact names for the daily frequency ``1day``):

* ``report_normal_1day.pkl``: the daily report (``account``, ``return``, ``turnover``,
  ``cost``, ``bench``, ...; see :mod:`taskroll.backtest.simulator`);
* ``positions_normal_1day.pkl``: per date, the holdings after that day's trades;
* ``port_analysis_1day.pkl``: :func:`~taskroll.backtest.report.risk_analysis` of the
  excess return without and with cost;
* ``report_graph_1day.png``: the cumulative returns;

and logs the risk figures as MLflow metrics named as Qlib's, e.g.
``1day.excess_return_with_cost.annualized_return``.

The config has Qlib's shape::

    {"strategy": {"class": "TopkDropoutStrategy", "module_path": "qlib.contrib.strategy",
                  "kwargs": {"signal": "<PRED>", "topk": 50, "n_drop": 5}},
     "backtest": {"start_time": None, "end_time": None, "account": 100000000,
                  "benchmark": "SH000300",
                  "exchange_kwargs": {"limit_threshold": 0.095, "deal_price": "close",
                                      "open_cost": 0.0005, "close_cost": 0.0015,
                                      "min_cost": 5}}}

Prices come from ``prices`` (a bar panel), else from the dataset's handler's loader
(the ``dataset`` given, else the run's ``dataset`` artifact). Only the daily
simulator executor is supported; Qlib's trade indicators (``indicator_analysis``)
are not computed, and asking for them is an error.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from taskroll.backtest.exchange import Exchange
from taskroll.backtest.report import (
    cumulative_return_png,
    excess_return_analysis,
    parse_frequency,
)
from taskroll.backtest.simulator import backtest_daily
from taskroll.backtest.strategy import TopkDropoutStrategy
from taskroll.errors import DataError, RecorderError, TaskConfigError
from taskroll.train.record_base import RecordTemp, SignalRecord
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

FREQUENCY = "1day"
STRATEGY_MODULES = ("qlib.contrib.strategy", "qlib.contrib.strategy.signal_strategy",
                    "taskroll.backtest", "taskroll.backtest.strategy")
EXECUTOR_MODULES = ("qlib.backtest.executor", "taskroll.backtest")
BACKTEST_KEYS = ("start_time", "end_time", "account", "benchmark", "exchange_kwargs")
EXCHANGE_KEYS = ("limit_threshold", "deal_price", "open_cost", "close_cost", "min_cost")


def default_config() -> dict[str, Any]:
    """Qlib's default PortAnaRecord config (daily top-50 dropout-5 against SH000300)."""
    return {
        "strategy": {"class": "TopkDropoutStrategy", "module_path": "qlib.contrib.strategy",
                     "kwargs": {"signal": "<PRED>", "topk": 50, "n_drop": 5}},
        "backtest": {"start_time": None, "end_time": None, "account": 100000000,
                     "benchmark": "SH000300",
                     "exchange_kwargs": {"limit_threshold": 0.095, "deal_price": "close",
                                         "open_cost": 0.0005, "close_cost": 0.0015,
                                         "min_cost": 5}},
    }


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TaskConfigError(f"PortAnaRecord: {where} must be a dict, got "
                              f"{type(value).__name__}")
    return value


def _check_keys(values: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise TaskConfigError(f"PortAnaRecord: {where} has unsupported key(s) {unknown}; "
                              f"supported: {', '.join(allowed)}")


def _check_executor(executor: Any) -> None:
    """Accept only Qlib's daily simulator executor that generates portfolio metrics."""
    executor = _mapping(executor, "config['executor']")
    kwargs = _mapping(executor.get("kwargs", {}), "config['executor']['kwargs']")
    module = executor.get("module_path", "qlib.backtest.executor")
    daily = parse_frequency(kwargs.get("time_per_step", "day")) == (1, "day")
    extra = sorted(set(kwargs) - {"time_per_step", "generate_portfolio_metrics", "verbose"})
    if (executor.get("class") != "SimulatorExecutor" or module not in EXECUTOR_MODULES
            or not daily or not kwargs.get("generate_portfolio_metrics", False) or extra):
        raise TaskConfigError(
            "PortAnaRecord: only the daily SimulatorExecutor is supported (class "
            "'SimulatorExecutor', kwargs time_per_step='day', generate_portfolio_metrics=True, "
            f"no nested executor); got {executor!r}")


def build_strategy(strategy_config: Any) -> TopkDropoutStrategy:
    """Build the :class:`TopkDropoutStrategy` named by a Qlib strategy cfg.

    Raises:
        TaskConfigError: For another class or module, or bad kwargs.
    """
    config = _mapping(strategy_config, "config['strategy']")
    name, module = config.get("class"), config.get("module_path", "qlib.contrib.strategy")
    if name != "TopkDropoutStrategy" or module not in STRATEGY_MODULES:
        raise TaskConfigError(f"PortAnaRecord: only TopkDropoutStrategy (module_path one of "
                              f"{', '.join(STRATEGY_MODULES)}) is supported, got class "
                              f"{name!r} from {module!r}")
    kwargs = dict(_mapping(config.get("kwargs", {}), "config['strategy']['kwargs']"))
    signal = kwargs.get("signal", "<PRED>")
    if not (isinstance(signal, (pd.Series, pd.DataFrame)) or signal == "<PRED>"):
        raise TaskConfigError("PortAnaRecord: strategy kwargs 'signal' must be '<PRED>' (the "
                              f"run's pred.pkl), got {signal!r}")
    try:
        return TopkDropoutStrategy(**kwargs)
    except TypeError as error:
        raise TaskConfigError(f"PortAnaRecord: bad TopkDropoutStrategy kwargs: {error}") from error


def build_exchange(quotes: pd.DataFrame, exchange_kwargs: Any) -> Exchange:
    """Build the :class:`~taskroll.backtest.exchange.Exchange` of Qlib's ``exchange_kwargs``.

    ``impact_cost`` is accepted only as 0, ``trade_unit`` only as ``None`` and ``freq``
    only as a day: the daily backtest has no impact cost, trading unit or intraday step.

    Raises:
        TaskConfigError: For unsupported keys or values.
    """
    kwargs = dict(_mapping(exchange_kwargs or {}, "config['backtest']['exchange_kwargs']"))
    for name, neutral in (("impact_cost", 0), ("trade_unit", None)):
        if name in kwargs and kwargs.pop(name) != neutral:
            raise TaskConfigError(f"PortAnaRecord: exchange_kwargs.{name} is not supported "
                                  f"by the daily backtest (only {neutral!r})")
    if "freq" in kwargs and parse_frequency(kwargs.pop("freq")) != (1, "day"):
        raise TaskConfigError("PortAnaRecord: exchange_kwargs.freq must be 'day'")
    _check_keys(kwargs, EXCHANGE_KEYS, "config['backtest']['exchange_kwargs']")
    return Exchange(quotes, **kwargs)


class PortAnaRecord(RecordTemp):
    """Backtest the run's predictions and record the portfolio analysis.

    Args:
        recorder: The run holding ``pred.pkl``.
        config: Qlib's config (see the module doc); ``None``: :func:`default_config`.
        risk_analysis_freq: ``None`` or ``"day"``/``"1day"`` (the only frequency).
        indicator_analysis_freq: Must be ``None`` (trade indicators are not computed).
        indicator_analysis_method: Must be ``None``.
        skip_existing: Do nothing when this record's artifacts already exist.
        dataset: Dataset whose handler's loader gives the bars (default: the run's
            ``dataset`` artifact).
        prices: A bar panel indexed by ``(datetime, instrument)`` to use instead.

    Raises:
        TaskConfigError: For an unsupported config (checked here, before any work).
    """

    artifact_path = "portfolio_analysis"
    depend_cls = SignalRecord

    def __init__(self, recorder: Recorder | None, config: dict[str, Any] | None = None,
                 risk_analysis_freq: str | list[str] | None = None,
                 indicator_analysis_freq: str | list[str] | None = None,
                 indicator_analysis_method: str | None = None, skip_existing: bool = False,
                 dataset: Any = None, prices: pd.DataFrame | None = None) -> None:
        super().__init__(recorder)
        config = copy.deepcopy(default_config() if config is None else
                               _mapping(config, "config"))
        _check_keys(config, ("strategy", "backtest", "executor"), "config")
        if "executor" in config:
            _check_executor(config["executor"])
        if "strategy" not in config or "backtest" not in config:
            raise TaskConfigError("PortAnaRecord: config needs 'strategy' and 'backtest'")
        self.strategy_config = _mapping(config["strategy"], "config['strategy']")
        self.backtest_config = _mapping(config["backtest"], "config['backtest']")
        _check_keys(self.backtest_config, BACKTEST_KEYS, "config['backtest']")
        self.strategy = build_strategy(self.strategy_config)
        frequencies = [risk_analysis_freq] if isinstance(risk_analysis_freq, str) else (
            risk_analysis_freq or [FREQUENCY])
        if any(parse_frequency(item) != (1, "day") for item in frequencies):
            raise TaskConfigError(f"PortAnaRecord: risk_analysis_freq must be 'day', got "
                                  f"{risk_analysis_freq!r}")
        if indicator_analysis_freq is not None or indicator_analysis_method is not None:
            raise TaskConfigError("PortAnaRecord: trade indicators (indicator_analysis_freq, "
                                  "indicator_analysis_method) are not computed; leave them None")
        self.skip_existing = skip_existing
        self.dataset = dataset
        self.prices = prices

    def _quotes(self) -> pd.DataFrame:
        if self.prices is not None:
            return self.prices
        dataset = self.dataset
        if dataset is None:
            dataset = self.recorder.load_object("dataset")
        loader = getattr(getattr(dataset, "handler", None), "data_loader", None)
        if loader is None or not hasattr(loader, "load_all"):
            raise DataError("PortAnaRecord: the dataset's handler has no data_loader to read "
                            "prices from; pass prices=<bar panel>")
        frame: pd.DataFrame = loader.load_all()
        if isinstance(frame.columns, pd.MultiIndex) or "close" not in frame.columns:
            raise DataError(f"PortAnaRecord: {loader!r} does not give bars with a 'close' "
                            "column; pass prices=<bar panel>")
        return frame

    def generate(self, **kwargs: Any) -> None:
        """Run the backtest on ``pred.pkl``; save the report, positions, analysis and chart.

        Args:
            **kwargs: Ignored (uniform record interface).

        Raises:
            FileNotFoundError: When ``pred.pkl`` is missing.
            TaskConfigError: For a config the bars cannot serve (e.g. unknown benchmark).
            DataError: When no prices can be found.
        """
        if self.skip_existing and self.results_exist():
            _logger.info("PortAnaRecord: results exist in run %s, skipped", self.recorder.id)
            return
        try:
            pred = self.load("pred.pkl")
        except RecorderError as error:
            raise FileNotFoundError(f"PortAnaRecord: run {self.recorder.id} has no pred.pkl; "
                                    "put SignalRecord before PortAnaRecord") from error
        self.strategy.signal = pred  # Qlib's "<PRED>" placeholder, filled
        exchange = build_exchange(self._quotes(), self.backtest_config.get("exchange_kwargs"))
        start_time, end_time = self._time_range(pred, exchange.calendar)
        report, positions = backtest_daily(
            pred, exchange, self.strategy, start_time, end_time,
            account=self.backtest_config.get("account", 1e9),
            benchmark=self.backtest_config.get("benchmark"))
        analysis = excess_return_analysis(report, FREQUENCY)
        flat = analysis["risk"].unstack()
        metrics = {f"{FREQUENCY}.{kind}.{metric}": float(value)
                   for kind, row in flat.iterrows() for metric, value in row.items()}
        self.recorder.log_metrics(None, **metrics)
        self.save(**{f"report_normal_{FREQUENCY}.pkl": report,
                     f"positions_normal_{FREQUENCY}.pkl": positions,
                     f"port_analysis_{FREQUENCY}.pkl": analysis})
        with tempfile.TemporaryDirectory(prefix="taskroll-port-") as staging:
            chart = Path(staging) / f"report_graph_{FREQUENCY}.png"
            chart.write_bytes(cumulative_return_png(report, "top-k dropout backtest"))
            self.recorder.save_objects(local_path=chart, artifact_path=self.get_path())
        _logger.info("PortAnaRecord: %s", analysis["risk"].to_dict())

    def _time_range(self, pred: Any, calendar: pd.DatetimeIndex) -> tuple[Any, Any]:
        """Qlib's defaults: from the first prediction to the day before the last one."""
        start_time = self.backtest_config.get("start_time")
        end_time = self.backtest_config.get("end_time")
        dates = pd.DatetimeIndex(pred.index.get_level_values(0))
        if len(dates) == 0:
            raise RecorderError("PortAnaRecord: pred.pkl is empty; nothing to backtest")
        if start_time is None:
            start_time = dates.min()
        if end_time is None:
            position = int(calendar.searchsorted(dates.max()))
            end_time = calendar[max(position - 1, 0)]
            warnings.warn(f"PortAnaRecord: no backtest end_time; using {end_time.date()}, the "
                          f"trading day before the last prediction ({dates.max().date()}), "
                          "as Qlib does", UserWarning, stacklevel=2)
        return start_time, end_time

    def list(self) -> list[str]:
        """Return the artifact paths this record writes."""
        return [self.get_path(name) for name in (
            f"report_normal_{FREQUENCY}.pkl", f"positions_normal_{FREQUENCY}.pkl",
            f"port_analysis_{FREQUENCY}.pkl")]
