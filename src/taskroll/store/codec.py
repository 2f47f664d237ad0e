"""Encoding of task definitions and results for storage.

The store sees plain records; this codec turns Python values into a payload
(``str`` for JSON, ``bytes`` for pickle) plus the name of the encoding, and back.

JSON (the default) is tagged so values survive the round trip: tuples,
datetimes, dates, pandas Timestamps and numpy scalars are written as
``{"__taskroll__": kind, "value": ...}``; a recorder is written as its
reference (run id and tracking URI without credentials), so trained models sit
in a pool without pickle. Pickle is used only when the caller opted in
(``allow_pickle=True``); decoding a pickled payload without that opt-in raises
:class:`PickleNotAllowedError` instead of unpickling data from a shared database
silently.

Reading a pool acts on nothing a writer planted: a recorder reference decodes to
an inert :class:`~taskroll.store.references.RecorderReference` (this module imports
nothing from :mod:`taskroll.train`); the train layer resolves it, for configured
tracking stores only. Payloads are checked: every tag must have exactly the keys
``__taskroll__`` and ``value`` with a value of the right type, values nest at most
:data:`MAX_DEPTH` (100) levels; anything else raises :class:`SerializationError`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
from typing import Any

from taskroll.errors import PickleNotAllowedError, SerializationError
from taskroll.store.references import RecorderReference

JSON = "json"
PICKLE = "pickle"
_TAG = "__taskroll__"
#: Deepest nesting of dicts, lists and tuples encoded or decoded.
MAX_DEPTH = 100
#: Non-finite floats, the only values of the ``float`` tag.
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

#: Types stored as a JSON reference instead of a pickle: tag -> inert reference class.
#: Decoding gives that class, never a live object; upper layers resolve it.
_REFERENCE_TYPES: dict[str, type[RecorderReference]] = {
    "recorder": RecorderReference,
}


class _NotJson(Exception):
    """Internal: a value has no tagged-JSON form."""


def _too_deep() -> SerializationError:
    return SerializationError(f"value nested deeper than {MAX_DEPTH} levels of dicts and lists "
                              "(or it contains itself)")


def _tag(value: Any, depth: int = 1) -> Any:
    # depth counts containers only: a scalar inside the 100th level is fine
    if depth > MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        raise _too_deep()
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
        return {key: _tag(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_tag(item, depth + 1) for item in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {_TAG: "tuple", "value": [_tag(item, depth + 1) for item in value]}
    if type(value).__name__ == "Timestamp" and type(value).__module__.startswith("pandas"):
        return {_TAG: "timestamp", "value": value.isoformat()}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "value": value.isoformat()}
    reference_tag = getattr(type(value), "__taskroll_reference__", None)
    if isinstance(reference_tag, str) and reference_tag in _REFERENCE_TYPES:
        try:
            reference = _REFERENCE_TYPES[reference_tag].from_payload(value.to_reference())
        except SerializationError as error:
            raise _NotJson(f"bad {reference_tag} reference: {error}") from error
        return {_TAG: reference_tag, "value": reference.to_reference()}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and not getattr(value, "ndim", 0):
        return _tag(value.item(), depth)
    raise _NotJson(type(value).__name__)


def _untag(value: Any, depth: int = 1) -> Any:
    if depth > MAX_DEPTH and isinstance(value, (dict, list)):
        raise _too_deep()
    if isinstance(value, list):
        return [_untag(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    if _TAG not in value:
        return {key: _untag(item, depth + 1) for key, item in value.items()}
    kind = value[_TAG]
    if set(value) != {_TAG, "value"}:
        raise SerializationError(f"tagged JSON {kind!r} must have exactly the keys "
                                 f"{_TAG!r} and 'value', got {sorted(value)}")
    try:
        return _untag_kind(kind, value["value"], depth)
    except SerializationError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise SerializationError(f"malformed tagged JSON {kind!r}: {error}") from error


def _text(raw: Any, kind: str) -> str:
    if not isinstance(raw, str):
        raise SerializationError(f"tagged JSON {kind!r} needs a string value, got "
                                 f"{type(raw).__name__}")
    return raw


def _untag_kind(kind: Any, raw: Any, depth: int) -> Any:
    if kind == "tuple":
        if not isinstance(raw, list):
            raise SerializationError(f"tagged JSON 'tuple' needs a list, got {type(raw).__name__}")
        return tuple(_untag(item, depth + 1) for item in raw)
    if kind == "datetime":
        return dt.datetime.fromisoformat(_text(raw, kind))
    if kind == "date":
        return dt.date.fromisoformat(_text(raw, kind))
    if kind == "timestamp":
        import pandas as pd

        return pd.Timestamp(_text(raw, kind))
    if kind == "float":
        text = _text(raw, kind)
        if text not in _NON_FINITE:
            raise SerializationError(f"tagged JSON 'float' holds only 'nan', 'inf' or '-inf', "
                                     f"got {text[:40]!r}")
        return _NON_FINITE[text]
    if isinstance(kind, str) and kind in _REFERENCE_TYPES:
        return _REFERENCE_TYPES[kind].from_payload(raw)
    raise SerializationError(f"unknown tagged JSON kind {str(kind)[:40]!r}")


def encode(value: Any, allow_pickle: bool = False) -> tuple[str, str | bytes]:
    """Encode ``value`` for storage.

    Args:
        value: A task definition or result.
        allow_pickle: Fall back to pickle for values JSON cannot hold.

    Returns:
        ``(encoding, payload)``: ``("json", str)`` or ``("pickle", bytes)``.

    Raises:
        PickleNotAllowedError: When the value needs pickle and ``allow_pickle`` is false.
        SerializationError: When the value nests deeper than :data:`MAX_DEPTH` levels.
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

    Recorder references decode to inert
    :class:`~taskroll.store.references.RecorderReference` objects.

    Raises:
        PickleNotAllowedError: For a pickle payload when ``allow_pickle`` is false.
        SerializationError: For an unknown encoding, a corrupt or malformed payload,
            or one nested deeper than :data:`MAX_DEPTH` levels.
    """
    if payload is None:
        return None
    if encoding in (None, JSON):
        try:
            text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
            loaded = json.loads(text)
        except RecursionError as error:
            raise _too_deep() from error
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
            raise SerializationError(f"corrupt JSON payload: {error}") from error
        return _untag(loaded)
    if encoding == PICKLE:
        if not allow_pickle:
            raise PickleNotAllowedError(
                "this task holds a pickled value; pickles from a shared database can run "
                "arbitrary code, so open the TaskManager with allow_pickle=True (taskroll "
                "worker --allow-pickle) only if you trust every writer of this pool"
            )
        data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
        try:
            return pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
                TypeError, ValueError) as error:
            raise SerializationError(f"corrupt pickle payload: {type(error).__name__}: "
                                     f"{error}") from error
    raise SerializationError(f"unknown encoding {encoding!r}")
