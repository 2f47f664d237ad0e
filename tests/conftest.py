"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import taskroll
from taskroll import config


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    """Task pool and MLflow store in ``tmp_path``; settings and environment restored afterwards."""
    monkeypatch.setattr(config._SettingsHolder, "current", config.Settings())
    for name in list(os.environ):
        if name.startswith("TASKROLL_"):
            monkeypatch.delenv(name)
    for name in ("TASKROLL_TASK_URL", "TASKROLL_TRACKING_URI", "TASKROLL_ARTIFACT_ROOT",
                 "TASKROLL_TASK_DB_NAME", "TASKROLL_LEASE_SECONDS", "TASKROLL_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    return taskroll.init(task_url=f"sqlite:///{tmp_path / 'tasks.db'}",
                         tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
