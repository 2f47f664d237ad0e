"""Encoding of task definitions and results for storage.

The store sees plain records; this codec turns Python values into a payload
(``str`` for JSON, ``bytes`` for pickle) plus the name of the encoding, and back.

JSON (the default) is tagged so values survive the round trip: tuples,
datetimes, dates, pandas Timestamps and numpy scalars are written as
``{"__taskroll__": kind, "value": ...}``; a recorder is written as its
reference (run id and tracking URI), so trained models sit in a pool without
pickle. Pickle is used only when the caller opted in (``allow_pickle=True``);
decoding a pickled payload without that
opt-in raises :class:`PickleNotAllowedError` instead of unpickling data from a
shared database silently.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
from typing import Any

from taskroll.errors import PickleNotAllowedError, SerializationError

JSON = "json"
PICKLE = "pickle"
_TAG = "__taskroll__"


#: Types stored as a JSON reference instead of a pickle: tag -> (module, class). Only these
#: classes are ever rebuilt from a pool, through their ``from_reference`` classmethod.
_REFERENCE_TYPES: dict[str, tuple[str, str]] = {
    "recorder": ("taskroll.train.recorder", "Recorder"),
}


class _NotJson(Exception):
    """Internal: a value has no tagged-JSON form."""


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {_TAG: "float", "value": repr(value)}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _NotJson("dict with non-string keys")
        if _TAG in value:
            raise _NotJson("dict using the reserved key")
        return {key: _tag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tag(item) for item in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {_TAG: "tuple", "value": [_tag(item) for item in value]}
    if type(value).__name__ == "Timestamp" and type(value).__module__.startswith("pandas"):
        return {_TAG: "timestamp", "value": value.isoformat()}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "value": value.isoformat()}
    reference_tag = getattr(type(value), "__taskroll_reference__", None)
    if reference_tag in _REFERENCE_TYPES:
        return {_TAG: reference_tag, "value": _tag(value.to_reference())}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and not getattr(value, "ndim", 0):
        return _tag(value.item())
    raise _NotJson(type(value).__name__)


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind is None:
        return {key: _untag(item) for key, item in value.items()}
    raw = value["value"]
    if kind == "tuple":
        return tuple(_untag(item) for item in raw)
    if kind == "datetime":
        return dt.datetime.fromisoformat(raw)
    if kind == "date":
        return dt.date.fromisoformat(raw)
    if kind == "timestamp":
        import pandas as pd

        return pd.Timestamp(raw)
    if kind == "float":
        return float(raw)
    if kind in _REFERENCE_TYPES:
        import importlib

        module_name, class_name = _REFERENCE_TYPES[kind]
        return getattr(importlib.import_module(module_name), class_name).from_reference(_untag(raw))
    raise SerializationError(f"unknown tagged JSON kind {kind!r}")


def encode(value: Any, allow_pickle: bool = False) -> tuple[str, str | bytes]:
    """Encode ``value`` for storage.

    Args:
        value: A task definition or result.
        allow_pickle: Fall back to pickle for values JSON cannot hold.

    Returns:
        ``(encoding, payload)``: ``("json", str)`` or ``("pickle", bytes)``.

    Raises:
        PickleNotAllowedError: When the value needs pickle and ``allow_pickle`` is false.
    """
    try:
        return JSON, json.dumps(_tag(value), separators=(",", ":"), ensure_ascii=False)
    except _NotJson as error:
        if not allow_pickle:
            raise PickleNotAllowedError(
                f"cannot store a {type(value).__name__} as JSON ({error}); return plain data "
                "(dict, list, str, numbers, dates) or open the pool with allow_pickle=True"
            ) from error
    return PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode(encoding: str | None, payload: str | bytes | None, allow_pickle: bool = False) -> Any:
    """Decode a payload written by :func:`encode`.

    Raises:
        PickleNotAllowedError: For a pickle payload when ``allow_pickle`` is false.
        SerializationError: For an unknown encoding or a corrupt payload.
    """
    if payload is None:
        return None
    if encoding in (None, JSON):
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        try:
            return _untag(json.loads(text))
        except ValueError as error:
            raise SerializationError(f"corrupt JSON payload: {error}") from error
    if encoding == PICKLE:
        if not allow_pickle:
            raise PickleNotAllowedError(
                "this task holds a pickled value; pickles from a shared database can run "
                "arbitrary code, so open the TaskManager with allow_pickle=True only if you "
                "trust every writer of this pool"
            )
        data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
        return pickle.loads(data)
    raise SerializationError(f"unknown encoding {encoding!r}")
