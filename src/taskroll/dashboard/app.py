"""The dashboard's ASGI application (Starlette): pages, JSON endpoints and optional actions.

Pages (HTML; the live part refreshes itself through ``?fragment=1``)::

    /                                   every pool: counts, progress, tasks/min, live workers
    /pool/{pool}?q=&status=&sort=&dir=&page=    one pool: failed, running, the task table
    /pool/{pool}/task/{id}              one task: definition, history, tracebacks, result
    /pool/{pool}/rolling                rolling windows and IC per window (from recorders)
    /online                             served signals' IC (with an online folder)

JSON (``/api``): ``/api/pools``, ``/api/pools/{pool}``, ``/api/pools/{pool}/tasks``
(same parameters as the page; 400 with ``{"error": ...}`` for a bad query),
``/api/pools/{pool}/tasks/{id}``, ``/api/pools/{pool}/rolling``,
``/api/pools/{pool}/ensembles``, ``/api/online``.

Actions (only with ``allow_actions``): ``POST /api/pools/{pool}/actions/{retry|reset|
prioritise}`` with a JSON body ``{"confirm": true, "query": "...", "task_id": ...,
"priority": ...}`` and the header ``X-Taskroll-Token`` carrying the token of the page
(a foreign page can neither read it nor send the header without a CORS preflight,
which this server never grants); each runs the :class:`~taskroll.manage.TaskManager`
method of the same name. Without ``allow_actions`` they answer 403.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from taskroll.dashboard import html, online_view, views
from taskroll.dashboard.data import PoolReader, build_page_request, parse_query_text
from taskroll.errors import QueryError, TaskConfigError, TaskrollError
from taskroll.manage import TaskManager
from taskroll.store import TaskStore

STATIC_FOLDER = Path(__file__).parent / "static"
TOKEN_HEADER = "x-taskroll-token"
_ACTIONS = ("retry", "reset", "prioritise")


class Dashboard:
    """The state the handlers share: the store, the token and the options.

    Args:
        store: An open task store (the caller closes it).
        allow_actions: Serve the retry / reset / prioritise actions.
        online_folder: The online output folder of ``taskroll online`` (or ``None``).
        refresh_seconds: How often pages refresh their live part.
        online_experiments: The online strategies' experiments (which model was online when).
    """

    def __init__(self, store: TaskStore, allow_actions: bool = False,
                 online_folder: Path | None = None, refresh_seconds: float = 3.0,
                 online_experiments: Sequence[str] = ()) -> None:
        self.store = store
        self.online_experiments = tuple(online_experiments)
        self.reader = PoolReader(store)
        self.allow_actions = allow_actions
        self.online_folder = online_folder
        self.refresh_seconds = refresh_seconds
        self.token = secrets.token_urlsafe(24)

    def page(self, title: str, body: str, crumbs: list[tuple[str, str]] | None = None,
             status_code: int = 200, scripts: tuple[str, ...] = ()) -> HTMLResponse:
        """A whole HTML page."""
        return HTMLResponse(html.layout(title, body, self.token, crumbs or [],
                                        self.refresh_seconds, self.allow_actions, scripts),
                            status_code=status_code)


def _error_json(error: TaskrollError) -> JSONResponse:
    code = 400 if isinstance(error, (QueryError, TaskConfigError)) else 503
    return JSONResponse({"error": str(error)}, status_code=code)


def _guard(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Turn taskroll errors into 400 (bad input) or 503 (store trouble), never a 500."""
    def guarded(request: Request) -> Response:
        try:
            return handler(request)
        except TaskrollError as error:
            if request.url.path.startswith("/api/"):
                return _error_json(error)
            code = 400 if isinstance(error, (QueryError, TaskConfigError)) else 503
            dashboard: Dashboard = request.app.state.dashboard
            return dashboard.page("error", f'<p class="query-error">{html.escape(str(error))}</p>',
                                  status_code=code)
    return guarded


def _known_pool(dashboard: Dashboard, pool: str) -> bool:
    return pool in dashboard.reader.pools()


