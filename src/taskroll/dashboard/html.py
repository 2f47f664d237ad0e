"""HTML of the dashboard's pages, built from plain data with every value escaped.

No template engine: small functions return strings, and every value that comes from
a pool, a query or a recorder goes through :func:`escape` (or :func:`json_block`), so
a task definition cannot inject markup. The live parts of a page sit in an element
with ``data-live="URL"``; ``static/dashboard.js`` fetches that URL (the same page with
``fragment=1``) every few seconds and swaps the element's content, without a reload.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from taskroll.dashboard.data import PAGE_SIZE, STATUSES, PageRequest
from taskroll.store.base import SORT_FIELDS
from taskroll.store.references import RecorderReference

#: The task table's columns: title and the field it sorts by (``None``: not sortable).
_TABLE_COLUMNS = (("task", "_id"), ("status", "status"), ("priority", "priority"),
                  ("attempts", "attempts"), ("worker", "worker"), ("created", "created"),
                  ("finished", "finished"), ("last error", None))


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def when(seconds: Any) -> str:
    """A UNIX time as ``YYYY-MM-DD HH:MM:SS`` UTC ('' when absent)."""
    if seconds is None:
        return ""
    try:
        moment = dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    except (OverflowError, ValueError, OSError):  # beyond the calendar: shown as stored
        return f"{seconds} s"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def lease_text(seconds_left: float) -> str:
    """A running task's lease: time left, or how long ago it expired (worker lost?)."""
    if seconds_left < 0:
        return f"lease expired {-seconds_left:g} s ago"
    return f"lease {seconds_left:g} s"


def plain_json(value: Any) -> Any:
    """``json.dumps`` default: a recorder reference as its dict, anything else as text."""
    if isinstance(value, RecorderReference):
        return value.to_reference()
    return str(value)


def json_value(value: Any) -> Any:
    """``value`` as strict JSON data (what ``JSONResponse`` accepts).

    Non-finite floats, which JSON cannot hold, become the text ``"nan"`` / ``"inf"`` /
    ``"-inf"``; other objects become what :func:`plain_json` gives.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json_value(plain_json(value))


def json_block(value: Any) -> str:
    """Pretty JSON of ``value`` in an escaped ``<pre>`` block."""
    text = json.dumps(value, indent=2, sort_keys=True, default=plain_json, ensure_ascii=False)
    return f'<pre class="json">{escape(text)}</pre>'


def pool_url(pool: str, suffix: str = "") -> str:
    """The path of a pool's page (``suffix`` such as ``/rolling``)."""
    return f"/pool/{quote(pool, safe='')}{suffix}"


def api_url(pool: str, suffix: str = "") -> str:
    """The path of a pool's JSON endpoint (``suffix`` such as ``/ensembles``)."""
    return f"/api/pools/{quote(pool, safe='')}{suffix}"


def task_url(pool: str, task_id: str) -> str:
    """The path of a task's page."""
    return f"{pool_url(pool)}/task/{quote(task_id, safe='')}"


def layout(title: str, body: str, token: str, crumbs: Sequence[tuple[str, str]] = (),
           refresh_seconds: float = 3.0, allow_actions: bool = False,
           scripts: Iterable[str] = ()) -> str:
    """A whole page: header with breadcrumbs, ``body`` (already HTML), shipped assets only."""
    trail = " / ".join([f'<a href="{escape(url)}">{escape(name)}</a>' for name, url in crumbs]
                       + [f"<span>{escape(title)}</span>"])
    names = list(scripts)
    charts = "charts.js" in names  # uPlot (about 50 kB) only where something is plotted
    if charts:
        names.insert(0, "uPlot.iife.min.js")
    extra = "".join(f'<script src="/static/{escape(name)}"></script>' for name in names)
    styles = "".join(f'<link rel="stylesheet" href="/static/{name}">'
                     for name in ("dashboard.css", *(("uPlot.min.css",) if charts else ())))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)} \u2013 taskroll</title>"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{styles}'
        f'</head><body data-token="{escape(token)}" data-refresh="{refresh_seconds:g}" '
        f'data-actions="{"on" if allow_actions else "off"}">'
        f'<header><a class="brand" href="/">taskroll</a> <nav>{trail}</nav>'
        '<span id="live-state" class="live-state">live</span></header>'
        f"<main>{body}</main>"
        f'<script src="/static/dashboard.js"></script>{extra}</body></html>'
    )


def status_counts(counts: Mapping[str, int], pool: str | None = None) -> str:
    """Status badges with counts (links to the filtered table when ``pool`` is given)."""
    parts = []
    for status in STATUSES:
        label = (f'<span class="label">{escape(status)}</span> '
                 f'<span class="count" data-status="{escape(status)}">{counts.get(status, 0)}</span>')
        if pool is not None:
            url = pool_url(pool) + "?" + urlencode({"status": status})
            parts.append(f'<a class="badge {escape(status)}" href="{escape(url)}">{label}</a>')
        else:
            parts.append(f'<span class="badge {escape(status)}">{label}</span>')
    return f'<div class="counts">{"".join(parts)}</div>'


