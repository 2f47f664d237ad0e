"""Task configs: building objects from cfgs, placeholders, canonical JSON and task ids.

A cfg is ``{"class": "Name", "module_path": "pkg.mod", "kwargs": {...}}``, a
class, an instance, or a ``"pkg.mod.Name"`` string. A task is a dict of cfgs:
``{"model": cfg, "dataset": cfg, "record": [cfg, ...]}``.

Limits, so that a hostile pool cannot crash or take over a worker:

* Nesting: task definitions (and cfgs) nest at most :data:`MAX_DEPTH` (100) levels of
  dicts, lists and tuples; deeper values raise :class:`~taskroll.errors.TaskConfigError`
  instead of ``RecursionError``.
* Modules: whoever can write a pool can make workers import the modules its tasks
  name. An allowlist of module prefixes restricts that: :func:`set_allowed_modules`
  (what ``taskroll.init(allowed_modules=...)`` sets) or, when it was never called,
  the environment variable ``TASKROLL_ALLOWED_MODULES`` (comma separated, read at
  use time), e.g. ``"taskroll.,mylab.models"``. A prefix ending with ``.`` matches
  the package and everything under it; one without matches that module and its
  submodules. Unset means everything is allowed. A disallowed or malformed module
  path raises :class:`~taskroll.errors.TaskConfigError` before anything is imported.
* Qlib's names: a cfg naming a Qlib module (``qlib.contrib.model.gbdt``,
  ``qlib.workflow.record_temp``, ...) while Qlib is not installed builds the taskroll
  class that stands in for it, with Qlib's defaults (see :mod:`taskroll.task.qlib_names`,
  which also says how the allowlist applies); with Qlib installed, Qlib's class is used.
* Identity: non-finite floats have the tagged canonical form
  ``{"__taskroll__": "float", "value": "nan"}`` (``"inf"``, ``"-inf"``), so ``nan`` and
  the string ``"nan"`` get different task ids; dicts may not use the key
  ``__taskroll__`` themselves. Every other value keeps the id it always had.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import hashlib
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from taskroll.errors import TaskConfigError
from taskroll.task import qlib_names

# The allowlist lives in taskroll.task.modules; its names stay importable from here.
from taskroll.task.modules import (
    ALLOWED_MODULES_ENVIRONMENT,
    _AllowedModules,  # noqa: F401 (patched as spec._AllowedModules)
    allowed_modules,
    import_config_module,
    is_module_allowed,
    is_module_path,
    not_allowed_error,
    set_allowed_modules,
)

__all__ = ["ALLOWED_MODULES_ENVIRONMENT", "MAX_DEPTH", "RESERVED_KEY", "allowed_modules",
           "canonical_json", "check_depth", "fill_placeholder", "get_callable_by_config",
           "init_instance_by_config", "is_module_allowed", "normalise", "set_allowed_modules",
           "task_id"]

#: Deepest nesting of dicts, lists and tuples accepted in a task definition or cfg.
MAX_DEPTH = 100
#: Key reserved for tagged values (shared with :mod:`taskroll.store.codec`).
RESERVED_KEY = "__taskroll__"
#: A placeholder string: ``<NAME>`` or a path into the task, ``<dataset.kwargs.segments.train.0>``.
_PLACEHOLDER = re.compile(r"<(?P<path>[^<>]+)>")


def check_depth(value: Any, where: str = "task", limit: int = MAX_DEPTH) -> None:
    """Raise when dicts, lists and tuples in ``value`` nest deeper than ``limit`` levels.

    Walks iteratively, so it never hits the interpreter's recursion limit itself;
    a self-containing value counts as too deep.

    Raises:
        TaskConfigError: When the nesting is deeper than ``limit``.
    """
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > limit:
            raise TaskConfigError(f"{where}: nested deeper than {limit} levels of dicts and "
                                  "lists (or it contains itself)")
        pending.extend((child, depth + 1) for child in children)


def _qlib_stand_in(module_path: Any, name: str, where: str,
                   named_by_config: bool) -> tuple[Any, dict[str, Any]] | None:
    """``(taskroll class, Qlib's defaults)`` serving Qlib's ``module_path.name``, or ``None``
    when the name is not Qlib's or Qlib is importable (see :mod:`taskroll.task.qlib_names`)."""
    if not isinstance(module_path, str) or not is_module_path(module_path):
        return None
    entry = qlib_names.stand_in(module_path, name, where)
    if entry is None:
        return None
    # allowed when the allowlist admits the Qlib name written or the taskroll module run
    if named_by_config and not (is_module_allowed(module_path)
                                or is_module_allowed(entry.module)):
        raise not_allowed_error(module_path, where, entry.module)
    return qlib_names.load(module_path, name, entry, where), dict(entry.defaults)


def get_callable_by_config(config: Any, default_module: str | ModuleType | None = None,
                           where: str = "config") -> tuple[Any, dict[str, Any]]:
    """Resolve a cfg into ``(class_or_callable, kwargs)`` without calling it.

    A Qlib name (``qlib.contrib.model.gbdt`` ``LGBModel``, ...) resolves to the taskroll
    class standing in for it while Qlib is not installed, its kwargs put over Qlib's
    defaults (see :mod:`taskroll.task.qlib_names`).

    Args:
        config: A cfg dict, a ``"module.Name"`` string, or a class/callable.
        default_module: Module searched when the cfg has no ``module_path``.
        where: Path of the cfg inside its task, used in error messages.

    Returns:
        The class (or callable) and a copy of its kwargs.

    Raises:
        TaskConfigError: When the cfg is malformed, names something that does not exist,
            a module the allowlist does not admit, or a Qlib name taskroll cannot serve.
    """
    if isinstance(config, Mapping):
        if "class" not in config:
            raise TaskConfigError(f"{where}: a cfg needs a 'class' key, got keys {sorted(config)}")
        name = config["class"]
        kwargs = config.get("kwargs", {}) or {}
        if not isinstance(kwargs, Mapping):
            raise TaskConfigError(f"{where}.kwargs: must be a dict, got {type(kwargs).__name__}")
        check_depth(kwargs, f"{where}.kwargs")
        if not isinstance(name, str):
            return name, dict(kwargs)
        named_by_config = "module_path" in config
        module_path = config.get("module_path", default_module)
        if module_path is None:
            if "." not in name:
                raise TaskConfigError(f"{where}: 'module_path' is missing for class {name!r}")
            module_path, name = name.rsplit(".", 1)
            named_by_config = True
        served = _qlib_stand_in(module_path, name, where, named_by_config)
        if served is not None:
            return served[0], {**served[1], **kwargs}
        module = import_config_module(module_path, where, named_by_config)
        try:
            return getattr(module, name), dict(kwargs)
        except AttributeError as error:
            raise TaskConfigError(
                f"{where}: module {module.__name__!r} has no class {name!r}"
            ) from error
    if isinstance(config, str):
        if "." in config:
            module_name, name = config.rsplit(".", 1)
            served = _qlib_stand_in(module_name, name, where, True)
            if served is not None:
                return served
            module = import_config_module(module_name, where)
        elif default_module is not None:
            module, name = import_config_module(default_module, where, False), config
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
            constructor rejects the kwargs (an unknown keyword is named with the closest
            one the constructor takes).
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
                              f"{error}{_closest_arguments(factory, kwargs)}") from error


