"""Qlib's class names in task dicts, and the taskroll classes that stand in for them.

A task dict copied from Qlib names Qlib's modules (``qlib.contrib.model.gbdt``,
``qlib.data.dataset``, ``qlib.workflow.record_temp``, ...). When Qlib cannot be
imported, :func:`~taskroll.task.spec.get_callable_by_config` looks the
``(module_path, class)`` pair up in :data:`QLIB_NAMES` and builds taskroll's own
class instead, logging a warning the first time each pair is used in a process.
When Qlib *is* importable, Qlib's own class is used and nothing here applies.

An entry may carry Qlib's defaults where taskroll's class defaults differ (for
instance Qlib's ``LinearModel`` is ordinary least squares without an intercept,
taskroll's a ridge with one); they are put under the kwargs the task gives, so a
Qlib dict keeps the meaning it has in Qlib. An entry without a target names a Qlib
class taskroll has no equivalent for; using it is an error that says why.

Module allowlist (see :func:`~taskroll.task.spec.set_allowed_modules`): a Qlib name
with a stand-in is allowed when the allowlist admits the module the task wrote
(``qlib.``: the user trusts whatever serves Qlib's names) *or* the taskroll module
that is imported in its place (``taskroll.``: only taskroll's code runs). When Qlib
is installed its module is imported, so only the name the task wrote counts.

Differences that remain: Qlib's ``Alpha158`` defaults to ``instruments="csi500"``,
taskroll's to ``"all"`` (Qlib's documented task dicts always name the market);
taskroll's ``LinearModel`` counts a missing feature as 0 where Qlib's drops the row;
Qlib's handlers compute features with Qlib's expression engine, taskroll's from bars.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from taskroll.errors import TaskConfigError

logger = logging.getLogger(__name__)

#: The top-level package of Qlib.
QLIB_PACKAGE = "qlib"


@dataclass(frozen=True)
class StandIn:
    """The taskroll class that serves one Qlib name.

    Attributes:
        target: ``"taskroll.module.Class"``, or ``None`` when taskroll has no equivalent.
        defaults: Qlib's values of keyword arguments whose taskroll default differs;
            the task's own kwargs override them.
        reason: Why there is no target (shown in the error).
    """

    target: str | None
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reason: str = ""

    @property
    def module(self) -> str:
        """The module of :attr:`target` (empty when there is none)."""
        return self.target.rsplit(".", 1)[0] if self.target else ""

    @property
    def name(self) -> str:
        """The class name of :attr:`target` (empty when there is none)."""
        return self.target.rsplit(".", 1)[1] if self.target else ""


def _frozen(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


_GBDT = StandIn("taskroll.models.gbdt.LGBModel",
                # Qlib passes only the objective and verbosity -1 to LightGBM: its defaults
                _frozen(base_params=_frozen(verbosity=-1)))
_LINEAR = StandIn("taskroll.models.linear.LinearModel",
                  _frozen(estimator="ols", alpha=0.0, fit_intercept=False))
_DATASET = StandIn("taskroll.data.dataset.DatasetH")
_HANDLER = StandIn("taskroll.data.handler.DataHandlerLP")
_NO_ALPHA360 = StandIn(None, reason=(
    "taskroll has no Alpha360 handler (Qlib's 360 normalised raw price/volume values); "
    "use Alpha158 (different features: module_path 'taskroll.data.handler') or a "
    "DataHandlerLP with a data_loader serving your own features"))
_RECORDS = "taskroll.train.record"
_PROCESSORS = "taskroll.data.processors"
_NO_LOADER = ("taskroll's loaders differ from Qlib's {name} (they read bars from CSV/Parquet, "
              "memory or the synthetic market); use a taskroll loader from "
              "'taskroll.data.loader' (FileLoader, StaticLoader, SyntheticLoader) or point "
              "taskroll.init(provider_uri=...) at a Qlib data folder")
_NO_PROCESSOR = ("taskroll has no processor {name}; taskroll's processors "
                 "('taskroll.data.processors') are DropnaLabel, DropnaFeature, Fillna, "
                 "ProcessInf, CSZScoreNorm, CSRankNorm, ZScoreNorm and RobustZScoreNorm")


def _processors() -> dict[tuple[str, str], StandIn]:
    same = ("DropnaLabel", "Fillna", "ProcessInf", "CSZScoreNorm", "CSRankNorm", "ZScoreNorm")
    table = {name: StandIn(f"{_PROCESSORS}.{name}") for name in same}
    table["RobustZScoreNorm"] = StandIn(f"{_PROCESSORS}.RobustZScoreNorm",
                                        _frozen(clip_outlier=True))
    # Qlib's DropnaProcessor drops rows with a NaN in any column unless told a group
    table["DropnaProcessor"] = StandIn(f"{_PROCESSORS}.DropnaFeature", _frozen(fields_group=None))
    for name in ("DropCol", "FilterCol", "TanhProcess", "MinMaxNorm", "CSZFillna",
                 "HashStockFormat", "TimeRangeFlt"):
        table[name] = StandIn(None, reason=_NO_PROCESSOR.format(name=name))
    return {("qlib.data.dataset.processor", name): entry for name, entry in table.items()}


def _loaders() -> dict[tuple[str, str], StandIn]:
    names = ("StaticDataLoader", "NestedDataLoader", "DataLoaderDH")
    table = {name: StandIn(None, reason=_NO_LOADER.format(name=name)) for name in names}
    # Qlib's takes field expressions ({"feature": ["$close/Ref($close,1)", ...]}), which
    # taskroll does not evaluate; taskroll's loader of a Qlib folder serves the bars
    table["QlibDataLoader"] = StandIn(None, reason=(
        "Qlib's QlibDataLoader computes field expressions, which taskroll does not evaluate; "
        "taskroll's QlibDataLoader ('taskroll.data.qlib_bin', kwargs provider_uri, freq, "
        "universe) serves a Qlib folder's bars to handlers such as Alpha158, and a handler "
        "without a data_loader reads taskroll.init(provider_uri=...)"))
    return {("qlib.data.dataset.loader", name): entry for name, entry in table.items()}


#: ``(Qlib module, Qlib class) -> StandIn``: every Qlib name taskroll knows.
QLIB_NAMES: Mapping[tuple[str, str], StandIn] = MappingProxyType({
    ("qlib.contrib.model.gbdt", "LGBModel"): _GBDT,
    ("qlib.contrib.model", "LGBModel"): _GBDT,
    ("qlib.contrib.model.linear", "LinearModel"): _LINEAR,
    ("qlib.contrib.model", "LinearModel"): _LINEAR,
    ("qlib.data.dataset", "DatasetH"): _DATASET,
    ("qlib.data.dataset", "DataHandlerLP"): _HANDLER,
    ("qlib.data.dataset.handler", "DataHandlerLP"): _HANDLER,
    ("qlib.contrib.data.handler", "Alpha158"): StandIn("taskroll.data.handler.Alpha158"),
    ("qlib.contrib.data.handler", "Alpha360"): _NO_ALPHA360,
    ("qlib.workflow.record_temp", "SignalRecord"): StandIn(f"{_RECORDS}.SignalRecord"),
    ("qlib.workflow.record_temp", "SigAnaRecord"): StandIn(f"{_RECORDS}.SigAnaRecord"),
    ("qlib.workflow.record_temp", "PortAnaRecord"): StandIn(f"{_RECORDS}.PortAnaRecord"),
    **_processors(),
    **_loaders(),
})


class _Logged:
    """The (module, class) pairs whose stand-in was already logged in this process."""

    pairs: set[tuple[str, str]] = set()
    lock = threading.Lock()


def is_qlib_module(module_path: str) -> bool:
    """Return whether ``module_path`` is Qlib's package or one of its submodules."""
    return module_path == QLIB_PACKAGE or module_path.startswith(QLIB_PACKAGE + ".")


