"""Reading the online YAML config of ``taskroll online routine|simulate``: :func:`load_config`.

The file is read with the limits of :mod:`taskroll.safe_yaml`, checked against the
schema of :mod:`taskroll.online.config_schema` before anything is created (no
``taskroll.init``, no store, no output folder), then its dates are turned to ISO
text and its relative paths resolved against the config's folder.

Every error is an :class:`OnlineConfigError` of one line that starts with the
config's path, names the full dotted key and, for an unknown key, the closest
valid one, e.g. ``online.yaml: unknown key 'rolling.stpe'; did you mean
'rolling.step'?``; a key valid in another section says where it belongs
(top-level ``trunc_days``: ``did you mean 'rolling.trunc_days'?``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskroll.errors import TaskrollError
from taskroll.online.config_schema import TRAINERS, ConfigSchemaError, check_config
from taskroll.safe_yaml import UnsafeYamlError, load_yaml

__all__ = ["TRAINERS", "OnlineConfigError", "load_config"]


class OnlineConfigError(TaskrollError, ValueError):
    """The online YAML config cannot be read, misses a key, or holds an unknown key or bad value."""


def _resolve(value: Any, base: Path) -> Any:
    """A relative path that exists next to the config is made absolute."""
    if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
        return str(base / value)
    return value


def _resolve_paths(node: Any, base: Path) -> Any:
    if isinstance(node, Mapping):
        return {key: (_resolve(value, base) if key == "path" else _resolve_paths(value, base))
                for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_paths(item, base) for item in node]
    return node


def _dates_to_text(node: Any) -> Any:
    """YAML reads ``2019-01-01`` as a date; the rest of taskroll accepts ISO strings too."""
    if isinstance(node, Mapping):
        return {key: _dates_to_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_dates_to_text(item) for item in node]
    if hasattr(node, "isoformat") and not isinstance(node, str):
        return node.isoformat()
    return node


def load_config(path: Path) -> dict[str, Any]:
    """Read an online YAML config and check it against :mod:`taskroll.online.config_schema`.

    Args:
        path: The YAML file.

    Returns:
        The config: YAML dates turned to ISO text, relative ``path`` entries of the
        templates and ``rolling.calendar`` made absolute when they exist next to the
        config (``rolling.calendar`` is always present, ``None`` when not given).

    Raises:
        OnlineConfigError: When the file cannot be read, is not valid YAML, exceeds the
            limits of :mod:`taskroll.safe_yaml` (aliases, expansion, depth), or breaks the
            schema (missing or unknown key, wrong type or value); one line, starting
            with ``path``.
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise OnlineConfigError(f"{path}: cannot read the online config: "
                                f"{error.strerror or error}") from error
    try:
        # limits on aliases, expansion and depth: see taskroll.safe_yaml
        loaded = load_yaml(text, str(path))
    except UnsafeYamlError as error:
        raise OnlineConfigError(str(error)) from None  # it starts with the path already
    if not isinstance(loaded, Mapping):
        raise OnlineConfigError(f"{path}: the config must be a mapping, got {type(loaded).__name__}")
    config: dict[str, Any] = _dates_to_text(dict(loaded))
    base = path.resolve().parent
    try:
        check_config(config, base)
    except ConfigSchemaError as error:
        raise OnlineConfigError(f"{path}: {error}") from None
    config["task_template"] = _resolve_paths(config["task_template"], base)
    rolling = config["rolling"]
    config["rolling"] = {**rolling, "calendar": _resolve(rolling.get("calendar"), base)}
    if config.get("provider_uri") is not None:
        config["provider_uri"] = _resolve(config["provider_uri"], base)
    return config
