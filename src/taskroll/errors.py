"""Exceptions raised by taskroll.

Every error raised on purpose derives from :class:`TaskrollError`, so a caller
can catch the whole family at one place. Driver errors (sqlite3, psycopg,
pymongo, MLflow) are translated at the store or recorder boundary with
``raise ... from error`` so the original stays visible in the traceback.

The tree::

    TaskrollError
    ├── TaskConfigError          a task or a cfg inside it cannot be built
    ├── CalendarError            dates outside / not on the trading calendar
    ├── QueryError               a Mongo-style filter uses an unknown operator
    ├── SerializationError       a value cannot be encoded or decoded
    │   └── PickleNotAllowedError  pickle needed but the pool did not opt in
    ├── StoreError               the task database failed or is unreachable
    │   ├── StoreConnectionError   cannot connect to / open the database
    │   └── UnknownPoolError       a named task pool does not exist
    ├── StatusTransitionError    a status change the state table forbids
    ├── MissingDependencyError   an optional extra is not installed
    ├── RecorderError            experiment tracking (MLflow) failed
    │   └── RecorderLookupError    no such experiment, run or artifact (a ValueError too)
    └── DataError                reference data is malformed or missing

Warnings (a run goes on, but a person should look)::

    TaskrollWarning (UserWarning)
    ├── LookAheadWarning         a setting lets labels reach past a segment's end
    └── DataQualityWarning       invalid bars, gaps, constant or empty features
"""

from __future__ import annotations


class TaskrollError(Exception):
    """Root of every error taskroll raises on purpose."""


class TaskConfigError(TaskrollError, ValueError):
    """A task, or a ``{"class", "module_path", "kwargs"}`` cfg inside it, is invalid."""


class CalendarError(TaskrollError, ValueError):
    """A date or segment cannot be placed on the trading calendar."""


class QueryError(TaskrollError, ValueError):
    """A Mongo-style query uses an unsupported operator or shape."""


class SerializationError(TaskrollError, ValueError):
    """A task definition or result cannot be encoded or decoded."""


class PickleNotAllowedError(SerializationError):
    """A value needs pickle but the pool was not opened with ``allow_pickle=True``."""


class StoreError(TaskrollError):
    """The task database failed."""


class StoreConnectionError(StoreError):
    """The task database cannot be reached or opened."""


class UnknownPoolError(StoreError, KeyError):
    """The named task pool does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown task pool"


class StatusTransitionError(TaskrollError, ValueError):
    """A task status change is not allowed by the transition table."""


class MissingDependencyError(TaskrollError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class RecorderError(TaskrollError):
    """Experiment tracking failed (MLflow store, artifacts)."""


class RecorderLookupError(RecorderError, ValueError):
    """An experiment, recorder or artifact that does not exist, or an id the store refuses.

    A :class:`ValueError` too, as Qlib's ``R`` raises for these, so ``except ValueError``
    written for Qlib keeps working.
    """


class DataError(TaskrollError, ValueError):
    """Reference market data is malformed or missing."""


class TaskrollWarning(UserWarning):
    """Root of the warnings taskroll issues."""


class LookAheadWarning(TaskrollWarning):
    """A configuration allows information from after a date to reach results for that date."""


class DataQualityWarning(TaskrollWarning):
    """Loaded data has invalid bars, gaps, late listings, or constant / all-NaN features."""


def require(module: str, extra: str) -> object:
    """Import an optional module or raise a :class:`MissingDependencyError` with an install hint.

    Args:
        module: Dotted module name, e.g. ``"pymongo"``.
        extra: The taskroll extra that provides it, e.g. ``"mongo"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When the module cannot be imported.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install \"taskroll[{extra}]\""
        ) from error
