"""Attack the task pool manager: bad inputs over the API and the CLI, poison tasks, kills.

Every bad input must end in a clear error (a :class:`TaskrollError` subclass for the API;
exit status 2 and exactly one line on stderr for the CLI) or the correct result, and must
leave the pool exactly as it was (the SQLite rows are compared before and after).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import taskroll
from taskroll import config
from taskroll.cli import main as cli_main
from taskroll.errors import (
    PickleNotAllowedError,
    QueryError,
    StatusTransitionError,
    StoreConnectionError,
    StoreError,
    TaskConfigError,
    TaskrollError,
)
from taskroll.manage import TaskManager, run_task
from taskroll.manage_failure import Backoff
from taskroll.store.sqlite import SQLiteStore

FAST = Backoff(first=0.01, factor=2.0, longest=0.05, tries=4)
HUGE = 2**70


# -- the pool under attack ---------------------------------------------------------------
@dataclass
class Pool:
    """A pool of four tasks: two waiting, one running, one failed."""

    url: str
    path: Path
    manager: TaskManager
    waiting_id: str
    running: dict[str, Any]

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every row of every table of the SQLite file."""
        with sqlite3.connect(self.path) as connection:
            tasks = connection.execute("SELECT * FROM tasks ORDER BY seq").fetchall()
            pools = connection.execute("SELECT * FROM pools ORDER BY name").fetchall()
        return [*tasks, *pools]


@pytest.fixture
def pool(isolated_settings: config.Settings, tmp_path: Path) -> Iterator[Pool]:
    path = tmp_path / "tasks.db"
    url = f"sqlite:///{path}"
    with TaskManager("models", store=url, max_attempts=1) as manager:
        ids = manager.create_task([{"index": index} for index in range(4)])
        running = manager.fetch_task({"filter.index": 2})
        failing = manager.fetch_task({"filter.index": 3})
        assert running is not None and failing is not None
        assert manager.fail_task(failing, ValueError("broken")) == "failed"
        yield Pool(url, path, manager, ids[0], running)


