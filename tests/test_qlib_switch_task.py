"""A Qlib user's ``init_instance_by_config`` with ``module_path`` as a module object or a
``.py`` file path (``qlib/utils/mod.py``, ``get_module_by_module_path``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskroll.errors import TaskConfigError
from taskroll.task.spec import init_instance_by_config, set_allowed_modules


@pytest.fixture(autouse=True)
def no_allowlist(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TASKROLL_ALLOWED_MODULES", raising=False)
    set_allowed_modules(None)
    yield
    set_allowed_modules(None)


def _module_file(folder: Path) -> Path:
    path = folder / "my_models.py"
    path.write_text("class Scaled:\n"
                    "    def __init__(self, factor=2):\n"
                    "        self.factor = factor\n", encoding="utf-8")
    return path


def test_module_path_may_be_a_module_object() -> None:
    made = init_instance_by_config({"class": "OrderedDict", "module_path": collections,
                                    "kwargs": {"a": 1}})
    assert made == collections.OrderedDict(a=1)


def test_module_path_may_be_a_python_file_as_in_qlib(tmp_path: Path) -> None:
    path = _module_file(tmp_path)
    made = init_instance_by_config({"class": "Scaled", "module_path": str(path),
                                    "kwargs": {"factor": 3}})
    assert type(made).__name__ == "Scaled" and made.factor == 3
    again = init_instance_by_config({"class": "Scaled", "module_path": str(path)})
    assert again.factor == 2


def test_a_missing_python_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=r"no_such\.py"):
        init_instance_by_config({"class": "X", "module_path": str(tmp_path / "no_such.py")})


def test_a_python_file_is_refused_under_a_module_allowlist(tmp_path: Path) -> None:
    path = _module_file(tmp_path)
    set_allowed_modules("taskroll.")
    with pytest.raises(TaskConfigError, match="allow"):
        init_instance_by_config({"class": "Scaled", "module_path": str(path)})
