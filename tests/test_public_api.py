"""The top-level API is complete and every listed name resolves."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import taskroll

PUBLIC_MODULES = ("taskroll.manage", "taskroll.task.gen", "taskroll.train.trainer",
                  "taskroll.collect", "taskroll.online", "taskroll.errors")


@pytest.mark.parametrize("name", taskroll.__all__)
def test_every_listed_name_resolves(name: str) -> None:
    assert getattr(taskroll, name) is not None


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_classes_are_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [
        name for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isclass(value) and value.__module__ == module_name
    ]
    classes = {name for name in names if inspect.isclass(getattr(module, name))}
    missing = sorted(classes - set(taskroll.__all__))
    assert not missing, f"add to taskroll.__all__: {missing}"


def test_import_is_light() -> None:
    code = "import sys, taskroll; print('mlflow' in sys.modules, 'pandas' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert output == ["False", "False"]


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        taskroll.NoSuchThing  # noqa: B018
