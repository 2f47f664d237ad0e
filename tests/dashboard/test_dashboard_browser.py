"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One browser for the module; the dashboard runs in a uvicorn thread on loopback against a
real SQLite pool with done, running (live lease), failed (traceback) and waiting tasks.
Each page's screenshot is saved under ``tmp_path`` and copied to ``test-output/dashboard/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import (
    POOL,
    MixedPool,
    ServedDashboard,
    chromium_or_skip,
    fill_mixed_pool,
    keep_screenshot,
    record_window_runs,
)

from taskroll.dashboard.data import STATUSES
from taskroll.manage import TaskManager
from taskroll.store import open_store

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    executable = chromium_or_skip()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable),
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; no request may leave the machine (the pages ship their own assets)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    outside: list[str] = []
    opened.on("request", lambda request: outside.append(request.url)
              if not request.url.startswith(("http://127.0.0.1", "data:", "about:")) else None)
    yield opened
    context.close()
    assert outside == []


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    keep_screenshot(path)


def _counts(page: Any) -> dict[str, int]:
    return {status: int(page.inner_text(f'#live .badge.{status} .count'))
            for status in STATUSES}


def _stat(mixed: MixedPool) -> dict[str, int]:
    with TaskManager(mixed.pool, store=mixed.url) as manager:
        stat = manager.task_stat()
    return {status: stat.get(status, 0) for status in STATUSES}


def test_pages_filter_traceback_paging_and_live_refresh(page: Any, mixed_pool: MixedPool,
                                                        tmp_path: Path) -> None:
    with open_store(mixed_pool.url) as store, \
            ServedDashboard(store, refresh_seconds=0.5) as served:
        # home: one row per pool, counts as task_stat counts them
        page.goto(served.url + "/")
        row = page.locator(f'tr.pool-row[data-pool="{POOL}"]')
        assert row.count() == 1
        assert _counts(page) == _stat(mixed_pool)
        assert row.locator("td.workers").inner_text() == "1"
        _shot(page, tmp_path, "home")

        # pool page: failed first with their error, running with worker and lease left
        row.locator("a.pool-link").click()
        page.wait_for_selector("#failed")
        assert _counts(page) == _stat(mixed_pool)
        failed_rows = page.locator("table.failed-list tr.task-row")
        assert failed_rows.count() == 2
        assert "task raised" in failed_rows.first.inner_text()
        assert "ValueError: window" in failed_rows.first.inner_text()
        running_text = page.inner_text("table.running-list")
        assert "lease" in running_text and page.locator("table.running-list tr.task-row").count() == 2
        assert page.inner_text("#matching") == "12"
        _shot(page, tmp_path, "pool")

        # the query box filters; status buttons narrow further
        page.fill("#query", '{"filter.model.class": "LGBModel"}')
        page.click("#apply")
        page.wait_for_selector("#matching")
        assert page.inner_text("#matching") == "6"
        page.check('input[name="status"][value="waiting"]')
        page.click("#apply")
        page.wait_for_selector("#matching")
        with TaskManager(POOL, store=mixed_pool.url) as manager:
            expected = manager.task_stat({"filter.model.class": "LGBModel", "status": "waiting"})
        assert int(page.inner_text("#matching")) == expected["waiting"] > 0
        assert page.locator("#table tr.task-row.waiting").count() == expected["waiting"]
        assert page.locator("#table tr.task-row").count() == expected["waiting"]

        # bad input gives an inline error, not a server error
        response = page.goto(served.url + f"/pool/{POOL}?q=" + "%7B%22status%22%3A")
        assert response is not None and response.status == 400
        assert "not valid JSON" in page.inner_text("#query-error")
        page.fill("#query", '{"status": {"$regex": "fail"}}')
        page.click("#apply")
        assert "unsupported operator" in page.inner_text("#query-error")
        _shot(page, tmp_path, "bad-query")

        # paging and sorting through the links
        page.goto(served.url + f"/pool/{POOL}?size=5&sort=created&dir=asc")
        first_page = page.locator("#table tr.task-row").evaluate_all(
            "rows => rows.map(row => row.dataset.id)")
        page.click("a.page-next")
        page.wait_for_selector("#page-number")
        assert page.inner_text("#page-number") == "2"
        second_page = page.locator("#table tr.task-row").evaluate_all(
            "rows => rows.map(row => row.dataset.id)")
        assert len(first_page) == 5 and len(second_page) == 5
        assert not set(first_page) & set(second_page)
        page.click('#table a.sort[data-sort="priority"]')
        assert "sort=priority" in page.url

        # a failed task's page shows its traceback (escaped)
        page.goto(served.url + f"/pool/{POOL}/task/{mixed_pool.failed[0]}")
        traceback = page.inner_text("#failures pre.traceback")
        assert "Traceback (most recent call last)" in traceback and "ValueError" in traceback
        assert "<script>alert(1)</script>" in traceback  # shown as text, not run
        _shot(page, tmp_path, "task")

        # live refresh: a change in the pool shows up without a reload
        page.goto(served.url + f"/pool/{POOL}")
        page.evaluate("window.notReloaded = true")
        with TaskManager(POOL, store=mixed_pool.url) as manager:
            task = manager.fetch_task()
            assert task is not None
            manager.commit_task_res(task, {"late": True})
        playwright_api.expect(page.locator("#live .badge.done .count")).to_have_text(
            "5", timeout=15000)
        assert page.evaluate("window.notReloaded") is True
        assert _counts(page) == _stat(mixed_pool)

        # rolling view: a timeline of every window
        page.goto(served.url + f"/pool/{POOL}/rolling")
        assert page.locator("svg.timeline rect.segment.test").count() == 12
        _shot(page, tmp_path, "rolling")


