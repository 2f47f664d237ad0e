"""Which modules task cfgs may import (the allowlist) and how a ``module_path`` is loaded.

A cfg's ``module_path`` is a module object, a dotted module name, or (as Qlib's
``get_module_by_module_path``) a ``.py`` file path. A file is loaded only while no module
allowlist is set: an allowlist admits module names, and a file path names none, so under
one a file path is refused. See :mod:`taskroll.task.spec` for the allowlist's rules;
this module is imported by it and imports no other taskroll module but the errors.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from taskroll.errors import TaskConfigError

#: Environment variable holding the comma-separated allowlist of module prefixes.
ALLOWED_MODULES_ENVIRONMENT = "TASKROLL_ALLOWED_MODULES"


def is_module_file(module_path: object) -> bool:
    """Return whether ``module_path`` names a Python file (ends with ``.py``), as Qlib tests."""
    return isinstance(module_path, str) and module_path.endswith(".py")


def module_file_name(path: str) -> str:
    """Return the ``sys.modules`` name Qlib gives the file ``path``
    (``/a/b/my_models.py`` -> ``a_b_my_models``)."""
    stem = re.sub(r"[^0-9a-zA-Z_]", "", path[:-3].replace("/", "_"))
    return re.sub(r"^[^a-zA-Z_]+", "", stem)


def load_module_file(path: str, where: str, allowlist: tuple[str, ...] | None) -> ModuleType:
    """Run the Python file ``path`` as a module registered in ``sys.modules``, as Qlib does.

    Args:
        path: The ``.py`` file.
        where: Path of the cfg inside its task, for error messages.
        allowlist: The module prefixes in force; ``None`` when every module is allowed.

    Returns:
        The module (run again at each call, as in Qlib).

    Raises:
        TaskConfigError: Under an allowlist, or when the file is missing or raises.
    """
    if allowlist is not None:
        raise TaskConfigError(
            f"{where}: module_path {path!r} is a file; a module allowlist is set "
            f"(allowed prefixes: {', '.join(allowlist)}), and a file path names no module "
            "it could allow: put the file's folder on sys.path, name its module and allow it")
    name = module_file_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskConfigError(f"{where}: cannot load module file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError as error:
        sys.modules.pop(name, None)
        raise TaskConfigError(f"{where}: module file {path!r} does not exist") from error
    except Exception as error:  # any error raised by the file's own code
        sys.modules.pop(name, None)
        raise TaskConfigError(f"{where}: cannot run module file {path!r}: "
                              f"{type(error).__name__}: {error}") from error
    return module


class _AllowedModules:
    """The allowlist set by :func:`set_allowed_modules` (``None``: use the environment)."""

    prefixes: tuple[str, ...] | None = None


def set_allowed_modules(prefixes: Iterable[str] | str | None) -> None:
    """Restrict the modules that task definitions may import, for this process.

    Args:
        prefixes: Module prefixes (``["taskroll.", "mylab.models"]`` or the string
            ``"taskroll.,mylab.models"``); ``None`` goes back to the environment
            variable ``TASKROLL_ALLOWED_MODULES`` (unset there: everything allowed).
    """
    if prefixes is None:
        _AllowedModules.prefixes = None
        return
    items = prefixes.split(",") if isinstance(prefixes, str) else list(prefixes)
    _AllowedModules.prefixes = tuple(item.strip() for item in items if item.strip())


def allowed_modules() -> tuple[str, ...] | None:
    """Return the module prefixes in force, or ``None`` when every module is allowed."""
    if _AllowedModules.prefixes is not None:
        return _AllowedModules.prefixes
    raw = os.environ.get(ALLOWED_MODULES_ENVIRONMENT, "").strip()
    if not raw:
        return None
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def is_module_allowed(module_name: str) -> bool:
    """Return whether ``module_name`` matches the allowlist (always true when none is set)."""
    prefixes = allowed_modules()
    if prefixes is None:
        return True
    for prefix in prefixes:
        package = prefix.rstrip(".")
        if module_name == package or module_name.startswith(package + "."):
            return True
    return False


def is_module_path(module_path: str) -> bool:
    """Return whether ``module_path`` is dotted Python identifiers (``pkg.mod``)."""
    return bool(module_path) and all(part.isidentifier() for part in module_path.split("."))


def not_allowed_error(module_path: str, where: str, stand_in: str = "") -> TaskConfigError:
    """Return the error for a module the allowlist does not admit (``stand_in``: the
    taskroll module serving a Qlib name)."""
    source = ("set_allowed_modules()" if _AllowedModules.prefixes is not None
              else ALLOWED_MODULES_ENVIRONMENT)
    served = f" (nor {stand_in!r}, which serves it while Qlib is not installed)" if stand_in else ""
    return TaskConfigError(
        f"{where}: module {module_path!r}{served} is not allowed by {source} "
        f"(allowed prefixes: {', '.join(allowed_modules() or ())}); add its prefix there "
        "if you trust it")


def import_config_module(module_path: Any, where: str,
                         named_by_config: bool = True) -> ModuleType:
    """Return the module a cfg names: a module object, a dotted name, or a ``.py`` file.

    Args:
        module_path: The module, its dotted name, or a Python file path (Qlib's).
        where: Path of the cfg inside its task, for error messages.
        named_by_config: Whether a task named it (then the allowlist applies), rather
            than the program (a default module).

    Raises:
        TaskConfigError: For a malformed or disallowed name, or a failing import.
    """
    if isinstance(module_path, ModuleType):
        return module_path
    if is_module_file(module_path):  # Qlib's "path/to/file.py"
        return load_module_file(module_path, where,
                                allowed_modules() if named_by_config else None)
    if not isinstance(module_path, str) or not is_module_path(module_path):
        raise TaskConfigError(f"{where}: {module_path!r} is not a module path "
                              "(dotted Python identifiers, e.g. 'taskroll.models.linear', "
                              "or a .py file)")
    # the allowlist restricts what a task names; a default module is chosen by the program
    if named_by_config and not is_module_allowed(module_path):
        raise not_allowed_error(module_path, where)
    try:
        return importlib.import_module(module_path)
    except Exception as error:  # ImportError, or any error raised by the module's own code
        raise TaskConfigError(f"{where}: cannot import module {module_path!r}: "
                              f"{type(error).__name__}: {error}") from error
