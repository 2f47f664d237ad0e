"""Qlib's task-management examples, written for taskroll, run end to end on Qlib-layout data.

Each example runs as a script in its own process (as a user runs it), on one demo
market written in Qlib's binary layout, with its own task pool and MLflow store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples' demo market, written once in Qlib's layout."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from qlib_config import demo_provider
    finally:
        sys.path.remove(str(EXAMPLES))
    return demo_provider(tmp_path_factory.mktemp("qlib") / "cn_data")


def _run(script: str, *arguments: str, cwd: Path) -> str:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *arguments],
                            capture_output=True, text=True, cwd=cwd, env=environment,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _mlflow(workdir: Path) -> None:
    import taskroll

    taskroll.init(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")


@pytest.mark.parametrize("pool", [None, "rolling_task"], ids=["TrainerR", "TrainerRM"])
def test_task_manager_rolling(provider: Path, tmp_path: Path, isolated_settings: object,
                              pool: str | None) -> None:
    options = ["--task-pool", pool] if pool else []
    output = _run("task_manager_rolling.py", "main", "--provider-uri", str(provider),
                  "--workdir", str(tmp_path), *options, cwd=tmp_path)
    for step in ("reset", "task_generating", "task_training", "task_collecting"):
        assert f"========== {step} ==========" in output
    assert "('LGBModel',)" in output
    _mlflow(tmp_path)
    from taskroll import R

    recorders = R.list_recorders("rolling_exp", rtype="list")
    classes = sorted({recorder.load_object("task")["model"]["class"] for recorder in recorders})
    assert classes == ["LGBModel", "LinearModel"]
    assert len(recorders) % 2 == 0 and len(recorders) >= 6  # both templates rolled
    assert {recorder.status for recorder in recorders} == {"FINISHED"}
    # the predictions are on the csi100 market's members only
    members = (provider / "instruments" / "csi100.txt").read_text().split()[::3]
    predicted = set(recorders[0].load_object("pred.pkl").index.get_level_values("instrument"))
    assert predicted <= set(members)


def test_online_management_simulate(provider: Path, tmp_path: Path,
                                    isolated_settings: object) -> None:
    output = _run("online_management_simulate.py", "main", "--provider-uri", str(provider),
                  "--workdir", str(tmp_path), cwd=tmp_path)
    for step in ("reset", "simulate", "collect results", "signals"):
        assert f"========== {step} ==========" in output
    for line in ("excess_return_without_cost", "excess_return_with_cost", "information_ratio",
                 "max_drawdown"):
        assert line in output


def test_rolling_online_management(provider: Path, tmp_path: Path,
                                   isolated_settings: object) -> None:
    output = _run("rolling_online_management.py", "main", "--provider-uri", str(provider),
                  "--workdir", str(tmp_path), cwd=tmp_path)
    assert output.count("========== routine ==========") == 2
    assert "========== add strategy ==========" in output
    saved = tmp_path / "rolling_online_manager.pkl"
    _mlflow(tmp_path)
    from taskroll.online import OnlineManager

    manager = OnlineManager.load(saved)
    assert [strategy.name_id for strategy in manager.strategies] == ["LinearModel", "LGBModel"]
    signals = manager.get_signals()
    days = pd.DatetimeIndex(signals.index.get_level_values("datetime").unique())
    assert days.min() == pd.Timestamp("2019-01-02") and days.max() == pd.Timestamp("2019-12-31")
    for strategy in manager.strategies:
        assert len(strategy.tool.online_models()) == 1
    # a further routine on the same day (the data's last) changes nothing
    routine = _run("rolling_online_management.py", "routine", "--provider-uri", str(provider),
                   "--workdir", str(tmp_path), cwd=tmp_path)
    assert "========== signals ==========" in routine
    pd.testing.assert_series_equal(OnlineManager.load(saved).get_signals(), signals)
