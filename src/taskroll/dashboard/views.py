"""The rolling view: segments, IC per window, and (on demand) IC of the ensembles.

**Rolling view** of a pool: each task's ``dataset.kwargs.segments`` (train / valid / test,
read from the task's ``filter``) drawn as a timeline per model class, coloured by
status; for done tasks whose result names an MLflow run, the ``IC`` and ``Rank IC``
metrics ``SigAnaRecord`` logged, plotted per test window (uPlot, shipped with the
package). At most the newest :data:`MAX_WINDOWS` tasks are read (the page says so when
the pool holds more). The IC of the
ensembles is computed on demand (:mod:`taskroll.dashboard.ensembles`).
The online view is in :mod:`taskroll.dashboard.online_view`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from taskroll.dashboard import html
from taskroll.dashboard.routing import path_value
from taskroll.store import TaskStore
from taskroll.store.codec import decode
from taskroll.store.references import RecorderReference

logger = logging.getLogger("taskroll.dashboard")
#: Most tasks the rolling view reads.
MAX_WINDOWS: Final = 500
#: Failed run reads, before any run was read, after which the tracking store is taken
#: as unreachable and the other runs are not read.
MAX_FAILED_READS: Final = 3
SEGMENTS: Final = ("train", "valid", "test")
METRICS: Final = ("IC", "Rank IC")
_COLOURS = {"waiting": "#9aa5b1", "running": "#2f80ed", "part_done": "#9b51e0",
            "done": "#27ae60", "failed": "#eb5757"}
_OPACITY = {"train": 0.35, "valid": 0.6, "test": 1.0}


def _day(value: Any) -> str | None:
    """The ``YYYY-MM-DD`` start of a segment bound, or ``None`` unless it is a real day."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10]).isoformat()
    except ValueError:  # "2020-13-45", "0000-01-01", any text: not drawn
        return None


def _segments(filter_value: Any) -> dict[str, list[str]]:
    dataset = filter_value.get("dataset") if isinstance(filter_value, Mapping) else None
    kwargs = dataset.get("kwargs") if isinstance(dataset, Mapping) else None
    segments = kwargs.get("segments") if isinstance(kwargs, Mapping) else None
    found: dict[str, list[str]] = {}
    for name in SEGMENTS:
        pair = segments.get(name) if isinstance(segments, Mapping) else None
        if isinstance(pair, list) and len(pair) == 2:
            start, end = _day(pair[0]), _day(pair[1])
            if start and end:
                found[name] = [start, end]
    return found


def _metrics(result: RecorderReference) -> dict[str, float]:
    """IC metrics of the run a result names.

    Raises:
        Exception: Whatever reading the run raised (the tracking store is unreachable,
            the run is gone, the reference is not allowed).
    """
    from taskroll.train.recorder import Recorder

    metrics = Recorder.from_reference(result).list_metrics()
    return {name: float(metrics[name]) for name in METRICS
            if name in metrics and math.isfinite(float(metrics[name]))}


def _result(record: Mapping[str, Any]) -> RecorderReference | None:
    """The run a done task's result names (``None``: no run, or a pickled/corrupt result)."""
    if record.get("status") != "done":
        return None
    try:
        result = decode(record.get("res_encoding"), record.get("res"), allow_pickle=False)
    except Exception:  # pickled or corrupt results are not opened here
        return None
    return result if isinstance(result, RecorderReference) else None


def rolling_data(store: TaskStore, pool: str) -> dict[str, Any]:
    """Windows per model class: segments, status and IC metrics of each task.

    The pool's newest :data:`MAX_WINDOWS` tasks are read; ``windows_note`` says so when
    it holds more. Segments that are not real days are left out. ``metrics_error`` says how many runs
    could not be read (``""`` when all were); once :data:`MAX_FAILED_READS` reads failed
    and none succeeded, the tracking store is taken as down and no other run is tried.
    """
    models: dict[str, list[dict[str, Any]]] = {}
    unread: list[str] = []  # runs whose metrics could not be read
    failures, read_any = 0, False
    newest = store.find_page(pool, [], [("created", -1)], 0, MAX_WINDOWS)
    for record in reversed(newest):  # oldest first among the newest
        filter_value = record.get("filter")
        segments = _segments(filter_value)
        if "test" not in segments:
            continue
        model = filter_value.get("model") if isinstance(filter_value, Mapping) else None
        name = model.get("class") if isinstance(model, Mapping) else None
        metrics: dict[str, float] = {}
        result = _result(record)
        if result is not None and not read_any and failures >= MAX_FAILED_READS:
            unread.append(result.run_id)  # the store is down: do not wait on every run
        elif result is not None:
            try:
                metrics = _metrics(result)
                read_any = True  # the store is up: every run is tried
            except Exception as error:  # no IC for this run; the view goes on and says so
                logger.info("run %s not read: %s", result.run_id, error)
                unread.append(f"{result.run_id}: {error}")
                failures += 1
        models.setdefault(str(name or "?"), []).append(
            {"id": record["_id"], "status": record.get("status"), **segments, **metrics})
    for windows in models.values():
        windows.sort(key=lambda window: window["test"][0])
    note = (f"the IC of {len(unread)} run(s) could not be read from the tracking store "
            f"(first: {unread[0]})" if unread else "")
    total = sum(store.count_by_status(pool, []).values()) if len(newest) == MAX_WINDOWS else 0
    shown = (f"only the newest {MAX_WINDOWS} of the pool's {total} tasks are drawn"
             if total > MAX_WINDOWS else "")
    return {"pool": pool, "models": models, "metrics_error": note, "windows_note": shown}


