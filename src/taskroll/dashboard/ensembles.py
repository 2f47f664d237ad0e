"""IC of the ensembles of a rolling pool, from the predictions its recorders saved.

For each model class, the done windows' ``pred.pkl`` are merged with
:class:`~taskroll.collect.ensemble.RollingEnsemble` (the newest window wins where test
segments overlap); with two or more model classes, their rolled predictions are also
combined with :class:`~taskroll.collect.ensemble.AverageEnsemble`. Each ensemble is
scored against the windows' ``label.pkl`` (first column) with
:func:`taskroll.train.record.calc_ic`: mean IC and Rank IC, and the cumulative daily IC.

Reading artifacts takes time, so the rolling page asks for this on demand
(``/api/pools/{pool}/ensembles``), and results are cached per set of runs.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any, Final

import pandas as pd

from taskroll.store import TaskStore
from taskroll.store.base import Record
from taskroll.store.codec import decode
from taskroll.store.query import Condition
from taskroll.store.references import RecorderReference

logger = logging.getLogger("taskroll.dashboard")
#: Most done windows read.
MAX_RUNS: Final = 500
#: Failed run reads, before any run was read, after which the others are left out unread.
MAX_FAILED_READS: Final = 3
#: Sets of runs whose ensembles are kept.
CACHE_SIZE: Final = 16
#: Name of the average of every model class's rolled prediction.
AVERAGE: Final = "average of all models"

#: One window: (model class, test start, test end, run id, tracking URI).
Window = tuple[str, str, str, str, str | None]
_CACHE: dict[tuple[Window, ...], dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()


def _window(record: Record) -> Window | None:
    try:
        result = decode(record.get("res_encoding"), record.get("res"), allow_pickle=False)
    except Exception:  # pickled or corrupt results are not opened here
        return None
    filter_value = record.get("filter")
    if not isinstance(result, RecorderReference) or not isinstance(filter_value, Mapping):
        return None
    model = filter_value.get("model")
    try:
        test = filter_value["dataset"]["kwargs"]["segments"]["test"]
    except (KeyError, TypeError):
        return None
    if not (isinstance(test, list) and len(test) == 2):
        return None
    name = model.get("class") if isinstance(model, Mapping) else None
    return (str(name or "?"), str(test[0])[:10], str(test[1])[:10], result.run_id,
            result.tracking_uri)


def _first_column(value: Any) -> pd.Series:
    series = value.iloc[:, 0] if isinstance(value, pd.DataFrame) else value
    if not isinstance(series, pd.Series):
        raise TypeError(f"expected a Series or DataFrame, got {type(value).__name__}")
    return series


def _score(signal: pd.Series, label: pd.Series) -> dict[str, Any]:
    from taskroll.train.record import calc_ic

    aligned = label.reindex(signal.index)
    ic, rank_ic = calc_ic(signal, aligned, dropna=True)
    cumulative = ic.cumsum()
    return {
        "IC": float(ic.mean()) if len(ic) else None,
        "Rank IC": float(rank_ic.mean()) if len(rank_ic) else None,
        "days": len(ic),
        "cumulative": [[str(day)[:10], float(value)] for day, value in cumulative.items()
                       if math.isfinite(float(value))],
    }


def _ensembles(windows: tuple[Window, ...]) -> dict[str, Any]:
    """:func:`_compute` of ``windows``, cached only when every run was read.

    A run left out (artifacts not written yet, tracking store down) is tried again on
    the next request instead of being cached as missing.
    """
    with _CACHE_LOCK:
        cached = _CACHE.get(windows)
    if cached is not None:
        return cached
    computed = _compute(windows)
    if computed["skipped"] == 0:
        with _CACHE_LOCK:
            _CACHE[windows] = computed
            while len(_CACHE) > CACHE_SIZE:
                del _CACHE[next(iter(_CACHE))]  # the oldest entry
    return computed


def _compute(windows: tuple[Window, ...]) -> dict[str, Any]:
    from taskroll.collect.ensemble import AverageEnsemble, RollingEnsemble
    from taskroll.train.recorder import Recorder

    predictions: dict[str, dict[tuple[str, str], pd.Series]] = {}
    labels: list[pd.Series] = []
    skipped = failures = 0
    read_any = False
    for model, start, end, run_id, uri in windows:
        if not read_any and failures >= MAX_FAILED_READS:  # the store is down: stop waiting
            skipped += 1
            continue
        try:
            recorder = Recorder.from_reference(RecorderReference(run_id, uri))
            prediction = _first_column(recorder.load_object("pred.pkl"))
            label = _first_column(recorder.load_object("label.pkl"))
            read_any = True  # the store is up: every run is tried
        except Exception as error:  # a run without artifacts is left out, and counted
            logger.info("run %s left out of the ensembles: %s", run_id, error)
            skipped += 1
            failures += 1
            continue
        predictions.setdefault(model, {})[(start, end)] = prediction
        labels.append(label)
    if not labels:
        return {"ensembles": {}, "runs": len(windows), "skipped": skipped}
    label = pd.concat(labels)
    label = label[~label.index.duplicated(keep="last")].sort_index()
    rolled = {model: _first_column(RollingEnsemble()(frames))
              for model, frames in predictions.items()}
    ensembles = {f"{model} (rolling)": _score(signal, label) for model, signal in rolled.items()}
    if len(rolled) > 1:
        ensembles[AVERAGE] = _score(AverageEnsemble()(rolled), label)
    return {"ensembles": ensembles, "runs": len(windows), "skipped": skipped}


def ensemble_data(store: TaskStore, pool: str) -> dict[str, Any]:
    """IC of each model class's rolling ensemble and of their average (see the module doc)."""
    records = store.find_page(pool, [Condition("status", (), "$eq", "done")],
                              [("created", 1)], 0, MAX_RUNS)
    windows = tuple(window for window in map(_window, records) if window is not None)
    return {"pool": pool, **_ensembles(windows)}