def qlib_importable() -> bool:
    """Return whether Qlib can be imported here (checked each call; cheap once cached)."""
    if QLIB_PACKAGE in sys.modules:
        return True
    try:
        return importlib.util.find_spec(QLIB_PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def stand_in(module_path: str, name: str, where: str = "config") -> StandIn | None:
    """Return the taskroll class standing in for Qlib's ``module_path.name``, if one is used.

    Args:
        module_path: The module the task names.
        name: The class the task names.
        where: Path of the cfg inside its task, used in error messages.

    Returns:
        ``None`` when ``module_path`` is not Qlib's or Qlib is importable (Qlib's own
        class is then used); otherwise the :class:`StandIn` with a target.

    Raises:
        TaskConfigError: When Qlib is not importable and taskroll has no equivalent of
            the name (the message says why and what to use instead).
    """
    if not is_qlib_module(module_path) or qlib_importable():
        return None
    entry = QLIB_NAMES.get((module_path, name))
    if entry is None:
        known = sorted(f"{module}.{qlib_name}" for (module, qlib_name), value
                       in QLIB_NAMES.items() if value.target)
        raise TaskConfigError(
            f"{where}: Qlib is not installed and taskroll has no stand-in for "
            f"'{module_path}.{name}'; install Qlib (pip install pyqlib) or use a taskroll "
            f"class. Qlib names taskroll serves: {', '.join(known)}")
    if entry.target is None:
        raise TaskConfigError(f"{where}: Qlib is not installed and '{module_path}.{name}' has "
                              f"no taskroll equivalent: {entry.reason}")
    return entry


def log_stand_in(module_path: str, name: str, entry: StandIn) -> None:
    """Log, once per process and pair, that ``entry`` serves Qlib's ``module_path.name``."""
    with _Logged.lock:
        if (module_path, name) in _Logged.pairs:
            return
        _Logged.pairs.add((module_path, name))
    defaults = (f" with Qlib's defaults {dict(entry.defaults)}" if entry.defaults else "")
    logger.warning("Qlib is not installed: %s.%s is served by taskroll's %s%s", module_path,
                   name, entry.target, defaults)


def load(module_path: str, name: str, entry: StandIn, where: str = "config") -> Any:
    """Import and return the taskroll class of ``entry``, logging the stand-in once.

    Args:
        module_path: The Qlib module the task names.
        name: The Qlib class the task names.
        entry: Its stand-in (with a target).
        where: Path of the cfg inside its task, used in error messages.

    Raises:
        TaskConfigError: When the taskroll module or class does not exist (yet), or the
            module fails to import.
    """
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as error:
        if error.name and (entry.module + ".").startswith(error.name + "."):
            raise _missing_target(module_path, name, entry, where) from error
        raise TaskConfigError(f"{where}: cannot import module {entry.module!r}: "
                              f"{type(error).__name__}: {error}") from error
    except Exception as error:  # an error raised by the module's own code
        raise TaskConfigError(f"{where}: cannot import module {entry.module!r}: "
                              f"{type(error).__name__}: {error}") from error
    target = getattr(module, entry.name, None)
    if target is None:
        raise _missing_target(module_path, name, entry, where)
    log_stand_in(module_path, name, entry)
    return target


def _missing_target(module_path: str, name: str, entry: StandIn, where: str) -> TaskConfigError:
    return TaskConfigError(
        f"{where}: Qlib is not installed and '{module_path}.{name}' maps to taskroll's "
        f"{entry.target}, which this taskroll does not have (module {entry.module!r} has no "
        f"{entry.name!r}); upgrade taskroll or install Qlib")
