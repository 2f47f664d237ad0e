"""Task configs: building objects from cfgs, placeholders, canonical JSON and task ids.

A cfg is ``{"class": "Name", "module_path": "pkg.mod", "kwargs": {...}}``, a
class, an instance, or a ``"pkg.mod.Name"`` string. A task is a dict of cfgs:
``{"model": cfg, "dataset": cfg, "record": [cfg, ...]}``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib
import json
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from taskroll.errors import TaskConfigError


def _import_module(module_path: str | ModuleType, where: str) -> ModuleType:
    if isinstance(module_path, ModuleType):
        return module_path
    try:
        return importlib.import_module(module_path)
    except ImportError as error:
        raise TaskConfigError(f"{where}: cannot import module {module_path!r}: {error}") from error


def get_callable_by_config(config: Any, default_module: str | ModuleType | None = None,
                           where: str = "config") -> tuple[Any, dict[str, Any]]:
    """Resolve a cfg into ``(class_or_callable, kwargs)`` without calling it.

    Args:
        config: A cfg dict, a ``"module.Name"`` string, or a class/callable.
        default_module: Module searched when the cfg has no ``module_path``.
        where: Path of the cfg inside its task, used in error messages.

    Returns:
        The class (or callable) and a copy of its kwargs.

    Raises:
        TaskConfigError: When the cfg is malformed or names something that does not exist.
    """
    if isinstance(config, Mapping):
        if "class" not in config:
            raise TaskConfigError(f"{where}: a cfg needs a 'class' key, got keys {sorted(config)}")
        name = config["class"]
        kwargs = config.get("kwargs", {}) or {}
        if not isinstance(kwargs, Mapping):
            raise TaskConfigError(f"{where}.kwargs: must be a dict, got {type(kwargs).__name__}")
        if not isinstance(name, str):
            return name, dict(kwargs)
        module_path = config.get("module_path", default_module)
        if module_path is None:
            if "." not in name:
                raise TaskConfigError(f"{where}: 'module_path' is missing for class {name!r}")
            module_path, name = name.rsplit(".", 1)
        module = _import_module(module_path, where)
        try:
            return getattr(module, name), dict(kwargs)
        except AttributeError as error:
            raise TaskConfigError(
                f"{where}: module {module.__name__!r} has no class {name!r}"
            ) from error
    if isinstance(config, str):
        if "." in config:
            module_name, name = config.rsplit(".", 1)
            module = _import_module(module_name, where)
        elif default_module is not None:
            module, name = _import_module(default_module, where), config
        else:
            raise TaskConfigError(f"{where}: cannot locate {config!r}; give 'module.Name'")
        try:
            return getattr(module, name), {}
        except AttributeError as error:
            raise TaskConfigError(f"{where}: module {module.__name__!r} has no {name!r}") from error
    if callable(config):
        return config, {}
    raise TaskConfigError(f"{where}: unsupported cfg type {type(config).__name__}")


def init_instance_by_config(config: Any, default_module: str | ModuleType | None = None,
                            accept_types: type | tuple[type, ...] = (), where: str = "config",
                            **extra_kwargs: Any) -> Any:
    """Build an object from a cfg, as Qlib's ``init_instance_by_config``.

    Args:
        config: A cfg dict, a ``"module.Name"`` string, a class, or an instance. An
            instance of ``accept_types`` (or any non-cfg object) is returned unchanged.
        default_module: Module searched when the cfg has no ``module_path``.
        accept_types: Types returned as they are.
        where: Path of the cfg inside its task (``"task.model"``), used in error messages.
        **extra_kwargs: Merged over the cfg's kwargs.

    Returns:
        The built object.

    Raises:
        TaskConfigError: When the cfg is malformed, the class does not exist, or its
            constructor rejects the kwargs.
    """
    if accept_types and isinstance(config, accept_types):
        return config
    if not isinstance(config, (Mapping, str, type)):
        return config
    factory, kwargs = get_callable_by_config(config, default_module, where)
    kwargs.update(extra_kwargs)
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise TaskConfigError(f"{where}: cannot build {getattr(factory, '__name__', factory)}: "
                              f"{error}") from error


def fill_placeholder(config: Any, placeholder_values: Mapping[str, Any]) -> Any:
    """Return a copy of ``config`` with every string placeholder replaced.

    Any string value equal to a key of ``placeholder_values`` (e.g. ``"<MODEL>"``)
    anywhere in nested dicts, lists and tuples is replaced by its value; the
    replacement object itself is not copied.

    Args:
        config: Nested config.
        placeholder_values: Map from placeholder string to the object to put there.

    Returns:
        A new config; the input is left unchanged.
    """

    def fill(node: Any) -> Any:
        if isinstance(node, str) and node in placeholder_values:
            return placeholder_values[node]
        if isinstance(node, Mapping):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, tuple):
            return tuple(fill(item) for item in node)
        return copy.copy(node) if isinstance(node, (set, bytearray)) else node

    return fill(config)


def normalise(value: Any, where: str = "task") -> Any:
    """Return the JSON-compatible canonical form used for task identity and filters.

    Tuples become lists, dates and timestamps ISO strings (midnight dates as
    ``YYYY-MM-DD``), numpy scalars and arrays Python values, classes
    ``"module.Name"``. Dict keys must be strings.

    Raises:
        TaskConfigError: For values with no canonical form (e.g. open files, NaN keys).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        # 1.0 == 1 in Python, so both must give the same task id
        return int(value) if value.is_integer() else float(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TaskConfigError(f"{where}: dict keys must be strings, got {key!r}")
            result[key] = normalise(item, f"{where}.{key}")
        return result
    if isinstance(value, (list, tuple)):
        return [normalise(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dt.datetime) or type(value).__name__ == "Timestamp":
        stamp = value if isinstance(value, dt.datetime) else value.to_pydatetime()
        if stamp.time() == dt.time(0) and stamp.tzinfo is None:
            return stamp.date().isoformat()
        return stamp.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    numpy_item = getattr(value, "item", None)
    if callable(numpy_item) and type(value).__module__ == "numpy":
        if getattr(value, "ndim", 0):
            return normalise(value.tolist(), where)
        return normalise(numpy_item(), where)
    raise TaskConfigError(
        f"{where}: a {type(value).__name__} has no canonical JSON form; "
        "use plain data (dict, list, str, numbers, dates) in task definitions"
    )


def canonical_json(task: Any) -> str:
    """Encode ``task`` as canonical JSON: normalised values, sorted keys, no spaces."""
    return json.dumps(normalise(task), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def task_id(task: Any) -> str:
    """Return the SHA-256 hex digest of :func:`canonical_json`: equal tasks, equal ids."""
    return hashlib.sha256(canonical_json(task).encode("utf-8")).hexdigest()
