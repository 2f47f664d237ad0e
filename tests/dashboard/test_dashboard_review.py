"""Review of the dashboard as a demanding user and an attacker (issue 14): requests.

Hostile URL parameters and action requests (400/403, never 500, and the pool unchanged),
pool names with URL characters, pickled payloads, non-finite numbers, expired leases,
rows read per page of a large pool, paging with ties on every store and while tasks
are added, host names, and the command line's warnings. The views (rolling, online,
ensembles) are in ``test_dashboard_review_views.py``, Chromium in
``test_dashboard_review_browser.py``.
"""

from __future__ import annotations

import builtins
import html
import json
import pickle
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import POOL, MixedPool, fill_mixed_pool_on
from starlette.testclient import TestClient

from taskroll.dashboard.app import TOKEN_HEADER, create_app
from taskroll.dashboard.cli import exposure_warning
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store
from taskroll.store.base import SORT_FIELDS

DEEP_LIST = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 2000 + "1" + "}" * 2000


def _snapshot(store: TaskStore, pool: str) -> list[dict[str, Any]]:
    return sorted((dict(record) for record in store.find(pool, [])), key=lambda row: row["_id"])


def _client(store: TaskStore, **options: Any) -> TestClient:
    return TestClient(create_app(store, **options), raise_server_exceptions=False)


HOSTILE = [
    {"q": DEEP_LIST}, {"q": DEEP_OBJECT}, {"q": '{"$where": "sleep(1000)"}'},
    {"q": '{"worker": {"$regex": ".*"}}'}, {"q": "'; DROP TABLE tasks; --"},
    {"q": '{"_id": {"$gt": "", "$where": "1"}}'}, {"q": '{"priority": 1e999}'},
    {"q": '{"priority": 123456789012345678901234567890}'}, {"q": '{"worker": "\\u0000"}'},
    {"sort": "seq; DROP TABLE tasks"}, {"sort": "filter"}, {"dir": "sideways"},
    {"page": "-1"}, {"page": "0"}, {"page": "1e3"}, {"page": "9" * 40}, {"size": "0"},
    {"size": "1001"}, {"size": "NaN"}, {"status": "done' OR 1=1 --"}, {"status": "$ne"},
]


@pytest.mark.parametrize("params", HOSTILE, ids=lambda params: repr(params)[:40])
def test_hostile_parameters_are_400_with_a_message_and_change_nothing(
        store: TaskStore, mixed_pool: MixedPool, params: dict[str, str]) -> None:
    before = _snapshot(store, POOL)
    with _client(store) as client:
        answer = client.get(f"/api/pools/{POOL}/tasks", params=params)
        assert answer.status_code == 400 and answer.json()["error"]
        page = client.get(f"/pool/{POOL}", params=params)
        assert page.status_code == 400 and 'id="query-error"' in page.text
    assert _snapshot(store, POOL) == before


def test_a_long_query_is_answered(store: TaskStore, mixed_pool: MixedPool) -> None:
    text = json.dumps({"worker": {"$in": [f"worker-{index}" for index in range(1500)]}})
    assert len(text) > 20_000
    with _client(store) as client:
        answer = client.get(f"/api/pools/{POOL}/tasks", params={"q": text})
    assert answer.status_code == 200 and answer.json()["matching"] == 0


def test_refused_action_requests_change_nothing(store: TaskStore, mixed_pool: MixedPool) -> None:
    before = _snapshot(store, POOL)
    url = f"/api/pools/{POOL}/actions/retry"
    with _client(store, allow_actions=True) as client:
        token = client.app.state.dashboard.token  # type: ignore[attr-defined]
        header = {TOKEN_HEADER: token}
        refused = [
            client.post(url, content=DEEP_LIST.encode(), headers=header),
            client.post(url, json={"confirm": True, "query": DEEP_LIST}, headers=header),
            client.post(url, json={"confirm": True, "query": 5}, headers=header),
            client.post(url, json={"confirm": True, "query": ["failed"]}, headers=header),
            client.post(url, json={"confirm": True, "query": '{"$where": "1"}'}, headers=header),
            client.post(url, json={"confirm": "yes"}, headers=header),
            client.post(url, json={"confirm": True},
                        headers=[(TOKEN_HEADER.encode(), "\u00e9".encode("latin-1"))]),
            client.post(url, json={"confirm": True}, headers={TOKEN_HEADER: token + "x"}),
            client.post(url, json={"confirm": True},
                        headers={**header, "origin": "http://evil.example"}),
            client.post(url, json={"confirm": True}, headers={"origin": "http://testserver"}),
        ]
        assert [answer.status_code for answer in refused] == [400] * 6 + [403] * 4
        assert all(answer.json()["error"] for answer in refused)
        assert client.get(url).status_code == 405
        # a query given as an object is that query, never "every failed task"
        narrow = client.post(url, json={"confirm": True, "query": {"_id": "no-such-task"}},
                             headers=header)
        assert narrow.status_code == 200 and narrow.json()["changed"] == 0
    with _client(store) as read_only:
        assert read_only.post(url, json={"confirm": True}, headers=header).status_code == 403
    assert _snapshot(store, POOL) == before


