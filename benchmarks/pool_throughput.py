"""Task pool throughput: create, claim+commit with several workers, run_task overhead.

Run: ``.venv/bin/python benchmarks/pool_throughput.py [--stores sqlite,postgres,mongo]``.
PostgreSQL and MongoDB URLs come from ``TASKROLL_BENCH_POSTGRES_URL`` /
``TASKROLL_BENCH_MONGO_URL``; when unset, the test servers (a private PostgreSQL
cluster, the nx-27017 MongoDB emulator) are started on loopback for the run.
Every figure comes from this one run and is printed as a table with its target.
Claim+commit is measured one task per claim and with ``--batch`` tasks per claim
(``fetch_task(n=...)``, each task committed on its own), the way ``run_task(claim_batch=...)``
works for short tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskroll.manage import TaskManager, run_task

CONTEXT = multiprocessing.get_context("spawn")


def noop(task_def: dict[str, Any]) -> None:
    """The task function measured: does nothing."""
    return None


def _claim_worker(url: str, pool: str, start: Any, counts: Any, batch: int) -> None:
    with TaskManager(pool, store=url) as manager:
        start.wait()
        done = 0
        if batch == 1:
            while (task := manager.fetch_task()) is not None:
                manager.commit_task_res(task, None)
                done += 1
        else:  # claim ``batch`` at once, commit each as it finishes (as run_task(claim_batch=))
            while tasks := manager.fetch_task(n=batch):
                for task in tasks:
                    manager.commit_task_res(task, None)
                    done += 1
    counts.put(done)


def create_seconds(url: str, tasks: int) -> float:
    pool = f"bench_{uuid.uuid4().hex[:8]}"
    definitions = [{"model": {"class": "LinearModel", "kwargs": {"alpha": index}},
                    "index": index} for index in range(tasks)]
    with TaskManager(pool, store=url) as manager:
        began = time.perf_counter()
        manager.create_task(definitions)
        elapsed = time.perf_counter() - began
        manager.store.drop_pool(pool)
    return elapsed


def claim_rate(url: str, tasks: int, workers: int, batch: int = 1) -> float:
    pool = f"bench_{uuid.uuid4().hex[:8]}"
    with TaskManager(pool, store=url) as manager:
        manager.create_task([{"index": index} for index in range(tasks)])
        start, counts = CONTEXT.Event(), CONTEXT.Queue()
        processes = [CONTEXT.Process(target=_claim_worker, args=(url, pool, start, counts, batch))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        time.sleep(2.0)  # let every worker import and connect before the clock starts
        began = time.perf_counter()
        start.set()
        total = sum(counts.get(timeout=600) for _ in processes)
        elapsed = time.perf_counter() - began
        for process in processes:
            process.join()
        assert total == tasks and manager.task_stat() == {"done": tasks}
        manager.store.drop_pool(pool)
    return tasks / elapsed


def run_task_overhead_ms(url: str, tasks: int, batch: int = 1) -> tuple[float, float]:
    pool = f"bench_{uuid.uuid4().hex[:8]}"
    with TaskManager(pool, store=url) as manager:
        manager.create_task([{"index": index} for index in range(tasks)])
        began = time.perf_counter()
        run_task(noop, manager, claim_batch=batch)
        with_pool = time.perf_counter() - began
        began = time.perf_counter()
        for index in range(tasks):
            noop({"index": index})
        bare = time.perf_counter() - began
        manager.store.drop_pool(pool)
    return with_pool / tasks * 1000, bare / tasks * 1000


@contextlib.contextmanager
def store_urls(names: list[str], workdir: Path) -> Iterator[dict[str, str]]:
    """Yield a URL per requested store, starting local test servers where needed."""
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            if name == "sqlite":
                urls[name] = f"sqlite:///{workdir / 'bench.db'}"
            elif name in ("postgres", "mongo"):
                variable = f"TASKROLL_BENCH_{name.upper()}_URL"
                if os.environ.get(variable):
                    urls[name] = os.environ[variable]
                    continue
                sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "store"))
                import servers  # the loopback test servers (tests/store/servers.py)

                server = servers.PostgresServer() if name == "postgres" else servers.MongoServer()
                urls[name] = stack.enter_context(server).url
            else:
                raise SystemExit(f"unknown store {name!r}")
        yield urls


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", default="sqlite")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--claim-tasks", type=int, default=10_000)
    parser.add_argument("--mongo-claim-tasks", type=int, default=None,
                        help="claim+commit tasks on mongo (default --claim-tasks); the "
                             "nx-27017 emulator's claims slow down as its pool grows")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=16,
                        help="tasks per claim in the batched rows (fetch_task(n=), "
                             "run_task(claim_batch=)); 1 leaves them out")
    arguments = parser.parse_args()
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder, \
            store_urls(arguments.stores.split(","), Path(folder)) as urls:
        for name, url in urls.items():
            claim_tasks = arguments.claim_tasks
            if name == "mongo" and arguments.mongo_claim_tasks:
                claim_tasks = arguments.mongo_claim_tasks
            seconds = create_seconds(url, arguments.tasks)
            target = "< 1 s" if name == "sqlite" else "-"
            rows.append((name, f"create_task x{arguments.tasks}", f"{seconds:.3f} s", target,
                         f"{1.0 / seconds:.2f}x of target" if name == "sqlite" else ""))
            baseline = None
            batches = [1] if arguments.batch == 1 else [1, arguments.batch]
            for batch in batches:
                for workers in [int(value) for value in arguments.workers.split(",")]:
                    rate = claim_rate(url, claim_tasks, workers, batch)
                    baseline = baseline or rate
                    target = ">= 5000/s" if (name == "sqlite" and workers == 2) else "-"
                    note = f"{rate / baseline:.2f}x of 1 worker one at a time"
                    if target != "-":
                        note += f", {rate / 5000:.2f}x of target"
                    claim = "" if batch == 1 else f", batch {batch}"
                    rows.append((name, f"claim+commit x{claim_tasks}, {workers} worker(s){claim}",
                                 f"{rate:,.0f} tasks/s", target, note))
            for batch in batches:
                count = min(claim_tasks, 5000)
                overhead, bare = run_task_overhead_ms(url, count, batch)
                rows.append((name, f"run_task per task x{count}, batch {batch}",
                             f"{overhead:.3f} ms", "<= 2 ms" if name == "sqlite" else "-",
                             f"bare loop {bare * 1000:.2f} us"
                             + (f"; {overhead / 2:.2f}x of budget" if name == "sqlite" else "")))
    widths = [max(len(row[index]) for row in [("store", "measure", "value", "target", "ratio"),
                                               *rows]) for index in range(5)]
    header = ("store", "measure", "value", "target", "ratio")
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
