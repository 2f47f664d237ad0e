"""SIGKILL a daily routine at several points; the next routine recovers completely.

Each scenario runs ``taskroll online routine`` in its own process on real SQLite
stores: day 1 (first training), day 2 killed at one point, then day 3. After day 3
the signal file must equal that of a run never killed, every window must have
exactly one trained model, exactly one model must be online, and no run may be
left ``RUNNING``. The kill is the process sending itself SIGKILL
(``crash_routine.py``): no clean-up code of the routine gets to run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import taskroll
from taskroll.config import Settings
from taskroll.online.models import list_models
from taskroll.online.tool import OnlineToolR
from taskroll.train.experiment import R

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

CRASH_SCRIPT = Path(__file__).with_name("crash_routine.py")
DAYS = ("2019-08-01", "2019-08-27", "2019-09-05")  # a window starts on 2019-08-26
EXPERIMENT = "kill_online"


def _setup(folder: Path, market: Path, template: dict[str, Any]) -> Path:
    folder.mkdir()
    (folder / "bars.parquet").write_bytes(market.read_bytes())
    template = json.loads(json.dumps(template))
    template["dataset"]["kwargs"]["handler"]["kwargs"]["data_loader"]["kwargs"]["path"] = (
        "bars.parquet")
    config = {"experiment": EXPERIMENT, "task_url": f"sqlite:///{folder / 'tasks.db'}",
              "tracking_uri": f"sqlite:///{folder / 'mlruns.db'}",
              "begin_time": DAYS[0], "task_template": template,
              "rolling": {"step": 20, "rtype": "expanding", "calendar": "bars.parquet"}}
    path = folder / "online.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _routine(config: Path, day: str, point: str = "none") -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    return subprocess.run(
        [sys.executable, str(CRASH_SCRIPT), point, "online", "routine", "--config", str(config),
         "--output", str(config.parent / "out"), "--cur-time", day],
        capture_output=True, text=True, env=environment, timeout=600, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def _state(config: Path) -> dict[str, Any]:
    """Runs per status, trained models per window, and the online models of the store."""
    taskroll.init(tracking_uri=f"sqlite:///{config.parent / 'mlruns.db'}")
    statuses = [recorder.status for recorder in R.list_recorders(EXPERIMENT, rtype="list")]
    windows: dict[str, int] = {}
    for model in list_models(EXPERIMENT):
        if model.trained:
            windows[model.window] = windows.get(model.window, 0) + 1
    return {"running": statuses.count("RUNNING"), "windows": windows,
            "online": len(OnlineToolR(EXPERIMENT).online_models())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory,
              online_market: tuple[Path, pd.DatetimeIndex],
              online_template: Callable[[], dict[str, Any]]) -> tuple[bytes, pd.DataFrame]:
    """The signal file and frame after the three days, never killed."""
    config = _setup(tmp_path_factory.mktemp("kill_reference") / "run", online_market[0],
                    online_template())
    for day in DAYS:
        _ok(_routine(config, day))
    path = config.parent / "out" / "signals.parquet"
    return path.read_bytes(), pd.read_parquet(path)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["training", "before_switch", "between_tags",
                                   "signals_write"])
def test_killed_routine_recovers_with_identical_signals(
        point: str, tmp_path: Path, isolated_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex],
        online_template: Callable[[], dict[str, Any]],
        reference: tuple[bytes, pd.DataFrame]) -> None:
    config = _setup(tmp_path / "run", online_market[0], online_template())
    signals_path = config.parent / "out" / "signals.parquet"
    _ok(_routine(config, DAYS[0]))
    day_one = signals_path.read_bytes()

    killed = _routine(config, DAYS[1], point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert signals_path.read_bytes() == day_one  # the old file whole, never a part of one
    after_kill = _state(config)
    assert after_kill["online"] >= 1  # a reader never sees zero online models
    if point == "training":
        assert after_kill["running"] == 1  # the killed run: found and failed below

    _ok(_routine(config, DAYS[2]))
    recovered = pd.read_parquet(signals_path)
    pd.testing.assert_frame_equal(recovered, reference[1])
    assert signals_path.read_bytes() == reference[0]
    state = _state(config)
    assert state["running"] == 0
    assert state["online"] == 1
    assert set(state["windows"].values()) == {1}  # no window trained twice
    assert not list((config.parent / "out").glob(".*.tmp"))


@pytest.mark.slow
def test_rebuild_after_losing_the_signal_file(
        tmp_path: Path, isolated_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex],
        online_template: Callable[[], dict[str, Any]],
        reference: tuple[bytes, pd.DataFrame]) -> None:
    config = _setup(tmp_path / "run", online_market[0], online_template())
    for day in DAYS:
        _ok(_routine(config, day))
    signals_path = config.parent / "out" / "signals.parquet"
    signals_path.write_bytes(b"PAR1 not a parquet file")
    rebuilt = subprocess.run(
        [sys.executable, "-m", "taskroll", "online", "rebuild", "--config", str(config),
         "--output", str(config.parent / "out"), "--until", DAYS[2]],
        capture_output=True, text=True, timeout=600, check=False,
        env={key: value for key, value in os.environ.items() if not key.startswith("TASKROLL_")})
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(signals_path), reference[1])
    # an unreadable file does not stop the next routine either: it is rebuilt
    signals_path.write_bytes(b"garbage")
    _ok(_routine(config, DAYS[2]))
    pd.testing.assert_frame_equal(pd.read_parquet(signals_path), reference[1])
