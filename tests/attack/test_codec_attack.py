"""Hostile pool contents against the codec, task identity, recorder references, YAML and imports.

Each row of each table is one hostile input; every test asserts a clear taskroll
error (or the correct result) and that nothing was created or changed: no file at
a planted path, no module imported, the pool's stored records unchanged.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskroll.config import Settings
from taskroll.errors import (
    RecorderError,
    SerializationError,
    TaskConfigError,
    TaskrollError,
)
from taskroll.manage import TaskManager
from taskroll.online.cli import OnlineConfigError, load_config
from taskroll.safe_yaml import MAX_ALIASES, UnsafeYamlError, load_yaml
from taskroll.store.codec import MAX_DEPTH, decode, encode
from taskroll.store.references import RecorderReference, strip_credentials
from taskroll.store.urls import mask_url
from taskroll.task import spec
from taskroll.task.spec import (
    canonical_json,
    fill_placeholder,
    get_callable_by_config,
    init_instance_by_config,
    task_id,
)
from taskroll.train.recorder import Recorder, as_recorder

PLANTED = "PLANTED"  # replaced by a path under tmp_path in each test


def snapshot(manager: TaskManager) -> list[dict[str, Any]]:
    """The stored records of a pool, undecoded, in id order."""
    records = [dict(record) for record in manager.query(decode=False)]
    return sorted(records, key=lambda record: str(record["_id"]))


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def pool(isolated_settings: Settings) -> Iterator[TaskManager]:
    with TaskManager("attack_pool") as manager:
        manager.create_task([{"index": 0}])
        yield manager


def plant_result(manager: TaskManager, payload: str) -> str:
    """Write a raw JSON result into the pool's one task, as a hostile writer would."""
    record = next(iter(manager.query(decode=False)))
    assert manager.store.update(manager.task_pool, record["_id"],
                                {"res": payload, "res_encoding": "json"})
    return str(record["_id"])


# --------------------------------------------------------------------------- planted references

FOREIGN_URIS = [
    "sqlite:///PLANTED/planted.db",
    "sqlite:////PLANTED/absolute.db",
    "file:///PLANTED/mlruns",
    "PLANTED/plain-directory",
    "postgresql://user:secret@evil.example/db",
    "mysql+pymysql://root:hunter2@evil.example:3306/mlflow",
    "http://evil.example:5000",
    "https://token:x-oauth@evil.example/api",
    "databricks://profile",
    "sqlite:///PLANTED/../PLANTED/traversal.db",
]


@pytest.mark.parametrize("uri", FOREIGN_URIS)
def test_planted_reference_is_inert_until_resolved_and_then_refused(
        pool: TaskManager, tmp_path: Path, uri: str) -> None:
    planted_folder = tmp_path / "planted"
    uri = uri.replace(PLANTED, str(planted_folder))
    payload = json.dumps({"__taskroll__": "recorder",
                          "value": {"run_id": "0" * 32, "tracking_uri": uri}})
    task_id_planted = plant_result(pool, payload)
    before = snapshot(pool)
    task = pool.re_query(task_id_planted)
    assert task is not None
    reference = task["res"]
    assert isinstance(reference, RecorderReference)
    assert "secret" not in repr(reference) and "hunter2" not in repr(reference)
    with pytest.raises(RecorderError, match="not configured for") as caught:
        as_recorder(reference)
    assert "secret" not in str(caught.value) and "hunter2" not in str(caught.value)
    with pytest.raises(RecorderError, match="not configured for"):
        Recorder.from_reference(reference.to_reference(), allow_pickle=True)
    assert files_under(planted_folder) == []
    assert snapshot(pool) == before


def test_reference_to_the_configured_store_resolves(isolated_settings: Settings) -> None:
    configured = isolated_settings.resolved_tracking_uri()
    reference = RecorderReference("no-such-run", configured)
    # the store is ours: opening it is fine, the run simply does not exist
    with pytest.raises(RecorderError, match="no-such-run"):
        Recorder.from_reference(reference)


