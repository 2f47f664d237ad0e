"""Dashboard render times on a large pool: home and pool pages, server and (optionally) browser.

Run: ``.venv/bin/python benchmarks/dashboard.py [--tasks 100000] [--repeat 5] [--browser]``.
Fills a SQLite pool (and a PostgreSQL one when ``TASKROLL_BENCH_POSTGRES_URL`` is set)
with ``--tasks`` tasks in mixed statuses (60% done, 30% waiting, 5% failed with an error,
5% part_done, 200 running under live leases), serves the dashboard with uvicorn on
loopback and times each page's full response through httpx (``--browser``: also the
load of the page in headless Chromium, ``/usr/bin/chromium``). Prints one table per
store: median and minimum over ``--repeat`` requests, and the ratio of each median to
the home page's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from taskroll.store import NOW, TaskStore, open_store, parse_query

POOL = "bench_dashboard"
BATCH = 5000


def fill(store: TaskStore, pool: str, tasks: int) -> None:
    """Insert ``tasks`` tasks with mixed statuses; 200 of them running under live leases."""
    cycle = ["done"] * 12 + ["waiting"] * 6 + ["failed", "part_done"]
    error = json.dumps({"kind": "task raised", "message": "ValueError: bench", "attempt": 1,
                        "traceback": "Traceback (most recent call last):\nValueError: bench",
                        "history": []})
    for start in range(0, tasks, BATCH):
        records = []
        for index in range(start, min(tasks, start + BATCH)):
            definition = {"model": {"class": ("LinearModel", "LGBModel")[index % 2]},
                          "window": index, "dataset": {"kwargs": {"segments": {
                              "test": [f"{2000 + index % 20}-01-01", f"{2000 + index % 20}-12-31"]}}}}
            records.append({"_id": f"task{index:08d}", "def": json.dumps(definition),
                            "def_encoding": "json", "filter": definition,
                            "status": cycle[index % len(cycle)], "priority": index % 7})
        store.insert_many(pool, records)
    store.update_many(pool, parse_query({"status": {"$in": ["done", "failed"]}}),
                      {"finished": NOW, "attempts": 1})
    store.update_many(pool, parse_query({"status": "failed"}), {"error": error})
    store.fetch_many(pool, [], "waiting", "bench-worker", 3600, 200)


class Served:
    """The dashboard in a uvicorn thread on a free loopback port."""

    def __init__(self, store: TaskStore) -> None:
        import socket

        import uvicorn

        from taskroll.dashboard.app import create_app

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(store, refresh_seconds=0),
                                                    host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def timed(action: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and minimum seconds of ``action`` over ``repeat`` calls (after one warm-up)."""
    action()
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), min(seconds)


def measure(url: str, repeat: int, tasks: int, browser: bool) -> list[tuple[str, float, float]]:
    """Time every page of one served dashboard."""
    deep_page = max(1, tasks // 50 - 1)
    pages = [("home /", "/"), ("pool page (newest first)", f"/pool/{POOL}"),
             ("pool page, sort by priority", f"/pool/{POOL}?sort=priority"),
             (f"pool page, page {deep_page}", f"/pool/{POOL}?page={deep_page}"),
             ("pool page, query + status", f"/pool/{POOL}?q=" + httpx.QueryParams(
                 {"x": '{"filter.model.class": "LGBModel"}'})["x"] + "&status=failed"),
             ("JSON: pools", "/api/pools"), ("JSON: one task page", f"/api/pools/{POOL}/tasks")]
    rows = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for name, path in pages:
            def get(path: str = path) -> None:
                response = client.get(path)
                response.raise_for_status()
            rows.append((name, *timed(get, repeat)))
    if browser:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                  args=["--no-sandbox"])
            page = chromium.new_page()
            for name, path in pages[:2]:
                rows.append((f"browser load: {name}",
                             *timed(lambda path=path: page.goto(url + path, wait_until="load"),
                                    repeat)))
            chromium.close()
    return rows


def report(store_name: str, tasks: int, rows: list[tuple[str, float, float]]) -> None:
    """Print one table: median, minimum, ratio to the home page's median."""
    base = rows[0][1] or 1e-9
    print(f"\n{store_name}, {tasks:,} tasks")
    print(f"| {'page':<40} | median ms | min ms | x home |")
    print(f"|{'-' * 42}|-----------|--------|--------|")
    for name, median, minimum in rows:
        print(f"| {name:<40} | {median * 1000:9.1f} | {minimum * 1000:6.1f} | {median / base:6.2f} |")


def run(store_name: str, url: str, tasks: int, repeat: int, browser: bool) -> None:
    """Fill one store, serve it, measure, print, and drop the pool."""
    with open_store(url) as store:
        store.drop_pool(POOL)
        began = time.perf_counter()
        fill(store, POOL, tasks)
        print(f"{store_name}: filled {tasks:,} tasks in {time.perf_counter() - began:.1f} s "
              f"({store.count_by_status(POOL, [])})")
        served = Served(store)
        try:
            report(store_name, tasks, measure(served.url, repeat, tasks, browser))
        finally:
            served.stop()
            store.drop_pool(POOL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time page loads in Chromium")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        run("SQLite", f"sqlite:///{Path(folder) / f'{uuid.uuid4().hex}.db'}", arguments.tasks,
            arguments.repeat, arguments.browser)
    postgres = os.environ.get("TASKROLL_BENCH_POSTGRES_URL")
    if postgres:
        run("PostgreSQL", postgres, arguments.tasks, arguments.repeat, arguments.browser)
    else:
        print("\n(PostgreSQL skipped: set TASKROLL_BENCH_POSTGRES_URL to measure it too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
