"""TaskManager on a real SQLite file: Qlib's methods plus leases, failures and pickle opt-in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from taskroll.errors import (
    PickleNotAllowedError,
    QueryError,
    StatusTransitionError,
    TaskConfigError,
)
from taskroll.manage import TaskManager
from taskroll.task.spec import task_id


def definition(index: int, model: str = "LinearModel") -> dict[str, Any]:
    return {
        "model": {"class": model, "module_path": "taskroll.models.linear", "kwargs": {}},
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                    "kwargs": {"segments": {"test": (pd.Timestamp("2020-01-01"),
                                                     dt.date(2020, 3, 1))}}},
        "record": [],
        "index": index,
    }


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture
def manager(url: str) -> Iterator[TaskManager]:
    with TaskManager("pool", store=url) as value:
        yield value


def test_create_task_is_idempotent_and_ordered(manager: TaskManager) -> None:
    ids = manager.create_task([definition(0), definition(1)])
    assert ids == [task_id(definition(0)), task_id(definition(1))]
    again = manager.create_task([definition(1), definition(2), definition(0)])
    assert again == [ids[1], task_id(definition(2)), ids[0]]
    assert manager.task_stat() == {"waiting": 3}
    assert manager.list() == ["pool"]


def test_dry_run_inserts_nothing(manager: TaskManager, capsys: pytest.CaptureFixture[str]) -> None:
    manager.create_task([definition(0)])
    assert manager.create_task([definition(0), definition(1)], dry_run=True, print_nt=True) == []
    assert manager.task_stat() == {"waiting": 1}
    assert "'index': 1" in capsys.readouterr().out


def test_definition_round_trips_with_types(manager: TaskManager) -> None:
    manager.create_task([definition(3)])
    task = manager.fetch_task()
    assert task is not None
    assert task["def"] == definition(3)
    segment = task["def"]["dataset"]["kwargs"]["segments"]["test"]
    assert isinstance(segment, tuple) and isinstance(segment[0], pd.Timestamp)
    assert task["filter"]["dataset"]["kwargs"]["segments"]["test"] == ["2020-01-01", "2020-03-01"]
    assert task["status"] == "running" and task["attempts"] == 1
    assert isinstance(task["started"], dt.datetime) and task["lease_until"] > task["started"]


def test_fetch_priority_then_age(manager: TaskManager) -> None:
    ids = manager.create_task([definition(index) for index in range(3)])
    assert manager.prioritize(ids[2], 10)
    order = []
    while (task := manager.fetch_task()) is not None:
        order.append(task["_id"])
    assert order == [ids[2], ids[0], ids[1]]


def test_query_filters(manager: TaskManager) -> None:
    manager.create_task([definition(0), definition(1, "LGBModel"), definition(2, "LGBModel")])
    found = [task["def"]["index"] for task in manager.query({"filter.model.class": "LGBModel"})]
    assert found == [1, 2]
    assert [t["def"]["index"] for t in manager.query({"filter.index": {"$in": [0, 2]}})] == [0, 2]
    assert [t["def"]["index"] for t in manager.query({"filter": definition(1, "LGBModel")})] == [1]
    segment_query = {"filter.dataset.kwargs.segments.test": ["2020-01-01", "2020-03-01"]}
    assert len(list(manager.query(segment_query))) == 3
    task = manager.fetch_task({"filter.model.class": "LGBModel"})
    assert task is not None and task["def"]["index"] == 1
    assert manager.re_query(task["_id"])["status"] == "running"  # type: ignore[index]
    with pytest.raises(QueryError, match=r"\$regex"):
        list(manager.query({"filter.index": {"$regex": "1"}}))
    with pytest.raises(QueryError, match="unknown query field"):
        manager.task_stat({"def_payload": 1})


def test_commit_and_return(manager: TaskManager) -> None:
    manager.create_task([definition(0), definition(1)])
    first = manager.fetch_task()
    assert first is not None
    assert manager.commit_task_res(first, {"ic": 0.05, "when": dt.date(2024, 1, 2)})
    done = manager.re_query(first["_id"])
    assert done is not None and done["status"] == "done"
    assert done["res"] == {"ic": 0.05, "when": dt.date(2024, 1, 2)}
    assert done["finished"] is not None and done["lease_until"] is None
    second = manager.fetch_task()
    assert second is not None
    assert manager.return_task(second)
    assert manager.task_stat() == {"done": 1, "waiting": 1}


def test_commit_after_lost_lease_is_refused(url: str) -> None:
    with TaskManager("pool", store=url, lease_seconds=0.2) as slow, \
            TaskManager("pool", store=url) as other:
        slow.create_task([definition(0)])
        stale = slow.fetch_task()
        assert stale is not None
        import time

        time.sleep(0.5)
        other.reap()
        fresh = other.fetch_task()
        assert fresh is not None and fresh["attempts"] == 2
        assert not slow.commit_task_res(stale, {"late": True})
        assert other.commit_task_res(fresh, {"on_time": True})
        assert other.re_query(fresh["_id"])["res"] == {"on_time": True}  # type: ignore[index]


def test_safe_fetch_task_returns_task_on_errors(manager: TaskManager) -> None:
    manager.create_task([definition(0)])
    with pytest.raises(ValueError), manager.safe_fetch_task() as task:
        assert task is not None
        raise ValueError("boom")
    assert manager.task_stat() == {"waiting": 1}
    with pytest.raises(KeyboardInterrupt), manager.safe_fetch_task() as task:
        raise KeyboardInterrupt
    assert manager.task_stat() == {"waiting": 1}
    fetched = [task["_id"] for task in manager.task_fetcher_iter()]
    assert len(fetched) == 1 and manager.task_stat() == {"running": 1}


def test_reset_remove_and_replace(manager: TaskManager) -> None:
    ids = manager.create_task([definition(index) for index in range(4)])
    assert manager.fetch_task() is not None and manager.fetch_task() is not None
    assert manager.reset_waiting() == 2
    assert manager.task_stat() == {"waiting": 4}
    assert manager.reset_status({"_id": ids[0]}, "done") == 1
    assert manager.reset_waiting({"status": "done"}) == 1
    assert manager.replace_task(ids[1], {"def": definition(9), "priority": 4})
    replaced = manager.re_query(ids[1])
    assert replaced is not None and replaced["def"]["index"] == 9 and replaced["priority"] == 4
    assert manager.remove({"_id": {"$in": ids[2:]}}) == 2
    assert manager.task_stat() == {"waiting": 2}
    with pytest.raises(StatusTransitionError, match="unknown task status"):
        manager.reset_status({}, "finished")
    assert manager.task_stat() == {"waiting": 2}


def test_results_need_pickle_opt_in(url: str) -> None:
    frame = pd.DataFrame({"score": [1.0, 2.0]})
    with TaskManager("strict", store=url) as strict:
        strict.create_task([definition(0)])
        task = strict.fetch_task()
        assert task is not None
        with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
            strict.commit_task_res(task, frame)
    with TaskManager("trusting", store=url, allow_pickle=True) as trusting:
        trusting.create_task([definition(0)])
        task = trusting.fetch_task()
        assert task is not None and trusting.commit_task_res(task, frame)
        stored = trusting.re_query(task["_id"])
        assert stored is not None
        pd.testing.assert_frame_equal(stored["res"], frame)
    with TaskManager("trusting", store=url) as reader, pytest.raises(PickleNotAllowedError):
        list(reader.query())


def test_bad_definitions_change_nothing(manager: TaskManager) -> None:
    with pytest.raises(TaskConfigError, match="must be a dict"):
        manager.create_task([definition(0), "not a task"])  # type: ignore[list-item]
    with pytest.raises(PickleNotAllowedError):
        manager.create_task([definition(1), {"model": object()}])
    assert manager.task_stat() == {}
    with pytest.raises(TaskConfigError):
        TaskManager("")


def test_wait_returns_when_nothing_is_undone(manager: TaskManager) -> None:
    assert manager.wait() == {}
    manager.create_task([definition(0)])
    task = manager.fetch_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        manager.wait(poll_interval=0.05, timeout=0.2, progress=False)
    manager.commit_task_res(task, None)
    assert manager.wait(progress=False) == {"done": 1}


def test_wait_reaps_tasks_of_dead_workers(url: str) -> None:
    with TaskManager("pool", store=url, lease_seconds=0.2, max_attempts=1) as manager:
        manager.create_task([definition(0)])
        assert manager.fetch_task() is not None  # the "worker" never heartbeats
        stat = manager.wait(poll_interval=0.1, timeout=5, progress=False)
        assert stat == {"failed": 1}
        failed = next(manager.query())
        assert failed["error"]["kind"] == "worker lost"
        assert "lease expired" in failed["error"]["message"]
