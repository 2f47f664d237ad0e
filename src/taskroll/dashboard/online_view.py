"""The online view: served signals' IC over time and which model was online when.

With an online folder (the ``--output`` of ``taskroll online``): the daily ``ic`` /
``rank_ic`` of ``report/report.csv`` and the summary of ``report/report.json`` written by
``taskroll online report`` (:meth:`taskroll.online.evaluation.ServedReport.save`; also
read from the folder itself), and the days ``signals.parquet`` serves.

With the strategies' experiments (``--online-experiment NAME``): each chain's trained
models in test-start order, as online serving uses them (:func:`taskroll.online.models.chains`):
a model serves from its test start to the day before the next model's test start, the
newest up to the last served day.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from taskroll.dashboard import html
from taskroll.dashboard.views import script_json

_DAY = pd.Timedelta(days=1)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def served_models(experiments: Sequence[str], last_day: str | None) -> list[dict[str, Any]]:
    """Which model was online when: one row per trained model of each experiment's chains."""
    from taskroll.online.models import chains, list_models

    rows: list[dict[str, Any]] = []
    for experiment in experiments:
        for chain, models in chains(list_models(experiment)).items():
            for index, model in enumerate(models):
                following = models[index + 1] if index + 1 < len(models) else None
                until = (str((following.test_start - _DAY).date()) if following is not None
                         else (last_day or ""))
                rows.append({"experiment": experiment, "chain": chain[:12],
                             "model": model.model_class, "run_id": model.recorder.id,
                             "from": str(model.test_start.date()), "until": until})
    return rows


def _read_daily(report: Path) -> list[dict[str, Any]]:
    return [{"date": str(values.get("datetime", ""))[:10],
             **{name: _finite(values.get(name)) for name in ("ic", "rank_ic")}}
            for values in pd.read_csv(report).to_dict("records")]


def _read_summary(summary: Path) -> dict[str, Any]:
    value = json.loads(summary.read_text())
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _read_served(signals: Path) -> dict[str, Any]:
    frame = pd.read_parquet(signals)
    dates = (frame.index.get_level_values(0) if isinstance(frame.index, pd.MultiIndex)
             else frame.index)
    served: dict[str, Any] = {"served_days": int(pd.Index(dates).nunique())}
    if len(dates):
        served["first_served"], served["last_served"] = str(min(dates))[:10], str(max(dates))[:10]
    return served


def online_data(folder: Path | None, experiments: Sequence[str] = ()) -> dict[str, Any]:
    """Daily IC, summary, served days and served models ({"folder": None} without a folder).

    A file that cannot be read (missing folder, a report being rewritten, an unreachable
    tracking store) leaves its part empty and adds a line to ``problems``.
    """
    if folder is None:
        return {"folder": None}
    data: dict[str, Any] = {"folder": str(folder), "daily": [], "summary": {}, "served_days": 0,
                            "first_served": "", "last_served": "", "models": [], "problems": []}
    if not folder.is_dir():
        data["problems"].append(f"the online folder {folder} does not exist (yet)")
    reports = folder / "report" if (folder / "report").is_dir() else folder
    for path, read, key in ((reports / "report.csv", _read_daily, "daily"),
                            (reports / "report.json", _read_summary, "summary"),
                            (folder / "signals.parquet", _read_served, None)):
        if not path.is_file():
            continue
        try:
            value = read(path)
        except Exception as error:  # half-written or corrupt: show the rest and say so
            data["problems"].append(f"{path.name} could not be read: {error}")
            continue
        if isinstance(value, dict) and key is None:
            data.update(value)
        elif key is not None:
            data[key] = value
    try:
        data["models"] = served_models(experiments, data["last_served"] or None)
    except Exception as error:  # e.g. the tracking store is unreachable
        data["problems"].append(f"the online experiments could not be read: {error}")
    return data


def online_page(request: Request) -> Response:
    """The online view (404 with a hint when no folder was given)."""
    dashboard = request.app.state.dashboard
    data = online_data(dashboard.online_folder, dashboard.online_experiments)
    if data["folder"] is None:
        return HTMLResponse(html.layout(
            "online", "<p>Start the dashboard with <code>--online FOLDER</code> for this view.</p>",
            dashboard.token, [("pools", "/")]), status_code=404)
    summary = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
                      for key, value in sorted(data["summary"].items()))
    models = "".join(
        f'<tr class="served-model"><td>{html.escape(row["experiment"])}</td>'
        f'<td><code>{html.escape(row["chain"])}</code></td><td>{html.escape(row["model"])}</td>'
        f'<td><code>{html.escape(row["run_id"])}</code></td><td>{html.escape(row["from"])}</td>'
        f'<td>{html.escape(row["until"])}</td></tr>' for row in data["models"])
    models_table = (
        '<table id="served-models"><thead><tr><th>experiment</th><th>chain</th><th>model</th>'
        f"<th>run</th><th>online from</th><th>until</th></tr></thead><tbody>{models}</tbody></table>"
        if models else "<p>Name the strategies' experiments with <code>--online-experiment</code> "
                       "to see which model was online when.</p>")
    problems = "".join(f'<p class="query-error online-problem" role="alert">{html.escape(line)}</p>'
                       for line in data["problems"])
    body = (f"<h1>Online signals</h1>{problems}<p>folder <code>{html.escape(data['folder'])}</code>: "
            f'<span id="served-days">{data["served_days"]}</span> served days '
            f'{html.escape(data["first_served"])} .. {html.escape(data["last_served"])}</p>'
            '<h2>IC of the served signals</h2><div class="chart" id="online-chart"></div>'
            f'<table class="summary-table">{summary}</table>'
            f"<h2>Which model was online when</h2>{models_table}"
            f'{script_json(data, "online-data")}')
    return dashboard.page("online", body, [("pools", "/")], scripts=("charts.js",))  # type: ignore[no-any-return]


def api_online(request: Request) -> Response:
    """The online view's data as JSON."""
    dashboard = request.app.state.dashboard
    return JSONResponse(online_data(dashboard.online_folder, dashboard.online_experiments))