def _reload_environment(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(config._SettingsHolder, "current", config._from_environment())


# -- the API table -----------------------------------------------------------------------
Action = Callable[[Pool], Any]
API_ERRORS: list[tuple[str, Action, type[TaskrollError], str]] = [
    ("empty pool name", lambda p: TaskManager("", store=p.url), TaskConfigError, "task_pool"),
    ("pool name None", lambda p: TaskManager(None, store=p.url),  # type: ignore[arg-type]
     TaskConfigError, "task_pool"),
    ("lease 0", lambda p: TaskManager("x", store=p.url, lease_seconds=0), TaskConfigError,
     "lease_seconds"),
    ("lease negative", lambda p: TaskManager("x", store=p.url, lease_seconds=-1),
     TaskConfigError, "-1"),
    ("lease nan", lambda p: TaskManager("x", store=p.url, lease_seconds=math.nan),
     TaskConfigError, "nan"),
    ("lease inf", lambda p: TaskManager("x", store=p.url, lease_seconds=math.inf),
     TaskConfigError, "inf"),
    ("lease text", lambda p: TaskManager("x", store=p.url, lease_seconds="soon"),  # type: ignore[arg-type]
     TaskConfigError, "soon"),
    ("lease bool", lambda p: TaskManager("x", store=p.url, lease_seconds=True),
     TaskConfigError, "True"),
    ("lease beyond a year", lambda p: TaskManager("x", store=p.url, lease_seconds=1e12),
     TaskConfigError, "lease_seconds"),
    ("attempts 0", lambda p: TaskManager("x", store=p.url, max_attempts=0), TaskConfigError,
     "max_attempts"),
    ("attempts negative", lambda p: TaskManager("x", store=p.url, max_attempts=-3),
     TaskConfigError, "-3"),
    ("attempts fraction", lambda p: TaskManager("x", store=p.url, max_attempts=2.5),  # type: ignore[arg-type]
     TaskConfigError, "2.5"),
    ("attempts huge", lambda p: TaskManager("x", store=p.url, max_attempts=HUGE),
     TaskConfigError, "max_attempts"),
    ("attempts bool", lambda p: TaskManager("x", store=p.url, max_attempts=True),
     TaskConfigError, "max_attempts"),
    ("store URL scheme", lambda p: TaskManager("x", store="ftp://nowhere"),
     StoreConnectionError, "ftp"),
    ("init lease 0", lambda p: taskroll.init(lease_seconds=0), TaskConfigError, "lease_seconds"),
    ("init lease nan", lambda p: taskroll.init(lease_seconds=math.nan), TaskConfigError, "nan"),
    ("init lease inf", lambda p: taskroll.init(lease_seconds=math.inf), TaskConfigError, "inf"),
    ("init attempts 0", lambda p: taskroll.init(max_attempts=0), TaskConfigError,
     "max_attempts"),
    ("init attempts text", lambda p: taskroll.init(max_attempts="x"),  # type: ignore[arg-type]
     TaskConfigError, "'x'"),
    ("definition not a dict", lambda p: p.manager.create_task(["not a task"]),  # type: ignore[list-item]
     TaskConfigError, "dict"),
    ("definition needs pickle", lambda p: p.manager.create_task([{"model": object()}]),
     PickleNotAllowedError, "allow_pickle"),
    ("insert huge priority", lambda p: p.manager.insert_task({"def": {"new": 1}, "priority": HUGE}),
     TaskConfigError, "priority"),
    ("insert bad status", lambda p: p.manager.insert_task({"def": {"new": 1}, "status": "bogus"}),
     StatusTransitionError, "bogus"),
    ("prioritize huge", lambda p: p.manager.prioritize(p.waiting_id, HUGE), TaskConfigError,
     str(HUGE)),
    ("prioritize text", lambda p: p.manager.prioritize(p.waiting_id, "high"),  # type: ignore[arg-type]
     TaskConfigError, "high"),
    ("prioritize fraction", lambda p: p.manager.prioritize(p.waiting_id, 1.5),  # type: ignore[arg-type]
     TaskConfigError, "1.5"),
    ("prioritize bool", lambda p: p.manager.prioritize(p.waiting_id, True), TaskConfigError,
     "True"),
    ("replace huge priority",
     lambda p: p.manager.replace_task(p.waiting_id, {"priority": HUGE}), TaskConfigError,
     "priority"),
    ("query huge number", lambda p: list(p.manager.query({"filter.index": HUGE})), QueryError,
     str(HUGE)),
    ("query unknown field", lambda p: list(p.manager.query({"colour": 1})), QueryError,
     "colour"),
    ("query unknown operator", lambda p: list(p.manager.query({"filter.index": {"$regex": "1"}})),
     QueryError, "$regex"),
    ("task_stat huge attempts", lambda p: p.manager.task_stat({"attempts": {"$gt": HUGE}}),
     QueryError, str(HUGE)),
    ("remove malformed $and", lambda p: p.manager.remove({"$and": "x"}), QueryError, "$and"),
    ("remove huge number", lambda p: p.manager.remove({"filter.index": -HUGE}), QueryError,
     str(HUGE)),
    ("reset to unknown status", lambda p: p.manager.reset_status({}, "finished"),
     StatusTransitionError, "finished"),
    ("reset_waiting bad query", lambda p: p.manager.reset_waiting({"colour": "red"}), QueryError,
     "colour"),
    ("wait poll negative", lambda p: p.manager.wait(poll_interval=-1, progress=False),
     TaskConfigError, "poll_interval"),
    ("wait poll 0", lambda p: p.manager.wait(poll_interval=0, progress=False), TaskConfigError,
     "poll_interval"),
    ("wait poll nan", lambda p: p.manager.wait(poll_interval=math.nan, progress=False),
     TaskConfigError, "nan"),
    ("wait timeout negative", lambda p: p.manager.wait(timeout=-1, progress=False),
     TaskConfigError, "timeout"),
    ("wait timeout inf", lambda p: p.manager.wait(timeout=math.inf, progress=False),
     TaskConfigError, "inf"),
    ("fetch unknown status", lambda p: p.manager.fetch_task(status="nope"),
     StatusTransitionError, "nope"),
    ("fetch huge number", lambda p: p.manager.fetch_task({"filter.index": {"$gt": HUGE}}),
     QueryError, str(HUGE)),
    ("retry bad query", lambda p: p.manager.retry_failed({"bogus": 1}), QueryError, "bogus"),
    ("fail_task unknown kind", lambda p: p.manager.fail_task(p.running, "x", kind="bogus"),
     TaskConfigError, "bogus"),
    ("commit without id", lambda p: p.manager.commit_task_res({"def": {}}, 1), TaskConfigError,
     "_id"),
    ("commit unstorable result", lambda p: p.manager.commit_task_res(p.running, object()),
     PickleNotAllowedError, "allow_pickle"),
    ("run_task from done", lambda p: run_task(len, p.manager, before_status="done"),
     TaskConfigError, "waiting"),
    ("run_task from unknown", lambda p: run_task(len, p.manager, before_status="nope"),
     StatusTransitionError, "nope"),
    ("run_task to unknown", lambda p: run_task(len, p.manager, after_status="nope"),
     StatusTransitionError, "nope"),
    ("run_task poll negative", lambda p: run_task(len, p.manager, poll_interval=-1),
     TaskConfigError, "poll_interval"),
    ("run_task bad query", lambda p: run_task(len, p.manager, query={"colour": 1}),
     QueryError, "colour"),
    ("backoff no tries", lambda p: Backoff(tries=0), TaskConfigError, "tries"),
    ("backoff negative wait", lambda p: Backoff(first=-1), TaskConfigError, "backoff"),
]


@pytest.mark.parametrize(("action", "error", "fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in API_ERRORS])
def test_bad_api_input_is_a_clear_error_and_changes_nothing(
        pool: Pool, action: Action, error: type[TaskrollError], fragment: str) -> None:
    before = pool.snapshot()
    settings = config.get_settings()
    with pytest.raises(error) as raised:
        action(pool)
    assert isinstance(raised.value, TaskrollError)
    assert fragment in str(raised.value)
    assert pool.snapshot() == before
    assert config.get_settings() == settings


API_RESULTS: list[tuple[str, Action, Any]] = [
    ("re_query unknown id", lambda p: p.manager.re_query("nope"), None),
    ("prioritize unknown id", lambda p: p.manager.prioritize("nope", 3), False),
    ("query NaN matches nothing", lambda p: list(p.manager.query({"filter.index": math.nan})), []),
    ("query inf matches nothing", lambda p: p.manager.task_stat({"filter.index": math.inf}), {}),
    ("retry matches nothing", lambda p: p.manager.retry_failed({"filter.index": 0}), 0),
    ("remove matches nothing", lambda p: p.manager.remove({"filter.index": 99}), 0),
    ("heartbeat of a stranger", lambda p: p.manager.heartbeat("nope"), False),
    ("task_stat of an unknown pool", lambda p: TaskManager("ghost", store=p.url).task_stat(), {}),
]


@pytest.mark.parametrize(("action", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in API_RESULTS])
def test_odd_api_input_gives_the_correct_result_and_changes_nothing(
        pool: Pool, action: Action, expected: Any) -> None:
    before = pool.snapshot()
    assert action(pool) == expected
    assert pool.snapshot() == before


ENVIRONMENT = [
    ("TASKROLL_LEASE_SECONDS", "nan"), ("TASKROLL_LEASE_SECONDS", "inf"),
    ("TASKROLL_LEASE_SECONDS", "0"), ("TASKROLL_LEASE_SECONDS", "-5"),
    ("TASKROLL_LEASE_SECONDS", "soon"), ("TASKROLL_MAX_ATTEMPTS", "0"),
    ("TASKROLL_MAX_ATTEMPTS", "many"), ("TASKROLL_MAX_ATTEMPTS", "1.5"),
]


@pytest.mark.parametrize(("name", "value"), ENVIRONMENT)
def test_bad_environment_fails_when_used_naming_it(
        pool: Pool, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    before = pool.snapshot()
    _reload_environment(monkeypatch, name, value)  # reading the environment never raises
    with pytest.raises(TaskConfigError) as raised:
        TaskManager("models", store=pool.url)
    assert name in str(raised.value) and repr(value) in str(raised.value)
    assert pool.snapshot() == before


# -- the CLI table -----------------------------------------------------------------------
def _call(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = cli_main(argv)
    except SystemExit as exit_:  # argparse errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


CLI_ERRORS: list[tuple[str, list[str], str]] = [
    ("prioritize huge", ["-t", "models", "prioritize", "ID", str(HUGE)], str(HUGE)),
    ("prioritize text", ["-t", "models", "prioritize", "ID", "high"], "high"),
    ("prioritize unknown id", ["-t", "models", "prioritize", "nope", "1"], "nope"),
    ("query huge", ["-t", "models", "query", json.dumps({"filter.index": HUGE})], str(HUGE)),
    ("query limit negative", ["-t", "models", "query", "--limit", "-1"], "-1"),
    ("query limit text", ["-t", "models", "query", "--limit", "all"], "all"),
    ("query not JSON", ["-t", "models", "query", "{not json"], "JSON"),
    ("query not an object", ["-t", "models", "task_stat", "[1]"], "JSON object"),
    ("wait poll negative", ["-t", "models", "wait", "--poll-interval", "-1"], "poll_interval"),
    ("wait poll nan", ["-t", "models", "wait", "--poll-interval", "nan"], "nan"),
    ("wait timeout negative", ["-t", "models", "wait", "--timeout", "-1"], "timeout"),
    ("wait timeout text", ["-t", "models", "wait", "--timeout", "soon"], "soon"),
    ("remove regex", ["-t", "models", "remove", '{"filter.index": {"$regex": "1"}}'], "$regex"),
    ("remove everything without --all", ["-t", "models", "remove"], "--all"),
    ("reset unknown field", ["-t", "models", "reset_waiting", '{"colour": "red"}'], "colour"),
    ("retry unknown field", ["-t", "models", "retry", '{"colour": "red"}'], "colour"),
    ("retry huge", ["-t", "models", "retry", json.dumps({"priority": HUGE})], str(HUGE)),
    ("unknown pool", ["-t", "nope", "task_stat"], "nope"),
    ("no pool", ["task_stat"], "-t POOL"),
    ("unknown command", ["-t", "models", "explode"], "explode"),
    ("worker -n 0", ["-t", "models", "worker", "-n", "0"], "-n"),
    ("worker unknown module", ["-t", "models", "worker", "--func", "no_such_module:run"],
     "no_such_module"),
    ("worker func without colon", ["-t", "models", "worker", "--func", "run"], "'run'"),
    ("worker syntax error", ["-t", "models", "worker", "--func", "broken_module:run"],
     "broken_module"),
    ("worker before done", ["-t", "models", "worker", "--before-status", "done"], "done"),
    ("worker bad query", ["-t", "models", "worker", "--query", "{nope"], "JSON"),
    ("url scheme", ["--url", "ftp://nowhere", "list"], "ftp"),
]


@pytest.mark.parametrize(("argv", "fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in CLI_ERRORS])
def test_bad_cli_input_is_one_line_and_changes_nothing(
        pool: Pool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, argv: list[str], fragment: str) -> None:
    (tmp_path / "broken_module.py").write_text("def run(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = pool.snapshot()
    argv = argv if "--url" in argv else ["--url", pool.url, *argv]
    code, _, err = _call(capsys, argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err and "Traceback" not in err
    assert pool.snapshot() == before


CLI_RESULTS: list[tuple[str, list[str], Callable[[str], bool]]] = [
    ("task_stat", ["-t", "models", "task_stat"],
     lambda out: json.loads(out) == {"failed": 1, "running": 1, "waiting": 2}),
    ("query limit 0", ["-t", "models", "query", "--limit", "0"], lambda out: out == ""),
    ("query limit huge", ["-t", "models", "query", "--limit", str(HUGE)],
     lambda out: len(out.splitlines()) == 4),
    ("query NaN", ["-t", "models", "query", '{"filter.index": NaN}'], lambda out: out == ""),
    ("wait timeout 0", ["-t", "models", "wait", "--timeout", "0"], lambda out: out == ""),
]


@pytest.mark.parametrize(("argv", "check"),
                         [pytest.param(*case[1:], id=case[0]) for case in CLI_RESULTS])
def test_odd_cli_input_gives_the_correct_result(
        pool: Pool, capsys: pytest.CaptureFixture[str], argv: list[str],
        check: Callable[[str], bool]) -> None:
    before = pool.snapshot()
    code, out, err = _call(capsys, ["--url", pool.url, *argv])
    assert check(out), (code, out, err)
    assert code in (0, 2) and "Traceback" not in err
    assert pool.snapshot() == before


def _environment(**overrides: str) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("TASKROLL_")}
    return {**base, **overrides}


SUBPROCESS_ERRORS: list[tuple[str, list[str], dict[str, str], str]] = [
    ("lease nan, list", ["-m", "taskroll", "list"], {"TASKROLL_LEASE_SECONDS": "nan"},
     "TASKROLL_LEASE_SECONDS"),
    ("attempts 0, task_stat", ["-m", "taskroll", "-t", "models", "task_stat"],
     {"TASKROLL_MAX_ATTEMPTS": "0"}, "TASKROLL_MAX_ATTEMPTS"),
    ("manage module, huge prioritize", ["-m", "taskroll.manage", "-t", "models", "prioritize",
                                        "ID", str(HUGE)], {}, "priority"),
    ("manage module, limit -1", ["-m", "taskroll.manage", "-t", "models", "query", "--limit",
                                 "-1"], {}, "--limit"),
]


@pytest.mark.parametrize(("argv", "environment", "fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in SUBPROCESS_ERRORS])
def test_cli_process_errors_are_one_line(pool: Pool, argv: list[str],
                                         environment: dict[str, str], fragment: str) -> None:
    before = pool.snapshot()
    result = subprocess.run([sys.executable, *argv[:2], "--url", pool.url, *argv[2:]],
                            capture_output=True, text=True, timeout=60, check=False,
                            env=_environment(**environment))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert pool.snapshot() == before


def test_a_bad_environment_does_not_break_import() -> None:
    result = subprocess.run([sys.executable, "-c", "import taskroll.manage, taskroll.cli"],
                            capture_output=True, text=True, timeout=60, check=False,
                            env=_environment(TASKROLL_LEASE_SECONDS="nan",
                                             TASKROLL_MAX_ATTEMPTS="x"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("damage", ["random bytes", "truncated header"])
def test_corrupted_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        isolated_settings: config.Settings, damage: str) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(os.urandom(8192) if damage == "random bytes"
                     else b"SQLite format 3\0" + b"\xff" * 200)
    content = path.read_bytes()
    code, _, err = _call(capsys, ["--url", f"sqlite:///{path}", "-t", "models", "task_stat"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "corrupt.db" in err
    assert path.read_bytes() == content


def test_read_only_database_is_one_line(pool: Pool, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores file modes, so the database is made read-only the way SQLite sees it
    connect = sqlite3.connect

    def read_only(*arguments: Any, **options: Any) -> sqlite3.Connection:
        connection = connect(*arguments, **options)
        connection.execute("PRAGMA query_only = ON")
        return connection

    before = pool.snapshot()
    monkeypatch.setattr("taskroll.store.sqlite.sqlite3.connect", read_only)
    code, _, err = _call(capsys, ["--url", pool.url, "-t", "models", "reset_waiting"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "tasks.db" in err and "Traceback" not in err
    monkeypatch.undo()
    assert pool.snapshot() == before


# -- poison tasks ------------------------------------------------------------------------
def _plant_poison(manager: TaskManager, path: Path) -> list[str]:
    """Insert poison tasks first in line, through the store's raw API and raw SQL."""
    poison = [
        {"_id": "pickle", "def": pickle.dumps({"index": 90}), "def_encoding": "pickle"},
        {"_id": "corrupt-json", "def": '{"index": ', "def_encoding": "json"},
        {"_id": "datetime-number", "def": '{"when": {"__taskroll__": "datetime", "value": 5}}',
         "def_encoding": "json"},
        {"_id": "unknown-tag", "def": '{"__taskroll__": "spaceship", "value": 1}',
         "def_encoding": "json"},
        {"_id": "unknown-encoding", "def": "{}", "def_encoding": "yaml"},
    ]
    manager.store.insert_many(manager.task_pool, [{**record, "filter": {}, "priority": 9}
                                                  for record in poison])
    manager.create_task([{"index": 99, "victim": True}])
    with sqlite3.connect(path) as connection:  # raw SQL: bytes that are not UTF-8
        connection.execute("UPDATE tasks SET def = X'80FF00', priority = 9 "
                           "WHERE json_extract(filter, '$.victim') = 1")
    return [record["_id"] for record in poison] + ["raw-sql"]


def test_poison_tasks_fail_at_once_and_workers_go_on(isolated_settings: config.Settings,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "poison.db"
    with TaskManager("models", store=f"sqlite:///{path}", max_attempts=3) as manager:
        manager.create_task([{"index": index} for index in range(5)])
        poison = _plant_poison(manager, path)
        assert run_task(lambda task: task["index"] * 2, manager, once=True)
        assert manager.task_stat() == {"done": 5, "failed": len(poison)}
        assert sorted(t["res"] for t in manager.query({"status": "done"})) == [0, 2, 4, 6, 8]
        for record in manager.query({"status": "failed"}, decode=False):
            error = json.loads(record["error"])
            assert error["kind"] == "undecodable" and record["attempts"] == 1
            assert error["message"].startswith("cannot decode the stored task")
        # a pool that trusts pickles can take the pickled one after a retry
        assert manager.retry_failed({"_id": "pickle"}) == 1
    with TaskManager("models", store=f"sqlite:///{path}", allow_pickle=True) as trusting:
        run_task(lambda task: task["index"], trusting, once=True)
        task = trusting.re_query("pickle")
        assert task is not None and (task["status"], task["res"]) == ("done", 90)


def test_fetch_task_skips_poison(isolated_settings: config.Settings, tmp_path: Path) -> None:
    path = tmp_path / "poison.db"
    with TaskManager("models", store=f"sqlite:///{path}") as manager:
        manager.create_task([{"index": 0}])
        _plant_poison(manager, path)
        task = manager.fetch_task()
        assert task is not None and task["def"] == {"index": 0}
        assert manager.fetch_task() is None


def test_query_cli_shows_poison_without_failing(isolated_settings: config.Settings,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "poison.db"
    with TaskManager("models", store=f"sqlite:///{path}") as manager:
        poison = _plant_poison(manager, path)
    code, out, err = _call(capsys, ["--url", f"sqlite:///{path}", "-t", "models", "query"])
    assert code == 0, err
    shown = [json.loads(line)["def"] for line in out.splitlines()]
    assert len(shown) == len(poison) and all(str(value).startswith("<") for value in shown)


# -- store errors ------------------------------------------------------------------------
class FlakyStore(SQLiteStore):
    """Fails the first ``failures`` commits (writes of ``res``) with a store error."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.seen = 0

    def update(self, pool: str, task_id: str, fields: Any, expected_status: str | None = None,
               expected_worker: str | None = None) -> bool:
        if "res" in fields and self.seen < self.failures:
            self.seen += 1
            raise StoreError("database or disk is full")
        return super().update(pool, task_id, fields, expected_status, expected_worker)


def test_short_store_outage_is_retried_and_costs_no_attempt(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "flaky.db", failures=2)
    with TaskManager("models", store=store, max_attempts=1) as manager:
        manager.create_task([{"index": 0}])
        assert run_task(lambda task: "ok", manager, backoff=FAST)
        task = next(manager.query())
        assert (task["status"], task["res"], task["attempts"], task["error"]) == \
            ("done", "ok", 1, None)
        assert store.seen == 2
    store.close()


def test_long_store_outage_gives_the_task_back_uncounted(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "flaky.db", failures=10**6)
    with TaskManager("models", store=store, max_attempts=1) as manager:
        manager.create_task([{"index": 0}, {"index": 1}])
        with pytest.raises(StoreError, match="disk is full"):
            run_task(lambda task: "ok", manager, backoff=FAST)
        first = next(manager.query({"filter.index": 0}))
        assert (first["status"], first["attempts"]) == ("waiting", 0)
        assert first["error"]["kind"] == "store error"
        assert manager.task_stat() == {"waiting": 2}
        store.failures = 0  # the disk has room again
        assert run_task(lambda task: "ok", manager, backoff=FAST)
        assert manager.task_stat() == {"done": 2}
    store.close()


def test_locked_database_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout_seconds=0.05)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def lock_for_a_moment(task: dict[str, Any]) -> str:
        blocker.execute("BEGIN EXCLUSIVE")
        threading.Timer(0.4, lambda: blocker.execute("COMMIT")).start()
        return "ok"

    with TaskManager("models", store=store, max_attempts=1) as manager:
        manager.create_task([{"index": 0}])
        assert run_task(lock_for_a_moment, manager, backoff=Backoff(first=0.05, tries=8))
        task = next(manager.query())
        assert (task["status"], task["attempts"]) == ("done", 1)
    store.close()
    blocker.close()


def test_full_disk_while_committing_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    with TaskManager("models", store=f"sqlite:///{path}", max_attempts=1) as manager:
        manager.create_task([{"index": 0}])
        connection = manager.store._connection()  # type: ignore[attr-defined]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 4}")
        with pytest.raises(StoreError, match="full"):
            run_task(lambda task: "x" * 200_000, manager, backoff=FAST)
        task = next(manager.query())
        assert (task["status"], task["attempts"]) == ("waiting", 0)
        assert task["error"]["kind"] == "store error" and "full" in task["error"]["message"]


# -- kills and draining --------------------------------------------------------------------
WORKER = r"""
import os, signal, sys
from taskroll.manage import TaskManager, run_task
from taskroll.testing import _marker_task, interruptible_task

url, markers, lease, mode = sys.argv[1:5]


class Manager(TaskManager):
    def commit_task_res(self, task, res, status="done"):
        if mode == "kill-before-commit" and task["def"]["index"] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        committed = super().commit_task_res(task, res, status=status)
        if mode == "kill-after-commit" and task["def"]["index"] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return committed


function = interruptible_task if mode == "hang" else _marker_task
with Manager("models", store=url, lease_seconds=float(lease)) as manager:
    run_task(function, manager, marker_dir=markers, once=mode == "once")
"""


def _worker(url: str, markers: Path, mode: str, lease: float = 1.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, str(markers), str(lease), mode],
                            env=_environment(), text=True, stderr=subprocess.PIPE)


def _executions(markers: Path) -> list[int]:
    return sorted(int(line) for path in markers.glob("*.log") for line in path.read_text().split())


def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def crash_pool(tmp_path: Path) -> Iterator[tuple[str, Path, TaskManager]]:
    markers = tmp_path / "markers"
    markers.mkdir()
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    with TaskManager("models", store=url) as manager:
        manager.insert_task({"def": {"index": 0, "sleep": 600}, "priority": 5})
        manager.create_task([{"index": index} for index in range(1, 6)])
        yield url, markers, manager


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["kill-before-commit", "kill-after-commit"])
def test_killed_worker_every_task_done_once(crash_pool: tuple[str, Path, TaskManager],
                                            mode: str) -> None:
    url, markers, manager = crash_pool
    victim = _worker(url, markers, mode)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    survivor = _worker(url, markers, "plain")
    assert survivor.wait(timeout=60) == 0, survivor.stderr.read() if survivor.stderr else ""
    tasks = {task["def"]["index"]: task for task in manager.query()}
    assert {task["status"] for task in tasks.values()} == {"done"}
    assert [tasks[index]["res"] for index in range(6)] == [{"index": index} for index in range(6)]
    again = [0] if mode == "kill-before-commit" else []  # ran, died before its commit
    assert _executions(markers) == sorted([*range(6), *again])
    assert tasks[0]["attempts"] == (2 if again else 1)


@pytest.mark.slow
def test_survivor_drains_the_task_of_a_killed_worker(
        crash_pool: tuple[str, Path, TaskManager]) -> None:
    url, markers, manager = crash_pool
    victim = _worker(url, markers, "hang")
    _until(lambda: (markers / "started-0").exists())
    survivor = _worker(url, markers, "plain")
    _until(lambda: manager.task_stat({"filter.index": {"$gt": 0}}) == {"done": 5})
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    # the survivor, never restarted, waits for the dead worker's lease and finishes its task
    assert survivor.wait(timeout=60) == 0
    task = next(manager.query({"filter.index": 0}))
    assert (task["status"], task["attempts"]) == ("done", 2)
    assert _executions(markers) == list(range(6))


def test_once_leaves_tasks_running_elsewhere(isolated_settings: config.Settings,
                                            tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'once.db'}"
    with TaskManager("models", store=url, lease_seconds=0.5) as other, \
            TaskManager("models", store=url, lease_seconds=0.5) as worker:
        other.create_task([{"index": 0}, {"index": 1}])
        assert other.fetch_task({"filter.index": 0}) is not None  # a worker that then dies
        begun = time.monotonic()
        assert run_task(lambda task: task["index"], worker, once=True)
        assert time.monotonic() - begun < 0.4
        assert worker.task_stat() == {"done": 1, "running": 1}
        # without once, the loop waits for the lease to end and takes the task over
        assert run_task(lambda task: task["index"], worker, poll_interval=0.05)
        assert worker.task_stat() == {"done": 2}
        task = next(worker.query({"filter.index": 0}))
        assert task["attempts"] == 2 and task["error"] is None
