"""The quick demo end to end: real data, pool, worker processes, MLflow, collection and plot."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from taskroll.config import Settings
from taskroll.demo import MODEL_TYPES, TASK_POOL, DemoResult, ModelGen, run_demo
from taskroll.demo_report import TABLE_COLUMNS, format_table
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    from taskroll import config

    saved = config._SettingsHolder.current
    saved_environment = {key: value for key, value in os.environ.items()
                         if key.startswith("TASKROLL_")}
    try:
        return run_demo(tmp_path_factory.mktemp("demo"), quick=True, echo=False)
    finally:  # run_demo calls taskroll.init, which also exports TASKROLL_* variables
        config._SettingsHolder.current = saved
        for key in [key for key in os.environ if key.startswith("TASKROLL_")]:
            del os.environ[key]
        os.environ.update(saved_environment)


def test_table_has_a_row_per_window_and_model_and_the_ensembles(demo: DemoResult) -> None:
    table = demo.table
    assert list(table.columns) == TABLE_COLUMNS
    windows = table[table["window"] != "ensemble"]
    assert demo.n_tasks == 16 and len(windows) == 16
    for model in MODEL_TYPES:
        rows = windows[windows["model"] == model]
        assert list(rows["window"]) == [str(number) for number in range(1, 9)]
        starts = pd.to_datetime(rows["test_start"])
        ends = pd.to_datetime(rows["test_end"])
        assert starts.is_monotonic_increasing and (ends >= starts).all()
        assert (starts.iloc[1:].to_numpy() > ends.iloc[:-1].to_numpy()).all()  # no overlap
    ensembles = table[table["window"] == "ensemble"]
    assert set(ensembles["model"]) == {"LinearModel (rolling)", "LGBModel (rolling)",
                                       "average of models"}
    for value in table[["IC", "Rank IC"]].to_numpy().ravel():
        assert math.isfinite(value) and -1.0 <= value <= 1.0
    text = format_table(table)
    assert "average of models" in text and "LGBModel" in text


def test_daily_ic_and_plot(demo: DemoResult) -> None:
    assert list(demo.daily_ic.columns) == ["LinearModel (rolling)", "LGBModel (rolling)",
                                           "average of models"]
    assert len(demo.daily_ic) >= 8 * 10
    assert demo.plot_path == demo.output_dir / "ic.png"
    data = demo.plot_path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert demo.data_path.suffix == ".parquet" and demo.data_path.exists()


def test_every_task_done_and_every_recorder_finished(demo: DemoResult,
                                                     isolated_settings: Settings) -> None:
    assert demo.task_stat == {"done": 16}
    with TaskManager(TASK_POOL, store=f"sqlite:///{demo.output_dir}/taskroll.db") as manager:
        assert manager.task_stat() == {"done": 16}
    assert len(demo.recorders) == 16
    for recorder in demo.recorders:
        assert recorder.status == "FINISHED"
        assert {"pred.pkl", "label.pkl"} <= set(recorder.list_artifacts())


def test_model_gen_and_window_count_check(tmp_path: Path) -> None:
    template = {"model": {"class": "A"}, "dataset": {"kwargs": {}}}
    tasks = ModelGen([{"class": "B"}, {"class": "C"}])(template)
    assert [task["model"]["class"] for task in tasks] == ["B", "C"]
    assert template["model"] == {"class": "A"}
    with pytest.raises(TaskConfigError, match="at least 8"):
        run_demo(tmp_path, n_windows=3, quick=True, echo=False)
