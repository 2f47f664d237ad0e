"""Parity with Qlib where Qlib scripts depend on it (issue 11, item 4).

Each test names the Qlib behaviour it pins: a static ``TaskManager.list()``, ``wait()``
counting ``part_done``, the task logged as MLflow params, the recorder-id collector key,
``Group.reduce`` per group, ``TrainerR(call_in_subproc=True)``, the default horizon of
``MultiHorizonGenBase``, ``list_recorders`` / ``replace_task_handler_with_cache`` and the
pool command set. Everything runs on real SQLite pools, real MLflow stores and real files.
"""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll import cli
from taskroll.collect import (
    Group,
    RecorderCollector,
    RollingGroup,
    model_and_test_segment_key,
    recorder_id_key,
)
from taskroll.config import Settings
from taskroll.data import SyntheticMarket
from taskroll.data.dataset import DatasetH
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager
from taskroll.task.gen import MultiHorizonGenBase
from taskroll.task.utils import (
    handler_cache_path,
    list_recorders,
    load_cached_handler,
    replace_task_handler_with_cache,
)
from taskroll.train.experiment import R
from taskroll.train.process import PID_TAG
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import (
    MAX_PARAM_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    DelayTrainerRM,
    TrainerR,
    task_params,
    task_train,
)

# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    market = SyntheticMarket(seed=5, n_instruments=12, start="2019-01-01", end="2020-06-30")
    return market.save(tmp_path_factory.mktemp("parity_market") / "bars.parquet")


def handler_config(path: Path) -> dict[str, Any]:
    return {"class": "Alpha158", "module_path": "taskroll.data.handler",
            "kwargs": {"start_time": "2019-01-01", "end_time": "2020-03-31",
                       "fit_start_time": "2019-01-01", "fit_end_time": "2019-09-30",
                       "instruments": "all", "windows": [5],
                       "data_loader": {"class": "FileLoader",
                                       "module_path": "taskroll.data.loader",
                                       "kwargs": {"path": str(path)}}}}


def make_task(path: Path, model: str = "LinearModel") -> dict[str, Any]:
    module = "taskroll.models.linear" if model == "LinearModel" else "taskroll.models.gbdt"
    kwargs: dict[str, Any] = {"alpha": 1.0} if model == "LinearModel" else {"num_boost_round": 5}
    return {
        "model": {"class": model, "module_path": module, "kwargs": kwargs},
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                    "kwargs": {"handler": handler_config(path),
                               "segments": {"train": ["2019-01-01", "2019-09-30"],
                                            "valid": ["2019-10-01", "2019-12-31"],
                                            "test": ["2020-01-01", "2020-03-31"]}}},
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }


# -- TaskManager.list and wait ---------------------------------------------------------------


def test_list_is_callable_on_the_class_and_on_an_instance(isolated_settings: Settings,
                                                          tmp_path: Path) -> None:
    with TaskManager("alpha") as manager:
        manager.create_task([{"n": 1}])
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    with TaskManager("beta", store=other_url) as other:
        other.create_task([{"n": 2}])
        # Qlib: @staticmethod listing the pools of the configured database
        assert TaskManager.list() == ["alpha"]
        # an instance lists the pools of its own store
        assert other.list() == ["beta"]


def test_wait_counts_part_done_as_undone(isolated_settings: Settings) -> None:
    with TaskManager("halves") as manager:
        manager.create_task([{"n": 1}])
        task = manager.fetch_task()
        assert task is not None
        manager.commit_task_res(task, {"half": 1}, status=TaskManager.STATUS_PART_DONE)
        with pytest.raises(TimeoutError, match="1 task"):
            manager.wait(poll_interval=0.05, timeout=0.2, progress=False)
        # the first half alone can still be waited for by status
        first_half = {"status": {"$in": ["waiting", "running"]}}
        assert manager.wait(first_half, timeout=0.0, progress=False) == {}
        second = manager.fetch_task(status=TaskManager.STATUS_PART_DONE)
        assert second is not None
        manager.commit_task_res(second, {"half": 2})
        assert manager.wait(poll_interval=0.05, timeout=1.0, progress=False) == {"done": 1}