def _closest_arguments(factory: Any, kwargs: Mapping[str, Any]) -> str:
    """A hint naming, for each keyword ``factory`` does not take, the closest one it takes."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return ""
    if any(item.kind is inspect.Parameter.VAR_KEYWORD for item in parameters.values()):
        return ""
    names = [name for name, item in parameters.items()
             if item.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              inspect.Parameter.KEYWORD_ONLY)]
    hints = []
    for unknown in (name for name in kwargs if name not in parameters):
        close = difflib.get_close_matches(unknown, names, n=1)
        hints.append(f"{unknown!r} (did you mean {close[0]!r}?)" if close else repr(unknown))
    if not hints:
        return ""
    return f"; unknown keyword argument {', '.join(hints)}; it takes {', '.join(names)}"


def fill_placeholder(config: Any, placeholder_values: Mapping[str, Any]) -> Any:
    """Return a copy of ``config`` with its placeholders filled, as Qlib's ``fill_placeholder``.

    Two kinds of placeholder, both a whole string value anywhere in nested dicts, lists
    and tuples (a placeholder inside a longer string is left alone):

    * a key of ``placeholder_values`` (e.g. ``"<MODEL>"``) is replaced by its value; the
      replacement object itself is not copied;
    * any other ``"<a.b.0>"`` is a path into ``config`` itself (dict keys, and list or
      tuple positions for digits), e.g. ``"<dataset.kwargs.segments.train.0>"``, and is
      replaced by (a copy of) the value found there, with its own placeholders filled
      (as Qlib, which inserts the very object it then fills); a path that leads nowhere,
      or back into the value being filled, leaves the string as it is.

    Differences from Qlib: tuples are filled too (Qlib leaves them), the input is not
    changed (Qlib fills it in place), a value that contains its own path is not made to
    contain itself, and ``"<a>suffix"`` is left alone (Qlib reads it as the path ``a``).

    Args:
        config: Nested config.
        placeholder_values: Map from placeholder string (``"<NAME>"``) to the object to put
            there.

    Returns:
        A new config; the input is left unchanged.

    Raises:
        TaskConfigError: When a key of ``placeholder_values`` is not of the form ``<NAME>``
            or ``config`` nests deeper than :data:`MAX_DEPTH` levels.
    """
    for key in placeholder_values:
        if not isinstance(key, str) or _PLACEHOLDER.fullmatch(key) is None:
            raise TaskConfigError(f"placeholder {key!r} is not of the form '<NAME>' (as Qlib)")

    def lookup(text: str, active: frozenset[str]) -> Any:
        match = _PLACEHOLDER.fullmatch(text)
        if match is None or match.group("path") in active:  # a path inside itself stays
            return text
        found: Any = config
        for part in match.group("path").split("."):
            try:
                if isinstance(found, Mapping):
                    found = found[part]
                elif part.isdigit() and isinstance(found, (list, tuple)):
                    found = found[int(part)]
                else:
                    return text
            except (KeyError, IndexError):
                return text
        return fill(found, active | {match.group("path")})

    def fill(node: Any, active: frozenset[str]) -> Any:
        if isinstance(node, str):
            if node in placeholder_values:
                return placeholder_values[node]
            return lookup(node, active)
        if isinstance(node, Mapping):
            return {key: fill(value, active) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(item, active) for item in node]
        if isinstance(node, tuple):
            return tuple(fill(item, active) for item in node)
        return copy.copy(node) if isinstance(node, (set, bytearray)) else node

    check_depth(config)
    return fill(config, frozenset())


def normalise(value: Any, where: str = "task") -> Any:
    """Return the JSON-compatible canonical form used for task identity and filters.

    Tuples become lists, dates and timestamps ISO strings (midnight dates as
    ``YYYY-MM-DD``), numpy scalars and arrays Python values, classes
    ``"module.Name"``, non-finite floats ``{"__taskroll__": "float", "value": "nan"}``.
    Dict keys must be strings, other than ``__taskroll__``.

    Raises:
        TaskConfigError: For values with no canonical form (e.g. open files, NaN keys),
            dicts using the reserved key, or nesting deeper than :data:`MAX_DEPTH`.
    """
    return _normalise(value, where, 1, True)


def _normalise(value: Any, where: str, depth: int, big_floats: bool) -> Any:
    """:func:`normalise`; ``big_floats`` keeps whole floats beyond 64 bits as floats (for
    filters, which every store holds within 64 bits); task ids turn them into ints, as
    they always did, so that no existing id changes."""
    # depth counts containers only, as check_depth does
    if depth > MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        raise TaskConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels of dicts and "
                              "lists (or it contains itself)")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _unicode(value, where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            # tagged, so that nan and "nan" (a string) are different definitions
            return {RESERVED_KEY: "float", "value": repr(float(value))}
        # 1.0 == 1 in Python, so both must give the same task id; in a filter a whole
        # float beyond 64 bits stays a float (every store holds it as one, none the int)
        if value.is_integer() and (not big_floats or -(2**63) <= value < 2**63):
            return int(value)
        return float(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TaskConfigError(f"{where}: dict keys must be strings, got {key!r}")
            if key == RESERVED_KEY:
                raise TaskConfigError(f"{where}: the key {RESERVED_KEY!r} is reserved")
            _unicode(key, where)
            result[key] = _normalise(item, f"{where}.{key}", depth + 1, big_floats)
        return result
    if isinstance(value, (list, tuple)):
        return [_normalise(item, f"{where}[{index}]", depth + 1, big_floats)
                for index, item in enumerate(value)]
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
            return _normalise(value.tolist(), where, depth, big_floats)
        return _normalise(numpy_item(), where, depth, big_floats)
    raise TaskConfigError(
        f"{where}: a {type(value).__name__} has no canonical JSON form; "
        "use plain data (dict, list, str, numbers, dates) in task definitions"
    )


def _unicode(text: str, where: str) -> str:
    """``text`` when it is valid Unicode (no lone surrogate, which has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TaskConfigError(f"{where}: the string {text!r} holds a lone surrogate, which is "
                              "not valid Unicode") from error
    return text


def canonical_json(task: Any) -> str:
    """Encode ``task`` as canonical JSON: normalised values, sorted keys, no spaces."""
    return json.dumps(_normalise(task, "task", 1, False), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def task_id(task: Any) -> str:
    """Return the SHA-256 hex digest of :func:`canonical_json`: equal tasks, equal ids."""
    return hashlib.sha256(canonical_json(task).encode("utf-8")).hexdigest()
