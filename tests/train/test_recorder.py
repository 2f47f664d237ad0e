"""Recorder, Experiment, ExperimentManager and R on a real MLflow SQLite store."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import taskroll
from taskroll import config
from taskroll.errors import RecorderError
from taskroll.train import tracking as recorder_module
from taskroll.train.experiment import Experiment, ExperimentManager, R, RecorderFacade
from taskroll.train.recorder import Recorder
from taskroll.train.tracking import call_mlflow


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point taskroll at a fresh SQLite store; settings and environment restored afterwards."""
    monkeypatch.setattr(config._SettingsHolder, "current", config._SettingsHolder.current)
    monkeypatch.delenv("TASKROLL_TRACKING_URI", raising=False)
    monkeypatch.delenv("TASKROLL_ARTIFACT_ROOT", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    taskroll.init(tracking_uri=uri)
    return uri


def test_round_trip_of_params_metrics_tags_and_objects(tracking_uri: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"score": [0.1, 0.2]})
    with R.start(experiment_name="round_trip", recorder_name="first") as recorder:
        R.log_params(alpha=0.5, model="linear")
        R.log_metrics(ic=0.01)
        R.log_metrics(step=3, ic=0.03, loss=1.5)
        R.set_tags(stage="test")
        R.save_objects(**{"pred.pkl": frame, "task": {"model": {"class": "Linear"}}})
        R.save_objects(artifact_path="sig_analysis", **{"ic.pkl": pd.Series([1.0])})
        assert R.get_recorder() == recorder
        assert R.load_object("task") == {"model": {"class": "Linear"}}

    assert recorder.status == Recorder.STATUS_FINISHED
    assert recorder.name == "first"
    assert recorder.list_params() == {"alpha": "0.5", "model": "linear"}
    assert recorder.list_metrics() == {"ic": 0.03, "loss": 1.5}
    assert recorder.list_tags()["stage"] == "test"
    pd.testing.assert_frame_equal(recorder.load_object("pred.pkl"), frame)
    assert recorder.load_object("sig_analysis/ic.pkl").tolist() == [1.0]
    assert sorted(recorder.list_artifacts()) == ["pred.pkl", "sig_analysis", "task"]
    assert recorder.list_artifacts("sig_analysis") == ["sig_analysis/ic.pkl"]
    # Artifacts live in mlruns/ beside the database, whatever the working directory.
    assert Path(recorder.artifact_uri).is_relative_to(tmp_path / "mlruns")
    assert recorder.info["status"] == "FINISHED" and recorder.info["id"] == recorder.id

    experiment = R.get_exp("round_trip", create=False)
    assert experiment.get_recorder(recorder_name="first") == recorder
    assert experiment.get_recorder(recorder_id=recorder.id) == recorder
    assert R.get_recorder(recorder_id=recorder.id) == recorder
    assert R.get_recorder(recorder_name="first", experiment_name="round_trip") == recorder
    assert "round_trip" in R.list_experiments()


def test_missing_things_raise_recorder_error(tracking_uri: str) -> None:
    with pytest.raises(RecorderError):
        R.get_exp("absent", create=False)
    experiment = R.get_exp("present")
    with pytest.raises(RecorderError):
        experiment.get_recorder(recorder_name="nobody")
    recorder = experiment.create_recorder("somebody")
    with pytest.raises(RecorderError, match="no artifact"):
        recorder.load_object("pred.pkl")
    with pytest.raises(RecorderError):
        R.get_recorder()  # no active run
    R.log_metrics(ic=1.0)  # as Qlib: with no active run it starts one in the default experiment
    assert R.get_recorder().name == "mlflow_recorder"
    R.end_exp()
    with pytest.raises(RecorderError):
        recorder.end_run("DONE")
    other = R.get_exp("other")
    with pytest.raises(RecorderError, match="belongs to experiment"):
        other.get_recorder(recorder_id=recorder.id)


def test_recorder_is_a_picklable_handle(tracking_uri: str) -> None:
    recorder = R.get_exp("handles").create_recorder("r")
    copy = pickle.loads(pickle.dumps(recorder))
    assert copy == recorder and hash(copy) == hash(recorder)
    assert copy.status == Recorder.STATUS_RUNNING
    assert len({recorder, copy}) == 1


