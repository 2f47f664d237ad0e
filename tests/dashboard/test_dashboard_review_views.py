"""Review of the dashboard's views (issue 14): rolling, online and ensembles under trouble.

Malformed segments, an unreachable tracking store (the views say so, and stop trying),
unreadable online files, and ensembles whose runs gain their artifacts later.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from taskroll import config
from taskroll.dashboard.app import create_app
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store
from taskroll.store.references import RecorderReference


def _client(store: TaskStore, **options: Any) -> TestClient:
    return TestClient(create_app(store, **options), raise_server_exceptions=False)


def test_rolling_view_leaves_out_malformed_segments(tmp_path: Path) -> None:
    def window(test: list[str]) -> dict[str, Any]:
        return {"model": {"class": "M"}, "test": test[0],
                "dataset": {"kwargs": {"segments": {"train": ["2010-01-01", "2011-01-01"],
                                                    "test": test}}}}

    url = f"sqlite:///{tmp_path / 'rolling.db'}"
    with TaskManager("p", store=url) as manager:
        manager.create_task([window(["2020-01-01", "2020-12-31"]), window(["2020-13-45", "2021"]),
                             window(["0000-01-01", "2021-01-01"]), window(["abcdefghij", "x" * 10])])
    with open_store(url) as store, _client(store) as client:
        page = client.get("/pool/p/rolling")
        data = client.get("/api/pools/p/rolling").json()
    assert page.status_code == 200 and page.text.count('class="segment test"') == 1
    assert [item["test"] for item in data["models"]["M"]] == [["2020-01-01", "2020-12-31"]]


@pytest.fixture
def refusing_tracking_server() -> Iterator[tuple[str, list[int]]]:
    """A tracking URI whose server accepts connections and closes them; counts them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()


def test_unreachable_tracking_store_degrades_with_a_message(
        isolated_settings: config.Settings, refusing_tracking_server: tuple[str, list[int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import taskroll

    uri, accepted = refusing_tracking_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = isolated_settings.resolved_task_url()
    taskroll.init(task_url=url, tracking_uri=uri)
    runs = 10
    with TaskManager("p", store=url) as manager:
        manager.create_task([{"model": {"class": "M"}, "dataset": {"kwargs": {"segments": {
            "test": [f"{2000 + index}-01-01", f"{2000 + index}-12-31"]}}}}
            for index in range(runs)])
        for index in range(runs):
            task = manager.fetch_task()
            assert task is not None
            manager.commit_task_res(task, RecorderReference(f"{index:032x}", uri))
    with open_store(url) as store, _client(store) as client:
        data = client.get("/api/pools/p/rolling").json()
        assert data["metrics_error"].startswith(f"the IC of {runs} run(s) could not be read")
        assert sum(len(windows) for windows in data["models"].values()) == runs
        tries = [len(accepted)]
        page = client.get("/pool/p/rolling")
        assert page.status_code == 200 and 'id="metrics-error"' in page.text
        tries.append(len(accepted))
        ensembles = client.get("/api/pools/p/ensembles").json()
        assert ensembles["runs"] == ensembles["skipped"] == runs
        tries.append(len(accepted))
    # each view stopped trying once the store proved unreachable
    assert 0 < tries[0] < runs and tries[1] - tries[0] < runs and tries[2] - tries[1] < runs


def test_unreadable_online_files_leave_the_rest_shown(store: TaskStore, tmp_path: Path) -> None:
    folder = tmp_path / "online"
    folder.mkdir()
    (folder / "report.csv").write_text("datetime,ic,rank_ic\n2024-01-02,0.1,0.2\n")
    (folder / "report.json").write_text('{"ic_mean": 0.1')  # being rewritten
    (folder / "signals.parquet").write_bytes(b"PAR1 not a parquet file")
    with _client(store, online_folder=folder) as client:
        page = client.get("/online")
        data = client.get("/api/online").json()
    assert page.status_code == 200 and page.text.count('class="query-error online-problem"') == 2
    assert data["daily"] == [{"date": "2024-01-02", "ic": 0.1, "rank_ic": 0.2}]
    assert [line.split(" ")[0] for line in data["problems"]] == ["report.json", "signals.parquet"]
    (folder / "report.json").write_text("[1, 2]")  # JSON, but not a summary
    with _client(store, online_folder=folder) as client:
        assert client.get("/online").status_code == 200
    with _client(store, online_folder=tmp_path / "missing") as client:
        assert "does not exist" in client.get("/api/online").json()["problems"][0]


def test_ensembles_read_again_once_the_artifacts_exist(
        isolated_settings: config.Settings) -> None:
    import numpy as np
    import pandas as pd

    from taskroll import R
    from taskroll.train.recorder import Recorder

    url = isolated_settings.resolved_task_url()
    segments = {"test": ["2020-01-01", "2020-12-31"]}
    with TaskManager("p", store=url) as manager:
        manager.create_task([{"model": {"class": "M"},
                              "dataset": {"kwargs": {"segments": segments}}}])
        task = manager.fetch_task()
        assert task is not None
        with R.start(experiment_name="late") as recorder:
            recorder.log_metrics(IC=0.1)
        manager.commit_task_res(task, recorder)
    with open_store(url) as store, _client(store) as client:
        first = client.get("/api/pools/p/ensembles").json()
        assert first["runs"] == first["skipped"] == 1 and first["ensembles"] == {}
        index = pd.MultiIndex.from_product([pd.bdate_range("2020-01-01", periods=20), list("ABCD")],
                                           names=["datetime", "instrument"])
        label = pd.DataFrame({"LABEL0": np.random.default_rng(0).normal(size=len(index))},
                             index=index)
        Recorder.from_reference(recorder.to_reference()).save_objects(
            **{"pred.pkl": label.rename(columns={"LABEL0": "score"}), "label.pkl": label})
        second = client.get("/api/pools/p/ensembles").json()
    assert second["skipped"] == 0 and second["ensembles"]["M (rolling)"]["days"] == 20
    assert second["ensembles"]["M (rolling)"]["IC"] == pytest.approx(1.0)


def test_a_large_rolling_pool_shows_its_newest_windows_and_says_so(tmp_path: Path) -> None:
    import datetime as dt

    from taskroll.dashboard.views import MAX_WINDOWS

    first = dt.date(2000, 1, 3)
    days = [(first + dt.timedelta(days=index)).isoformat() for index in range(MAX_WINDOWS + 3)]
    url = f"sqlite:///{tmp_path / 'large.db'}"
    with TaskManager("p", store=url) as manager:
        ids = manager.create_task([{"model": {"class": "M"}, "dataset": {"kwargs": {
            "segments": {"test": [day, day]}}}} for day in days])
    with open_store(url) as store, _client(store) as client:
        data = client.get("/api/pools/p/rolling").json()
        page = client.get("/pool/p/rolling")
    drawn = [window["id"] for window in data["models"]["M"]]
    assert drawn == ids[3:]  # the newest, in test order; the three oldest left out
    assert f"of the pool's {MAX_WINDOWS + 3} tasks" in data["windows_note"]
    assert 'id="windows-note"' in page.text
