"""Strict validation of the online YAML config (:mod:`taskroll.online.config`)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import taskroll
import taskroll.online.cli as online_cli
from taskroll.cli import main as taskroll_main
from taskroll.config import Settings
from taskroll.online.cli import OnlineConfigError as CliOnlineConfigError
from taskroll.online.cli import load_config as cli_load_config
from taskroll.online.config import OnlineConfigError, load_config

DELETE = object()  # marks a key to remove in an edit of BAD_CONFIGS
BASE: dict[str, Any] = {
    "experiment": "rolling_linear",
    "task_url": "sqlite:///tasks.db",
    "tracking_uri": "sqlite:///mlruns.db",
    "trainer": "TrainerRM",
    "task_pool": "rolling_linear_pool",
    "begin_time": "2019-08-01",
    "rolling": {"step": 20, "rtype": "expanding", "calendar": "bars.parquet"},
    "task_template": {
        "model": {"class": "LinearModel", "module_path": "taskroll.models.linear"},
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {"start_time": "2018-01-01", "end_time": "2019-07-31",
                                       "fit_start_time": "2018-01-01",
                                       "fit_end_time": "2019-03-29", "windows": [5, 10],
                                       "data_loader": {"class": "FileLoader",
                                                       "kwargs": {"path": "bars.parquet"}}}},
                "segments": {"train": ["2018-01-01", "2019-03-29"],
                             "valid": ["2019-04-01", "2019-06-28"],
                             "test": ["2019-07-01", None]},
            },
        },
        "record": [{"class": "SignalRecord",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    },
}

SEGMENTS = "task_template.dataset.kwargs.segments"

# id: (edits {dotted key: value or DELETE}, fragments the message must contain)
BAD_CONFIGS: dict[str, tuple[dict[str, Any], list[str]]] = {
    # the reported problems
    "misspelt-rolling-step": ({"rolling.step": DELETE, "rolling.stpe": 20},
                              ["unknown key 'rolling.stpe'; did you mean 'rolling.step'?"]),
    "step-float": ({"rolling.step": 2.5}, ["'rolling.step'", "positive int", "2.5"]),
    "template-without-test": ({f"{SEGMENTS}.test": DELETE},
                              [f"missing key '{SEGMENTS}.test'"]),
    "top-level-trunc-days": ({"trunc_days": 5},
                             ["unknown key 'trunc_days'; did you mean 'rolling.trunc_days'?"]),
    # unknown keys at each level
    "unknown-top-key": ({"tracking_url": "x"},
                        ["unknown key 'tracking_url'; did you mean 'tracking_uri'?"]),
    "top-level-step": ({"step": 5}, ["unknown key 'step'; did you mean 'rolling.step'?"]),
    "top-level-model": ({"model": {"class": "X"}},
                        ["unknown key 'model'; did you mean 'task_template.model'?"]),
    "rolling-begin-time": ({"rolling.begin_time": "2019-08-01"},
                           ["unknown key 'rolling.begin_time'; did you mean 'begin_time'?"]),
    "unknown-template-key": ({"task_template.modle": {}},
                             ["unknown key 'task_template.modle'; "
                              "did you mean 'task_template.model'?"]),
    "template-level-segments": ({"task_template.segments": {}},
                                ["unknown key 'task_template.segments'; "
                                 f"did you mean '{SEGMENTS}'?"]),
    "unknown-cfg-key": ({"task_template.model.kwarg": {}},
                        ["unknown key 'task_template.model.kwarg'; "
                         "did you mean 'task_template.model.kwargs'?"]),
    "unknown-trainer-key": ({"trainer": {"class": "TrainerRM", "taskpool": "pool"}},
                            ["unknown key 'trainer.taskpool'; did you mean 'trainer.task_pool'?"]),
    "unknown-report-key": ({"report": {"top_k": 5}},
                           ["unknown key 'report.top_k'; did you mean 'report.topk'?"]),
    # top-level types
    "experiment-missing": ({"experiment": DELETE}, ["missing key 'experiment'"]),
    "experiment-empty": ({"experiment": " "}, ["'experiment'", "non-empty string", "' '"]),
    "experiment-number": ({"experiment": 123}, ["'experiment'", "non-empty string", "123"]),
    "task-url-number": ({"task_url": 5}, ["'task_url'", "string", "5"]),
    "begin-time-bad-date": ({"begin_time": "2019-13-45"}, ["'begin_time'", "'2019-13-45'"]),
    "trainer-unknown-name": ({"trainer": "TrainerX"},
                             ["'trainer'", "TrainerRM", "'TrainerX'", "did you mean 'TrainerR'?"]),
    "trainer-number": ({"trainer": 5}, ["'trainer'", "5"]),
    "trainer-mapping-bad-class": ({"trainer": {"class": "Pool"}}, ["'trainer.class'", "'Pool'"]),
    "unknown-report-section-typo": ({"reprot": {"topk": 5}},
                                    ["unknown key 'reprot'; did you mean 'report'?"]),
    "report-topk-zero": ({"report": {"topk": 0}}, ["'report.topk'", "int >= 1", "got 0"]),
    "report-topk-bool": ({"report": {"topk": True}}, ["'report.topk'", "True"]),
    # rolling
    "rolling-missing": ({"rolling": DELETE}, ["missing key 'rolling'"]),
    "rolling-not-mapping": ({"rolling": [20]}, ["'rolling'", "mapping", "[20]"]),
    "step-zero": ({"rolling.step": 0}, ["'rolling.step'", "got 0"]),
    "step-negative": ({"rolling.step": -5}, ["'rolling.step'", "got -5"]),
    "step-bool": ({"rolling.step": True}, ["'rolling.step'", "got True"]),
    "step-unknown-period": ({"rolling.step": "fortnight"}, ["'rolling.step'", "'fortnight'"]),
    "rtype-misspelt": ({"rolling.rtype": "expandng"},
                       ["'rolling.rtype'", "'expandng'", "did you mean 'expanding'?"]),
    "calendar-number": ({"rolling.calendar": 5}, ["'rolling.calendar'", "5"]),
    "calendar-file-missing": ({"rolling.calendar": "missing.parquet"},
                              ["'rolling.calendar'", "missing.parquet", "does not exist"]),
    "trunc-days-negative": ({"rolling.trunc_days": -1},
                            ["'rolling.trunc_days'", "int >= 0", "-1"]),
    "label-horizon-float": ({"rolling.label_horizon": 1.5}, ["'rolling.label_horizon'", "1.5"]),
    "allow-label-leak-text": ({"rolling.allow_label_leak": "no way"},
                              ["'rolling.allow_label_leak'", "true or false", "'no way'"]),
    "refit-per-roll-int": ({"rolling.refit_per_roll": 1},
                           ["'rolling.refit_per_roll'", "true or false", "1"]),
    "trunc-days-below-horizon": ({"rolling.label_horizon": 5, "rolling.trunc_days": 2},
                                 ["'rolling.trunc_days'", "2", "6", "allow_label_leak"]),
    # templates
    "template-missing": ({"task_template": DELETE}, ["missing key 'task_template'"]),
    "template-misspelt": ({"task_template": DELETE, "task_templat": {}},
                          ["unknown key 'task_templat'; did you mean 'task_template'?"]),
    "template-empty-list": ({"task_template": []}, ["'task_template'", "non-empty list"]),
    "template-text": ({"task_template": "tmpl"}, ["'task_template'", "'tmpl'"]),
    "template-list-item-not-mapping": ({"task_template": [BASE["task_template"], "x"]},
                                       ["'task_template[1]'", "mapping", "'x'"]),
    "template-list-unknown-key": ({"task_template": [BASE["task_template"],
                                                     {**BASE["task_template"], "modle": {}}]},
                                  ["unknown key 'task_template[1].modle'; "
                                   "did you mean 'task_template[1].model'?"]),
    "model-missing": ({"task_template.model": DELETE}, ["missing key 'task_template.model'"]),
    "model-without-class": ({"task_template.model": {"module_path": "x"}},
                            ["missing key 'task_template.model.class'"]),
    "record-number": ({"task_template.record": 5}, ["'task_template.record'", "5"]),
    "segments-missing": ({f"{SEGMENTS}": DELETE}, [f"missing key '{SEGMENTS}'"]),
    "segments-misspelt": ({f"{SEGMENTS}": DELETE,
                           "task_template.dataset.kwargs.segment": BASE["task_template"]
                           ["dataset"]["kwargs"]["segments"]},
                          [f"missing key '{SEGMENTS}'",
                           "'task_template.dataset.kwargs.segment'"]),
    "segments-list": ({SEGMENTS: [["2018-01-01", "2019-03-29"]]}, [f"'{SEGMENTS}'", "mapping"]),
    "train-missing": ({f"{SEGMENTS}.train": DELETE}, [f"missing key '{SEGMENTS}.train'"]),
    "test-misspelt": ({f"{SEGMENTS}.test": DELETE, f"{SEGMENTS}.tset": ["2019-07-01", None]},
                      [f"missing key '{SEGMENTS}.test'", f"'{SEGMENTS}.tset'"]),
    "segment-one-date": ({f"{SEGMENTS}.train": ["2018-01-01"]},
                         [f"'{SEGMENTS}.train'", "[start, end]", "['2018-01-01']"]),
    "segment-bad-date": ({f"{SEGMENTS}.valid": ["2019-04-01", "2019-02-30"]},
                         [f"'{SEGMENTS}.valid[1]'", "'2019-02-30'"]),
    "segment-reversed": ({f"{SEGMENTS}.train": ["2019-03-29", "2018-01-01"]},
                         [f"'{SEGMENTS}.train'", "2019-03-29", "after", "2018-01-01"]),
    "train-end-null": ({f"{SEGMENTS}.train": ["2018-01-01", None]},
                       [f"'{SEGMENTS}.train[1]'", "None"]),
    "test-start-null": ({f"{SEGMENTS}.test": [None, None]}, [f"'{SEGMENTS}.test[0]'", "None"]),
}


def _edited(edits: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return config


def _write(folder: Path, config: Any, name: str = "online.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bars.parquet").write_bytes(b"")  # only its existence matters here
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(item.relative_to(folder)) for item in folder.rglob("*"))


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    edits, fragments = BAD_CONFIGS[name]
    path = _write(tmp_path, _edited(edits))
    with pytest.raises(OnlineConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(("text", "fragment"), [
    ("- experiment: x\n", "the config must be a mapping"),
    ("experiment: [unclosed\n", "invalid YAML"),
    ("", "the config must be a mapping"),
])
def test_unreadable_documents(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "online.yaml"
    path.write_text(text)
    with pytest.raises(OnlineConfigError, match=fragment) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(OnlineConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_valid_config_loads_as_before(tmp_path: Path) -> None:
    """Dates become ISO text, ``path`` entries and the calendar are resolved (the old result)."""
    text = yaml.safe_dump(BASE, sort_keys=False).replace("'2019-08-01'", "2019-08-01")
    path = tmp_path / "online.yaml"
    path.write_text(text)
    (tmp_path / "bars.parquet").write_bytes(b"")
    loaded = load_config(path)
    expected = copy.deepcopy(BASE)
    bars = str(tmp_path.resolve() / "bars.parquet")
    expected["rolling"]["calendar"] = bars
    handler = expected["task_template"]["dataset"]["kwargs"]["handler"]
    handler["kwargs"]["data_loader"]["kwargs"]["path"] = bars
    assert loaded == expected
    assert CliOnlineConfigError is OnlineConfigError and cli_load_config is load_config


def test_docstring_example_is_valid(tmp_path: Path) -> None:
    """The example in the docstring of taskroll.online.cli passes the schema."""
    document = online_cli.__doc__ or ""
    block = document.split("Example ``online.yaml``", 1)[1].split("::\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith(" "):
            break
        lines.append(line)
    path = tmp_path / "online.yaml"
    path.write_text(textwrap.dedent("\n".join(lines)))
    (tmp_path / "bars.parquet").write_bytes(b"")
    loaded = load_config(path)
    assert loaded["rolling"]["calendar"] == str(tmp_path.resolve() / "bars.parquet")
    assert loaded["begin_time"] == "2019-08-01"


@pytest.mark.parametrize("rolling", [
    {"step": "M"}, {"step": "QE", "rtype": "sliding", "calendar": "XSHG"},
    {"step": 1, "trunc_days": None, "label_horizon": None, "allow_label_leak": False,
     "refit_per_roll": True},
    {"step": 5, "label_horizon": 5, "trunc_days": 2, "allow_label_leak": True},
    {"calendar": ["2019-07-01", "2019-07-02"]},
])
def test_valid_rolling_settings(tmp_path: Path, rolling: dict[str, Any]) -> None:
    path = _write(tmp_path, {**BASE, "rolling": rolling})
    assert load_config(path)["rolling"].get("step") == rolling.get("step")


def test_optional_sections_and_template_lists(tmp_path: Path) -> None:
    config = {**BASE, "trainer": {"class": "DelayTrainerRM", "task_pool": "pool"},
              "task_db_name": "db", "artifact_root": "/tmp/artifacts",
              "report": {"topk": 50},
              "task_template": [BASE["task_template"],
                                {**BASE["task_template"], "reweighter": "pkg.Weights"}]}
    loaded = load_config(_write(tmp_path, config))
    assert loaded["report"] == {"topk": 50} and len(loaded["task_template"]) == 2


CLI_ROWS = ["misspelt-rolling-step", "step-float", "template-without-test",
            "top-level-trunc-days", "calendar-file-missing", "template-empty-list"]


@pytest.mark.parametrize("command", ["routine", "simulate"])
@pytest.mark.parametrize("name", CLI_ROWS)
def test_cli_exits_2_with_one_line_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        isolated_settings: Settings, name: str, command: str) -> None:
    work = tmp_path / "work"
    config = _edited(BAD_CONFIGS[name][0])
    config["task_url"] = f"sqlite:///{work / 'tasks.db'}"
    config["tracking_uri"] = f"sqlite:///{work / 'mlruns.db'}"
    path = _write(work, config)
    monkeypatch.chdir(work)
    initialised: list[Any] = []
    monkeypatch.setattr(taskroll, "init", lambda *args, **kwargs: initialised.append(kwargs))
    before = _files(tmp_path)
    extra = ["--end-time", "2019-08-30"] if command == "simulate" else []
    code = taskroll_main(["online", command, "--config", str(path), "--output",
                          str(work / "out"), *extra])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"taskroll online: error: {path}: ")
    assert BAD_CONFIGS[name][1][0] in lines[0]
    assert captured.out == "" and _files(tmp_path) == before and initialised == []