def test_list_recorders_with_status_and_filter(tracking_uri: str) -> None:
    experiment = R.get_exp("listing")
    finished = experiment.create_recorder("finished")
    finished.log_params(model="linear")
    finished.end_run()
    failed = experiment.create_recorder("failed")
    failed.log_params(model="gbdt")
    failed.end_run(Recorder.STATUS_FAILED)
    running = experiment.create_recorder("running")

    everything = experiment.list_recorders()
    assert isinstance(everything, dict)
    assert set(everything) == {finished.id, failed.id, running.id}
    assert next(iter(everything)) == running.id  # newest first
    assert experiment.list_recorders(status="FINISHED") == {finished.id: finished}
    assert set(experiment.list_recorders("list", status={"FINISHED", "FAILED"})) == {
        finished, failed}
    assert experiment.list_recorders("list", filter_string="params.model = 'gbdt'") == [failed]
    assert R.list_recorders("listing", "list", status="RUNNING") == [running]

    experiment.delete_recorder(failed.id)
    assert set(experiment.list_recorders()) == {finished.id, running.id}
    with pytest.raises(RecorderError):
        experiment.list_recorders("set")  # type: ignore[call-overload]


def test_runs_are_visible_to_a_plain_mlflow_client(tracking_uri: str) -> None:
    with R.start(experiment_name="visible", recorder_name="plain") as recorder:
        R.log_metrics(IC=0.05)
        R.log_params(window=20)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("visible")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "metrics.IC > 0.01")
    assert [run.info.run_id for run in runs] == [recorder.id]
    assert runs[0].info.run_name == "plain"
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"window": "20"}
    assert [entry.path for entry in client.list_artifacts(recorder.id)] == []


def test_start_marks_failed_on_exception_and_reraises(tracking_uri: str) -> None:
    with pytest.raises(ZeroDivisionError), R.start(experiment_name="failing") as recorder:
        1 / 0  # noqa: B018
    assert recorder.status == Recorder.STATUS_FAILED
    assert R.get_exp("failing").list_recorders(status="FAILED") == {recorder.id: recorder}
    # The failed run is no longer active: a new one can start.
    with R.start(experiment_name="failing") as second:
        assert second != recorder
    assert second.status == Recorder.STATUS_FINISHED


def test_start_marks_killed_on_keyboard_interrupt(tracking_uri: str) -> None:
    with pytest.raises(KeyboardInterrupt), R.start(experiment_name="killed") as recorder:
        raise KeyboardInterrupt
    assert recorder.status == Recorder.STATUS_KILLED


def test_nested_start_is_refused(tracking_uri: str) -> None:
    with (R.start(experiment_name="nested"),
          pytest.raises(RecorderError, match="still active"),
          R.start(experiment_name="nested")):
        pass


def test_resume_reuses_the_named_run(tracking_uri: str) -> None:
    with R.start(experiment_name="resume", recorder_name="model") as first:
        R.log_metrics(epoch=1)
    with R.start(experiment_name="resume", recorder_name="model", resume=True) as again:
        assert again.status == Recorder.STATUS_RUNNING
        R.log_metrics(epoch=2)
    assert again == first
    assert first.list_metrics() == {"epoch": 2.0}
    with R.start(experiment_name="resume", recorder_name="model") as fresh:
        pass
    assert fresh != first


def test_delete_experiment(tracking_uri: str) -> None:
    R.get_exp("doomed")
    R.delete_exp("doomed")
    assert "doomed" not in R.list_experiments()
    with pytest.raises(RecorderError, match="deleted"):
        R.get_exp("doomed")


def test_explicit_uris_coexist(tmp_path: Path, tracking_uri: str) -> None:
    other = ExperimentManager(tracking_uri=f"sqlite:///{tmp_path / 'other' / 'store.db'}")
    other.get_exp("only_here").create_recorder("x").end_run()
    assert "only_here" in other.list_experiments()
    assert "only_here" not in R.list_experiments()
    facade = RecorderFacade(other)
    with facade.start(experiment_name="only_here") as recorder:
        facade.log_metrics(value=1.0)
        facade.save_objects(**{"pred.pkl": 1})
    assert recorder.tracking_uri == other.uri
    assert Path(recorder.artifact_uri).is_relative_to(tmp_path / "other" / "mlruns")
    assert (Path(recorder.artifact_uri) / "pred.pkl").is_file()


