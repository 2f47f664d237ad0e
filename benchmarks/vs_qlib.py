"""taskroll side by side with Qlib 0.9.7: task pool, ensembles, a rolling retrain.

Set up once (creates ``.qlib-venv/`` with pyqlib 0.9.7; Qlib is never a dependency of
taskroll), then run from the project's ``.venv``::

    bash scripts/qlib-env.sh
    .venv/bin/python benchmarks/vs_qlib.py [--quick] [--repeat 3] [--only pool,ensemble,e2e]

Every measurement runs in a fresh process of its library's environment
(``vs_qlib_side.py``): taskroll in ``.venv``, where Qlib is not importable (so the
``qlib.*`` names of the shared task dicts are served by taskroll's classes), Qlib in
``.qlib-venv``. Runs are interleaved (taskroll, Qlib, Qlib, taskroll, ...: the order
alternates per repeat) and each row shows the median and best of ``--repeat`` runs and
the speed ratio taskroll/Qlib (Qlib's median time over taskroll's; > 1 means taskroll
is faster). Rows: ``pool`` (``vs_qlib_pool``), ``ensemble`` (``vs_qlib_ensemble``),
``e2e`` (``vs_qlib_e2e``). The MongoDB wire server is the tests' nx-27017 server
(``tests/store/servers.py``), shared by both libraries; PostgreSQL is the tests'
throw-away cluster (its row is skipped, with the reason, when no server binaries exist).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import vs_qlib_e2e  # noqa: E402  (the benchmarks folder is not a package)
import vs_qlib_ensemble  # noqa: E402
import vs_qlib_pool  # noqa: E402
from vs_qlib_side import LIBRARIES  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
Row = tuple[str, str, str, str, str]


class Runner:
    """Starts side processes, keeps every run's figures, interleaves the two libraries."""

    def __init__(self, pythons: dict[str, str], workdir: Path, threads: int) -> None:
        """Remember the interpreters, the scratch folder and the thread cap."""
        self.pythons = pythons
        self.workdir = workdir
        self.threads = threads
        self.count = 0

    def side(self, library: str, row: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run one side once in a fresh process and folder; ``None`` (and a log) on failure."""
        self.count += 1
        folder = self.workdir / f"run{self.count:03d}_{library}_{row}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params), encoding="utf-8")
        environment = {name: value for name, value in os.environ.items()
                       if not name.startswith("TASKROLL_")}
        environment.update({name: str(self.threads) for name in THREAD_VARIABLES})
        environment["TASKROLL_FEATURE_CACHE"] = str(folder / "feature_cache")  # cold per run
        command = [self.pythons[library], str(HERE / "vs_qlib_side.py"), library, row,
                   str(folder / "params.json"), str(folder / "result.json")]
        with open(folder / "output.log", "wb") as log:
            finished = subprocess.run(command, cwd=folder, env=environment, stdout=log,
                                      stderr=subprocess.STDOUT, check=False)
        if finished.returncode != 0:
            tail = (folder / "output.log").read_text(errors="replace").splitlines()[-15:]
            print(f"!! {library} {row} failed ({finished.returncode}):\n  " + "\n  ".join(tail),
                  file=sys.stderr)
            return None
        result: dict[str, Any] = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        return result

    def interleaved(self, repeat: int, row: str, plan: list[tuple[str, str, dict[str, Any]]]
                    ) -> dict[str, list[dict[str, Any]]]:
        """Run ``plan`` (``(key, library, params)`` per side) ``repeat`` times.

        Even repeats run the plan in order, odd ones in reverse, so neither library
        always runs first (taskroll, Qlib, Qlib, taskroll, ...).

        Returns:
            ``{key: [result of each successful run]}``.
        """
        results: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in plan}
        for number in range(repeat):
            for key, library, params in plan if number % 2 == 0 else plan[::-1]:
                outcome = self.side(library, row, params)
                if outcome is not None:
                    results[key].append(outcome)
            print(f"  {row}: repeat {number + 1}/{repeat} done", file=sys.stderr)
        return results


def _seconds(values: list[float]) -> tuple[float, float] | None:
    return (statistics.median(values), min(values)) if values else None


def timing_row(label: str, mine: list[float], theirs: list[float], unit: str = "s",
               count: int = 0, check: str = "") -> Row:
    """One table row from per-run seconds: median / best per library and the speed ratio.

    ``unit`` ``"s"`` or ``"ms"`` prints times; ``"tasks/s"`` prints ``count`` / seconds.
    """
    def cell(values: list[float]) -> str:
        summary = _seconds(values)
        if summary is None:
            return "failed"
        median, best = summary
        if unit == "tasks/s":
            return f"{count / median:,.0f} / {count / best:,.0f} tasks/s"
        scale = 1000.0 if unit == "ms" else 1.0
        return f"{median * scale:.3f} / {best * scale:.3f} {unit}"

    ours, others = _seconds(mine), _seconds(theirs)
    ratio = f"{others[0] / ours[0]:.2f}x" if ours and others and ours[0] > 0 else "-"
    return (label, cell(mine), cell(theirs), ratio, check)


def pool_rows(runner: Runner, repeat: int, tasks: int, stack: contextlib.ExitStack) -> list[Row]:
    """Run the pool measurements and return their rows."""
    sys.path.insert(0, str(ROOT / "tests" / "store"))
    import servers  # the tests' loopback servers (tests/store/servers.py)

    wire = stack.enter_context(servers.MongoServer()).url
    base = {"tasks": tasks}
    plan = [("taskroll sqlite", "taskroll", {**base, "store": "sqlite"}),
            ("qlib mongomock", "qlib", {**base, "store": "mongomock"})]
    skipped = ""
    try:
        server = servers.PostgresServer()
        try:
            server.start()
        except RuntimeError:
            server.cleanup()
            raise
        stack.callback(server.cleanup)
        plan.append(("taskroll postgres", "taskroll", {**base, "store": "postgres",
                                                        "url": server.url}))
    except (servers.ServerUnavailable, RuntimeError) as error:
        skipped = f"PostgreSQL row skipped: {error}"
        print(skipped, file=sys.stderr)
    plan += [("taskroll wire", "taskroll", {**base, "store": "wire", "url": wire}),
             ("qlib wire", "qlib", {**base, "store": "wire", "url": wire})]
    results = runner.interleaved(repeat, "pool", plan)
    pairs = [("SQLite", "taskroll sqlite", "mongomock", "qlib mongomock"),
             ("PostgreSQL", "taskroll postgres", "mongomock", "qlib mongomock"),
             ("wire", "taskroll wire", "wire", "qlib wire")]
    rows: list[Row] = []
    for operation, name, unit in (("create", "create_task", "tasks/s"),
                                  ("fetch_commit", "fetch+commit", "tasks/s"),
                                  ("fetch_commit_batch",
                                   f"fetch(n={vs_qlib_pool.BATCH})+commit (Qlib: fetch+commit)",
                                   "tasks/s"),
                                  ("task_stat", "task_stat", "ms")):
        for mine_name, mine_key, their_name, their_key in pairs:
            if mine_key not in results:
                continue
            mine = [run[operation] for run in results[mine_key]]
            theirs = [run["fetch_commit" if operation == "fetch_commit_batch" else operation]
                      for run in results[their_key]]
            errors = {run["create_error"] for run in results[their_key] if run["create_error"]}
            check = ""
            if operation == "create" and errors:
                check = (f"Qlib create_task fails ({'; '.join(sorted(errors))}): "
                         "Qlib timed with insert_task_def, no dedupe")
            label = f"pool {name} x{tasks}: taskroll {mine_name} | Qlib {their_name}"
            rows.append(timing_row(label, mine, theirs, unit, tasks, check))
    if skipped:
        rows.append(("pool PostgreSQL", "skipped", "-", "-", skipped))
    return rows


def ensemble_rows(runner: Runner, repeat: int, sizes: tuple[int, int, int]) -> list[Row]:
    """Run the ensemble measurements and return their rows, with the equality checks."""
    models, instruments, days = sizes
    output = runner.workdir / "ensemble"
    output.mkdir()
    params = {"models": models, "instruments": instruments, "days": days,
              "output": str(output)}
    results = runner.interleaved(repeat, "ensemble",
                                 [(library, library, params) for library in LIBRARIES])
    rows: list[Row] = []
    for kind, name in (("rolling", "RollingEnsemble"), ("average", "AverageEnsemble")):
        check = (vs_qlib_ensemble.compare(output, kind)
                 if results["taskroll"] and results["qlib"] else "not compared")
        label = f"{name} {models}x{instruments}x{days}"
        rows.append(timing_row(label, [run[kind] for run in results["taskroll"]],
                               [run[kind] for run in results["qlib"]], check=check))
    return rows


def e2e_rows(runner: Runner, repeat: int, sizes: tuple[int, int, int], threads: int,
             boost_rounds: int | None) -> list[Row]:
    """Run the rolling retrain on both libraries and return per-window, total, fit, IC rows."""
    instruments, days, windows = sizes
    import pandas as pd

    shared = vs_qlib_e2e.prepare(runner.workdir / "e2e" / "qlib_data", instruments, days,
                                 windows, threads, boost_rounds)
    output = runner.workdir / "e2e" / "output"
    output.mkdir()
    params = {**shared, "output": str(output)}
    results = runner.interleaved(repeat, "e2e",
                                 [(library, library, params) for library in LIBRARIES])
    mine, theirs = results["taskroll"], results["qlib"]
    title = f"e2e {instruments}x{days}"
    same = ("segments identical" if mine and theirs and mine[0]["segments"] == theirs[0]["segments"]
            else "SEGMENTS DIFFER" if mine and theirs else "")
    rows: list[Row] = []
    for window in range(max((len(run["windows"]) for run in mine + theirs), default=0)):
        rows.append(timing_row(f"{title}: window {window + 1}", _window(mine, window),
                               _window(theirs, window)))
    rows.append(timing_row(f"{title}: total, {windows} windows", [run["total"] for run in mine],
                           [run["total"] for run in theirs], check=same))
    rows.append(timing_row(f"{title}: in LGBModel.fit", [run["fit"] for run in mine],
                           [run["fit"] for run in theirs]))
    if mine and theirs:
        close = pd.read_pickle(shared["bars_close"])
        scores = [vs_qlib_e2e.ic(pd.read_pickle(output / f"{library}_pred.pkl"), close)
                  for library in LIBRARIES]
        rows.append((f"{title}: IC of test predictions", f"{scores[0]:.4f}",
                     f"{scores[1]:.4f}", "-", "mean daily Pearson IC, same label for both"))
        rows.append((f"{title}: Alpha158 on {shared['feature_day']}", "-", "-", "-",
                     vs_qlib_e2e.feature_correlation(output)))
    return rows


def _window(runs: list[dict[str, Any]], window: int) -> list[float]:
    """The seconds of window ``window`` in each run that has it."""
    return [run["windows"][window] for run in runs if window < len(run["windows"])]


def header(pythons: dict[str, str]) -> list[str]:
    """Lines describing the machine, its load and the two environments."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"machine: {platform.node()}, {os.cpu_count()} cores ({usable} usable), {model}",
             f"uptime: {uptime}"]
    for library, python in pythons.items():
        code = (f"import {library}, pandas, lightgbm; print({library}.__version__, "
                "'pandas', pandas.__version__, 'lightgbm', lightgbm.__version__)")
        version = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                 check=False).stdout.strip() or "not importable"
        lines.append(f"{library}: {python}: {version}")
    return lines


