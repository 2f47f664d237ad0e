"""The ready MLflow schema copied into new SQLite tracking files (taskroll.train.tracking_template)."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from taskroll.train import tracking_template
from taskroll.train.tracking_template import seed_sqlite_database, sqlite_path

CONTEXT = multiprocessing.get_context("spawn")


@pytest.fixture()
def template_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "templates"
    monkeypatch.setenv(tracking_template.ENVIRONMENT_VARIABLE, str(folder))
    return folder


def schema(path: Path) -> tuple[list[tuple[str, list[str]]], list[tuple[str]]]:
    """Every table/index definition and the alembic revision of a database file.

    A definition's lines are sorted: MLflow's migrations write a table's constraints in
    an order that differs from one build to the next.
    """
    with contextlib.closing(sqlite3.connect(path)) as connection:
        definitions = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return ([(name, sorted(line.strip().rstrip(",") for line in sql.splitlines()))
             for name, sql in definitions], revision)


def experiments(uri: str) -> list[tuple[str, str, str]]:
    client = MlflowClient(tracking_uri=uri)
    return sorted((item.experiment_id, item.name, item.artifact_location)
                  for item in client.search_experiments())


def test_seeded_file_is_what_mlflow_builds(template_folder: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seeded, native = tmp_path / "seeded.db", tmp_path / "native.db"
    assert seed_sqlite_database(f"sqlite:///{seeded}") is True
    assert seeded.exists() and not native.exists()
    # the same schema and revision as a database MLflow migrates itself
    with monkeypatch.context() as off:
        off.setenv(tracking_template.ENVIRONMENT_VARIABLE, "off")
        assert seed_sqlite_database(f"sqlite:///{native}") is False
    native_experiments = experiments(f"sqlite:///{native}")
    assert schema(seeded) == schema(native)
    # MLflow creates the Default experiment at first use, where it would have put it
    assert experiments(f"sqlite:///{seeded}") == native_experiments
    assert [name for _, name, _ in native_experiments] == ["Default"]
    client = MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    run = client.create_run(client.create_experiment("work"))
    client.log_metric(run.info.run_id, "ic", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"ic": 0.5}


def test_existing_files_and_other_uris_are_never_touched(template_folder: Path,
                                                         tmp_path: Path) -> None:
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"not a database, and not ours to replace")
    empty = tmp_path / "empty.db"
    empty.touch()
    for uri in (f"sqlite:///{existing}", f"sqlite:///{empty}", "sqlite:///:memory:",
                f"sqlite:///{tmp_path / 'options.db'}?mode=ro", "postgresql://host/db",
                f"file://{tmp_path / 'mlruns'}", "http://127.0.0.1:5000"):
        assert seed_sqlite_database(uri) is False, uri
    assert existing.read_bytes() == b"not a database, and not ours to replace"
    assert empty.read_bytes() == b""
    assert not (tmp_path / "options.db").exists()
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:////data/mlruns.db", Path("/data/mlruns.db")),
    ("sqlite:///relative.db", Path("relative.db")),
    ("sqlite+pysqlite:////data/x.db", Path("/data/x.db")),
    ("sqlite://", None), ("sqlite:///:memory:", None), ("sqlite:///x.db?mode=ro", None),
    ("postgresql+psycopg://user@host/db", None), ("mlruns", None),
])
def test_sqlite_path(uri: str, expected: Path | None) -> None:
    assert sqlite_path(uri) == expected


def test_seeding_off_builds_no_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking_template.ENVIRONMENT_VARIABLE, "off")
    assert tracking_template.template_path() is None
    assert seed_sqlite_database(f"sqlite:///{tmp_path / 'a.db'}") is False
    assert not (tmp_path / "a.db").exists()


def _seed(uri: str, folder: str, results: multiprocessing.Queue[bool]) -> None:
    import os

    os.environ[tracking_template.ENVIRONMENT_VARIABLE] = folder
    results.put(seed_sqlite_database(uri))


def test_racing_processes_seed_once(template_folder: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    assert seed_sqlite_database(f"sqlite:///{tmp_path / 'warm.db'}")  # template built
    results: multiprocessing.Queue[bool] = CONTEXT.Queue()
    processes = [CONTEXT.Process(target=_seed, args=(uri, str(template_folder), results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in processes) == [False, False, False, True]
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".seed")] == []
    assert [name for _, name, _ in experiments(uri)] == ["Default"]