def test_delayed_pool_trainer_leaves_part_done_and_finishes(isolated_settings: Settings,
                                                            market_path: Path) -> None:
    trainer = DelayTrainerRM(experiment_name="delayed_parity")
    prepared = trainer.train([make_task(market_path)])  # must not wait for part_done
    with TaskManager("delayed_parity") as manager:
        assert manager.task_stat() == {"part_done": 1}
        finished = trainer.end_train(prepared)
        assert manager.task_stat() == {"done": 1}
    assert "pred.pkl" in finished[0].list_artifacts()


# -- task_train logs the task as params ------------------------------------------------------


def test_task_params_flatten_and_fit_mlflow_limits() -> None:
    long_key = "k" * 300
    params = task_params({"model": {"class": "LinearModel", "kwargs": {"alpha": 0.5}},
                          "note": "x" * 7000, "odd": {long_key: 1, "a<b>": [1, 2], "/": 3}, "..": 4,
                          "empty": {}})
    assert params["model.class"] == "LinearModel"
    assert params["model.kwargs.alpha"] == "0.5"
    assert params["odd.a_b_"] == "[1, 2]"  # characters MLflow refuses become "_"
    assert params["odd._"] == "3" and params["_"] == "4"  # nothing that reads as a path
    assert params["empty"] == "{}"
    assert len(params["note"]) == MAX_PARAM_VALUE_LENGTH
    assert params["note"].startswith("x" * 100) and "...truncated-" in params["note"]
    (cut_key,) = [key for key in params if key.startswith("odd.kkk")]
    assert len(cut_key) == MAX_PARAM_KEY_LENGTH and "...truncated-" in cut_key


def test_task_train_logs_the_flattened_task_for_mlflow_search(isolated_settings: Settings,
                                                              market_path: Path) -> None:
    task = make_task(market_path)
    task["note"] = {"text": "y" * 8000, "z" * 400: "long key"}
    recorder = task_train(task, experiment_name="params")
    params = recorder.list_params()
    assert params["model.class"] == "LinearModel"
    assert params["model.kwargs.alpha"] == "1.0"
    assert params["dataset.kwargs.segments.test"] == "['2020-01-01', '2020-03-31']"
    assert len(params["note.text"]) == MAX_PARAM_VALUE_LENGTH
    assert recorder.load_object("task") == task  # the full task stays an artifact
    experiment = R.get_exp("params", create=False)
    found = experiment.list_recorders("list", filter_string="params.`model.class` = 'LinearModel'")
    assert [run.id for run in found] == [recorder.id]
    assert experiment.list_recorders("list", filter_string="params.`model.class` = 'LGBModel'") == []


# -- RecorderCollector keys ------------------------------------------------------------------


def _recorders_with_tasks() -> list[Recorder]:
    made = []
    for start in ("2021-01-04", "2021-01-05"):
        with R.start(experiment_name="keys") as recorder:
            R.save_objects(**{"task": {"model": {"class": "LinearModel"},
                                       "dataset": {"kwargs": {"segments": {"test": [start, start]}}}},
                              "pred.pkl": pd.Series([1.0])})
        made.append(recorder)
    return made


def test_collector_keys_by_recorder_id_or_by_the_named_helper(isolated_settings: Settings) -> None:
    made = _recorders_with_tasks()
    by_id = RecorderCollector("keys", rec_key_func=recorder_id_key).collect()["pred"]
    assert set(by_id) == {recorder.id for recorder in made}
    by_window = RecorderCollector("keys", rec_key_func=model_and_test_segment_key,
                                  process_list=RollingGroup(ens=len))()["pred"]
    assert by_window == {("LinearModel",): 2}


def test_collector_default_key_is_the_recorder_id_as_qlib(isolated_settings: Settings) -> None:
    made = _recorders_with_tasks()
    assert set(RecorderCollector("keys").collect()["pred"]) == {recorder.id for recorder in made}


# -- Group.reduce per group ------------------------------------------------------------------


