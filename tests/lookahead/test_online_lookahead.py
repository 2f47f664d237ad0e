"""No look-ahead in online serving: ``OnlineManager.simulate`` signals for dates <= D are
bit-identical when every bar after D is scrambled (D the day before a roll, and a roll
day). Each model is trained with the gap RollingGen derives from the label horizon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.data import clear_caches
from taskroll.online.manager import OnlineManager
from taskroll.online.strategy import RollingStrategy
from taskroll.task.gen import RollingGen

from .conftest import dirty_bars
from .perturb import assert_identical, on_or_before, scramble_after

BEGIN = pd.Timestamp("2019-08-01")
END = pd.Timestamp("2019-10-31")
STEP = 20


def template(path: Path) -> dict[str, Any]:
    """Train 2018-01..2019-03, valid 2019-04..06, test from 2019-07-01 (rolled by 20 days)."""
    processors = [{"class": "ProcessInf"},
                  {"class": "CSZScoreNorm", "kwargs": {"fields_group": "feature"}},
                  {"class": "Fillna", "kwargs": {"fields_group": "feature"}}]
    return {
        "model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                  "kwargs": {"alpha": 1.0}},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": "2018-01-01", "end_time": "2019-07-31",
                                       "fit_start_time": "2018-01-01",
                                       "fit_end_time": "2019-03-29", "windows": [5, 10],
                                       "infer_processors": processors,
                                       "data_loader": {"class": "FileLoader",
                                                       "module_path": "taskroll.data.loader",
                                                       "kwargs": {"path": str(path)}}}},
                "segments": {"train": ("2018-01-01", "2019-03-29"),
                             "valid": ("2019-04-01", "2019-06-28"),
                             "test": ("2019-07-01", None)},
            },
        },
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }


def simulate(path: Path, name: str) -> pd.DataFrame:
    """Replay BEGIN..END on the panel at ``path``; return the signals."""
    calendar = pd.DatetimeIndex(pd.read_parquet(path).index.get_level_values(0).unique())
    strategy = RollingStrategy(name, template(path), RollingGen(step=STEP, calendar=calendar))
    manager = OnlineManager(strategy, begin_time=BEGIN)
    manager.simulate(END)
    signals = manager.get_signals()
    assert signals is not None
    return signals.to_frame() if isinstance(signals, pd.Series) else signals


def roll_days(bars: pd.DataFrame) -> list[pd.Timestamp]:
    """Test-window starts of the rolling tasks between BEGIN and END."""
    calendar = pd.DatetimeIndex(bars.index.get_level_values(0).unique())
    tasks = RollingGen(step=STEP, calendar=calendar).generate(template(Path("unused")))
    starts = [pd.Timestamp(task["dataset"]["kwargs"]["segments"]["test"][0]) for task in tasks]
    return [start for start in starts if BEGIN < start <= END]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")
@pytest.mark.parametrize("offset", [-1, 0], ids=["day-before-roll", "roll-day"])
def test_simulated_signals_on_or_before_the_cut_do_not_change(
        isolated_settings: Settings, tmp_path: Path, offset: int) -> None:
    bars = dirty_bars(seed=5, n_instruments=30, start="2018-01-01", end="2020-03-31")
    calendar = pd.DatetimeIndex(bars.index.get_level_values(0).unique())
    roll = roll_days(bars)[0]
    cut = calendar[calendar.get_loc(roll) + offset]
    original, perturbed = tmp_path / "original.parquet", tmp_path / "perturbed.parquet"
    bars.to_parquet(original)
    scramble_after(bars, cut, seed=3).to_parquet(perturbed)
    clear_caches()
    first = simulate(original, "original")
    second = simulate(perturbed, "perturbed")
    assert on_or_before(first, cut).index.get_level_values(0).nunique() > 10
    assert_identical(on_or_before(first, cut), on_or_before(second, cut))
    later = first.index.get_level_values(0) > cut
    common = first[later].index.intersection(second.index)
    assert (first.loc[common] != second.loc[common]).to_numpy().any()
