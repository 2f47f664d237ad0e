"""Helpers of the dashboard tests: a pool in every state, a served dashboard, Chromium.

:func:`fill_mixed_pool` makes a real pool with tasks in every interesting state: done
(with results), running under a live lease, failed with a traceback, and waiting.
:class:`ServedDashboard` runs the dashboard in a uvicorn server thread on a free
loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskroll.manage import TaskManager
from taskroll.store import TaskStore

POOL = "rolling_pool"
MODELS = ("LinearModel", "LGBModel")
CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots of the browser tests, kept beside the test output (also under tmp_path).
SCREENSHOT_FOLDER = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"


def task_definition(model: str, window: int) -> dict[str, Any]:
    """A rolling task: model class and train/valid/test segments of window ``window``."""
    year = 2016 + window
    return {
        "model": {"class": model, "module_path": "taskroll.models.linear", "kwargs": {}},
        "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset", "kwargs": {
            "segments": {"train": [f"{year - 3}-01-01", f"{year - 1}-06-30"],
                         "valid": [f"{year - 1}-07-01", f"{year - 1}-12-31"],
                         "test": [f"{year}-01-01", f"{year}-12-31"]}}},
        "window": window,
    }


@dataclass
class MixedPool:
    """A pool in every state: ids per status and the URL of its store."""

    url: str
    pool: str
    done: list[str]
    running: list[str]
    failed: list[str]
    waiting: list[str]


def _raise_and_catch(window: int) -> BaseException:
    try:
        raise ValueError(f"window {window} has no data <script>alert(1)</script>")
    except ValueError as error:
        return error


def fill_mixed_pool_on(manager: TaskManager) -> dict[str, list[str]]:
    """Create 12 tasks: 4 done, 2 failed (with tracebacks), 2 running (live lease), 4 waiting.

    ``manager`` should have ``max_attempts=1`` (a failure is final) and a long lease.

    Returns:
        The ids per status.
    """
    definitions = [task_definition(model, window) for window in range(6) for model in MODELS]
    manager.create_task(definitions)
    done, failed, running = [], [], []
    for index in range(4):
        task = manager.fetch_task()
        assert task is not None
        manager.commit_task_res(task, {"score": index})
        done.append(task["_id"])
    for index in range(2):
        task = manager.fetch_task()
        assert task is not None
        manager.fail_task(task, _raise_and_catch(index))
        failed.append(task["_id"])
    for _ in range(2):
        task = manager.fetch_task()
        assert task is not None
        running.append(task["_id"])
    waiting = [task["_id"] for task in manager.query({"status": "waiting"})]
    return {"done": done, "failed": failed, "running": running, "waiting": waiting}


def fill_mixed_pool(url: str, pool: str = POOL) -> MixedPool:
    """:func:`fill_mixed_pool_on` a new pool of the store at ``url``."""
    with TaskManager(pool, store=url, max_attempts=1, lease_seconds=600) as manager:
        ids = fill_mixed_pool_on(manager)
    return MixedPool(url, pool, **ids)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedDashboard:
    """The dashboard in a uvicorn server thread on loopback; ``url`` is its base URL."""

    def __init__(self, store: TaskStore, **options: Any) -> None:
        import uvicorn

        from taskroll.dashboard.app import create_app

        self.app = create_app(store, **options)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedDashboard:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *details: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def chromium_or_skip() -> Path:
    """Debian's Chromium; skip without it, but fail under ``CI=true``."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing; run scripts/install-test-servers.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def keep_screenshot(path: Path) -> None:
    """Copy a screenshot to :data:`SCREENSHOT_FOLDER` (the test output folder)."""
    SCREENSHOT_FOLDER.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, SCREENSHOT_FOLDER / path.name)


def record_window_runs(url: str, windows: list[tuple[str, int, float]],
                       experiment: str = "dash") -> dict[str, Any]:
    """Finish tasks of the mixed pool as trained runs: metrics, ``pred.pkl``, ``label.pkl``.

    Each ``(model, window, noise)`` task gets a run whose labels are random values seeded
    by the window (one market for every model) on 5 instruments over its test year's
    first 30 weekdays, and whose prediction is the label plus ``noise`` times noise of its
    own; its ``IC`` and ``Rank IC`` metrics are logged too.

    Returns:
        ``{task id: (prediction, label)}``.
    """
    import numpy as np
    import pandas as pd

    from taskroll import R
    from taskroll.train.record import calc_ic

    saved: dict[str, Any] = {}
    with TaskManager(POOL, store=url) as manager:
        for model, window, noise in windows:
            task = manager.fetch_task({"filter.window": window, "filter.model.class": model})
            assert task is not None, (model, window)
            market = np.random.default_rng(window)  # one market: models share the labels
            own = np.random.default_rng(1000 + window * 10 + len(model))
            days = pd.bdate_range(f"{2016 + window}-01-01", periods=30)
            index = pd.MultiIndex.from_product([days, list("ABCDE")],
                                               names=["datetime", "instrument"])
            label = pd.DataFrame({"LABEL0": market.normal(size=len(index))}, index=index)
            prediction = pd.DataFrame(
                {"score": label["LABEL0"] + noise * own.normal(size=len(index))}, index=index)
            ic, rank_ic = calc_ic(prediction["score"], label["LABEL0"])
            with R.start(experiment_name=experiment) as recorder:
                recorder.save_objects(**{"pred.pkl": prediction, "label.pkl": label})
                recorder.log_metrics(**{"IC": float(ic.mean()), "Rank IC": float(rank_ic.mean())})
            manager.commit_task_res(task, recorder)
            saved[task["_id"]] = (prediction, label)
    return saved