class CountGroup(Group):
    """A Qlib-style subclass: ``group`` and ``reduce`` overridden, ``reduce`` per group."""

    def group(self, rolling_dict: dict[Any, Any]) -> dict[Any, Any]:  # type: ignore[override]
        grouped: dict[Any, Any] = {}
        for key, value in rolling_dict.items():
            grouped.setdefault(key[0], {})[key[1]] = value
        return grouped

    def reduce(self, group_value: dict[Any, Any]) -> Any:  # type: ignore[override]
        return sum(group_value.values()) * 10


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_qlib_style_reduce_override_is_used_per_group(n_jobs: int) -> None:
    grouped = CountGroup()({("a", 1): 1, ("a", 2): 2, ("b", 1): 5}, n_jobs)
    assert grouped == {"a": 30, "b": 50}
    # the base reduce takes one group, as Qlib's Group.reduce
    assert Group(ens=len).reduce({1: "x", 2: "y"}) == 2


# -- TrainerR(call_in_subproc=True) ----------------------------------------------------------


def test_trainer_r_trains_in_a_subprocess(isolated_settings: Settings, market_path: Path) -> None:
    trainer = TrainerR(experiment_name="subprocess", call_in_subproc=True)
    (recorder,) = trainer.train([make_task(market_path)])
    assert isinstance(recorder, Recorder) and recorder.status == "FINISHED"
    tags = recorder.list_tags()
    assert tags["train_status"] == "begin_task_train"
    assert tags[PID_TAG] != str(os.getpid())  # trained in another process
    assert "pred.pkl" in recorder.list_artifacts()
    broken = make_task(market_path)
    broken["model"]["class"] = "NoSuchModel"
    with pytest.raises(TaskConfigError, match="NoSuchModel"):
        trainer.train([broken])


# -- MultiHorizonGenBase -----------------------------------------------------------------------


class HorizonGen(MultiHorizonGenBase):
    def set_horizon(self, task: dict[str, Any], hr: int) -> None:
        task["horizon"] = hr


def test_multi_horizon_default_is_qlibs() -> None:
    assert HorizonGen().horizon == [5]  # qlib.workflow.task.gen: horizon=[5]


# -- taskroll.task.utils -------------------------------------------------------------------


def test_list_recorders_filters_an_experiment(isolated_settings: Settings) -> None:
    made = _recorders_with_tasks()
    assert set(list_recorders("keys")) == {recorder.id for recorder in made}
    kept = list_recorders(R.get_exp("keys", create=False),
                          rec_filter_func=lambda recorder: recorder.id == made[0].id)
    assert list(kept) == [made[0].id] and kept[made[0].id] == made[0]


def test_handler_cache_is_written_once_and_loaded_by_dataset(tmp_path: Path,
                                                              market_path: Path) -> None:
    task = make_task(market_path)
    original = copy.deepcopy(task)
    cached = replace_task_handler_with_cache(task, cache_dir=tmp_path / "cache")
    assert task == original
    uri = cached["dataset"]["kwargs"]["handler"]
    assert uri.startswith("file:///") and uri.endswith(".pkl") and "Alpha158." in uri
    path = handler_cache_path(uri)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.stat().st_mtime_ns
    again = replace_task_handler_with_cache(task, cache_dir=tmp_path / "cache")
    assert again == cached and path.stat().st_mtime_ns == written  # not written twice

    segments = task["dataset"]["kwargs"]["segments"]
    from_cache = DatasetH(uri, segments).prepare("test")
    built = DatasetH(handler_config(market_path), segments).prepare("test")
    pd.testing.assert_frame_equal(from_cache, built)


def test_cached_handler_trains(isolated_settings: Settings, tmp_path: Path,
                               market_path: Path) -> None:
    cached = replace_task_handler_with_cache(make_task(market_path), cache_dir=tmp_path)
    recorder = task_train(cached, experiment_name="cached")
    assert recorder.load_object("pred.pkl").index.get_level_values("datetime").min() >= \
        pd.Timestamp("2020-01-01")