def test_actions_ask_for_confirmation(page: Any, tmp_path: Path) -> None:
    mixed = fill_mixed_pool(f"sqlite:///{tmp_path / 'actions.db'}")
    with open_store(mixed.url) as store, \
            ServedDashboard(store, refresh_seconds=0.5, allow_actions=True) as served:
        page.goto(served.url + f"/pool/{POOL}")
        dialogs: list[str] = []

        def answer(dialog: Any, accept: bool) -> None:
            dialogs.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", lambda dialog: answer(dialog, False))
        page.click('button.action[data-action="retry"]')
        page.wait_for_timeout(300)
        assert _stat(mixed)["failed"] == 2  # dismissed: nothing changed
        page.once("dialog", lambda dialog: answer(dialog, True))
        page.click('button.action[data-action="retry"]')
        playwright_api.expect(page.locator("#action-result")).to_contain_text("2 task")
        assert _stat(mixed)["failed"] == 0 and len(dialogs) == 2
        playwright_api.expect(page.locator("#live .badge.failed .count")).to_have_text("0")
        _shot(page, tmp_path, "actions")


def test_rolling_charts_draw_the_recorders_ic(page: Any, isolated_settings: Any,
                                              tmp_path: Path) -> None:
    url = isolated_settings.resolved_task_url()
    fill_mixed_pool(url)
    record_window_runs(url, [("LGBModel", 4, 0.5), ("LGBModel", 5, 1.0), ("LinearModel", 5, 2.0)])
    with open_store(url) as store, ServedDashboard(store, refresh_seconds=0) as served:
        page.goto(served.url + f"/pool/{POOL}/rolling")
        page.wait_for_selector('#ic-chart[data-drawn="yes"]')
        page.wait_for_selector('#rank-ic-chart[data-drawn="yes"]')
        assert page.locator("#ic-chart canvas").count() == 1
        assert "LGBModel" in page.inner_text("#ic-chart")
        page.click("#compute-ensembles")
        page.wait_for_selector('#ensemble-chart[data-drawn="yes"]', timeout=30000)
        names = page.locator("#ensemble-table tr.ensemble-row td:first-child").all_inner_texts()
        assert sorted(names) == ["LGBModel (rolling)", "LinearModel (rolling)",
                                 "average of all models"]
        _shot(page, tmp_path, "rolling-ic")


def test_online_view_draws_the_served_ic(page: Any, isolated_settings: Any,
                                         tmp_path: Path) -> None:
    import pandas as pd

    from taskroll import R
    from taskroll.online.models import (
        CHAIN_TAG,
        MODEL_CLASS_TAG,
        TEST_START_TAG,
        TRAINED_TAG,
        WINDOW_TAG,
    )

    for window, start in enumerate(("2024-01-02", "2024-02-01")):
        with R.start(experiment_name="online_strategy") as recorder:
            recorder.set_tags(**{CHAIN_TAG: "chain-a", WINDOW_TAG: f"w{window}",
                                 TEST_START_TAG: start, MODEL_CLASS_TAG: "LGBModel",
                                 TRAINED_TAG: "true"})
    folder = tmp_path / "online"
    (folder / "report").mkdir(parents=True)
    days = pd.bdate_range("2024-01-02", "2024-02-28")
    pd.DataFrame({"datetime": days, "ic": [0.01 * (index % 7) for index in range(len(days))],
                  "rank_ic": [0.02] * len(days)}).to_csv(folder / "report" / "report.csv",
                                                         index=False)
    index = pd.MultiIndex.from_product([days, ["A", "B"]], names=["datetime", "instrument"])
    pd.DataFrame({"score": 1.0}, index=index).to_parquet(folder / "signals.parquet")
    with open_store(isolated_settings.resolved_task_url()) as store, ServedDashboard(
            store, refresh_seconds=0, online_folder=folder,
            online_experiments=["online_strategy"]) as served:
        page.goto(served.url + "/online")
        page.wait_for_selector('#online-chart[data-drawn="yes"]')
        assert page.inner_text("#served-days") == str(len(days))
        assert page.locator("#served-models tr.served-model").count() == 2
        _shot(page, tmp_path, "online")
