"""The contract of batch claims, pages and live workers (part of :mod:`taskroll.testing`).

:class:`ClaimAndPageContract` is a pytest mixin that
:class:`taskroll.testing.TaskStoreContract` inherits, so every backend that runs the
contract suite also checks :meth:`~taskroll.store.base.TaskStore.fetch_many`,
:meth:`~taskroll.store.base.TaskStore.find_page` and
:meth:`~taskroll.store.base.TaskStore.live_workers`, whether it overrides them or keeps
the defaults. It uses the ``store`` and ``pool`` fixtures of the class it is mixed into.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from taskroll.errors import TaskConfigError
from taskroll.store import TaskStore, parse_query
from taskroll.store.base import sort_records
from taskroll.testing_system import make_record

__all__ = ["PAGE_SORTS", "ClaimAndPageContract"]

#: Sort orders every backend must page through exactly as :func:`sort_records` sorts.
PAGE_SORTS: tuple[tuple[tuple[str, int], ...], ...] = (
    (),
    (("priority", -1),),
    (("priority", 1),),
    (("status", 1), ("priority", -1)),
    (("attempts", -1), ("_id", 1)),
    (("worker", 1),),
    (("created", -1),),
)


def _priorities(store: TaskStore, pool: str, count: int) -> list[str]:
    """Insert ``count`` tasks with repeating priorities 0, 1, 2; return their ids."""
    records = [{**make_record(number), "priority": number % 3} for number in range(count)]
    return store.insert_many(pool, records)


class ClaimAndPageContract:
    """Pytest mixin: batch claims, pages and live workers, on any :class:`TaskStore`."""

    # -- batch claims ------------------------------------------------------------------
    def test_fetch_many_claims_best_first_each_with_its_lease(self, store: TaskStore,
                                                               pool: str) -> None:
        ids = _priorities(store, pool, 10)
        best = sorted(range(10), key=lambda number: (-(number % 3), number))
        before = store.now()
        first = store.fetch_many(pool, [], "waiting", "batcher", 60.0, 4)
        assert [record["_id"] for record in first] == [ids[number] for number in best[:4]]
        for record in first:
            assert record["status"] == "running" and record["worker"] == "batcher"
            assert record["attempts"] == 1 and record["claimed_from"] == "waiting"
            assert before - 1 <= record["started"] <= store.now() + 1
            assert record["lease_until"] == pytest.approx(record["started"] + 60.0, abs=1e-3)
        rest = store.fetch_many(pool, [], "waiting", "batcher", 60.0, 100)
        assert [record["_id"] for record in rest] == [ids[number] for number in best[4:]]
        assert store.fetch_many(pool, [], "waiting", "batcher", 60.0, 5) == []
        assert store.count_by_status(pool, []) == {"running": 10}

    def test_fetch_many_honours_conditions(self, store: TaskStore, pool: str) -> None:
        ids = _priorities(store, pool, 9)
        odd = store.fetch_many(pool, parse_query({"filter.parity": "odd"}), "waiting", "w",
                               60.0, 10)
        assert sorted(record["_id"] for record in odd) == [ids[number] for number in (1, 3, 5, 7)]
        assert store.count_by_status(pool, []) == {"running": 4, "waiting": 5}

    @pytest.mark.parametrize("count", [0, -1, 1.5, True, "3", None])
    def test_fetch_many_refuses_bad_counts(self, store: TaskStore, pool: str,
                                           count: Any) -> None:
        _priorities(store, pool, 3)
        with pytest.raises(TaskConfigError):
            store.fetch_many(pool, [], "waiting", "w", 60.0, count)
        assert store.count_by_status(pool, []) == {"waiting": 3}

    def test_batch_claims_from_threads_never_share_a_task(self, store: TaskStore,
                                                          pool: str) -> None:
        ids = _priorities(store, pool, 60)
        claimed: dict[str, list[str]] = {f"worker-{number}": [] for number in range(3)}

        def drain(worker: str) -> None:
            while batch := store.fetch_many(pool, [], "waiting", worker, 60.0, 4):
                claimed[worker].extend(record["_id"] for record in batch)

        threads = [threading.Thread(target=drain, args=(worker,)) for worker in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        everything = [task for tasks in claimed.values() for task in tasks]
        assert sorted(everything) == sorted(ids)  # each task once, none lost
        assert {record["attempts"] for record in store.find(pool, [])} == {1}

    # -- pages -------------------------------------------------------------------------
    @pytest.mark.parametrize("sort", PAGE_SORTS, ids=lambda sort: repr(list(sort)))
    def test_pages_follow_the_reference_sort(self, store: TaskStore, pool: str,
                                             sort: tuple[tuple[str, int], ...]) -> None:
        _priorities(store, pool, 23)
        store.fetch_many(pool, [], "waiting", "b-worker", 60.0, 4)  # some running, owned
        store.fetch(pool, parse_query({"filter.number": 22}), "waiting", "a-worker", 60.0)
        conditions = parse_query({"filter.number": {"$ne": 5}})
        expected = [record["_id"] for record in
                    sort_records(list(store.find(pool, conditions)), sort)]
        for skip, limit in ((0, 100), (0, 5), (5, 5), (20, 5), (22, 3), (30, 5)):
            page = store.find_page(pool, conditions, sort, skip, limit)
            assert [record["_id"] for record in page] == expected[skip:skip + limit], (skip, limit)

    @pytest.mark.parametrize(("sort", "skip", "limit"), [
        ((("nope", 1),), 0, 10), ((("priority", 2),), 0, 10), ((("priority", True),), 0, 10),
        ((), -1, 10), ((), 0, 0), ((), 0, 10_001), ((), 1.5, 10), ((), 0, None),
    ])
    def test_bad_pages_are_refused(self, store: TaskStore, pool: str, sort: Any, skip: Any,
                                   limit: Any) -> None:
        _priorities(store, pool, 3)
        with pytest.raises(TaskConfigError):
            store.find_page(pool, [], sort, skip, limit)

    # -- live workers ------------------------------------------------------------------
    def test_live_workers_hold_unexpired_leases(self, store: TaskStore, pool: str) -> None:
        _priorities(store, pool, 6)
        assert store.live_workers(pool) == []
        store.fetch_many(pool, [], "waiting", "worker-b", 60.0, 2)
        store.fetch(pool, [], "waiting", "worker-a", 60.0)
        short = store.fetch(pool, [], "waiting", "worker-gone", 0.2)
        assert short is not None
        assert store.live_workers(pool) == ["worker-a", "worker-b", "worker-gone"]
        deadline = time.monotonic() + 10
        while "worker-gone" in store.live_workers(pool) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.live_workers(pool) == ["worker-a", "worker-b"]
        assert store.live_workers(f"{pool}-absent") == []