def test_relative_qlib_uris_name_local_paths() -> None:
    assert handler_cache_path("file:///abs/h.pkl") == Path("/abs/h.pkl")
    assert handler_cache_path("file://./cache/h.pkl") == Path("cache/h.pkl")
    assert handler_cache_path("file://h.pkl") == Path("h.pkl")


def test_an_untrusted_cached_handler_is_refused(tmp_path: Path, market_path: Path) -> None:
    cached = replace_task_handler_with_cache(make_task(market_path), cache_dir=tmp_path)
    uri = cached["dataset"]["kwargs"]["handler"]
    handler_cache_path(uri).chmod(0o666)  # someone else could have written it
    with pytest.raises(TaskConfigError, match="group or others may write it"):
        load_cached_handler(uri)
    with pytest.raises(TaskConfigError, match="group or others may write it"):
        DatasetH(uri, {"test": ["2020-01-01", "2020-03-31"]})
    with pytest.raises(TaskConfigError, match="cannot open the cached handler"):
        load_cached_handler((tmp_path / "missing.pkl").as_uri())
    with pytest.raises(TaskConfigError, match="not a regular file"):
        load_cached_handler("file:///dev/null")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_a_cached_handler_of_another_user_is_refused(tmp_path: Path, market_path: Path) -> None:
    cached = replace_task_handler_with_cache(make_task(market_path), cache_dir=tmp_path)
    uri = cached["dataset"]["kwargs"]["handler"]
    os.chown(handler_cache_path(uri), 54321, -1)
    with pytest.raises(TaskConfigError, match="owned by user id 54321"):
        load_cached_handler(uri)


# -- the pool command set ------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], url: str, *arguments: str) -> tuple[int, str, str]:
    status = cli.main(["--url", url, *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def pool_url(isolated_settings: Settings, tmp_path: Path) -> str:
    """A pool file; the settings ``--url`` changes (``taskroll.init``) are restored after."""
    return f"sqlite:///{tmp_path / 'pool.db'}"


def test_cli_create_task_from_json_and_yaml(capsys: pytest.CaptureFixture[str], pool_url: str,
                                            tmp_path: Path) -> None:
    json_file = tmp_path / "tasks.json"
    json_file.write_text(json.dumps([{"model": "A", "n": 1}, {"model": "B", "n": 2}]))
    yaml_file = tmp_path / "tasks.yaml"
    yaml_file.write_text("- model: A\n  n: 1\n- model: C\n  n: 3\n")
    status, out, _ = run_cli(capsys, pool_url, "-t", "new_pool", "create_task", str(json_file),
                             "--dry-run")
    assert status == 0 and out == ""  # Qlib returns [] on a dry run
    assert run_cli(capsys, pool_url, "list")[1].split() == []
    status, out, _ = run_cli(capsys, pool_url, "-t", "new_pool", "create_task", str(json_file))
    first_ids = out.split()
    assert status == 0 and len(first_ids) == 2
    status, out, _ = run_cli(capsys, pool_url, "-t", "new_pool", "create_task", str(yaml_file),
                             "--print-nt")
    lines = out.splitlines()
    assert status == 0 and lines[0] == "{'model': 'C', 'n': 3}"  # only the new one printed
    assert lines[1] == first_ids[0] and len(lines) == 3
    with TaskManager("new_pool", store=pool_url) as manager:
        assert manager.task_stat() == {"waiting": 3}
    one = tmp_path / "one.yaml"
    one.write_text("model: D\nn: 4\n")
    status, out, _ = run_cli(capsys, pool_url, "-t", "new_pool", "insert_task_def", str(one))
    with TaskManager("new_pool", store=pool_url) as manager:
        assert manager.re_query(out.strip())["def"] == {"model": "D", "n": 4}  # type: ignore[index]


def test_cli_refuses_bad_task_files(capsys: pytest.CaptureFixture[str], pool_url: str,
                                    tmp_path: Path) -> None:
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [1]\n" + "".join(f"b{i}: &b{i} [*a, *a]\n" for i in range(120)))
    two = tmp_path / "two.json"
    two.write_text('[{"n": 1}, {"n": 2}]')
    for arguments, message in (
            (("create_task", str(scalar)), "expected a task definition"),
            (("create_task", str(tmp_path / "missing.json")), "cannot read task file"),
            (("create_task", str(bomb)), "refused YAML"),
            (("insert_task_def", str(two)), "expected one task definition")):
        status, _, err = run_cli(capsys, pool_url, "-t", "bad", *arguments)
        assert status == 2 and message in err and "Traceback" not in err
    assert run_cli(capsys, pool_url, "list")[1] == ""  # nothing was created


def test_cli_task_commands_by_id(capsys: pytest.CaptureFixture[str], pool_url: str,
                                 tmp_path: Path) -> None:
    with TaskManager("p", store=pool_url) as manager:
        first, second = manager.create_task([{"n": 1}, {"n": 2}])
        manager.prioritize(second, 5)
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "re_query", first)
    assert status == 0 and json.loads(out)["def"] == {"n": 1}
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "fetch_task")
    fetched = json.loads(out)
    assert fetched["_id"] == second and fetched["status"] == "running"  # highest priority
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "return_task", second)
    assert json.loads(out)["status"] == "waiting"
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "commit_task_res", first,
                             '{"score": 0.5}', "--status", "part_done")
    assert json.loads(out)["res"] == {"score": 0.5} and json.loads(out)["status"] == "part_done"
    replacement = tmp_path / "new.json"
    replacement.write_text('{"n": 10}')
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "replace_task", second,
                             str(replacement))
    assert status == 0 and json.loads(out)["def"] == {"n": 10}
    status, _, err = run_cli(capsys, pool_url, "-t", "p", "re_query", "no-such-id")
    assert status == 2 and "no task 'no-such-id'" in err
    status, _, err = run_cli(capsys, pool_url, "-t", "p", "commit_task_res", first, "{bad")
    assert status == 2 and "RES is not valid JSON" in err


