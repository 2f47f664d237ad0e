"""A Qlib user's ``R``, ``Experiment`` and ``Recorder`` calls, as Qlib 0.9.7 answers them.

Each test names the Qlib behaviour (``qlib/workflow/__init__.py``, ``expm.py``, ``exp.py``,
``recorder.py``) that a script switching to taskroll relies on. Real MLflow SQLite stores.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskroll.config import Settings, get_settings
from taskroll.errors import RecorderError
from taskroll.train.experiment import DEFAULT_EXPERIMENT_NAME, Experiment, R
from taskroll.train.recorder import DEFAULT_RECORDER_NAME, Recorder


@pytest.fixture(autouse=True)
def no_active_run() -> Iterator[None]:
    """Each test starts and ends without an active run (the facade is process-wide)."""
    R.end_exp()
    yield
    R.end_exp()


# -- R ---------------------------------------------------------------------------------------


def test_start_accepts_qlibs_uri_keyword_for_this_run(isolated_settings: Settings,
                                                      tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    default = R.get_uri()
    with R.start(experiment_name="elsewhere", recorder_name="r", uri=other) as recorder:
        assert R.get_uri() == other
        R.log_metrics(ic=0.5)
    assert recorder.tracking_uri == other
    assert R.get_uri() == default
    with R.uri_context(other):
        found = R.get_recorder(recorder_name="r", experiment_name="elsewhere")
        assert found.list_metrics() == {"ic": 0.5}
    assert "elsewhere" not in R.list_experiments()


def test_set_uri_and_uri_context_as_qlib(isolated_settings: Settings, tmp_path: Path) -> None:
    default = R.get_uri()
    other = f"sqlite:///{tmp_path / 'context.db'}"
    with R.uri_context(other):
        assert R.get_uri() == other
        R.get_exp(experiment_name="only_there")
    assert R.get_uri() == default
    assert "only_there" not in R.list_experiments()
    R.set_uri(other)
    try:
        assert R.get_uri() == other
        assert "only_there" in R.list_experiments()
    finally:
        R.set_uri(default)
    assert R.get_uri() == default


def test_set_uri_moves_the_process_store_as_qlibs_config(isolated_settings: Settings,
                                                         tmp_path: Path) -> None:
    default = R.get_uri()
    other = f"sqlite:///{tmp_path / 'moved.db'}"
    with R.uri_context(other):
        assert get_settings().resolved_tracking_uri() == other
    assert get_settings().resolved_tracking_uri() == default
    R.set_uri(other)
    try:
        with R.start(experiment_name="moved") as recorder:
            R.save_objects(**{"a.pkl": 1})
        assert get_settings().resolved_tracking_uri() == other
        # a pool reference to a run of the new store resolves as the configured store's
        assert Recorder.from_reference(recorder.to_reference()).load_object("a.pkl") == 1
    finally:
        R.set_uri(default)


def test_default_recorder_name_is_qlibs(isolated_settings: Settings) -> None:
    with R.start(experiment_name="names"):
        assert R.get_recorder().name == DEFAULT_RECORDER_NAME == "mlflow_recorder"


def test_logging_without_a_run_starts_one_in_the_default_experiment(
        isolated_settings: Settings) -> None:
    R.log_params(learning_rate=0.01)
    R.log_metrics(step=1, train_loss=0.33)
    R.set_tags(release_version="2.2.0")
    recorder = R.get_recorder()
    assert recorder.name == "mlflow_recorder"
    assert recorder.status == Recorder.STATUS_RUNNING
    assert R.get_exp().name == DEFAULT_EXPERIMENT_NAME
    R.save_objects(**{"pred.pkl": [1, 2]}, artifact_path="prediction")
    assert R.load_object("prediction/pred.pkl") == [1, 2]
    R.end_exp()
    again = R.get_recorder(recorder_id=recorder.id, experiment_name=DEFAULT_EXPERIMENT_NAME)
    assert again.status == Recorder.STATUS_FINISHED
    assert again.list_params()["learning_rate"] == "0.01"
    assert again.list_tags()["release_version"] == "2.2.0"
    assert again.list_metrics() == {"train_loss": 0.33}


def test_get_exp_with_start_activates_it(isolated_settings: Settings) -> None:
    experiment = R.get_exp(experiment_name="started", start=True)
    assert R.get_exp() == experiment
    assert R.get_recorder().experiment_id == experiment.id
    R.end_exp()
    assert list(experiment.list_recorders()) != []
    assert {rec.status for rec in experiment.list_recorders("list")} == {"FINISHED"}


def test_save_objects_refuses_a_path_and_objects_together(isolated_settings: Settings,
                                                          tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with R.start(experiment_name="both"), pytest.raises(ValueError, match="only one"):
        R.save_objects(tmp_path / "file.txt", **{"a.pkl": 1})


def test_list_recorders_takes_qlibs_keywords_and_creates_the_experiment(
        isolated_settings: Settings) -> None:
    with R.start(experiment_name="listed") as recorder:
        pass
    experiment = R.get_exp(experiment_name="listed")
    by_id = R.list_recorders(experiment_id=experiment.id)
    assert list(by_id) == [recorder.id]
    assert R.list_recorders(experiment_name="not_yet") == {}
    assert "not_yet" in R.list_experiments()


def test_delete_recorder_by_name_in_the_current_experiment(isolated_settings: Settings) -> None:
    with R.start(experiment_name=DEFAULT_EXPERIMENT_NAME, recorder_name="old"):
        pass
    with R.start(experiment_name=DEFAULT_EXPERIMENT_NAME, recorder_name="kept"):
        pass
    R.delete_recorder(recorder_name="old")
    names = [rec.name for rec in R.list_recorders(rtype="list")]
    assert names == ["kept"]
    with pytest.raises(ValueError):
        R.delete_recorder()


def test_missing_experiments_and_recorders_raise_value_error(isolated_settings: Settings) -> None:
    R.get_exp(experiment_name="present")
    with pytest.raises(ValueError) as missing:
        R.get_exp(experiment_name="absent", create=False)
    assert isinstance(missing.value, RecorderError)
    with pytest.raises(ValueError):
        R.get_recorder(recorder_name="absent", experiment_name="present")
    with pytest.raises(ValueError):
        R.delete_exp(experiment_name="absent")


def test_search_records_orders_and_filters_runs(isolated_settings: Settings) -> None:
    for value in (1.0, 3.0, 2.0):
        with R.start(experiment_name="searched", recorder_name=f"m{value:g}"):
            R.log_metrics(m=value)
    experiment = R.get_exp(experiment_name="searched")
    runs = R.search_records([experiment.id], order_by=["metrics.m DESC"])
    assert [run.data.metrics["m"] for run in runs] == [3.0, 2.0, 1.0]
    found = experiment.search_records(filter_string="metrics.m > 1.5", max_results=1,
                                      order_by=["metrics.m ASC"])
    assert [run.info.run_name for run in found] == ["m2"]


def test_r_log_artifact_and_download_artifact(isolated_settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    with R.start(experiment_name="files"):
        R.log_artifact(str(source), artifact_path="docs")
        destination = tmp_path / "out"
        destination.mkdir()
        local = R.download_artifact("docs/notes.txt", str(destination))
    assert Path(local).read_text() == "hello"


# -- Experiment ------------------------------------------------------------------------------


def test_experiment_methods_keep_qlibs_keywords(isolated_settings: Settings) -> None:
    experiment = R.get_exp(experiment_name="methods")
    assert isinstance(experiment, Experiment)
    first = experiment.start(recorder_name="first")
    assert experiment.active_recorder == first
    assert experiment.get_recorder() == first
    assert experiment.info["active_recorder"] == first.id
    experiment.end(Recorder.STATUS_FI)
    assert experiment.active_recorder is None
    assert first.status == Recorder.STATUS_FINISHED
    resumed = experiment.start(recorder_name="first", resume=True)
    assert resumed == first and resumed.status == Recorder.STATUS_RUNNING
    experiment.end()
    second = experiment.create_recorder()
    assert second.name == "mlflow_recorder"
    listed = experiment.list_recorders(rtype=Experiment.RT_L, max_results=1)
    assert len(listed) == 1
    assert len(experiment.list_recorders(Experiment.RT_D)) == 2
    experiment.delete_recorder(recorder_name="first")
    assert list(experiment.list_recorders()) == [second.id]
    with pytest.raises(ValueError):
        experiment.delete_recorder()


# -- Recorder --------------------------------------------------------------------------------


def test_recorder_artifact_and_tag_methods_as_qlib(isolated_settings: Settings,
                                                   tmp_path: Path) -> None:
    source = tmp_path / "config.yaml"
    source.write_text("a: 1")
    with R.start(experiment_name="artifacts") as recorder:
        recorder.log_artifact(str(source))
        recorder.set_tags(a="1", b="2")
        recorder.delete_tags("a")
        recorder.save_objects(**{"obj.pkl": {"k": 1}})
    assert "config.yaml" in recorder.list_artifacts()
    assert "a" not in recorder.list_tags() and recorder.list_tags()["b"] == "2"
    assert recorder.uri == isolated_settings.resolved_tracking_uri()
    assert recorder.get_artifact_uri() == recorder.artifact_uri
    local_dir = Path(recorder.get_local_dir())
    assert local_dir.is_dir() and (local_dir / "artifacts" / "config.yaml").is_file()
    target = tmp_path / "download"
    target.mkdir()
    assert Path(recorder.download_artifact("config.yaml", str(target))).read_text() == "a: 1"

    class Counting(pickle.Unpickler):
        used = 0

        def load(self) -> object:
            Counting.used += 1
            return super().load()

    assert recorder.load_object("obj.pkl", unpickler=Counting) == {"k": 1}
    assert Counting.used == 1


def test_recorder_times_are_qlibs_strings(isolated_settings: Settings) -> None:
    with R.start(experiment_name="times") as recorder:
        assert recorder.end_time is None
    found = R.get_recorder(recorder_id=recorder.id, experiment_name="times")
    for stamp in (found.start_time, found.end_time, found.info["start_time"]):
        assert isinstance(stamp, str) and len(stamp) == len("2024-01-02 03:04:05")
    assert found.info["end_time"] == found.end_time


def test_delete_exp_needs_a_name_or_id(isolated_settings: Settings) -> None:
    default = R.get_exp()
    with pytest.raises(ValueError, match="name or id"):
        R.delete_exp()
    assert DEFAULT_EXPERIMENT_NAME in R.list_experiments()
    R.delete_exp(experiment_id=default.id)
    assert DEFAULT_EXPERIMENT_NAME not in R.list_experiments()