def home(request: Request) -> Response:
    """The home page (or its live fragment)."""
    dashboard: Dashboard = request.app.state.dashboard
    live = html.home_live(dashboard.reader.summaries())
    if request.query_params.get("fragment"):
        return HTMLResponse(live)
    links = '<p><a href="/online">online view</a></p>' if dashboard.online_folder else ""
    return dashboard.page("pools", f'<h1>Task pools</h1><div id="live" data-live="/?fragment=1">'
                                   f"{live}</div>{links}")


def pool_page(request: Request) -> Response:
    """A pool's page; a bad query box shows an inline error (status 400)."""
    dashboard: Dashboard = request.app.state.dashboard
    pool = request.path_params["pool"]
    if not _known_pool(dashboard, pool):
        return dashboard.page("not found", f"<p>No pool {html.escape(pool)!s}.</p>",
                              [("pools", "/")], status_code=404)
    params = request.query_params
    query_text = params.get("q", "")
    try:
        page_request = build_page_request(query_text, params.getlist("status"), params.get("sort"),
                                          params.get("dir"), params.get("page"), params.get("size"))
        page = dashboard.reader.page(pool, page_request)
    except QueryError as error:
        form = html.filter_form(pool, query_text, None, str(error))
        return dashboard.page(pool, f"<h1>{html.escape(pool)}</h1>{form}", [("pools", "/")],
                              status_code=400)
    live = html.pool_live(pool, dashboard.reader.summary(pool), dashboard.reader.highlights(pool),
                          page, page_request)
    if params.get("fragment"):
        return HTMLResponse(live)
    fragment_url = request.url.path + "?" + urlencode([*params.multi_items(), ("fragment", "1")])
    actions = html.actions_panel(pool, query_text) if dashboard.allow_actions else ""
    body = (f'<h1>{html.escape(pool)}</h1><p><a href="{html.escape(html.pool_url(pool, "/rolling"))}">'
            f"rolling view</a></p>{html.filter_form(pool, query_text, page_request, '')}{actions}"
            f'<div id="live" data-live="{html.escape(fragment_url)}">{live}</div>')
    return dashboard.page(pool, body, [("pools", "/")])


def task_page(request: Request) -> Response:
    """A task's page (or its live fragment)."""
    dashboard: Dashboard = request.app.state.dashboard
    pool, task_id = request.path_params["pool"], request.path_params["task_id"]
    task = dashboard.reader.task(pool, task_id)
    crumbs = [("pools", "/"), (pool, html.pool_url(pool))]
    if task is None:
        return dashboard.page("not found", f"<p>No task {html.escape(task_id)} in this pool.</p>",
                              crumbs, status_code=404)
    live = html.task_detail(pool, task)
    if request.query_params.get("fragment"):
        return HTMLResponse(live)
    url = html.task_url(pool, task_id) + "?fragment=1"
    actions = (html.actions_panel(pool, json.dumps({"_id": task_id}))
               if dashboard.allow_actions else "")
    return dashboard.page(f"task {task_id[:12]}", f'<h1>Task <code>{html.escape(task_id[:12])}</code>'
                          f' <small>{html.escape(task["label"])}</small></h1>'
                          f'<div id="live" data-live="{html.escape(url)}">{live}</div>{actions}',
                          crumbs)


def api_pools(request: Request) -> Response:
    """Every pool's summary."""
    dashboard: Dashboard = request.app.state.dashboard
    return JSONResponse({"pools": dashboard.reader.summaries()})


def api_pool(request: Request) -> Response:
    """One pool's summary with its failed and running tasks."""
    dashboard: Dashboard = request.app.state.dashboard
    pool = request.path_params["pool"]
    if not _known_pool(dashboard, pool):
        return JSONResponse({"error": f"no pool {pool!r}"}, status_code=404)
    return JSONResponse({**dashboard.reader.summary(pool), **dashboard.reader.highlights(pool)})


def api_tasks(request: Request) -> Response:
    """One page of the task table (400 with a message for bad parameters)."""
    dashboard: Dashboard = request.app.state.dashboard
    params = request.query_params
    page_request = build_page_request(params.get("q"), params.getlist("status"), params.get("sort"),
                                      params.get("dir"), params.get("page"), params.get("size"))
    return JSONResponse(dashboard.reader.page(request.path_params["pool"], page_request))