def test_cli_reset_status(capsys: pytest.CaptureFixture[str], pool_url: str) -> None:
    with TaskManager("p", store=pool_url) as manager:
        manager.create_task([{"n": 1}, {"n": 2}])
    status, _, err = run_cli(capsys, pool_url, "-t", "p", "reset_status", "done")
    assert status == 2 and "--all" in err
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "reset_status", "done",
                             '{"filter.n": 1}')
    assert status == 0 and "1 task(s) set to done" in out
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "reset_status", "part_done", "--all")
    assert "2 task(s) set to part_done" in out
    with TaskManager("p", store=pool_url) as manager:
        assert manager.task_stat() == {"part_done": 2}
    status, _, err = run_cli(capsys, pool_url, "-t", "p", "fetch_task")
    assert status == 2 and "no waiting task matches" in err
    status, out, _ = run_cli(capsys, pool_url, "-t", "p", "fetch_task", "--status", "part_done")
    assert status == 0 and json.loads(out)["status"] == "running"


# -- TimeAdjuster keeps Qlib's positional meaning ---------------------------------------------

def test_time_adjuster_positional_arguments_as_qlib() -> None:
    from taskroll.task.calendar import TimeAdjuster

    days = pd.bdate_range("2020-01-01", "2020-03-31")
    qlib_style = TimeAdjuster(True, "2020-02-28", calendar=days)  # (future, end_time)
    assert qlib_style.cals[-1] == pd.Timestamp("2020-02-28")
    assert TimeAdjuster(False, calendar=days).cals.equals(days)  # all before today
    future = pd.bdate_range(pd.Timestamp.now().normalize() - pd.Timedelta(days=10), periods=30)
    past_only = TimeAdjuster(False, calendar=future)
    assert past_only.cals.max() <= pd.Timestamp.now().normalize() < future.max()
    assert TimeAdjuster(days).cals.equals(days)  # taskroll's short form still works
    assert TimeAdjuster(days, "2020-01-31").cals[-1] == pd.Timestamp("2020-01-31")
    with pytest.raises(TypeError, match="twice"):
        TimeAdjuster(days, calendar=days)