def progress_bar(summary: Mapping[str, Any]) -> str:
    """A bar of done / failed / running shares of the pool."""
    total = summary["total"] or 1
    segments = "".join(
        f'<span class="segment {status}" style="width:{100 * summary["counts"][status] / total:.3f}%">'
        "</span>" for status in ("done", "part_done", "running", "failed"))
    return (f'<div class="progress" title="{summary["done"]} of {summary["total"]} done">'
            f"{segments}</div>")


def home_live(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The live part of the home page: one row per pool."""
    if not summaries:
        return '<p class="empty">No task pools in this store yet.</p>'
    rows = []
    for summary in summaries:
        pool = summary["pool"]
        rows.append(
            f'<tr class="pool-row" data-pool="{escape(pool)}">'
            f'<td><a class="pool-link" href="{escape(pool_url(pool))}">{escape(pool)}</a></td>'
            f'<td>{status_counts(summary["counts"], pool)}</td>'
            f'<td class="total">{summary["total"]}</td>'
            f'<td>{progress_bar(summary)} <span class="percent">{100 * summary["progress"]:.1f}%'
            "</span></td>"
            f'<td class="rate">{summary["tasks_per_minute"]:g}</td>'
            f'<td class="workers">{summary["live_workers"]}</td></tr>')
    return ('<table class="pools"><thead><tr><th>pool</th><th>status</th><th>tasks</th>'
            "<th>progress</th><th>tasks/min</th><th>live workers</th></tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table>')


def _task_table(pool: str, rows: Sequence[Mapping[str, Any]], extra: str = "") -> str:
    if not rows:
        return '<p class="empty">No tasks.</p>'
    body = []
    for row in rows:
        lease = f' <span class="lease">{lease_text(row["lease_left"])}</span>' \
            if row.get("lease_left") is not None else ""
        error = (f'<span class="kind">{escape(row["error_kind"])}</span> '
                 f'{escape(row["error_line"])}' if row.get("error_kind") else "")
        body.append(
            f'<tr class="task-row {escape(row["status"])}" data-id="{escape(row["id"])}">'
            f'<td><a href="{escape(task_url(pool, row["id"]))}" title="{escape(row["id"])}">'
            f'{escape(row["id"][:12])}</a>'
            f' <span class="task-label">{escape(row["label"])}</span></td>'
            f'<td class="status">{escape(row["status"])}</td>'
            f'<td>{escape(row["priority"])}</td><td>{escape(row["attempts"])}</td>'
            f'<td class="worker">{escape(row["worker"])}{lease}</td>'
            f'<td>{when(row["created"])}</td><td>{when(row["finished"])}</td>'
            f'<td class="error">{error}</td></tr>')
    heads = "".join(f"<th>{escape(title)}</th>" for title, _ in _TABLE_COLUMNS)
    return (f'<table class="tasks {extra}"><thead><tr>{heads}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _link(pool: str, request: PageRequest, **changes: Any) -> str:
    values = {"q": json.dumps(request.query) if request.query else "",
              "sort": request.sort, "dir": "desc" if request.descending else "asc",
              "page": request.page,
              "size": request.page_size if request.page_size != PAGE_SIZE else "", **changes}
    pairs = [(key, str(value)) for key, value in values.items() if value not in ("", None)]
    pairs += [("status", status) for status in request.statuses]
    return pool_url(pool) + "?" + urlencode(pairs)


def task_page_table(pool: str, page: Mapping[str, Any], request: PageRequest) -> str:
    """The filtered, sorted, paged task table with sortable headers and page links."""
    heads = []
    for title, sort_field in _TABLE_COLUMNS:
        if sort_field is None or sort_field not in SORT_FIELDS:
            heads.append(f"<th>{escape(title)}</th>")
            continue
        active = request.sort == sort_field
        direction = "asc" if active and request.descending else "desc"
        arrow = (" \u25bc" if request.descending else " \u25b2") if active else ""
        url = _link(pool, request, sort=sort_field, dir=direction, page=1)
        heads.append(f'<th><a class="sort" data-sort="{escape(sort_field)}" '
                     f'href="{escape(url)}">{escape(title)}{arrow}</a></th>')
    table = _task_table(pool, page["rows"])
    if table.startswith("<table"):  # the same table, with sortable headers
        start, end = table.index("<thead>"), table.index("</thead>") + len("</thead>")
        table = table[:start] + f"<thead><tr>{''.join(heads)}</tr></thead>" + table[end:]
    previous = (f'<a class="page-previous" href="{escape(_link(pool, request, page=page["page"] - 1))}">'
                "\u2190 previous</a>" if page["page"] > 1 else "")
    following = (f'<a class="page-next" href="{escape(_link(pool, request, page=page["page"] + 1))}">'
                 "next \u2192</a>" if page["page"] < page["pages"] else "")
    return (f'<div class="pager"><span id="matching">{page["matching"]}</span> matching tasks, '
            f'page <span id="page-number">{page["page"]}</span> of {page["pages"]} '
            f"{previous} {following}</div>{table}")


def pool_live(pool: str, summary: Mapping[str, Any], highlights: Mapping[str, Any],
              page: Mapping[str, Any], request: PageRequest) -> str:
    """The live part of a pool page: counts, failed and running tasks, the table page."""
    return (
        f'<section class="summary">{status_counts(summary["counts"], pool)}{progress_bar(summary)}'
        f'<p><span id="total">{summary["total"]}</span> tasks, '
        f'<span id="rate">{summary["tasks_per_minute"]:g}</span> tasks/min, '
        f'<span id="workers">{summary["live_workers"]}</span> live workers</p></section>'
        f'<section id="failed"><h2>Failed tasks</h2>'
        f'{_task_table(pool, highlights["failed"], "failed-list")}</section>'
        f'<section id="running"><h2>Running tasks</h2>'
        f'{_task_table(pool, highlights["running"], "running-list")}</section>'
        f'<section id="table"><h2>All tasks</h2>{task_page_table(pool, page, request)}</section>')


def filter_form(pool: str, query_text: str, request: PageRequest | None, error: str) -> str:
    """The query box and status buttons; ``error`` is shown inline under the box."""
    chosen = set(request.statuses) if request else set()
    buttons = "".join(
        f'<label class="status-button {escape(status)}"><input type="checkbox" name="status" '
        f'value="{escape(status)}"{" checked" if status in chosen else ""}> {escape(status)}</label>'
        for status in STATUSES)
    sort = request.sort if request else "created"
    direction = "desc" if request is None or request.descending else "asc"
    message = (f'<p class="query-error" id="query-error" role="alert">{escape(error)}</p>'
               if error else "")
    size = (f'<input type="hidden" name="size" value="{request.page_size}">'
            if request and request.page_size != PAGE_SIZE else "")
    return (f'<form class="filter" method="get" action="{escape(pool_url(pool))}">'
            f'<input class="query" id="query" name="q" value="{escape(query_text)}" '
            'placeholder=\'{"filter.model.class": "LinearModel"}\' spellcheck="false">'
            f'<input type="hidden" name="sort" value="{escape(sort)}">'
            f'<input type="hidden" name="dir" value="{escape(direction)}">{size}'
            f'<span class="statuses">{buttons}</span> <button type="submit" id="apply">filter</button>'
            f"</form>{message}")


def actions_panel(pool: str, query_text: str, task_id: str = "") -> str:
    """Buttons of the optional actions (shown only with ``--allow-actions``); a task page
    gives its task's whole id, filled in for "prioritise"."""
    return (f'<section class="actions" data-pool="{escape(pool)}" data-query="{escape(query_text)}">'
            "<h2>Actions</h2>"
            '<button class="action" data-action="retry">retry failed (matching the query)</button> '
            '<button class="action" data-action="reset">reset running to waiting (matching)</button> '
            '<span class="prioritise">task id '
            f'<input id="action-task" size="14" value="{escape(task_id)}"> priority '
            '<input id="action-priority" size="4" value="1"> '
            '<button class="action" data-action="prioritise">prioritise</button></span>'
            '<p id="action-result" class="action-result"></p></section>')


def task_detail(pool: str, task: Mapping[str, Any]) -> str:
    """The live body of a task page."""
    facts = "".join(f"<tr><th>{escape(name)}</th><td>{value}</td></tr>" for name, value in (
        ("id", f"<code>{escape(task['id'])}</code>"),
        ("status", f'<span class="badge {escape(task["status"])}" id="task-status">'
                   f'{escape(task["status"])}</span>'),
        ("priority", escape(task["priority"])), ("attempts", escape(task["attempts"])),
        ("worker", escape(task["worker"])),
        ("lease left", "" if task["lease_left"] is None else lease_text(task["lease_left"])),
        ("created", when(task["created"])), ("started", when(task["started"])),
        ("finished", when(task["finished"]))))
    history = "".join(f"<li>{escape(when(item['time']))} {escape(item['event'])}</li>"
                      for item in task["history"])
    failures = "".join(
        f'<div class="failure"><h3>attempt {escape(item.get("attempt"))}: '
        f'{escape(item.get("kind"))}</h3><p>{escape(item.get("message"))}</p>'
        f'<pre class="traceback">{escape(item.get("traceback") or "")}</pre></div>'
        for item in reversed(task["failures"]))
    if task["recorder"]:
        run = task["recorder"]
        result = (f'<p class="recorder">MLflow run <code>{escape(run["run_id"])}</code> in '
                  f'<code>{escape(run["tracking_uri"] or "the configured tracking store")}</code>'
                  f' (open it with <code>mlflow ui --backend-store-uri ...</code>)</p>')
    else:
        result = escape(task["result_note"]) if task["result_note"] else json_block(task["result"])
    definition = (escape(task["definition_note"]) if task["definition_note"]
                  else json_block(task["definition"]))
    return (f'<section class="facts"><table>{facts}</table></section>'
            f"<section><h2>Status history</h2><ul class=\"history\">{history}</ul></section>"
            f'<section id="failures"><h2>Failures ({len(task["failures"])})</h2>'
            f'{failures or "<p>none</p>"}</section>'
            f"<section><h2>Result</h2>{result}</section>"
            f"<section><h2>Definition</h2>{definition}</section>")
