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
method of the same name, on the tasks of the query that have the status the button
names (retry: failed, reset: running). Without ``allow_actions`` they answer 403.

Routing uses the path as sent (:mod:`taskroll.dashboard.routing`), so a pool name may
hold ``/``; every response carries the security headers of
:mod:`taskroll.dashboard.headers`.
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
from taskroll.dashboard.headers import SecurityHeaders
from taskroll.dashboard.routing import EncodedPathRouting, path_value
from taskroll.errors import QueryError, TaskConfigError, TaskrollError
from taskroll.manage import TaskManager
from taskroll.store import TaskStore, parse_query
from taskroll.store.query import matches

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
    pool = path_value(request, "pool")
    if not _known_pool(dashboard, pool):
        message = f'<p class="gone">No pool {html.escape(pool)} (any more).</p>'
        if request.query_params.get("fragment"):  # dropped while the page was open
            return HTMLResponse(message, status_code=404)
        return dashboard.page("not found", message, [("pools", "/")], status_code=404)
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
    fragment_url = html.pool_url(pool) + "?" + urlencode([*params.multi_items(), ("fragment", "1")])
    actions = html.actions_panel(pool, query_text) if dashboard.allow_actions else ""
    body = (f'<h1>{html.escape(pool)}</h1><p><a href="{html.escape(html.pool_url(pool, "/rolling"))}">'
            f"rolling view</a></p>{html.filter_form(pool, query_text, page_request, '')}{actions}"
            f'<div id="live" data-live="{html.escape(fragment_url)}">{live}</div>')
    return dashboard.page(pool, body, [("pools", "/")])


def task_page(request: Request) -> Response:
    """A task's page (or its live fragment)."""
    dashboard: Dashboard = request.app.state.dashboard
    pool, task_id = path_value(request, "pool"), path_value(request, "task_id")
    task = dashboard.reader.task(pool, task_id)
    crumbs = [("pools", "/"), (pool, html.pool_url(pool))]
    if task is None:
        message = f'<p class="gone">No task {html.escape(task_id)} in this pool (any more).</p>'
        if request.query_params.get("fragment"):  # removed while the page was open
            return HTMLResponse(message, status_code=404)
        return dashboard.page("not found", message, crumbs, status_code=404)
    live = html.task_detail(pool, task)
    if request.query_params.get("fragment"):
        return HTMLResponse(live)
    url = html.task_url(pool, task_id) + "?fragment=1"
    actions = (html.actions_panel(pool, json.dumps({"_id": task_id}), task_id)
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
    pool = path_value(request, "pool")
    if not _known_pool(dashboard, pool):
        return JSONResponse({"error": f"no pool {pool!r}"}, status_code=404)
    return JSONResponse({**dashboard.reader.summary(pool), **dashboard.reader.highlights(pool)})


def api_tasks(request: Request) -> Response:
    """One page of the task table (400 with a message for bad parameters)."""
    dashboard: Dashboard = request.app.state.dashboard
    params = request.query_params
    page_request = build_page_request(params.get("q"), params.getlist("status"), params.get("sort"),
                                      params.get("dir"), params.get("page"), params.get("size"))
    return JSONResponse(dashboard.reader.page(path_value(request, "pool"), page_request))


def api_task(request: Request) -> Response:
    """One task (404 when absent)."""
    dashboard: Dashboard = request.app.state.dashboard
    task = dashboard.reader.task(path_value(request, "pool"), path_value(request, "task_id"))
    if task is None:
        return JSONResponse({"error": "no such task"}, status_code=404)
    return JSONResponse(html.json_value(task))


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
    sent = request.headers.get(TOKEN_HEADER, "").encode("latin-1")  # as received: any byte
    if not secrets.compare_digest(sent, dashboard.token.encode("ascii")) \
            or not _same_origin(request):
        return JSONResponse({"error": "missing or wrong page token"}, status_code=403)
    action = request.path_params["action"]
    if action not in _ACTIONS:
        return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    if not isinstance(body, dict) or body.get("confirm") is not True:
        return JSONResponse({"error": "confirm the action with {\"confirm\": true}"},
                            status_code=400)
    try:
        count = _run_action(dashboard, path_value(request, "pool"), action, body)
    except TaskrollError as error:
        return _error_json(error)
    return JSONResponse({"action": action, "changed": count})


def _action_query(value: Any) -> dict[str, Any]:
    """The query of an action: absent, the query box's text, or a JSON object.

    Raises:
        QueryError: For anything else; it is never widened to "every task".
    """
    if value is None:
        return {}
    if isinstance(value, str):
        return parse_query_text(value)
    if isinstance(value, dict):
        try:
            text = json.dumps(value)
        except (ValueError, RecursionError):
            raise QueryError("the query nests too deeply; flatten it") from None
        return parse_query_text(text)
    raise QueryError(f"the query is the text of the query box or a JSON object, "
                     f"got {type(value).__name__}")


def _acting_on(query: dict[str, Any], status: str) -> dict[str, Any]:
    """``query`` narrowed to tasks of ``status``, the only ones an action changes.

    The buttons say "retry failed" and "reset running"; a query box that shows other
    tasks (``{"status": "done"}``) must not widen them (``reset_waiting`` would reset
    the done tasks, ``retry_failed`` would retry every failed one).

    Raises:
        QueryError: When the query's own status condition excludes ``status``.
    """
    statuses = [condition for condition in parse_query(query) if condition.field == "status"]
    if statuses and not matches({"status": status}, statuses):
        raise QueryError(f"this action changes only {status} tasks, and the query selects "
                         "tasks of other statuses; clear the status from the query")
    return {"$and": [query], "status": status} if query else {"status": status}


def _named_task(manager: TaskManager, shown: str) -> str:
    """The id of the task ``shown`` names: its whole id, or the start of exactly one id
    (the pages show ids cut to 12 characters).

    Raises:
        TaskConfigError: When no task id, or more than one, starts with ``shown``.
    """
    store, pool = manager.store, manager.task_pool
    if store.get(pool, shown) is not None:
        return shown
    after = shown[:-1] + chr(min(ord(shown[-1]) + 1, 0x10FFFF))  # ids starting with shown sort below
    starting = [record["_id"] for record in store.find(
        pool, parse_query({"_id": {"$gte": shown, "$lt": after}}), limit=10)
        if str(record["_id"]).startswith(shown)]
    if len(starting) == 1:
        return str(starting[0])
    if not starting:
        raise TaskConfigError(f"no task id in pool {pool!r} starts with {shown!r}")
    raise TaskConfigError(f"more than one task id starts with {shown!r}; give more of it")


def _run_action(dashboard: Dashboard, pool: str, action: str, body: dict[str, Any]) -> int:
    query = _action_query(body.get("query"))
    with TaskManager(pool, store=dashboard.store) as manager:
        if action == "retry":
            return manager.retry_failed(_acting_on(query, manager.STATUS_FAILED))
        if action == "reset":
            return manager.reset_waiting(_acting_on(query, manager.STATUS_RUNNING))
        task_id, priority = body.get("task_id"), body.get("priority")
        if not isinstance(task_id, str) or not task_id.strip():
            raise TaskConfigError("prioritise needs a task id")
        task_id = _named_task(manager, task_id.strip())
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
                  if allowed_hosts is not None else []) + [Middleware(SecurityHeaders),
                                                           Middleware(EncodedPathRouting)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.dashboard = dashboard
    return app