POOL_NAMES = ["a/b", "x/task/y", "50% off", "a#b", "a?b=c&d", "a+b", "\u00fcn\u00ef \u2713",
              "</h1><script>window.__pwned=1</script>"]


def test_pool_names_with_url_characters_are_reachable_and_escaped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'names.db'}"
    for name in POOL_NAMES:
        with TaskManager(name, store=url) as manager:
            manager.create_task([{"model": {"class": "M"}, "name": name}])
    shown: list[str] = []
    with open_store(url) as store, _client(store) as client:
        home = client.get("/").text
        links = [html.unescape(link) for link in re.findall(r'class="pool-link" href="([^"]+)"',
                                                            home)]
        assert len(links) == len(POOL_NAMES) and "<script>window" not in home
        for link in links:
            page = client.get(link)
            assert page.status_code == 200, link
            shown.append(html.unescape(re.findall(r"<h1>(.*?)</h1>", page.text)[0]))
            assert "<script>window" not in page.text
            live = html.unescape(re.findall(r'data-live="([^"]+)"', page.text)[0])
            assert 'id="total">1<' in client.get(live).text
            task_link = html.unescape(re.findall(r'href="([^"]*/task/[^"]*)"', page.text)[0])
            assert client.get(task_link).status_code == 200
            assert client.get(link + "/rolling").status_code == 200
            api = link.replace("/pool/", "/api/pools/", 1)
            assert client.get(api + "/tasks").json()["matching"] == 1
        assert client.get("/pool/no%2Fsuch/rolling").status_code == 404
        assert client.get("/api/pools/no%2Fsuch/rolling").status_code == 404
    assert sorted(shown) == sorted(POOL_NAMES)


class _Planted:
    """Unpickling this sets ``builtins.__planted`` (it must never happen)."""

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (exec, ("import builtins; builtins.__planted = True",))


def test_pickled_payloads_are_never_unpickled(store: TaskStore, mixed_pool: MixedPool) -> None:
    target = mixed_pool.done[0]
    store.update(POOL, target, {"def": pickle.dumps(_Planted()), "def_encoding": "pickle",
                                "res": pickle.dumps(_Planted()), "res_encoding": "pickle"})
    with _client(store) as client:
        page = client.get(f"/pool/{POOL}/task/{target}")
        assert page.status_code == 200 and page.text.count("not shown: ") == 2
        detail = client.get(f"/api/pools/{POOL}/tasks/{target}").json()
        assert detail["definition"] is None and "pickle" in detail["definition_note"]
        for path in (f"/pool/{POOL}", f"/pool/{POOL}/rolling", f"/api/pools/{POOL}/ensembles"):
            assert client.get(path).status_code == 200
    assert not hasattr(builtins, "__planted")


def test_rows_read_per_page_do_not_grow_with_the_pool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'large.db'}"
    with TaskManager("large", store=url) as manager:
        manager.create_task([{"model": {"class": "M"}, "index": index} for index in range(3000)])
    with open_store(url) as store:
        read: list[int] = []  # records each call returned
        for name in ("find", "find_page", "get"):
            method = getattr(store, name)

            def counted(*args: Any, _method: Any = method, _name: str = name,
                        **kwargs: Any) -> Any:
                result = _method(*args, **kwargs)
                if _name == "get":
                    read.append(0 if result is None else 1)
                    return result
                rows = list(result)
                read.append(len(rows))
                return rows

            setattr(store, name, counted)
        with _client(store) as client:
            for path in ("/", "/pool/large", "/pool/large?fragment=1&page=60&sort=priority",
                         "/api/pools/large/tasks?page=30", "/api/pools/large"):
                assert client.get(path).status_code == 200
    assert read and sum(read) <= 3 * 50 + 3 * 2 * 20  # table pages and highlights only