def test_get_exp_returns_the_winner_of_a_creation_race(
        tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = ExperimentManager(tracking_uri)
    winner = manager.create_exp("shared")  # another process got there first
    with pytest.raises(RecorderError):
        manager.create_exp("shared")
    real_find = manager._find
    lookups: list[str | None] = []

    def stale_find(experiment_id: str | None, experiment_name: str | None) -> Any:
        lookups.append(experiment_name)
        return None if len(lookups) == 1 else real_find(experiment_id, experiment_name)

    monkeypatch.setattr(manager, "_find", stale_find)
    assert manager.get_exp("shared") == winner  # lookup missed, create collided, re-read
    assert lookups == ["shared", "shared"]


def test_call_mlflow_retries_sqlite_lock_contention() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "done"

    assert call_mlflow(flaky, "test") == "done"
    assert len(attempts) == 3

    def broken() -> None:
        raise ValueError("bad request")

    with pytest.raises(RecorderError, match="bad request") as caught:
        call_mlflow(broken, "test")
    assert isinstance(caught.value.__cause__, ValueError)


def test_call_mlflow_gives_up_after_persistent_locking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "_FIRST_DELAY_SECONDS", 0.0)

    def locked() -> None:
        raise RuntimeError("database is locked")

    with pytest.raises(RecorderError, match="database is locked"):
        call_mlflow(locked, "test")


_WORKER_SCRIPT = """
import json, sys
from taskroll.train.experiment import R

worker, count = int(sys.argv[1]), int(sys.argv[2])
identifiers = []
for number in range(count):
    with R.start(experiment_name="concurrent", recorder_name=f"w{worker}-{number}") as rec:
        R.log_params(worker=worker, number=number)
        R.log_metrics(value=float(number))
        R.save_objects(**{"pred.pkl": number})
        identifiers.append(rec.id)
print(json.dumps(identifiers))
"""


def _create_runs(worker: int, count: int) -> list[str]:
    """Create ``count`` runs through R in this process; the store comes from the settings."""
    identifiers = []
    for number in range(count):
        with R.start(experiment_name="concurrent", recorder_name=f"w{worker}-{number}") as rec:
            R.log_params(worker=worker, number=number)
            R.log_metrics(value=float(number))
            R.save_objects(**{"pred.pkl": number})
            identifiers.append(rec.id)
    return identifiers


@pytest.mark.slow
def test_two_processes_create_runs_concurrently_in_a_fresh_store(tracking_uri: str) -> None:
    # Two fresh interpreters, started after taskroll.init, find the store through the
    # environment and open the brand-new database at the same time: schema creation
    # must be serialised, and writes must survive SQLite locking.
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT, str(worker), "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for worker in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors[-3000:]
    created = {identifier for output, _ in outputs
               for identifier in json.loads(output.strip().splitlines()[-1])}
    assert len(created) == 20
    experiment = R.get_exp("concurrent", create=False)
    recorders = experiment.list_recorders(status="FINISHED")
    assert set(recorders) == created
    assert {recorder.load_object("pred.pkl") for recorder in recorders.values()} == set(range(10))
    assert len(R.list_experiments()) == 2  # MLflow's "Default" and ours, created once


def _forked_worker(worker: int, count: int, results: Any) -> None:
    results.put(_create_runs(worker, count))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_forked_workers_do_not_reuse_the_parent_connections(tracking_uri: str) -> None:
    R.get_exp("concurrent").create_recorder("parent").end_run()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_forked_worker, args=(worker, 5, results))
               for worker in range(2)]
    for worker in workers:
        worker.start()
    created = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sum(len(result) for result in created) == 10
    assert len(R.list_recorders("concurrent")) == 11


def test_facade_accepts_experiment_objects(tracking_uri: str) -> None:
    experiment = R.get_exp("objects")
    assert isinstance(experiment, Experiment)
    assert experiment.info["name"] == "objects"
    assert R.get_exp(experiment_id=experiment.id) == experiment


def test_pool_reference_round_trip_resolves_to_a_trusted_recorder(tracking_uri: str) -> None:
    from taskroll.store.codec import decode, encode
    from taskroll.store.references import RecorderReference
    from taskroll.train.recorder import as_recorder

    with R.start(experiment_name="references") as recorder:
        R.save_objects(**{"pred.pkl": [1, 2]})
    decoded = decode(*encode({"model": recorder}))["model"]
    # reading the pool gives an inert reference; the train layer makes it live
    assert decoded == RecorderReference(recorder.id, tracking_uri)
    assert decoded.id == recorder.id
    live = as_recorder(decoded)
    assert live == recorder and as_recorder(live) is live
    assert live.load_object("pred.pkl") == [1, 2]  # the configured store is ours
    assert Recorder.from_reference({"run_id": recorder.id, "tracking_uri": None}) == recorder
    with pytest.raises(RecorderError, match="not a recorder reference"):
        Recorder.from_reference({"run": recorder.id})


def test_references_hold_no_credentials(tracking_uri: str) -> None:
    from taskroll.store.references import RecorderReference

    reference = RecorderReference("run", "postgresql://user:secret@host/db?password=secret")
    assert reference.to_reference() == {"run_id": "run", "tracking_uri": "postgresql://host/db"}
    assert "secret" not in repr(reference)
