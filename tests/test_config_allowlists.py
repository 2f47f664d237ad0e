"""taskroll.init wires the module and tracking-URI allowlists (for this process and workers)."""

from __future__ import annotations

import os
import sys

import pytest

import taskroll
from taskroll.config import Settings
from taskroll.errors import TaskConfigError
from taskroll.task.spec import allowed_modules, init_instance_by_config


def test_allowed_modules_from_init_block_other_modules(isolated_settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKROLL_ALLOWED_MODULES", raising=False)
    taskroll.init(allowed_modules=["taskroll.", "mylab.models"])
    try:
        assert os.environ["TASKROLL_ALLOWED_MODULES"] == "taskroll.,mylab.models"
        assert allowed_modules() == ("taskroll.", "mylab.models")
        sys.modules.pop("colorsys", None)
        with pytest.raises(TaskConfigError, match="colorsys"):
            init_instance_by_config({"class": "Colour", "module_path": "colorsys"})
        assert "colorsys" not in sys.modules
        model = init_instance_by_config({"class": "LinearModel",
                                         "module_path": "taskroll.models.linear"})
        assert type(model).__name__ == "LinearModel"
    finally:
        os.environ.pop("TASKROLL_ALLOWED_MODULES", None)


@pytest.mark.parametrize("setting", ["allowed_modules", "allowed_tracking_uris"])
@pytest.mark.parametrize("value", [[], "", " , "])
def test_an_empty_allowlist_is_refused_and_changes_nothing(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, setting: str,
        value: object) -> None:
    monkeypatch.delenv("TASKROLL_ALLOWED_MODULES", raising=False)
    monkeypatch.delenv("TASKROLL_ALLOWED_TRACKING_URIS", raising=False)
    before = taskroll.get_settings()
    with pytest.raises(TaskConfigError, match="at least one"):
        taskroll.init(task_url="sqlite:///elsewhere.db", **{setting: value})
    assert taskroll.get_settings() == before
    assert "TASKROLL_ALLOWED_MODULES" not in os.environ
    assert "TASKROLL_ALLOWED_TRACKING_URIS" not in os.environ


def test_allowed_tracking_uris_are_exported(isolated_settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKROLL_ALLOWED_TRACKING_URIS", raising=False)
    taskroll.init(allowed_tracking_uris="sqlite:///a.db, sqlite:///b.db")
    try:
        assert os.environ["TASKROLL_ALLOWED_TRACKING_URIS"] == "sqlite:///a.db,sqlite:///b.db"
    finally:
        os.environ.pop("TASKROLL_ALLOWED_TRACKING_URIS", None)