def test_public_actions_print_a_warning() -> None:
    assert exposure_warning("127.0.0.1", True) is None
    assert exposure_warning("0.0.0.0", False) is None
    warning = exposure_warning("0.0.0.0", True)
    assert warning is not None and "--allow-actions" in warning


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mongodb"])
def test_paging_with_ties_covers_every_task_once(request: pytest.FixtureRequest, tmp_path: Path,
                                                 backend: str) -> None:
    pool = f"ties_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        store: TaskStore = open_store(f"sqlite:///{tmp_path / 'ties.db'}")
    else:
        server = request.getfixturevalue(
            f"dashboard_{'postgres' if backend == 'postgresql' else 'mongo'}_server")
        if backend == "mongodb":
            from taskroll.store.mongo import MongoStore

            store = MongoStore(server.url, pool)
        else:
            store = open_store(server.url)
    with store:
        with TaskManager(pool, store=store, max_attempts=1, lease_seconds=600) as manager:
            ids = sorted(id_ for group in fill_mixed_pool_on(manager).values() for id_ in group)
            stat = manager.task_stat()
        with _client(store) as client:
            counts = client.get(f"/api/pools/{pool}").json()["counts"]
            assert {key: value for key, value in counts.items() if value} == stat
            for sort in SORT_FIELDS:
                for direction in ("asc", "desc"):
                    seen = [row["id"] for page in (1, 2, 3) for row in client.get(
                        f"/api/pools/{pool}/tasks", params={"sort": sort, "dir": direction,
                                                            "size": "5", "page": str(page)}
                    ).json()["rows"]]
                    assert sorted(seen) == ids, (sort, direction)
        store.drop_pool(pool)


def test_non_finite_numbers_in_a_task_are_strict_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    with TaskManager("p", store=url, max_attempts=1) as manager:
        [task_id] = manager.create_task([{"lr": float("nan"), "cap": float("-inf")}])
        task = manager.fetch_task()
        assert task is not None
        manager.commit_task_res(task, {"score": float("inf")})
    with open_store(url) as store, _client(store) as client:
        answer = client.get(f"/api/pools/p/tasks/{task_id}")
        assert answer.status_code == 200
        detail = json.loads(answer.text, parse_constant=lambda name: pytest.fail(name))
        assert detail["definition"] == {"lr": "nan", "cap": "-inf"}
        assert detail["result"] == {"score": "inf"}
        assert "NaN" in client.get(f"/pool/p/task/{task_id}").text


def test_an_expired_lease_says_so(store: TaskStore, mixed_pool: MixedPool) -> None:
    lost = mixed_pool.running[0]
    store.update(POOL, lost, {"lease_until": store.now() - 90})
    with _client(store) as client:
        rows = client.get(f"/api/pools/{POOL}").json()["running"]
        assert {row["id"]: row["lease_left"] < 0 for row in rows} == {
            mixed_pool.running[0]: True, mixed_pool.running[1]: False}
        assert "lease expired" in client.get(f"/pool/{POOL}/task/{lost}").text
        assert client.get(f"/pool/{POOL}").text.count("lease expired") == 2  # lists and table


def test_paging_forward_is_stable_while_tasks_are_added(store: TaskStore,
                                                        mixed_pool: MixedPool) -> None:
    original = {id_ for group in (mixed_pool.done, mixed_pool.running, mixed_pool.failed,
                                  mixed_pool.waiting) for id_ in group}
    seen: list[str] = []
    with _client(store) as client:
        for page in (1, 2, 3):
            rows = client.get(f"/api/pools/{POOL}/tasks", params={
                "sort": "created", "dir": "asc", "size": "5", "page": str(page)}).json()["rows"]
            seen += [row["id"] for row in rows]
            with TaskManager(POOL, store=store) as manager:  # a generator adds windows
                manager.create_task([{"added": page, "index": index} for index in range(5)])
    assert len(seen) == len(set(seen)) == 15 and original <= set(seen)


