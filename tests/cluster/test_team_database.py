"""One PostgreSQL database for a team: the task pool and MLflow tracking side by side.

On the loopback PostgreSQL test server (``tests/store/servers.py``), a database per test,
reached as a role whose password is full of URL-special characters and checked by the
server (``scram-sha-256``), so a password mangled anywhere fails to log in:

* the cluster run: ``taskroll worker -n 2`` (settings: three environment variables) trains
  real rolling tasks; a fresh process given only the URLs (tracking spelt ``postgresql://``)
  collects them by experiment and by the pool's recorder references and stitches them.
  Checked: every task done once, one run per task, predictions for every window, the
  ensemble covering the union of the test segments, artifacts only in the shared folder,
  bounded connections, and the password nowhere (output, pool and MLflow rows, artifacts);
* the first-connect race: six processes with separate temp folders (six "machines": no
  shared file lock) start together on an empty database; all succeed, tables made once.

With ``CI=true`` a PostgreSQL server that cannot start fails these tests (``servers.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))

from servers import PostgresServer, Server, session_server, unavailable

import taskroll
from taskroll import config
from taskroll.data import SyntheticMarket
from taskroll.errors import TaskrollWarning
from taskroll.manage import TaskManager
from taskroll.store import open_store
from taskroll.task.gen import RollingGen, task_generator
from taskroll.train.tracking_database import driver_uri, libpq_url, tracking_uri_key
from taskroll.train.tracking_schema import main as prepare_main

TEAM_ROLE = "taskroll_team"
TEAM_PASSWORD = "p@ss:w/rd #%,é!"
#: Connections one worker process may hold at once: the pool's idle connections (4) and
#: one in use by the heartbeat, one MLflow connection, and the schema lock while starting.
CONNECTIONS_PER_PROCESS = 8
WORKERS = 2
RACERS = 6
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TeamDatabase:
    """A fresh database as the team sees it: its name, a superuser URL (for the checks),
    the pool URL (``postgresql://``), the tracking URI (``postgresql+psycopg://``) and the
    team role's password (``""`` on an external server)."""

    name: str
    admin_url: str
    task_url: str
    tracking_uri: str
    password: str

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` as the superuser and return its rows."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            return list(connection.execute(sql).fetchall())


def _with_database(url: str, database: str, user: str | None = None,
                   password: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if user is not None:
        secret = f":{quote(password, safe='')}" if password else ""
        netloc = f"{quote(user, safe='')}{secret}@{netloc}"
    elif "@" in parts.netloc:
        netloc = parts.netloc
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


@pytest.fixture(scope="module")
def team_server() -> Iterator[Server]:
    """A PostgreSQL server with the team role (password checked), or the external one."""
    for server in session_server("psycopg", "postgres", "TASKROLL_TEST_POSTGRES_URL",
                                 PostgresServer):
        if isinstance(server, PostgresServer):
            import psycopg

            hba = server.data_dir / "pg_hba.conf"
            # first match wins: the team role must give its password, everyone else is trusted
            hba.write_text(f"host all {TEAM_ROLE} 127.0.0.1/32 scram-sha-256\n"
                           + hba.read_text(encoding="utf-8"), encoding="utf-8")
            with psycopg.connect(server.url, autocommit=True) as connection:
                connection.execute("SET password_encryption = 'scram-sha-256'")
                connection.execute(f"CREATE ROLE {TEAM_ROLE} LOGIN PASSWORD "
                                   f"'{TEAM_PASSWORD.replace(chr(39), chr(39) * 2)}'")
                connection.execute("SELECT pg_reload_conf()")
        yield server


@pytest.fixture
def team_database(team_server: Server) -> Iterator[TeamDatabase]:
    """A new, empty database owned by the team role (dropped afterwards)."""
    import psycopg

    name = f"team_{uuid.uuid4().hex[:10]}"
    admin = _with_database(team_server.url, "postgres")
    own = isinstance(team_server, PostgresServer)
    try:
        with psycopg.connect(admin, autocommit=True) as connection:
            owner = f" OWNER {TEAM_ROLE}" if own else ""
            connection.execute(f'CREATE DATABASE "{name}"{owner}')
    except psycopg.Error as error:
        unavailable(f"cannot create a test database on the PostgreSQL server: {error}")
    if own:
        task_url = _with_database(team_server.url, name, TEAM_ROLE, TEAM_PASSWORD)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(_with_database(team_server.url, name, TEAM_ROLE, "wrong")).close()
    else:
        task_url = _with_database(team_server.url, name)
    tracking_uri = task_url.replace("postgresql://", "postgresql+psycopg://", 1)
    yield TeamDatabase(name, _with_database(team_server.url, name), task_url, tracking_uri,
                       TEAM_PASSWORD if own else unquote(urlsplit(task_url).password or ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _secrets(database: TeamDatabase) -> list[str]:
    """The password as it may leak: raw and percent-encoded (empty when there is none)."""
    secret = database.password
    return [secret, quote(secret, safe=""), quote(secret)] if secret else []


def _environment(**taskroll_settings: str) -> dict[str, str]:
    """A minimal environment: no inherited TASKROLL_* or MLflow settings, only these."""
    kept = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR", "CI",
                                                "TASKROLL_FEATURE_CACHE") if name in os.environ}
    return {**kept, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **taskroll_settings}


# -- the URL forms (no server) -------------------------------------------------------------
def test_every_spelling_of_one_database_is_one_store() -> None:
    spellings = ["postgresql://team:s%40cret@db.lab:5432/research",
                 "postgresql+psycopg://other:x@db.lab:5432/research",
                 "postgres://db.lab:5432/research", "POSTGRESQL+psycopg2://db.lab:5432/research"]
    keys = {tracking_uri_key(uri) for uri in spellings}
    assert keys == {"postgresql://db.lab:5432/research"}
    assert tracking_uri_key("postgresql://db.lab:5432/other") not in keys
    assert tracking_uri_key("sqlite:////srv/mlruns.db") == "sqlite:////srv/mlruns.db"
    assert driver_uri("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert driver_uri("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert driver_uri("sqlite:///mlruns.db") == "sqlite:///mlruns.db"
    assert libpq_url("postgresql+psycopg://u:p%23@h:1/db?sslmode=require") == \
        "postgresql://u:p%23@h:1/db?sslmode=require"
    assert libpq_url("sqlite:///mlruns.db") is None


def test_a_database_server_without_artifact_root_is_warned_about(
        isolated_settings: config.Settings, tmp_path: Path) -> None:
    with pytest.warns(TaskrollWarning, match="artifact_root"):
        taskroll.init(tracking_uri="postgresql+psycopg://db.lab/research")
    with pytest.warns(TaskrollWarning):  # still so after any later init
        taskroll.init(max_attempts=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        taskroll.init(artifact_root=str(tmp_path / "shared"))


# -- the cluster run -----------------------------------------------------------------------
COLLECT = r"""
import json, sys
import pandas as pd
import taskroll
from taskroll import RecorderCollector, RollingGroup
from taskroll.collect.collector import model_and_test_segment_key
from taskroll.manage import TaskManager

experiment, pool = sys.argv[1], sys.argv[2]
settings = taskroll.init()  # only TASKROLL_TASK_URL and TASKROLL_TRACKING_URI are set
with TaskManager(pool) as manager:
    references = [task["res"] for task in manager.query()]
by_experiment = RecorderCollector(experiment, rec_key_func=model_and_test_segment_key)()
by_pool = RecorderCollector(lambda: references, rec_key_func=model_and_test_segment_key)()
stitched = RecorderCollector(experiment, process_list=[RollingGroup()],
                             rec_key_func=model_and_test_segment_key)()["pred"]
def dates(frame):
    return sorted({str(day.date()) for day in frame.index.get_level_values("datetime")})
def start(key):
    return str(pd.Timestamp(key[-1][0]).date())
windows = {start(key): {"rows": len(frame), "dates": dates(frame)}
           for key, frame in by_experiment["pred"].items()}
same = all(by_pool["pred"][key].equals(frame) for key, frame in by_experiment["pred"].items())
print(json.dumps({"references": sorted(reference.run_id for reference in references),
                  "windows": windows, "pool_windows": sorted(map(start, by_pool["pred"])),
                  "same_by_pool": same,
                  "ensembles": {str(key): dates(frame) for key, frame in stitched.items()}}))
"""


def _rolling_tasks(folder: Path) -> tuple[list[dict[str, Any]], pd.DatetimeIndex]:
    """Real rolling tasks: a linear model on Alpha158 of 8 synthetic instruments."""
    market = SyntheticMarket(seed=5, n_instruments=8, start="2018-01-01", end="2019-09-30")
    path = market.save(folder / "bars.parquet")
    template = {
        "model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                  "kwargs": {"alpha": 1.0}},
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset", "kwargs": {
            "handler": {"class": "Alpha158", "module_path": "taskroll.data.handler", "kwargs": {
                "start_time": "2018-01-01", "end_time": "2019-09-30",
                "fit_start_time": "2018-01-01", "fit_end_time": "2018-12-31",
                "instruments": "all", "windows": [5],
                "data_loader": {"class": "FileLoader", "module_path": "taskroll.data.loader",
                                "kwargs": {"path": str(path)}}}},
            "segments": {"train": ("2018-01-01", "2018-12-31"),
                         "valid": ("2019-01-01", "2019-03-31"),
                         "test": ("2019-04-01", "2019-09-30")}}},
        "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}],
    }
    return task_generator([template], RollingGen(step=40, calendar=market.calendar)), \
        market.calendar


class ConnectionSampler(threading.Thread):
    """Counts, every 0.2 s, the connections the team role holds to the database."""

    def __init__(self, database: TeamDatabase) -> None:
        super().__init__(daemon=True)
        self.database, self.most, self.stop = database, 0, threading.Event()

    def run(self) -> None:
        import psycopg

        admin = _with_database(self.database.admin_url, "postgres")
        with psycopg.connect(admin, autocommit=True) as connection:
            while not self.stop.wait(0.2):
                [(count,)] = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    (self.database.name,)).fetchall()
                self.most = max(self.most, int(count))


@pytest.mark.postgres
def test_team_trains_in_one_database_and_collects_from_elsewhere(
        team_database: TeamDatabase, tmp_path: Path) -> None:
    tasks, calendar = _rolling_tasks(tmp_path)
    assert len(tasks) >= 3
    shared = tmp_path / "shared_artifacts"
    pool, experiment = "team_rolling", "team_rolling"
    with open_store(team_database.task_url) as store, TaskManager(pool, store=store) as manager:
        assert len(manager.create_task(tasks)) == len(tasks)

    worker_folder = tmp_path / "worker_machine"
    worker_folder.mkdir()
    sampler = ConnectionSampler(team_database)
    sampler.start()
    try:
        workers = subprocess.run(
            [sys.executable, "-m", "taskroll", "worker", "-t", pool, "-n", str(WORKERS),
             "--experiment", experiment, "--threads", "1"],
            cwd=worker_folder, capture_output=True, text=True, timeout=540,
            env=_environment(TASKROLL_TASK_URL=team_database.task_url,
                             TASKROLL_TRACKING_URI=team_database.tracking_uri,
                             TASKROLL_ARTIFACT_ROOT=str(shared)))
    finally:
        sampler.stop.set()
        sampler.join()
    assert workers.returncode == 0, workers.stdout + workers.stderr
    assert workers.stdout.count("task(s) done") == WORKERS

    reader_folder = tmp_path / "reader_machine"
    reader_folder.mkdir()
    collected = subprocess.run(  # tracking spelt ``postgresql://``: the driver is the reader's
        [sys.executable, "-c", COLLECT, experiment, pool], cwd=reader_folder,
        capture_output=True, text=True, timeout=300,
        env=_environment(TASKROLL_TASK_URL=team_database.task_url,
                         TASKROLL_TRACKING_URI=team_database.task_url))
    assert collected.returncode == 0, collected.stdout + collected.stderr
    report = json.loads(collected.stdout.strip().splitlines()[-1])

    # every task done once, one run per task, each run named by its task's result
    with open_store(team_database.task_url) as store, TaskManager(pool, store=store) as manager:
        finished = list(manager.query())
        assert manager.task_stat() == {"done": len(tasks)}
    assert all(task["attempts"] == 1 for task in finished)
    run_rows = team_database.rows("SELECT run_uuid, status, artifact_uri FROM runs "
                                  "WHERE lifecycle_stage = 'active'")
    assert len(run_rows) == len(tasks)
    assert {row[1] for row in run_rows} == {"FINISHED"}
    assert sorted(row[0] for row in run_rows) == report["references"]
    assert len(set(report["references"])) == len(tasks)

    # predictions for every window, inside its test segment, also found through the pool
    windows = report["windows"]
    assert len(windows) == len(tasks)
    assert report["pool_windows"] == sorted(windows) and report["same_by_pool"]
    union: set[str] = set()
    for task in tasks:
        start, end = (pd.Timestamp(day) for day in task["dataset"]["kwargs"]["segments"]["test"])
        days = {str(day.date()) for day in calendar[(calendar >= start) & (calendar <= end)]}
        union |= days
        window = windows[str(start.date())]
        assert window["rows"] > 0 and set(window["dates"]) == days
    [(key, ensemble_dates)] = report["ensembles"].items()  # one model: one stitched frame
    assert "LinearModel" in key and set(ensemble_dates) == union

    # artifacts only in the shared folder; nothing in the machines' working folders
    assert all(Path(row[2]).is_relative_to(shared) for row in run_rows)
    assert len(list(shared.rglob("pred.pkl"))) == len(tasks)
    assert not any(worker_folder.iterdir()) and not any(reader_folder.iterdir())

    # pool and MLflow share the database without sharing a table
    tables = {row[0] for row in team_database.rows(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"taskroll_tasks", "taskroll_pools", "runs", "experiments", "alembic_version"} <= tables

    # a bounded number of connections, and the password nowhere
    assert 0 < sampler.most <= WORKERS * CONNECTIONS_PER_PROCESS + 1
    texts = [workers.stdout, workers.stderr, collected.stdout, collected.stderr, *(
        " ".join(map(str, row)) for table in ("taskroll_tasks", "runs", "tags", "params",
                                              "experiments")
        for row in team_database.rows(f"SELECT * FROM {table}"))]
    texts += [path.read_bytes().decode("latin-1") for path in shared.rglob("*") if path.is_file()]
    for secret in _secrets(team_database):
        assert not any(secret in text for text in texts)


# -- the first-connect race ----------------------------------------------------------------
RACE = r"""
import sys, time
from pathlib import Path
from taskroll.train.tracking_schema import prepare_stores
Path("ready").touch()  # imported: wait for the starting signal with the others
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
print(prepare_stores(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.postgres
def test_workers_starting_at_once_on_an_empty_database_all_succeed(
        team_database: TeamDatabase, tmp_path: Path) -> None:
    assert not team_database.rows("SELECT * FROM pg_tables WHERE schemaname = 'public'")
    go = tmp_path / "go"
    machines = [tmp_path / f"machine_{number}" for number in range(RACERS)]
    racers = []
    for machine in machines:  # each its own temp folder: no shared file lock, as on machines
        machine.mkdir()
        racers.append(subprocess.Popen(
            [sys.executable, "-c", RACE, team_database.task_url, team_database.tracking_uri,
             str(go)],
            cwd=machine, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_environment(TMPDIR=str(machine))))
    deadline = time.monotonic() + 240
    while not all((machine / "ready").exists() for machine in machines):
        assert all(racer.poll() is None for racer in racers), "a racer died while importing"
        assert time.monotonic() < deadline, "the racers never got ready"
        time.sleep(0.05)
    go.touch()
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * RACERS, outputs
    creators = sum(err.count("Creating initial MLflow database tables") for _, err in outputs)
    assert creators == 1
    assert team_database.rows("SELECT count(*) FROM alembic_version") == [(1,)]
    assert team_database.rows("SELECT count(*) FROM experiments") == [(1,)]  # "Default"
    assert team_database.rows("SELECT count(*) FROM taskroll_pools") == [(0,)]
    for secret in _secrets(team_database):
        assert not any(secret in out + err for out, err in outputs)


@pytest.mark.postgres
def test_the_one_time_step_prints_masked_stores_and_fails_in_one_line(
        team_database: TeamDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare_main(["--task-url", team_database.task_url,
                         "--tracking-uri", team_database.tracking_uri]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(ready)") == 2 and team_database.name in printed
    assert {("taskroll_tasks",), ("runs",)} <= set(team_database.rows(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    unreachable = "postgresql+psycopg://team:s%40cret@127.0.0.1:1/nowhere"
    assert prepare_main(["--task-url", f"sqlite:///{tmp_path / 'tasks.db'}",
                         "--tracking-uri", unreachable]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "127.0.0.1:1/nowhere" in line and "s%40cret" not in line and "s@cret" not in line
    for secret in _secrets(team_database):
        assert secret not in printed
