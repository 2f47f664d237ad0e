"""Batch claims on the SQLite store: ``fetch_many`` is one atomic statement.

Proves that a batch claim keeps the invariants of a single claim (order, stamps, one
owner per task, also across processes) and that the contract's default ``fetch_many``
(used by stores without their own) claims the same tasks one at a time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskroll.errors import TaskConfigError
from taskroll.store import TaskStore, parse_query
from taskroll.store.sqlite import SQLiteStore
from taskroll.testing import make_record

POOL = "pool"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "tasks.db") as opened:
        yield opened


def _insert(store: SQLiteStore, count: int, priority: dict[int, int] | None = None) -> list[str]:
    records = [make_record(number) for number in range(count)]
    for number, value in (priority or {}).items():
        records[number]["priority"] = value
    return store.insert_many(POOL, records)


def test_fetch_many_claims_best_first_and_stamps_each(store: SQLiteStore) -> None:
    ids = _insert(store, 6, priority={4: 5, 5: 5})
    before = store.now()
    claimed = store.fetch_many(POOL, [], "waiting", "worker-a", 30.0, 4)
    assert [record["_id"] for record in claimed] == [ids[4], ids[5], ids[0], ids[1]]
    for record in claimed:
        assert record["status"] == "running" and record["worker"] == "worker-a"
        assert record["attempts"] == 1 and record["claimed_from"] == "waiting"
        assert record["started"] >= before - 1
        assert record["lease_until"] == pytest.approx(record["started"] + 30.0)
    rest = store.fetch_many(POOL, [], "waiting", "worker-b", 30.0, 10)
    assert [record["_id"] for record in rest] == [ids[2], ids[3]]
    assert store.fetch_many(POOL, [], "waiting", "worker-b", 30.0, 10) == []
    assert store.count_by_status(POOL, []) == {"running": 6}


def test_fetch_many_honours_conditions_and_status(store: SQLiteStore) -> None:
    ids = _insert(store, 6)
    store.update(POOL, ids[1], {"status": "part_done"})
    store.update(POOL, ids[3], {"status": "part_done"})
    conditions = parse_query({"filter.number": {"$gte": 2}})
    claimed = store.fetch_many(POOL, conditions, "part_done", "worker", 30.0, 5)
    assert [record["_id"] for record in claimed] == [ids[3]]
    assert claimed[0]["claimed_from"] == "part_done"


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_fetch_many_refuses_a_bad_count(store: SQLiteStore, count: object) -> None:
    _insert(store, 2)
    with pytest.raises(TaskConfigError, match="whole number >= 1"):
        store.fetch_many(POOL, [], "waiting", "worker", 30.0, count)  # type: ignore[arg-type]
    assert store.count_by_status(POOL, []) == {"waiting": 2}


def test_default_fetch_many_claims_one_at_a_time_in_the_same_order(
        store: SQLiteStore, tmp_path: Path) -> None:
    ids = _insert(store, 5, priority={3: 1})
    # the contract's default (what MongoDB and PostgreSQL use) on a real store
    claimed = TaskStore.fetch_many(store, POOL, [], "waiting", "worker", 30.0, 3)
    assert [record["_id"] for record in claimed] == [ids[3], ids[0], ids[1]]
    assert all(record["worker"] == "worker" for record in claimed)
    assert len(TaskStore.fetch_many(store, POOL, [], "waiting", "worker", 30.0, 9)) == 2
    assert TaskStore.fetch_many(store, POOL, [], "waiting", "worker", 30.0, 9) == []


def test_expired_batch_leases_come_back_one_by_one(store: SQLiteStore) -> None:
    ids = _insert(store, 3)
    claimed = store.fetch_many(POOL, [], "waiting", "dead-worker", 0.05, 3)
    assert len(claimed) == 3
    assert store.heartbeat(POOL, ids[0], "dead-worker", 30.0)  # only this one is renewed
    time.sleep(0.1)
    assert store.reap(POOL, max_attempts=3) == 2
    assert store.count_by_status(POOL, []) == {"running": 1, "waiting": 2}


_CLAIMER = """
import os, sys, time
from taskroll.store.sqlite import SQLiteStore
with SQLiteStore(sys.argv[1]) as store:
    print("ready", flush=True)
    while not os.path.exists(sys.argv[3]):  # all start claiming together
        time.sleep(0.005)
    while records := store.fetch_many("pool", [], "waiting", sys.argv[2], 60.0, 7):
        print("\\n".join(record["_id"] for record in records), flush=True)
"""


def test_processes_claiming_batches_never_share_a_task(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SQLiteStore(path) as store:
        ids = store.insert_many(POOL, [make_record(number) for number in range(3000)])
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", _CLAIMER, str(path), f"w{number}",
                                   str(go)], stdout=subprocess.PIPE, text=True)
                 for number in range(3)]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    go.touch()
    outputs = [process.communicate(timeout=300)[0].split() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0]
    claimed = [task for output in outputs for task in output]
    assert len(claimed) == len(set(claimed)) == 3000
    assert set(claimed) == set(ids)
    assert sum(1 for output in outputs if output) >= 2, "the processes raced for the tasks"
