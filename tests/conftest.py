"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import taskroll
from taskroll import config

EXPORTED_VARIABLES = (
    "TASKROLL_TASK_URL", "TASKROLL_TRACKING_URI", "TASKROLL_ARTIFACT_ROOT",
    "TASKROLL_TASK_DB_NAME", "TASKROLL_LEASE_SECONDS", "TASKROLL_MAX_ATTEMPTS",
    "TASKROLL_ALLOWED_MODULES", "TASKROLL_ALLOWED_TRACKING_URIS", "TASKROLL_PROVIDER_URI",
    "TASKROLL_REGION")
"""Variables ``taskroll.init`` may export."""


def clear_taskroll_environment(patch: pytest.MonkeyPatch) -> None:
    """Remove every ``TASKROLL_*`` variable so that ``patch`` restores the environment.

    ``delenv`` of an absent variable records nothing, so a variable that ``init`` exports
    later would outlive the test: each one is first set through ``patch`` (which records
    that it was absent), then removed.
    """
    for name in [*os.environ, *EXPORTED_VARIABLES]:
        if name.startswith("TASKROLL_"):
            patch.setenv(name, "")
            patch.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def feature_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the on-disk feature cache of tests that never call ``init`` out of the home
    folder (tests that do call it get a cache beside their own MLflow store)."""
    if "TASKROLL_FEATURE_CACHE" not in os.environ:
        os.environ["TASKROLL_FEATURE_CACHE"] = str(tmp_path_factory.mktemp("feature_cache"))


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    """Task pool and MLflow store in ``tmp_path``; settings and environment restored afterwards."""
    monkeypatch.setattr(config._SettingsHolder, "current", config.Settings())
    clear_taskroll_environment(monkeypatch)
    return taskroll.init(task_url=f"sqlite:///{tmp_path / 'tasks.db'}",
                         tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