def test_allowlisted_store_resolves_but_needs_the_pickle_opt_in(
        isolated_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskroll.train.experiment import R

    with R.start(experiment_name="ours") as recorder:
        recorder.save_objects(**{"pred.pkl": [1, 2, 3]})
    own_uri = isolated_settings.resolved_tracking_uri()
    # this process now points elsewhere; the old store is only allowlisted
    monkeypatch.setattr(
        "taskroll.config._SettingsHolder.current",
        Settings(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}"))
    reference = RecorderReference(recorder.id, own_uri)
    with pytest.raises(RecorderError, match="not configured for"):
        Recorder.from_reference(reference)
    monkeypatch.setenv("TASKROLL_ALLOWED_TRACKING_URIS", f"http://unused:1,{own_uri}")
    foreign = Recorder.from_reference(reference)
    assert foreign.list_artifacts() == ["pred.pkl"]
    with pytest.raises(RecorderError, match="allow_pickle=True"):
        foreign.load_object("pred.pkl")
    assert Recorder.from_reference(reference, allow_pickle=True).load_object("pred.pkl") == [1, 2, 3]


# --------------------------------------------------------------------------- credentials

CREDENTIAL_URIS = [
    ("postgresql://user:secret@host/db", "postgresql://host/db"),
    ("postgresql+psycopg://user:secret@host:5432/db?sslmode=require",
     "postgresql+psycopg://host:5432/db?sslmode=require"),
    ("postgresql://host/db?user=me&password=secret", "postgresql://host/db?user=me"),
    ("mysql://root:secret@db.internal/mlflow", "mysql://db.internal/mlflow"),
    ("https://secret@tracking.example", "https://tracking.example"),
    ("https://tracking.example/?token=secret#frag", "https://tracking.example/#frag"),
    ("mongodb://a:secret@h1,h2/db?replicaSet=rs&authSource=admin",
     "mongodb://h1,h2/db?replicaSet=rs"),
    ("sqlite:////tmp/mlruns.db", "sqlite:////tmp/mlruns.db"),
]


@pytest.mark.parametrize(("uri", "stripped"), CREDENTIAL_URIS)
def test_no_credentials_reach_the_pool(pool: TaskManager, uri: str, stripped: str) -> None:
    assert strip_credentials(uri) == stripped
    encoding, payload = encode({"model": RecorderReference("run-1", uri)})
    assert encoding == "json" and "secret" not in str(payload)
    assert decode(encoding, payload) == {"model": RecorderReference("run-1", stripped)}
    task = next(pool.query())
    pool.commit_task_res(task, RecorderReference("run-1", uri))
    assert all("secret" not in json.dumps(record, default=str) for record in snapshot(pool))
    if ":secret@" in uri or "password=secret" in uri:
        assert "secret" not in mask_url(uri)


def test_reader_credentials_come_from_its_own_settings(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskroll.train import tracking

    full = "postgresql://reader:own-password@db.example/mlflow"
    monkeypatch.setenv("TASKROLL_ALLOWED_TRACKING_URIS", full)
    # a planted reference carrying other credentials is matched without them
    uri, configured = tracking.resolve_tracking_uri(
        "postgresql://writer:planted@db.example/mlflow", "run-1")
    assert (uri, configured) == (full, False)


# --------------------------------------------------------------------------- malformed tags

MALFORMED_TAGS: list[Any] = [
    {"__taskroll__": "tuple", "value": "not a list"},
    {"__taskroll__": "tuple", "value": {"a": 1}},
    {"__taskroll__": "tuple"},
    {"__taskroll__": "tuple", "value": [], "extra": 1},
    {"__taskroll__": "datetime", "value": 20240101},
    {"__taskroll__": "datetime", "value": "not a date"},
    {"__taskroll__": "date", "value": "2024-13-45"},
    {"__taskroll__": "date", "value": None},
    {"__taskroll__": "timestamp", "value": "yesterday-ish"},
    {"__taskroll__": "timestamp", "value": [2024]},
    {"__taskroll__": "float", "value": "1.5"},
    {"__taskroll__": "float", "value": 3},
    {"__taskroll__": "float", "value": "nanx"},
    {"__taskroll__": "recorder", "value": "run-1"},
    {"__taskroll__": "recorder", "value": {"tracking_uri": "sqlite:///x.db"}},
    {"__taskroll__": "recorder", "value": {"run_id": 7}},
    {"__taskroll__": "recorder", "value": {"run_id": ""}},
    {"__taskroll__": "recorder", "value": {"run_id": "x" * 10_000}},
    {"__taskroll__": "recorder", "value": {"run_id": "r", "tracking_uri": 5}},
    {"__taskroll__": "recorder", "value": {"run_id": "r", "module": "os", "class": "system"}},
    {"__taskroll__": "pickle", "value": "gASVAAAAAAAAAAB9lC4="},
    {"__taskroll__": "os.system", "value": "rm -rf /"},
    {"__taskroll__": ["unhashable"], "value": 1},
    {"__taskroll__": None, "value": 1},
]


@pytest.mark.parametrize("tagged", MALFORMED_TAGS)
def test_malformed_tags_raise_serialization_error(tagged: Any) -> None:
    for wrapped in (tagged, {"res": [tagged]}):
        with pytest.raises(SerializationError):
            decode("json", json.dumps(wrapped))


@pytest.mark.parametrize("tagged", MALFORMED_TAGS[:6])
def test_malformed_result_in_a_pool_fails_only_its_read(pool: TaskManager, tagged: Any) -> None:
    planted = plant_result(pool, json.dumps(tagged))
    before = snapshot(pool)
    with pytest.raises(SerializationError):
        pool.re_query(planted)
    assert snapshot(pool) == before


@pytest.mark.parametrize("payload", [b"\xff\xfe not utf-8", "{not json", "[" * 5000 + "]" * 5000])
def test_corrupt_json_payloads(payload: str | bytes) -> None:
    with pytest.raises(SerializationError):
        decode("json", payload)


def test_corrupt_pickle_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="corrupt pickle"):
        decode("pickle", b"\x80\x05not a pickle", allow_pickle=True)


# --------------------------------------------------------------------------- task identity

@pytest.mark.parametrize(("number", "text"), [
    (math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
])
def test_non_finite_floats_are_distinct_tasks(pool: TaskManager, number: float,
                                              text: str) -> None:
    assert task_id({"lr": number}) != task_id({"lr": text})
    created = pool.create_task([{"lr": number}, {"lr": text}])
    assert len(set(created)) == 2
    values = [task["def"]["lr"] for task in pool.query() if "lr" in task["def"]]
    assert sorted(map(repr, values)) == sorted([repr(number), repr(text)])


def test_forged_tagged_float_in_a_definition_is_refused(pool: TaskManager) -> None:
    before = snapshot(pool)
    with pytest.raises(TaskrollError):
        pool.create_task([{"lr": {"__taskroll__": "float", "value": "nan"}}])
    assert snapshot(pool) == before


# --------------------------------------------------------------------------- deep nesting

def nested_dicts(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"next": value}
    return value


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


def self_containing() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


DEEP_VALUES = {
    "dicts-1000": lambda: nested_dicts(1000),
    "lists-1000": lambda: nested_lists(1000),
    "dicts-101": lambda: nested_dicts(MAX_DEPTH + 1),
    "lists-5000": lambda: nested_lists(5000),
    "self-containing": self_containing,
}


@pytest.mark.parametrize("name", sorted(DEEP_VALUES))
def test_deep_definitions_are_refused_clearly(pool: TaskManager, name: str) -> None:
    value = DEEP_VALUES[name]()
    before = snapshot(pool)
    with pytest.raises(TaskConfigError, match="deeper than 100"):
        canonical_json({"model": value})
    with pytest.raises(TaskrollError, match="deeper than 100"):
        pool.create_task([{"model": value}])
    with pytest.raises(SerializationError, match="deeper than 100"):
        encode({"res": value})
    with pytest.raises(TaskConfigError, match="deeper than 100"):
        init_instance_by_config({"class": "fractions.Fraction", "kwargs": {"deep": value}})
    with pytest.raises(TaskConfigError, match="deeper than 100"):
        fill_placeholder({"model": value}, {"<MODEL>": 1})
    assert snapshot(pool) == before


@pytest.mark.parametrize("make", [nested_dicts, nested_lists])
def test_deep_results_planted_in_a_pool(pool: TaskManager, make: Any) -> None:
    planted = plant_result(pool, json.dumps(make(500)))
    with pytest.raises(SerializationError, match="deeper than 100"):
        pool.re_query(planted)


def test_nesting_at_the_limit_is_accepted() -> None:
    value = nested_dicts(MAX_DEPTH - 1)
    assert decode(*encode({"model": value})) == {"model": value}
    assert len(task_id({"model": value})) == 64
    assert fill_placeholder({"model": value}, {}) == {"model": value}
    assert len(task_id({"model": nested_lists(MAX_DEPTH - 1)})) == 64
    with pytest.raises(TaskConfigError):
        task_id({"model": nested_lists(MAX_DEPTH)})


# --------------------------------------------------------------------------- YAML

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{name}: &{name} [{','.join(['*' + previous] * 9)}]"
       for previous, name in zip("abcdefgh", "bcdefghi", strict=True)])

HOSTILE_YAML = {
    "billion-laughs": BILLION_LAUGHS,
    "recursive-sequence": "a: &a [*a]\n",
    "recursive-mapping": "a: &a\n  b: *a\n",
    "recursive-merge": "a: &a\n  <<: *a\n",
    "too-many-aliases": "x: &x 1\ny: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n",
    "deep-flow": "a: " + "[" * 200 + "]" * 200 + "\n",
    "deep-block": "".join("  " * level + f"k{level}:\n" for level in range(150)),
    "python-object": "a: !!python/object/apply:os.system ['touch /tmp/taskroll-pwned']\n",
    "undefined-alias": "a: *nothing\n",
    "not-yaml": "a: [unclosed\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    text = HOSTILE_YAML[name]
    with pytest.raises(UnsafeYamlError) as caught:
        load_yaml(text, "hostile.yaml")
    assert "\n" not in str(caught.value)
    path = tmp_path / "online.yaml"
    path.write_text(text)
    with pytest.raises(OnlineConfigError) as online_caught:
        load_config(path)
    assert "\n" not in str(online_caught.value) and "online.yaml" in str(online_caught.value)
    assert not Path("/tmp/taskroll-pwned").exists()


def test_ordinary_aliases_still_work() -> None:
    text = "base: &base {lr: 0.1, steps: [1, 2]}\nmodel: *base\nother: {<<: *base, lr: 0.2}\n"
    loaded = load_yaml(text)
    assert loaded["model"] == {"lr": 0.1, "steps": [1, 2]}
    assert loaded["other"] == {"lr": 0.2, "steps": [1, 2]}


# --------------------------------------------------------------------------- modules

@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that leaves a file behind when imported."""
    marker = tmp_path / "imported.marker"
    name = f"planted_attack_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
        "class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spec._AllowedModules, "prefixes", None)
    return name, marker


DISALLOWED_CONFIGS = {
    "dict-module-path": lambda name: {"class": "Thing", "module_path": name},
    "dotted-class": lambda name: {"class": f"{name}.Thing"},
    "string": lambda name: f"{name}.Thing",
    "overrides-default-module": lambda name: {"class": "Thing", "module_path": name},
    "dotted-string-with-default": lambda name: f"{name}.Thing",
}


@pytest.mark.parametrize("form", sorted(DISALLOWED_CONFIGS))
@pytest.mark.parametrize("through", ["environment", "setter"])
def test_disallowed_modules_are_never_imported(planted_module: tuple[str, Path],
                                               monkeypatch: pytest.MonkeyPatch, form: str,
                                               through: str) -> None:
    name, marker = planted_module
    if through == "environment":
        monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", "taskroll.,fractions")
        setting = "TASKROLL_ALLOWED_MODULES"
    else:
        monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", name)  # the setter wins
        spec.set_allowed_modules(["taskroll."])
        setting = "set_allowed_modules"
    config = DISALLOWED_CONFIGS[form](name)
    with pytest.raises(TaskConfigError, match=setting) as caught:
        # a dotted class name is looked up in the default module when there is one
        init_instance_by_config(config, default_module=None if form == "dotted-class"
                                else "taskroll.train.record")
    assert name in str(caught.value)
    assert name not in sys.modules and not marker.exists()
    # allowed modules still work
    assert type(init_instance_by_config({"class": "LinearModel",
                                         "module_path": "taskroll.models.linear"})).__name__ \
        == "LinearModel"


def test_default_module_chosen_by_the_program_is_not_restricted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec._AllowedModules, "prefixes", None)
    monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", "mylab.")
    # the class name comes from the task, the module from the calling code
    factory, _ = get_callable_by_config({"class": "Fraction"}, default_module="fractions")
    assert factory.__name__ == "Fraction"
    with pytest.raises(TaskConfigError, match="not allowed"):
        get_callable_by_config({"class": "Fraction", "module_path": "fractions"},
                               default_module="fractions")


@pytest.mark.parametrize("module_path", ["taskrollevil", "taskroll_extra.models", "fractionsx"])
def test_prefixes_match_whole_module_names(monkeypatch: pytest.MonkeyPatch,
                                           module_path: str) -> None:
    monkeypatch.setattr(spec._AllowedModules, "prefixes", None)
    monkeypatch.setenv("TASKROLL_ALLOWED_MODULES", "taskroll.,fractions")
    with pytest.raises(TaskConfigError, match="not allowed"):
        get_callable_by_config({"class": "Thing", "module_path": module_path})
    assert module_path not in sys.modules


def test_unset_allowlist_allows_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec._AllowedModules, "prefixes", None)
    monkeypatch.delenv("TASKROLL_ALLOWED_MODULES", raising=False)
    assert spec.allowed_modules() is None
    assert init_instance_by_config({"class": "Fraction", "module_path": "fractions"}) == 0


BAD_MODULE_PATHS: list[Any] = ["", "a..b", ".relative", "..parent", "os;rm -rf /", "1abc",
                               "a.b-c", "os/path", " os", "os.", 42, ["os"], {"name": "os"}]


@pytest.mark.parametrize("module_path", BAD_MODULE_PATHS)
def test_module_paths_with_syntax_errors(module_path: Any) -> None:
    with pytest.raises(TaskConfigError, match=r"is not a module path"):
        get_callable_by_config({"class": "Thing", "module_path": module_path},
                               where="task.model")


def test_module_that_raises_on_import_is_a_config_error(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"broken_attack_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("def broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spec._AllowedModules, "prefixes", None)
    with pytest.raises(TaskConfigError, match="SyntaxError"):
        get_callable_by_config({"class": "Thing", "module_path": name})


def test_query_command_prints_a_planted_reference_without_opening_it(
        pool: TaskManager, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taskroll.manage_cli import main

    planted_folder = tmp_path / "planted"
    planted = f"postgresql://user:secret@evil.example/db?x=sqlite:///{planted_folder}/q.db"
    for uri in (f"sqlite:///{planted_folder}/query.db", planted):
        plant_result(pool, json.dumps({"__taskroll__": "recorder",
                                       "value": {"run_id": "r" * 32, "tracking_uri": uri}}))
        before = snapshot(pool)
        assert main(["-t", pool.task_pool, "query"]) == 0
        printed = capsys.readouterr().out
        assert "RecorderReference" in printed and "secret" not in printed
        assert files_under(planted_folder) == [] and snapshot(pool) == before