def test_loopback_host_names_are_served_and_foreign_ones_refused(store: TaskStore,
                                                                 mixed_pool: MixedPool) -> None:
    from taskroll.dashboard.cli import loopback_host_names

    assert loopback_host_names("0.0.0.0") is None and loopback_host_names("myhost") is None
    with _client(store, allowed_hosts=loopback_host_names("127.0.0.2")) as client:
        for host in ("127.0.0.1:8080", "localhost:9000", "LOCALHOST", "[::1]:8080",
                     "127.0.0.2:8080"):
            assert client.get("/api/pools", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "127.0.0.1.evil.example:8080", "[::2]:8080"):
            assert client.get("/api/pools", headers={"host": host}).status_code == 400, host
    assert exposure_warning("127.0.0.2", True) is None


def test_the_dashboard_process_fails_fast_on_mlflow_but_keeps_user_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from taskroll.dashboard.cli import TRACKING_RETRIES, fail_fast_tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "")  # restored afterwards
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    fail_fast_tracking()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(TRACKING_RETRIES)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"


@pytest.mark.parametrize("finished", [1e20, -1e20])
def test_a_time_beyond_the_calendar_is_shown_as_stored(store: TaskStore, mixed_pool: MixedPool,
                                                       finished: float) -> None:
    target = mixed_pool.done[0]
    store.update(POOL, target, {"finished": finished})  # any number is valid UNIX seconds
    with _client(store) as client:
        for path in ("/", f"/pool/{POOL}", f"/pool/{POOL}/task/{target}", f"/api/pools/{POOL}"):
            assert client.get(path).status_code == 200, path
        assert f"{finished} s" in client.get(f"/pool/{POOL}/task/{target}").text


def test_a_mongo_page_sifted_in_python_reads_only_as_far_as_the_page(
        dashboard_mongo_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import taskroll.store.mongo as mongo

    pool = f"sift_{uuid.uuid4().hex[:8]}"
    with mongo.MongoStore(dashboard_mongo_server.url, pool) as store:
        with TaskManager(pool, store=store) as manager:
            manager.create_task([{"note": index % 2, "index": index} for index in range(400)])
        converted: list[int] = []  # documents turned into records
        to_record = mongo.to_record
        monkeypatch.setattr(mongo, "to_record",
                            lambda document: converted.append(1) or to_record(document))
        query = '{"filter.note": {"$exists": true}}'  # sifted in Python on every MongoDB
        with _client(store) as client:
            answer = client.get(f"/api/pools/{pool}/tasks",
                                params={"q": query, "size": "20", "sort": "priority"}).json()
            paged = len(converted)
            assert answer["matching"] == 400 and len(answer["rows"]) == 20
            page_two = client.get(f"/api/pools/{pool}/tasks", params={
                "q": query, "size": "20", "sort": "priority", "page": "2"}).json()["rows"]
        assert not {row["id"] for row in answer["rows"]} & {row["id"] for row in page_two}
        assert paged <= 400 + 2 * 101  # the count reads every match, the page about one batch
        store.drop_pool(pool)


def test_actions_change_only_the_status_their_button_names(store: TaskStore,
                                                           mixed_pool: MixedPool) -> None:
    def stat() -> dict[str, int]:
        with TaskManager(POOL, store=store) as manager:
            return manager.task_stat()

    before = stat()
    with _client(store, allow_actions=True) as client:
        header = {TOKEN_HEADER: client.app.state.dashboard.token}  # type: ignore[attr-defined]

        def act(action: str, query: str) -> Any:
            return client.post(f"/api/pools/{POOL}/actions/{action}", headers=header,
                               json={"confirm": True, "query": query})

        # the query box shows done tasks: "reset running" and "retry failed" refuse
        for action in ("reset", "retry"):
            refused = act(action, '{"status": "done"}')
            assert refused.status_code == 400 and "status" in refused.json()["error"]
        assert stat() == before
        # a query that also selects done tasks resets only the running ones among them
        reset = act("reset", '{"status": {"$in": ["running", "done"]}}')
        assert reset.json()["changed"] == 2
        assert stat() == {"done": 4, "failed": 2, "waiting": before["waiting"] + 2}
        retried = act("retry", '{"status": {"$ne": "done"}}')
        assert retried.json()["changed"] == 2 and "failed" not in stat()


def test_an_empty_store_says_so(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'empty.db'}") as store, _client(store) as client:
        home = client.get("/")
        assert home.status_code == 200 and "No task pools" in home.text
        assert client.get("/api/pools").json() == {"pools": []}
        assert client.get("/pool/anything").status_code == 404
        assert client.get("/api/pools/anything/rolling").status_code == 404
