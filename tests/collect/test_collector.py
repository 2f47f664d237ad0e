"""Collectors: RecorderCollector over real MLflow recorders, MergeCollector, processors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import taskroll
from taskroll import config
from taskroll.collect import (
    Collector,
    MergeCollector,
    RecorderCollector,
    RollingGroup,
    SingleKeyEnsemble,
    model_and_test_segment_key,
)
from taskroll.errors import RecorderError
from taskroll.train.experiment import Experiment, R
from taskroll.train.recorder import Recorder

D1, D2, D3 = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06"])


def _prediction(rows: list[tuple[pd.Timestamp, float]]) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([(date, "A") for date, _ in rows],
                                      names=["datetime", "instrument"])
    return pd.DataFrame({"score": [value for _, value in rows]}, index=index)


def _task(model: str, test: list[str]) -> dict[str, Any]:
    return {"model": {"class": model, "module_path": "models"},
            "dataset": {"class": "Dataset", "kwargs": {"segments": {"test": test}}}}


@pytest.fixture
def experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Experiment:
    monkeypatch.setattr(config._SettingsHolder, "current", config._SettingsHolder.current)
    monkeypatch.delenv("TASKROLL_TRACKING_URI", raising=False)
    taskroll.init(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = [
        ("Linear", ["2021-01-04", "2021-01-05"], [(D1, 1.0), (D2, 2.0)], "FINISHED"),
        ("Linear", ["2021-01-05", "2021-01-06"], [(D2, 20.0), (D3, 30.0)], "FINISHED"),
        ("GBDT", ["2021-01-04", "2021-01-05"], [(D1, 7.0)], "FINISHED"),
        ("GBDT", ["2021-01-05", "2021-01-06"], [(D2, 8.0)], "FAILED"),
    ]
    for model, test, rows, status in runs:
        with R.start(experiment_name="rolling", recorder_name=model):
            R.save_objects(**{"task": _task(model, test), "pred.pkl": _prediction(rows)})
        if status != "FINISHED":
            R.get_exp("rolling").list_recorders("list")[0].end_run(status)
    with R.start(experiment_name="rolling", recorder_name="no-pred"):
        R.save_objects(task=_task("Ridge", ["2021-01-04", "2021-01-05"]))
    return R.get_exp("rolling", create=False)


def test_recorder_collector_keys_by_model_and_test_segment(experiment: Experiment) -> None:
    collected = RecorderCollector("rolling", rec_key_func=model_and_test_segment_key).collect()
    assert set(collected) == {"pred"}
    assert set(collected["pred"]) == {
        ("Linear", ("2021-01-04", "2021-01-05")),
        ("Linear", ("2021-01-05", "2021-01-06")),
        ("GBDT", ("2021-01-04", "2021-01-05")),  # the FAILED run is left out
    }  # and "no-pred" is skipped: it has no pred.pkl
    pd.testing.assert_frame_equal(collected["pred"][("GBDT", ("2021-01-04", "2021-01-05"))],
                                  _prediction([(D1, 7.0)]))


def test_recorder_collector_with_rolling_group(experiment: Experiment) -> None:
    collector = RecorderCollector(experiment, process_list=RollingGroup(),
                                  rec_key_func=model_and_test_segment_key)
    predictions = collector()["pred"]
    pd.testing.assert_frame_equal(predictions[("Linear",)],
                                  _prediction([(D1, 1.0), (D2, 20.0), (D3, 30.0)]), check_freq=False)
    pd.testing.assert_frame_equal(predictions[("GBDT",)], _prediction([(D1, 7.0)]))
    assert collector.get_exp_name() == "rolling"


def test_recorder_collector_options(experiment: Experiment) -> None:
    def only_gbdt(recorder: Recorder) -> bool:
        return bool(recorder.name == "GBDT")

    collector = RecorderCollector(
        lambda: experiment, rec_key_func=lambda recorder: recorder.name,
        artifacts_path={"pred": "pred.pkl", "task": "task"},
        status={"FINISHED", "FAILED"})
    collected = collector.collect(rec_filter_func=only_gbdt)
    assert set(collected) == {"pred", "task"}
    # Two GBDT runs share the key; the newest (the FAILED one) wins.
    assert collected["pred"]["GBDT"].iloc[0, 0] == 8.0
    raw = collector.collect(artifacts_key=RecorderCollector.ART_KEY_RAW)
    assert all(isinstance(value, Recorder) for value in raw["__raw"].values())
    with pytest.raises(RecorderError):
        RecorderCollector(experiment).collect(only_exist=False)
    listed = RecorderCollector(lambda: experiment.list_recorders("list", status="FINISHED"),
                               rec_key_func=lambda recorder: recorder.id)
    assert len(listed.collect()["pred"]) == 3
    with pytest.raises(RecorderError):
        listed.get_exp_name()


def test_model_and_test_segment_key_needs_a_task(experiment: Experiment) -> None:
    recorder = experiment.create_recorder("bare")
    with pytest.raises(RecorderError):
        model_and_test_segment_key(recorder)
    recorder.save_objects(task={"model": {"class": "Linear"}})
    with pytest.raises(RecorderError, match="rec_key_func"):
        model_and_test_segment_key(recorder)


class _Fixed(Collector):
    def __init__(self, content: dict[Any, Any], process_list: Any = None):
        super().__init__(process_list)
        self.content = content

    def collect(self) -> dict[Any, Any]:
        return dict(self.content)


def test_process_collect_applies_processors_in_turn() -> None:
    collected = {"pred": {"only": 3}, "label": {"x": 1, "y": 2}}
    processed = Collector.process_collect(collected, [SingleKeyEnsemble(), lambda value: [value]])
    assert processed == {"pred": [3], "label": [{"x": 1, "y": 2}]}
    assert _Fixed({"a": 2}, process_list=lambda value, extra: value * extra)(10) == {"a": 20}
    with pytest.raises(TypeError):
        Collector.process_collect({"a": 1}, [42])  # type: ignore[list-item]
    with pytest.raises(NotImplementedError):
        Collector()()


def test_merge_collector() -> None:
    merged = MergeCollector({"left": _Fixed({"a": 1}), "right": _Fixed({"a": 2, "b": 3})})
    assert merged() == {("left", "a"): 1, ("right", "a"): 2, ("right", "b"): 3}
    joined = MergeCollector({"left": _Fixed({"a": 1}), "right": _Fixed({"b": 2})},
                            process_list=[lambda value: value + 100],
                            merge_func=lambda outer, inner: f"{outer}.{inner}")
    assert joined() == {"left.a": 101, "right.b": 102}
