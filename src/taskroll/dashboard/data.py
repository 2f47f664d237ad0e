"""What the dashboard shows, read from a task store; plain data, no web framework.

Every number comes from the store in the database (counts with
:meth:`~taskroll.store.base.TaskStore.count_by_status`, the same call as
``TaskManager.task_stat``; pages with
:meth:`~taskroll.store.base.TaskStore.find_page`; live workers with
:meth:`~taskroll.store.base.TaskStore.live_workers`), so a pool of 100,000 tasks is
never loaded whole.

* **Tasks per minute**: tasks that reached ``done`` or ``part_done`` in the last
  :data:`RATE_WINDOW_SECONDS` (by their ``finished`` stamp), per minute.
* **Live workers**: distinct workers holding an unexpired lease.
* **Query box**: a JSON object in the Mongo-style syntax of
  :mod:`taskroll.store.query`; anything else raises :class:`~taskroll.errors.QueryError`
  with a message meant for the page, before the store is touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from taskroll.errors import QueryError, TaskrollError
from taskroll.manage_failure import parse_error
from taskroll.status import Status
from taskroll.store import TaskStore, parse_query
from taskroll.store.base import SORT_FIELDS, Record
from taskroll.store.codec import decode
from taskroll.store.query import Condition
from taskroll.store.references import RecorderReference

#: Statuses in display order.
STATUSES: Final = tuple(status.value for status in Status)
#: Seconds over which tasks per minute are measured.
RATE_WINDOW_SECONDS: Final = 600.0
#: Rows per page of the task table, unless asked otherwise.
PAGE_SIZE: Final = 50
#: Most rows of the failed and running lists on a pool page.
HIGHLIGHT_ROWS: Final = 20
_FINISHED_STATUSES = ("done", "part_done")


def parse_query_text(text: str | None) -> dict[str, Any]:
    """Parse the query box: empty, or a JSON object of a Mongo-style query.

    Raises:
        QueryError: For text that is not JSON (or nests too deeply to parse), not an
            object, or not a valid query (unknown field or operator, operand of the wrong
            type), with a one-line message.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text, parse_float=_finite_number, parse_constant=_refuse_constant)
    except ValueError as error:
        detail = getattr(error, "msg", str(error))
        raise QueryError(f"the query is not valid JSON: {detail}") from error
    except RecursionError:  # Python's parser gives up on deep nesting
        raise QueryError("the query nests too deeply; flatten it") from None
    if not isinstance(value, dict):
        raise QueryError('the query must be a JSON object such as {"filter.model.class": '
                         '"LinearModel"}')
    parse_query(value)  # refuses unknown fields, operators and operands
    return value


def _finite_number(text: str) -> float:
    """A JSON number that fits a double (``1e999`` is not one)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (Python's parser accepts them)."""
    raise ValueError(f"{name} is not a JSON value")


@dataclass(frozen=True)
class PageRequest:
    """What the task table asks for: a query, status buttons, sort and page.

    Attributes:
        query: Parsed query-box value (see :func:`parse_query_text`).
        statuses: Statuses to show (all when empty).
        sort: A field of :data:`~taskroll.store.base.SORT_FIELDS`.
        descending: Sort direction.
        page: Page number, from 1.
        page_size: Rows per page.
    """

    query: Mapping[str, Any] = field(default_factory=dict)
    statuses: tuple[str, ...] = ()
    sort: str = "created"
    descending: bool = True
    page: int = 1
    page_size: int = PAGE_SIZE

    def conditions(self) -> list[Condition]:
        """The store conditions: the query and, when given, the status buttons.

        Raises:
            QueryError: For a malformed query or an unknown status.
        """
        conditions = parse_query(self.query)
        unknown = [status for status in self.statuses if status not in STATUSES]
        if unknown:
            raise QueryError(f"unknown status {unknown[0]!r}; choose among {list(STATUSES)}")
        if self.statuses:
            conditions.append(Condition("status", (), "$in", list(self.statuses)))
        return conditions


def build_page_request(query_text: str | None, statuses: Sequence[str], sort: str | None,
                       direction: str | None, page: str | None,
                       page_size: str | None = None) -> PageRequest:
    """Build a :class:`PageRequest` from the text of URL parameters.

    Raises:
        QueryError: For any malformed parameter (message suitable for the page).
    """
    sort = sort or "created"
    if sort not in SORT_FIELDS:
        raise QueryError(f"cannot sort by {sort!r}; choose one of {list(SORT_FIELDS)}")
    if direction not in (None, "", "asc", "desc"):
        raise QueryError(f"the sort direction is 'asc' or 'desc', got {direction!r}")
    numbers: list[int] = []
    for name, text, default, highest in (("page", page, 1, 10**9),
                                         ("size", page_size, PAGE_SIZE, 1000)):
        try:
            number = default if text in (None, "") else int(str(text))
        except ValueError:
            raise QueryError(f"{name} must be a whole number, got {text!r}") from None
        if not 1 <= number <= highest:
            raise QueryError(f"{name} must be between 1 and {highest}, got {number}")
        numbers.append(number)
    request = PageRequest(query=parse_query_text(query_text),
                          statuses=tuple(dict.fromkeys(item for item in statuses if item)),
                          sort=sort, descending=direction != "asc", page=numbers[0],
                          page_size=numbers[1])
    request.conditions()  # checks the statuses too
    return request


def _short_line(text: Any, limit: int = 200) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= limit else last[:limit - 1] + "\u2026"