def print_table(rows: list[Row]) -> None:
    """Print the rows as one aligned table."""
    titles: Row = ("row", "taskroll median / best", "Qlib median / best",
                   "speed taskroll/Qlib", "check")
    widths = [max(len(row[index]) for row in [titles, *rows]) for index in range(5)]
    for row in [titles, tuple("-" * width for width in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    """A scratch folder for the runs, removed afterwards unless ``keep``."""
    if keep:
        yield Path(tempfile.mkdtemp(prefix="vs-qlib-"))
        return
    with tempfile.TemporaryDirectory(prefix="vs-qlib-") as folder:
        yield Path(folder)


def main() -> None:
    """Parse the options, run the chosen rows interleaved, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--repeat", type=int, default=None, help="runs per side (default 3; 1 quick)")
    parser.add_argument("--only", default="pool,ensemble,e2e")
    parser.add_argument("--tasks", type=int, default=None, help="pool size (default 1000; 50 quick)")
    parser.add_argument("--threads", type=int, default=2, help="LightGBM/BLAS threads, Qlib kernels")
    parser.add_argument("--boost-rounds", type=int, default=None,
                        help="num_boost_round (default: LGBModel's 1000 with early stopping; 20 quick)")
    parser.add_argument("--qlib-python", default=str(ROOT / ".qlib-venv" / "bin" / "python"))
    parser.add_argument("--taskroll-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    arguments = parser.parse_args()
    rows_wanted = [name.strip() for name in arguments.only.split(",") if name.strip()]
    if unknown := set(rows_wanted) - {"pool", "ensemble", "e2e"}:
        parser.error(f"--only: unknown row(s) {sorted(unknown)}; pool, ensemble, e2e")
    pythons = {"taskroll": arguments.taskroll_python, "qlib": arguments.qlib_python}
    if not Path(pythons["qlib"]).exists():
        raise SystemExit(f"{pythons['qlib']} not found: run bash scripts/qlib-env.sh first")
    probe = subprocess.run([pythons["taskroll"], "-c", "import qlib"], capture_output=True, check=False)
    if probe.returncode == 0:
        raise SystemExit(f"{pythons['taskroll']} can import qlib: taskroll would hand the task "
                         "dicts' qlib.* names to Qlib; use an environment without Qlib")
    quick = arguments.quick
    repeat = arguments.repeat or (1 if quick else 3)
    tasks = arguments.tasks or (50 if quick else 1000)
    boost_rounds = arguments.boost_rounds or (20 if quick else None)
    for line in header(pythons):
        print(line)
    print(f"repeat {repeat}, interleaved; threads {arguments.threads}")
    rows: list[Row] = []
    with scratch(arguments.keep) as workdir, contextlib.ExitStack() as stack:
        runner = Runner(pythons, workdir, arguments.threads)
        if "pool" in rows_wanted:
            rows += pool_rows(runner, repeat, tasks, stack)
        if "ensemble" in rows_wanted:
            rows += ensemble_rows(runner, repeat, (4, 20, 100) if quick else (20, 300, 1000))
        if "e2e" in rows_wanted:
            rows += e2e_rows(runner, repeat, (20, 400, 2) if quick else (100, 1500, 6),
                             arguments.threads, boost_rounds)
        if arguments.keep:
            print(f"scratch folder kept: {workdir}")
    print_table(rows)
    print("ensembles: models x instruments x days; e2e: instruments x days; best = fastest run; "
          "speed = Qlib median time / taskroll median time")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"uptime after: {uptime}")


if __name__ == "__main__":
    main()
