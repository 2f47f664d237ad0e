"""The dashboard's JSON endpoints and pages, through Starlette's TestClient, on real pools."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import POOL, MixedPool, fill_mixed_pool, fill_mixed_pool_on, record_window_runs
from starlette.testclient import TestClient

from taskroll import config
from taskroll.dashboard.app import TOKEN_HEADER, create_app
from taskroll.dashboard.data import RATE_WINDOW_SECONDS
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store

BAD_QUERIES = [
    "{", "[1]", '"status"', "1", "null", '{"$or": [{"status": "done"}]}',
    '{"status": {"$regex": "do"}}', '{"filter.window": {"$in": 3}}', '{"no_such_field": 1}',
    '{"priority": {"$exists": "yes"}}', '{"filter.": 1}', '{"filter.window": 1e999}',
    '{"priority": 99999999999999999999999}', '{"status": "done"} trailing',
    '{"filter.a\\"b": 1}', '{"$and": {"status": "done"}}',
]
BAD_PARAMETERS = [
    {"sort": "def"}, {"sort": "priority", "dir": "sideways"}, {"page": "0"}, {"page": "x"},
    {"size": "100000"}, {"status": "finished"}, {"size": "-3"},
]


@pytest.fixture
def client(store: TaskStore) -> Iterator[TestClient]:
    """A read-only dashboard on the mixed pool."""
    with TestClient(create_app(store)) as opened:
        yield opened


def _stat(mixed_pool: MixedPool) -> dict[str, int]:
    with TaskManager(mixed_pool.pool, store=mixed_pool.url) as manager:
        return manager.task_stat()


def test_summary_counts_match_task_stat(client: TestClient, mixed_pool: MixedPool) -> None:
    pools = client.get("/api/pools").json()["pools"]
    assert [item["pool"] for item in pools] == [POOL]
    summary = pools[0]
    stat = _stat(mixed_pool)
    assert {status: count for status, count in summary["counts"].items() if count} == stat
    assert stat == {"done": 4, "failed": 2, "running": 2, "waiting": 4}
    command = subprocess.run(  # the command line's ``task_stat`` agrees
        [sys.executable, "-m", "taskroll.manage", "--url", mixed_pool.url, "-t", POOL,
         "task_stat"], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(command.stdout) == stat
    assert summary["total"] == 12 and summary["progress"] == pytest.approx(4 / 12)
    assert summary["live_workers"] == 1  # one manager claimed both running tasks
    assert summary["tasks_per_minute"] == pytest.approx(4 / (RATE_WINDOW_SECONDS / 60))
    detail = client.get(f"/api/pools/{POOL}").json()
    assert sorted(row["id"] for row in detail["failed"]) == sorted(mixed_pool.failed)
    assert all(row["error_kind"] == "task raised" for row in detail["failed"])
    assert all("ValueError: window" in row["error_line"] for row in detail["failed"])
    running = {row["id"]: row for row in detail["running"]}
    assert sorted(running) == sorted(mixed_pool.running)
    assert all(row["worker"] and 500 < row["lease_left"] <= 600 for row in running.values())


def test_filter_sort_and_paging(client: TestClient, mixed_pool: MixedPool) -> None:
    url = f"/api/pools/{POOL}/tasks"
    failed = client.get(url, params={"q": '{"status": "failed"}'}).json()
    assert failed["matching"] == 2 and sorted(row["id"] for row in failed["rows"]) == \
        sorted(mixed_pool.failed)
    linear = client.get(url, params={"q": '{"filter.model.class": "LinearModel"}'}).json()
    assert linear["matching"] == 6 and all("LinearModel" in row["label"] for row in linear["rows"])
    buttons = client.get(url, params=[("status", "done"), ("status", "running")]).json()
    assert sorted(row["id"] for row in buttons["rows"]) == sorted(mixed_pool.done + mixed_pool.running)
    combined = client.get(url, params={"q": '{"filter.window": {"$gte": 3}}',
                                       "status": "waiting"}).json()
    assert combined["matching"] == sum(1 for row in combined["rows"] if row["status"] == "waiting")
    seen: list[str] = []
    for page in (1, 2, 3):
        body = client.get(url, params={"size": "5", "page": str(page), "sort": "created",
                                       "dir": "asc"}).json()
        assert body["pages"] == 3 and body["matching"] == 12
        seen += [row["id"] for row in body["rows"]]
    assert len(seen) == 12 and set(seen) == set(mixed_pool.done + mixed_pool.running
                                                 + mixed_pool.failed + mixed_pool.waiting)
    newest = client.get(url, params={"size": "12"}).json()["rows"]
    assert [row["id"] for row in newest] == seen[::-1]
    by_finished = client.get(url, params={"sort": "finished", "dir": "desc", "size": "12"}).json()
    stamps = [row["finished"] for row in by_finished["rows"]]
    assert stamps[:6] == sorted(stamps[:6], reverse=True) and stamps[6:] == [None] * 6


@pytest.mark.parametrize("text", BAD_QUERIES)
def test_bad_query_is_a_400_with_a_message(client: TestClient, mixed_pool: MixedPool,
                                           text: str) -> None:
    before = _stat(mixed_pool)
    response = client.get(f"/api/pools/{POOL}/tasks", params={"q": text})
    assert response.status_code == 400
    assert response.json()["error"]
    page = client.get(f"/pool/{POOL}", params={"q": text})
    assert page.status_code == 400 and 'id="query-error"' in page.text
    assert _stat(mixed_pool) == before


@pytest.mark.parametrize("parameters", BAD_PARAMETERS, ids=str)
def test_bad_parameters_are_400(client: TestClient, mixed_pool: MixedPool,
                                parameters: dict[str, str]) -> None:
    response = client.get(f"/api/pools/{POOL}/tasks", params=parameters)
    assert response.status_code == 400 and response.json()["error"]
    assert client.get(f"/pool/{POOL}", params=parameters).status_code == 400


def test_pages_render_and_escape_task_text(client: TestClient, mixed_pool: MixedPool) -> None:
    home = client.get("/")
    assert home.status_code == 200 and POOL in home.text and 'data-live="/?fragment=1"' in home.text
    pool = client.get(f"/pool/{POOL}")
    assert pool.status_code == 200 and 'id="failed"' in pool.text
    assert "<script>alert(1)</script>" not in pool.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pool.text
    task = client.get(f"/pool/{POOL}/task/{mixed_pool.failed[0]}")
    assert task.status_code == 200 and "Traceback (most recent call last)" in task.text
    assert "_raise_and_catch" in task.text and "<script>alert" not in task.text
    assert client.get(f"/pool/{POOL}/task/nope").status_code == 404
    assert client.get("/pool/no_such_pool").status_code == 404
    detail = client.get(f"/api/pools/{POOL}/tasks/{mixed_pool.done[0]}").json()
    assert detail["result"] == {"score": 0} and detail["definition"]["model"]["class"]
    assert detail["history"][0]["event"] == "created"
    assert client.get("/static/uPlot.iife.min.js").status_code == 200


def test_actions_need_the_flag_the_token_and_a_confirmation(mixed_pool: MixedPool) -> None:
    with open_store(mixed_pool.url) as store, TestClient(create_app(store)) as client:
        refused = client.post(f"/api/pools/{POOL}/actions/retry", json={"confirm": True})
        assert refused.status_code == 403
    with open_store(mixed_pool.url) as store, \
            TestClient(create_app(store, allow_actions=True)) as client:
        page = client.get(f"/pool/{POOL}")
        token = page.text.split('data-token="', 1)[1].split('"', 1)[0]
        url = f"/api/pools/{POOL}/actions/retry"
        assert client.post(url, json={"confirm": True}).status_code == 403
        assert client.post(url, json={"confirm": True},
                           headers={TOKEN_HEADER: "wrong"}).status_code == 403
        assert client.post(url, json={"confirm": True}, headers={
            TOKEN_HEADER: token, "origin": "http://evil.example"}).status_code == 403
        assert client.post(url, json={}, headers={TOKEN_HEADER: token}).status_code == 400
        assert client.post(url, json={"confirm": True, "query": "{"},
                           headers={TOKEN_HEADER: token}).status_code == 400
        assert _stat(mixed_pool)["failed"] == 2
        done = client.post(url, json={"confirm": True}, headers={TOKEN_HEADER: token})
        assert done.json() == {"action": "retry", "changed": 2}
        assert "failed" not in _stat(mixed_pool)
        reset = client.post(f"/api/pools/{POOL}/actions/reset", headers={TOKEN_HEADER: token},
                            json={"confirm": True, "query": json.dumps({"_id": mixed_pool.running[0]})})
        assert reset.json()["changed"] == 1 and _stat(mixed_pool)["running"] == 1
        target = mixed_pool.waiting[0]
        raised = client.post(f"/api/pools/{POOL}/actions/prioritise", headers={TOKEN_HEADER: token},
                             json={"confirm": True, "task_id": target, "priority": "7"})
        assert raised.json()["changed"] == 1
        with TaskManager(POOL, store=mixed_pool.url) as manager:
            assert manager.re_query(target)["priority"] == 7  # type: ignore[index]
        bad = client.post(f"/api/pools/{POOL}/actions/prioritise", headers={TOKEN_HEADER: token},
                          json={"confirm": True, "task_id": target, "priority": "high"})
        assert bad.status_code == 400
        # the pages show ids cut to 12 characters: the start of exactly one id names it
        other = mixed_pool.waiting[1]
        shown = client.post(f"/api/pools/{POOL}/actions/prioritise", headers={TOKEN_HEADER: token},
                            json={"confirm": True, "task_id": other[:12], "priority": 3})
        assert shown.json()["changed"] == 1
        with TaskManager(POOL, store=mixed_pool.url) as manager:
            assert manager.re_query(other)["priority"] == 3  # type: ignore[index]
            before = {task["_id"]: task["priority"] for task in manager.query()}
        firsts = [task_id[0] for task_id in before]
        shared = next(first for first in firsts if firsts.count(first) > 1)  # fixed digests
        for start, error in (("", "needs a task id"), ("zz-no-such", "no task id"),
                             (shared, "more than one task id")):
            refused = client.post(f"/api/pools/{POOL}/actions/prioritise",
                                  headers={TOKEN_HEADER: token},
                                  json={"confirm": True, "task_id": start, "priority": 9})
            assert refused.status_code == 400 and error in refused.json()["error"]
        with TaskManager(POOL, store=mixed_pool.url) as manager:
            assert {task["_id"]: task["priority"] for task in manager.query()} == before
        page = client.get(f"/pool/{POOL}/task/{other}")
        assert f'id="action-task" size="14" value="{other}"' in page.text


def test_rolling_view_reads_segments_and_recorder_metrics(
        isolated_settings: config.Settings, tmp_path: Path) -> None:
    from taskroll import R

    url = isolated_settings.resolved_task_url()
    mixed = fill_mixed_pool(url)
    with TaskManager(POOL, store=url) as manager:
        task = manager.fetch_task({"filter.window": 5})
        assert task is not None
        with R.start(experiment_name="dash") as recorder:
            recorder.log_metrics(**{"IC": 0.05, "Rank IC": 0.04})
        manager.commit_task_res(task, recorder)
    with open_store(url) as store, TestClient(create_app(store)) as client:
        data = client.get(f"/api/pools/{POOL}/rolling").json()
        windows = [window for model in data["models"].values() for window in model]
        assert len(windows) == 12 and all("test" in window and "train" in window
                                          for window in windows)
        measured = [window for window in windows if "IC" in window]
        assert [window["id"] for window in measured] == [task["_id"]]
        assert measured[0]["IC"] == pytest.approx(0.05)
        assert measured[0]["Rank IC"] == pytest.approx(0.04)
        page = client.get(f"/pool/{POOL}/rolling")
        assert page.status_code == 200 and page.text.count('class="segment test"') == 12
        detail = client.get(f"/api/pools/{POOL}/tasks/{task['_id']}").json()
        assert detail["recorder"]["run_id"] == recorder.id
    assert len(mixed.done) == 4


def test_online_view_reads_the_report(store: TaskStore, tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "online"
    (folder / "report").mkdir(parents=True)  # the layout of ``taskroll online report``
    pd.DataFrame({"datetime": ["2024-01-02", "2024-01-03"], "ic": [0.1, float("nan")],
                  "rank_ic": [0.2, 0.3]}).to_csv(folder / "report" / "report.csv", index=False)
    (folder / "report" / "report.json").write_text(json.dumps({"ic_mean": 0.1, "days": 2}))
    index = pd.MultiIndex.from_product([pd.to_datetime(["2024-01-02", "2024-01-03"]), ["A", "B"]],
                                       names=["datetime", "instrument"])
    pd.DataFrame({"score": [1.0, 2.0, 3.0, 4.0]}, index=index).to_parquet(folder / "signals.parquet")
    with TestClient(create_app(store, online_folder=folder)) as client:
        data: dict[str, Any] = client.get("/api/online").json()
        assert data["daily"] == [{"date": "2024-01-02", "ic": 0.1, "rank_ic": 0.2},
                                 {"date": "2024-01-03", "ic": None, "rank_ic": 0.3}]
        assert data["served_days"] == 2 and data["summary"]["days"] == 2
        assert client.get("/online").status_code == 200
    with TestClient(create_app(store)) as client:
        assert client.get("/online").status_code == 404


@pytest.mark.parametrize("backend", ["postgresql", "mongodb"])
def test_server_stores_serve_the_same_views(request: pytest.FixtureRequest, backend: str) -> None:
    import uuid

    server = request.getfixturevalue(f"dashboard_{'postgres' if backend == 'postgresql' else 'mongo'}"
                                     "_server")
    pool = f"dash_{uuid.uuid4().hex[:8]}"
    url = server.url
    if backend == "mongodb":
        from taskroll.store.mongo import MongoStore

        make = lambda: MongoStore(url, pool)  # noqa: E731 - one database per test
    else:
        make = lambda: open_store(url)  # noqa: E731
    with make() as store:
        with TaskManager(pool, store=store, max_attempts=1, lease_seconds=600) as manager:
            mixed = fill_mixed_pool_on(manager)
        with TestClient(create_app(store)) as client:
            summary = client.get(f"/api/pools/{pool}").json()
            assert {key: value for key, value in summary["counts"].items() if value} == \
                {"done": 4, "failed": 2, "running": 2, "waiting": 4}
            assert summary["live_workers"] == 1
            assert sorted(row["id"] for row in summary["failed"]) == sorted(mixed["failed"])
            url_tasks = f"/api/pools/{pool}/tasks"
            seen = [row["id"] for page in (1, 2, 3) for row in client.get(
                url_tasks, params={"size": "5", "page": str(page), "dir": "asc"}).json()["rows"]]
            assert len(seen) == len(set(seen)) == 12
            lgb = client.get(url_tasks, params={"q": '{"filter.model.class": "LGBModel"}',
                                                "status": "done"}).json()
            assert lgb["matching"] == 2
            assert client.get(url_tasks, params={"q": "{"}).status_code == 400
            page = client.get(f"/pool/{pool}/task/{mixed['failed'][0]}")
            assert "Traceback (most recent call last)" in page.text
        store.drop_pool(pool)


def test_ensemble_ic_matches_a_direct_computation(isolated_settings: config.Settings) -> None:
    import pandas as pd

    from taskroll.train.record import calc_ic

    url = isolated_settings.resolved_task_url()
    fill_mixed_pool(url)
    saved = record_window_runs(url, [("LGBModel", 4, 0.5), ("LGBModel", 5, 1.0),
                                     ("LinearModel", 5, 2.0)])
    with open_store(url) as store, TestClient(create_app(store)) as client:
        data = client.get(f"/api/pools/{POOL}/ensembles").json()
    assert data["runs"] == 3 and data["skipped"] == 0  # done tasks without a run: not read
    assert sorted(data["ensembles"]) == ["LGBModel (rolling)", "LinearModel (rolling)",
                                         "average of all models"]
    lgb = list(saved.values())[:2]  # the LGBModel windows, in the order they were made
    prediction = pd.concat([pair[0]["score"] for pair in lgb]).sort_index()
    label = pd.concat([pair[1]["LABEL0"] for pair in lgb]).sort_index()
    ic, rank_ic = calc_ic(prediction, label, dropna=True)
    rolled = data["ensembles"]["LGBModel (rolling)"]
    assert rolled["days"] == 60 and rolled["IC"] == pytest.approx(ic.mean())
    assert rolled["Rank IC"] == pytest.approx(rank_ic.mean())
    assert rolled["cumulative"][-1][1] == pytest.approx(ic.sum())
    assert data["ensembles"]["average of all models"]["days"] == 60
    linear = data["ensembles"]["LinearModel (rolling)"]
    linear_prediction, linear_label = list(saved.values())[2]
    linear_ic, _ = calc_ic(linear_prediction["score"], linear_label["LABEL0"], dropna=True)
    assert linear["days"] == 30 and linear["IC"] == pytest.approx(linear_ic.mean())
    assert linear["IC"] < rolled["IC"]  # the noisier prediction


def test_online_view_says_which_model_was_online_when(isolated_settings: config.Settings,
                                                      tmp_path: Path) -> None:
    from taskroll import R
    from taskroll.online.models import (
        CHAIN_TAG,
        MODEL_CLASS_TAG,
        TEST_START_TAG,
        TRAINED_TAG,
        WINDOW_TAG,
    )

    runs = []
    for window, start in enumerate(("2024-01-02", "2024-02-01", "2024-03-01")):
        with R.start(experiment_name="online_strategy") as recorder:
            recorder.set_tags(**{CHAIN_TAG: "chain-a", WINDOW_TAG: f"w{window}",
                                 TEST_START_TAG: start, MODEL_CLASS_TAG: "LinearModel",
                                 TRAINED_TAG: "true"})
        runs.append(recorder.id)
    folder = tmp_path / "online"
    folder.mkdir()
    import pandas as pd

    days = pd.bdate_range("2024-01-02", "2024-03-15")
    index = pd.MultiIndex.from_product([days, ["A"]], names=["datetime", "instrument"])
    pd.DataFrame({"score": range(len(index))}, index=index).to_parquet(folder / "signals.parquet")
    with open_store(isolated_settings.resolved_task_url()) as store, TestClient(create_app(
            store, online_folder=folder, online_experiments=["online_strategy"])) as client:
        data = client.get("/api/online").json()
        assert [(row["run_id"], row["from"], row["until"]) for row in data["models"]] == [
            (runs[0], "2024-01-02", "2024-01-31"), (runs[1], "2024-02-01", "2024-02-29"),
            (runs[2], "2024-03-01", "2024-03-15")]
        page = client.get("/online")
        assert page.status_code == 200 and page.text.count('class="served-model"') == 3


def test_store_trouble_is_a_503_not_a_server_error(mixed_pool: MixedPool) -> None:
    store = open_store(mixed_pool.url)
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        assert client.get("/api/pools").status_code == 200
        store.close()
        store.path = Path("/nonexistent/folder/tasks.db")  # type: ignore[attr-defined]
        failing = client.get("/api/pools")
        assert failing.status_code == 503 and "SQLite" in failing.json()["error"]
        assert client.get("/").status_code == 503