def _ordinal(day: str) -> int:
    return dt.date.fromisoformat(day).toordinal()


def timeline_svg(models: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """An SVG timeline: one row per window, its segments coloured by status."""
    days = [_ordinal(window[name][index]) for windows in models.values() for window in windows
            for name in SEGMENTS if name in window for index in (0, 1)]
    if not days:
        return '<p class="empty">No task in this pool has train/valid/test segments.</p>'
    first, last = min(days), max(days)
    width, left, row_height = 900, 160, 14
    scale = (width - left - 10) / max(1, last - first)
    rows: list[str] = []
    y = 20
    for model, windows in models.items():
        rows.append(f'<text x="4" y="{y + 10}" class="model">{html.escape(model)}</text>')
        for window in windows:
            colour = _COLOURS.get(str(window["status"]), "#999")
            for name in SEGMENTS:
                if name not in window:
                    continue
                start, end = (_ordinal(day) for day in window[name])
                rows.append(
                    f'<rect class="segment {name}" x="{left + (start - first) * scale:.1f}" '
                    f'y="{y}" width="{max(1.0, (end - start) * scale):.1f}" height="{row_height - 3}"'
                    f' fill="{colour}" fill-opacity="{_OPACITY[name]}"><title>'
                    f'{html.escape(model)} {name} {window[name][0]} .. {window[name][1]} '
                    f'({html.escape(window["status"])})</title></rect>')
            y += row_height
        y += 8
    axis = (f'<text x="{left}" y="12">{dt.date.fromordinal(first)}</text>'
            f'<text x="{width - 10}" y="12" text-anchor="end">{dt.date.fromordinal(last)}</text>')
    return (f'<svg class="timeline" width="{width}" height="{y + 4}" viewBox="0 0 {width} {y + 4}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img">{axis}{"".join(rows)}</svg>')


def script_json(value: Any, element_id: str) -> str:
    """``value`` as JSON in a ``<script type="application/json">`` (``<`` escaped)."""
    text = json.dumps(value, default=str).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def rolling_page(request: Request) -> Response:
    """The rolling view of one pool."""
    dashboard = request.app.state.dashboard
    pool = path_value(request, "pool")
    if pool not in dashboard.store.list_pools():
        return dashboard.page("not found", f"<p>No pool {html.escape(pool)}.</p>",  # type: ignore[no-any-return]
                              [("pools", "/")], status_code=404)
    data = rolling_data(dashboard.store, pool)
    problem = (f'<p class="query-error" id="metrics-error" role="alert">'
               f'{html.escape(data["metrics_error"])}</p>' if data["metrics_error"] else "")
    if data["windows_note"]:
        problem += f'<p class="windows-note" id="windows-note">{html.escape(data["windows_note"])}</p>'
    legend = " ".join(f'<span class="badge {status}">{status}</span>' for status in _COLOURS)
    body = (f"<h1>Rolling windows of {html.escape(pool)}</h1>"
            f'<p>train / valid / test from light to dark; {legend}</p>'
            f'<section id="timeline">{timeline_svg(data["models"])}</section>{problem}'
            '<section><h2>IC per test window</h2><div class="chart" id="ic-chart"></div>'
            '<h2>Rank IC per test window</h2><div class="chart" id="rank-ic-chart"></div></section>'
            '<section id="ensembles"><h2>Ensembles</h2><p>Each model\'s rolling ensemble and '
            'their average, scored on the windows\' labels (reads every run\'s predictions). '
            f'<button id="compute-ensembles" data-url="{html.escape(html.api_url(pool, "/ensembles"))}">'
            'compute ensemble IC</button></p><table id="ensemble-table"></table>'
            '<div class="chart" id="ensemble-chart"></div></section>'
            f'{script_json(data, "rolling-data")}')
    return dashboard.page("rolling", body, [("pools", "/"), (pool, html.pool_url(pool))],  # type: ignore[no-any-return]
                          scripts=("charts.js",))


def api_rolling(request: Request) -> Response:
    """The rolling view's data as JSON."""
    store = request.app.state.dashboard.store
    pool = path_value(request, "pool")
    if pool not in store.list_pools():
        return JSONResponse({"error": f"no pool {pool!r}"}, status_code=404)
    return JSONResponse(rolling_data(store, pool))


def api_ensembles(request: Request) -> Response:
    """IC of the pool's ensembles (see :mod:`taskroll.dashboard.ensembles`)."""
    from taskroll.dashboard.ensembles import ensemble_data

    return JSONResponse(ensemble_data(request.app.state.dashboard.store,
                                      path_value(request, "pool")))