def task_label(filter_value: Any) -> str:
    """A short name for a task: its model class and test segment, when it has them."""
    if not isinstance(filter_value, Mapping):
        return ""
    parts: list[str] = []
    model = filter_value.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("class"), str):
        parts.append(model["class"])
    dataset = filter_value.get("dataset")
    kwargs = dataset.get("kwargs") if isinstance(dataset, Mapping) else None
    segments = kwargs.get("segments") if isinstance(kwargs, Mapping) else None
    test = segments.get("test") if isinstance(segments, Mapping) else None
    if isinstance(test, list) and len(test) == 2:
        parts.append(f"test {str(test[0])[:10]} .. {str(test[1])[:10]}")
    return " \u00b7 ".join(parts)


def task_row(record: Record, now: float) -> dict[str, Any]:
    """The table row of one record: plain JSON values (times as UNIX seconds)."""
    error = parse_error(record.get("error"))
    lease_until = record.get("lease_until")
    running = record.get("status") == "running"
    return {
        "id": record["_id"], "label": task_label(record.get("filter")),
        "status": record.get("status"), "priority": record.get("priority"),
        "attempts": record.get("attempts"), "worker": record.get("worker") if running else None,
        "lease_left": (round(float(lease_until) - now, 1)
                       if running and lease_until is not None else None),
        "created": record.get("created"), "started": record.get("started"),
        "finished": record.get("finished"),
        "error_kind": error["kind"] if error else None,
        "error_line": _short_line(error["message"] or error["traceback"]) if error else None,
    }


class PoolReader:
    """Read-only views of the pools of one store.

    Args:
        store: The open task store (not closed by the reader).
    """

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def pools(self) -> list[str]:
        """The pool names, sorted."""
        return self.store.list_pools()

    def summary(self, pool: str) -> dict[str, Any]:
        """Counts per status (as ``task_stat``), progress, tasks per minute, live workers."""
        counts = self.store.count_by_status(pool, [])
        now = self.store.now()
        recent = self.store.count_by_status(
            pool, [Condition("finished", (), "$gte", now - RATE_WINDOW_SECONDS),
                   Condition("status", (), "$in", list(_FINISHED_STATUSES))])
        total = sum(counts.values())
        done = counts.get("done", 0)
        return {
            "pool": pool, "counts": {status: counts.get(status, 0) for status in STATUSES},
            "total": total, "done": done,
            "progress": done / total if total else 0.0,
            "tasks_per_minute": round(sum(recent.values()) / (RATE_WINDOW_SECONDS / 60.0), 2),
            "live_workers": len(self.store.live_workers(pool)), "now": now,
        }

    def summaries(self) -> list[dict[str, Any]]:
        """:meth:`summary` of every pool."""
        return [self.summary(pool) for pool in self.pools()]

    def page(self, pool: str, request: PageRequest) -> dict[str, Any]:
        """One page of the task table and the number of matching tasks.

        Raises:
            QueryError: For a malformed query.
        """
        conditions = request.conditions()
        matching = sum(self.store.count_by_status(pool, conditions).values())
        pages = max(1, -(-matching // request.page_size))
        records = self.store.find_page(
            pool, conditions, [(request.sort, -1 if request.descending else 1)],
            (request.page - 1) * request.page_size, request.page_size)
        now = self.store.now()
        return {"pool": pool, "matching": matching, "page": request.page, "pages": pages,
                "page_size": request.page_size, "sort": request.sort,
                "descending": request.descending,
                "rows": [task_row(record, now) for record in records]}

    def highlights(self, pool: str) -> dict[str, list[dict[str, Any]]]:
        """The newest failed tasks and the running ones (longest running first)."""
        now = self.store.now()
        failed = self.store.find_page(pool, [Condition("status", (), "$eq", "failed")],
                                      [("finished", -1)], 0, HIGHLIGHT_ROWS)
        running = self.store.find_page(pool, [Condition("status", (), "$eq", "running")],
                                       [("started", 1)], 0, HIGHLIGHT_ROWS)
        return {"failed": [task_row(record, now) for record in failed],
                "running": [task_row(record, now) for record in running]}

    def task(self, pool: str, task_id: str) -> dict[str, Any] | None:
        """Everything about one task, or ``None`` when the pool has no such task."""
        record = self.store.get(pool, task_id)
        if record is None:
            return None
        now = self.store.now()
        row = task_row(record, now)
        error = parse_error(record.get("error"))
        definition, definition_note = _decoded(record, "def")
        result, result_note = _decoded(record, "res")
        run = result.to_reference() if isinstance(result, RecorderReference) else None
        failures = [*error["history"], {name: error[name] for name in
                                        ("kind", "message", "traceback", "attempt")}] \
            if error else []
        history = [{"time": record.get("created"), "event": "created"}]
        history += [{"time": None, "event": f"attempt {item.get('attempt') or '?'}: "
                                            f"{item.get('kind')}: {item.get('message') or ''}"}
                    for item in failures if item.get("kind")]
        if record.get("started") is not None:
            history.append({"time": record["started"], "event": "last started"})
        if record.get("finished") is not None:
            history.append({"time": record["finished"],
                            "event": f"finished as {record.get('status')}"})
        return {**row, "definition": definition, "definition_note": definition_note,
                "result": None if run else result, "result_note": result_note,
                "recorder": run, "error": error, "failures": failures, "history": history,
                "lease_until": record.get("lease_until"), "now": now}


def _decoded(record: Record, name: str) -> tuple[Any, str]:
    """A stored payload decoded for display (pickles are never unpickled here)."""
    try:
        return decode(record.get(f"{name}_encoding"), record.get(name), allow_pickle=False), ""
    except TaskrollError as error:
        return None, f"not shown: {error}"