def api_task(request: Request) -> Response:
    """One task (404 when absent)."""
    dashboard: Dashboard = request.app.state.dashboard
    task = dashboard.reader.task(request.path_params["pool"], request.path_params["task_id"])
    if task is None:
        return JSONResponse({"error": "no such task"}, status_code=404)
    return JSONResponse(json.loads(json.dumps(task, default=html.plain_json)))


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def api_action(request: Request) -> Response:
    """Run one confirmed action through :class:`TaskManager` (403 unless allowed)."""
    dashboard: Dashboard = request.app.state.dashboard
    if not dashboard.allow_actions:
        return JSONResponse({"error": "actions are off; start the dashboard with --allow-actions"},
                            status_code=403)
    if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), dashboard.token) \
            or not _same_origin(request):
        return JSONResponse({"error": "missing or wrong page token"}, status_code=403)
    action = request.path_params["action"]
    if action not in _ACTIONS:
        return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    if not isinstance(body, dict) or body.get("confirm") is not True:
        return JSONResponse({"error": "confirm the action with {\"confirm\": true}"},
                            status_code=400)
    try:
        count = _run_action(dashboard, request.path_params["pool"], action, body)
    except TaskrollError as error:
        return _error_json(error)
    return JSONResponse({"action": action, "changed": count})


def _run_action(dashboard: Dashboard, pool: str, action: str, body: dict[str, Any]) -> int:
    query = parse_query_text(body.get("query") if isinstance(body.get("query"), str) else None)
    with TaskManager(pool, store=dashboard.store) as manager:
        if action == "retry":
            return manager.retry_failed(query)
        if action == "reset":
            return manager.reset_waiting(query)
        task_id, priority = body.get("task_id"), body.get("priority")
        if not isinstance(task_id, str) or not task_id:
            raise TaskConfigError("prioritise needs a task id")
        if isinstance(priority, str):
            try:
                priority = int(priority)
            except ValueError:
                raise TaskConfigError(f"a priority is a whole number, got {priority!r}") from None
        return int(manager.prioritize(task_id, priority))  # type: ignore[arg-type]


def create_app(store: TaskStore, allow_actions: bool = False, online_folder: Path | None = None,
               refresh_seconds: float = 3.0, online_experiments: Sequence[str] = (),
               allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """Build the dashboard application over an open store (the caller closes the store).

    Args:
        store: The task store to read.
        allow_actions: Serve the retry / reset / prioritise actions (read-only otherwise).
        online_folder: Folder of ``taskroll online`` output for the online view.
        refresh_seconds: How often pages refresh their live part.
        online_experiments: The online strategies' experiments, for "which model was online
            when" in the online view.
        allowed_hosts: ``Host`` header values to serve (others get 400), so that a foreign
            site whose name is rebound to this machine cannot read the pages and their
            token; ``None`` serves any host.
    """
    dashboard = Dashboard(store, allow_actions, online_folder, refresh_seconds, online_experiments)
    routes = [
        Route("/", _guard(home)),
        Route("/pool/{pool}", _guard(pool_page)),
        Route("/pool/{pool}/rolling", _guard(views.rolling_page)),
        Route("/pool/{pool}/task/{task_id:path}", _guard(task_page)),
        Route("/online", _guard(online_view.online_page)),
        Route("/api/pools", _guard(api_pools)),
        Route("/api/pools/{pool}", _guard(api_pool)),
        Route("/api/pools/{pool}/tasks", _guard(api_tasks)),
        Route("/api/pools/{pool}/tasks/{task_id:path}", _guard(api_task)),
        Route("/api/pools/{pool}/rolling", _guard(views.api_rolling)),
        Route("/api/pools/{pool}/ensembles", _guard(views.api_ensembles)),
        Route("/api/online", _guard(online_view.api_online)),
        Route("/api/pools/{pool}/actions/{action}", api_action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_FOLDER), name="static"),
    ]
    middleware = ([Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
                  if allowed_hosts is not None else [])
    app = Starlette(routes=routes, middleware=middleware)
    app.state.dashboard = dashboard
    return app
