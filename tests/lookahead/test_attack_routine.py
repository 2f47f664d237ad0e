"""Look-ahead attack on online serving: daily ``routine`` calls on data that grows a day at
a time (each day's routine sees the bars up to that day only, as in production) serve
the same signals, bit for bit, as ``simulate`` over the whole panel. A signal for day D
that used a bar after D would differ; so would a prediction rewritten once later bars
arrive (``PredUpdater``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.data import clear_caches
from taskroll.online.manager import OnlineManager
from taskroll.online.strategy import RollingStrategy
from taskroll.task.gen import RollingGen

from .conftest import dirty_bars
from .perturb import assert_identical, on_or_before
from .test_online_lookahead import BEGIN, STEP, template

END = pd.Timestamp("2019-09-13")
"""Past the first roll after BEGIN (2019-08-26)."""


def manager_on(path: Path, name: str) -> OnlineManager:
    calendar = pd.DatetimeIndex(pd.read_parquet(path).index.get_level_values(0).unique())
    strategy = RollingStrategy(name, template(path), RollingGen(step=STEP, calendar=calendar))
    return OnlineManager(strategy, begin_time=BEGIN)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")
def test_daily_routines_on_growing_data_serve_the_simulated_signals(
        isolated_settings: Settings, tmp_path: Path) -> None:
    bars = dirty_bars(seed=5, n_instruments=12, start="2018-01-01", end="2019-12-31")
    calendar = pd.DatetimeIndex(bars.index.get_level_values(0).unique())
    whole = tmp_path / "whole.parquet"
    bars.to_parquet(whole)
    clear_caches()
    simulated = manager_on(whole, "simulated")
    simulated.simulate(END)
    expected = simulated.get_signals()

    growing = tmp_path / "growing.parquet"
    on_or_before(bars, BEGIN).to_parquet(growing)
    online = manager_on(growing, "online")
    online.first_train()
    for day in calendar[(calendar >= BEGIN) & (calendar <= END)]:
        on_or_before(bars, day).to_parquet(growing)  # the data vendor delivers day ``day``
        online.routine(day)
    served = online.get_signals()
    assert expected.index.get_level_values(0).nunique() > len(
        calendar[(calendar >= BEGIN) & (calendar <= END)])  # from the first test start on
    assert_identical(on_or_before(served, END), on_or_before(expected, END))
