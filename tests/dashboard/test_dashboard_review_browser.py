"""Review of the dashboard in a real Chromium and on the wire (issue 14).

Markup planted in every text a pool holds is shown as text and never runs; a pool
dropped while its page is open says so in the live part; the security headers hold and
the pages break none of their own rules; encoded paths never leave the static folder.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dashboard_helpers import MixedPool, ServedDashboard, chromium_or_skip, keep_screenshot

from taskroll.dashboard.headers import SECURITY_HEADERS
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, open_store

MARKUP = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"


def _browser_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    return context.new_page()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_or_skip()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable),
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


def test_markup_in_pool_texts_never_runs_in_chromium(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path / 'markup.db'}"
    segments = {"train": ["2018-01-01", "2018-12-31"], "test": ["2019-01-01", "2019-12-31"]}
    with TaskManager(MARKUP, store=url, max_attempts=1, lease_seconds=600) as manager:
        manager.create_task([{"model": {"class": MARKUP}, "note": MARKUP, "window": window,
                              "dataset": {"kwargs": {"segments": segments}}}
                             for window in range(3)])
        manager.worker = MARKUP
        failed = manager.fetch_task()
        assert failed is not None
        try:
            raise ValueError(MARKUP)
        except ValueError as error:
            manager.fail_task(failed, error)
        assert manager.fetch_task() is not None  # running under the planted worker name
    page = _browser_page(browser)
    refused: list[str] = []  # the browser's reports of the pages breaking their own policy
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    with open_store(url) as store, ServedDashboard(store, refresh_seconds=0.3) as served:
        page.goto(served.url + "/")
        page.click("a.pool-link")
        page.wait_for_selector("#failed .task-row")
        assert MARKUP in page.inner_text("h1") and MARKUP in page.inner_text("#running")
        expect(page.locator("body")).to_have_attribute("data-refreshed", re.compile(".*"))
        page.click("#failed .task-row a")
        page.wait_for_selector(".traceback")
        assert MARKUP in page.inner_text(".traceback")
        page.screenshot(path=str(tmp_path / "review-markup-task.png"), full_page=True)
        page.goto(served.url + "/pool/" + quote(MARKUP, safe="") + "/rolling")
        assert MARKUP in page.inner_text("#timeline")
        assert page.evaluate("window.__pwned") is None
        # the pool is dropped while its page is open: the live part says so
        page.goto(served.url + "/")
        page.click("a.pool-link")
        store.drop_pool(MARKUP)
        page.wait_for_selector("#live .gone")
        assert "any more" in page.inner_text("#live")
        page.screenshot(path=str(tmp_path / "review-dropped-pool.png"), full_page=True)
        assert page.evaluate("window.__pwned") is None
    page.context.close()
    assert refused == []
    for name in ("review-markup-task.png", "review-dropped-pool.png"):
        keep_screenshot(tmp_path / name)


@pytest.mark.parametrize("path", ["/static/%2e%2e/app.py", "/static/..%2fapp.py",
                                  "/static/%2e%2e%2f%2e%2e%2fdashboard%2fapp.py",
                                  "/static/..%5capp.py", "/pool/%2e%2e", "/pool/%ff%fe"])
def test_encoded_paths_never_leave_the_static_folder(store: TaskStore, mixed_pool: MixedPool,
                                                      path: str) -> None:
    with ServedDashboard(store) as served, socket.create_connection(
            ("127.0.0.1", served.port), timeout=10) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found" and b"starlette" not in answer


def test_every_response_carries_the_security_headers(store: TaskStore,
                                                     mixed_pool: MixedPool) -> None:
    import httpx

    with ServedDashboard(store) as served:
        for path in ("/", f"/pool/{mixed_pool.pool}", "/api/pools", "/static/dashboard.js",
                     "/pool/missing", f"/api/pools/{mixed_pool.pool}/tasks?q=%7B"):
            answer = httpx.get(served.url + path, timeout=10)
            assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == \
                SECURITY_HEADERS, path


def test_chromium_refuses_eval_and_injected_scripts_on_the_pages(
        browser: Any, store: TaskStore, mixed_pool: MixedPool) -> None:
    page = _browser_page(browser)
    try:
        with ServedDashboard(store) as served:
            page.goto(served.url + f"/pool/{mixed_pool.pool}")
            # from a timer, as a page's own script would (code that the driving tool
            # evaluates directly is exempt from the policy)
            evaluated = page.evaluate(
                "() => new Promise(resolve => setTimeout(() => {"
                " try { resolve(eval('1 + 1')); } catch (error) { resolve(error.name); } }))")
            injected = page.evaluate(
                "() => { window.__injected = 0; const script = document.createElement('script');"
                " script.textContent = 'window.__injected = 1';"
                " document.head.appendChild(script); return window.__injected; }")
            assert page.locator("#live").count() == 1  # the page's own scripts ran
    finally:
        page.context.close()
    assert evaluated == "EvalError"  # no 'unsafe-eval' in the policy
    assert injected == 0  # no inline script


def test_live_refresh_never_piles_requests_up_on_a_slow_store(browser: Any, store: TaskStore,
                                                              mixed_pool: MixedPool) -> None:
    import threading
    import time

    active, peak, calls = [0], [0], [0]
    lock = threading.Lock()
    live_workers = store.live_workers

    def slow_live_workers(pool: str) -> list[str]:  # one call per page or fragment
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.4)
            return live_workers(pool)
        finally:
            with lock:
                active[0] -= 1
                calls[0] += 1

    store.live_workers = slow_live_workers  # type: ignore[method-assign]
    page = _browser_page(browser)
    with ServedDashboard(store, refresh_seconds=0.05) as served:
        page.goto(f"{served.url}/pool/{mixed_pool.pool}")
        for _ in range(200):  # until five refreshes have been answered
            if calls[0] >= 6:
                break
            page.wait_for_timeout(100)
    page.context.close()
    assert calls[0] >= 6 and peak[0] == 1
