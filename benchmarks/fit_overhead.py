"""How much of a rolling retrain is the model's own fit, and where the rest goes.

Issue 12, item 4: on 100 instruments x 1,500 days written in Qlib's layout, a 6-window
rolling Alpha158 + LightGBM retrain (:class:`~taskroll.train.trainer.TrainerR`, one
process) should spend at most 10% beyond LightGBM's own fitting. This benchmark writes
that market once, runs the retrain ``--repeat`` times in fresh processes (start-up and
feature building included, as a user sees them), and prints, per phase, the median and
minimum seconds and the share of the fit time:

* ``fit``: ``lightgbm.train`` itself (the model's own fit);
* ``fit wrapper``: the rest of ``LGBModel.fit`` (dataset preparation, copies);
* ``dataset``: building the dataset (features, labels, processors);
* ``records``: ``SignalRecord``/``SigAnaRecord`` (prediction, IC, artifacts);
* ``saving``: the model, dataset and task artifacts;
* ``run``: logging the task as params and saving it;
* ``other``: everything else in the process (imports, task generation, start-up, the
  MLflow runs' creation and end).

It prints the time beyond the fit twice: for the whole process, and inside
``TrainerR.train`` only (without the interpreter's start and the imports).

Run: ``.venv/bin/python benchmarks/fit_overhead.py [--repeat 3] [--profile]``.
``--quick`` uses a tiny market to check the script runs.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import multiprocessing
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PHASES = ("fit", "fit wrapper", "dataset", "records", "saving", "run", "other")


def write_market(folder: Path, instruments: int, start: str, end: str) -> Path:
    """Write a synthetic market in Qlib's layout into ``folder`` (once)."""
    from taskroll.data import SyntheticMarket, write_qlib_data

    if (folder / "calendars" / "day.txt").exists():
        return folder
    bars = SyntheticMarket(seed=7, n_instruments=instruments, start=start, end=end).bars()
    return write_qlib_data(bars, folder)


def rolling_template(start: str, end: str, train_end: str, valid: tuple[str, str],
                     test_start: str) -> dict[str, Any]:
    """Qlib's rolling LightGBM task (Alpha158 on all instruments, SignalRecord+SigAnaRecord)."""
    return {
        # Qlib's benchmark settings (workflow_config_lightgbm_Alpha158.yaml) and LGBModel's
        # defaults (1000 rounds, early stopping after 50), on this machine's cores
        "model": {"class": "LGBModel", "module_path": "qlib.contrib.model.gbdt",
                  "kwargs": {"loss": "mse", "colsample_bytree": 0.8879, "learning_rate": 0.2,
                             "subsample": 0.8789, "lambda_l1": 205.6999,
                             "lambda_l2": 580.9768, "max_depth": 8, "num_leaves": 210,
                             "num_threads": os.cpu_count() or 1}},
        "dataset": {"class": "DatasetH", "module_path": "qlib.data.dataset",
                    "kwargs": {"handler": {"class": "Alpha158",
                                           "module_path": "qlib.contrib.data.handler",
                                           "kwargs": {"start_time": start, "end_time": end,
                                                      "fit_start_time": start,
                                                      "fit_end_time": train_end,
                                                      "instruments": "all"}},
                               "segments": {"train": (start, train_end), "valid": valid,
                                            "test": (test_start, end)}}},
        "record": [{"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
                    "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
                   {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp"}],
    }


class PhaseClock:
    """Wall time spent inside wrapped functions, by phase, each second counted once:
    time inside a nested wrapped call goes to the inner phase (exclusive time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [phase, time the phase last resumed]

    def _enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self._stack:
            outer = self._stack[-1]
            self.seconds[outer[0]] += now - outer[1]
        self._stack.append([phase, now])

    def _leave(self) -> None:
        now = time.perf_counter()
        phase, resumed = self._stack.pop()
        self.seconds[phase] += now - resumed
        if self._stack:
            self._stack[-1][1] = now

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        """Replace ``owner.name`` by a timed version counted under ``phase``."""
        function: Callable[..., Any] = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            clock._enter(phase)
            try:
                return function(*args, **kwargs)
            finally:
                clock._leave()

        setattr(owner, name, timed)


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def one_run(market: Path, output: Path, sizes: dict[str, Any], profile: Path | None) -> None:
    """Body of one measured process: the whole retrain, its phases written to ``output``."""
    begun = time.perf_counter()
    import lightgbm
    import pandas as pd

    import taskroll
    from taskroll.data.qlib_bin import read_qlib_calendar
    from taskroll.models import gbdt
    from taskroll.task.gen import RollingGen, task_generator
    from taskroll.train import record, record_base, task_run
    from taskroll.train.experiment import R
    from taskroll.train.trainer import TrainerR

    clock = PhaseClock()
    clock.wrap(lightgbm, "train", "fit")
    clock.wrap(gbdt.LGBModel, "fit", "fit wrapper")
    clock.wrap(record_base.SignalRecord, "generate", "records")
    clock.wrap(record.SigAnaRecord, "generate", "records")
    clock.wrap(task_run, "_log_task_info", "run")
    clock.wrap(task_run, "init_instance_by_config", "dataset")
    clock.wrap(R, "save_objects", "saving")

    work = Path(tempfile.mkdtemp(prefix="fit-overhead-"))
    taskroll.init(provider_uri=str(market), tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
                  artifact_root=str(work / "artifacts"), task_url=f"sqlite:///{work / 'tasks.db'}")
    calendar = read_qlib_calendar(str(market))
    template = rolling_template(**sizes["template"])
    test_days = ((calendar >= pd.Timestamp(sizes["template"]["test_start"]))
                 & (calendar <= pd.Timestamp(sizes["template"]["end"]))).sum()
    step = -(-int(test_days) // sizes["windows"])  # that many test windows
    tasks = task_generator([template], RollingGen(step=step, calendar=calendar))
    profiler = cProfile.Profile() if profile else None
    windows: list[tuple[float, float]] = []  # (seconds in task_train, seconds of fit)

    def timed_task_train(*args: Any, **kwargs: Any) -> Any:
        fit_before, begun = clock.seconds["fit"], time.perf_counter()
        recorder = task_run.task_train(*args, **kwargs)
        windows.append((time.perf_counter() - begun, clock.seconds["fit"] - fit_before))
        return recorder

    training = time.perf_counter()
    with (profiler if profiler else nothing()):
        recorders = TrainerR(experiment_name="overhead", train_func=timed_task_train).train(tasks)
    training = time.perf_counter() - training
    if profiler and profile:
        profiler.dump_stats(str(profile))
    total = time.perf_counter() - begun
    result = dict(clock.seconds)
    result["total"] = total
    result["train"] = training
    result["per_window"] = windows  # type: ignore[assignment]
    result["windows"] = len(recorders)
    output.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny market (checks it runs)")
    parser.add_argument("--profile", action="store_true",
                        help="also print the top of a cProfile of the first run")
    options = parser.parse_args()
    print(f"# {os.uname().nodename}: {os.cpu_count()} cores;"
          f" {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    folder = Path(tempfile.gettempdir()) / ("taskroll-overhead-quick" if options.quick
                                            else "taskroll-overhead-market")
    if options.quick:
        market = write_market(folder, 12, "2016-01-01", "2017-12-31")
        sizes = {"template": {"start": "2016-01-01", "end": "2017-12-31",
                              "train_end": "2016-12-15", "valid": ("2017-01-01", "2017-03-31"),
                              "test_start": "2017-04-05"}, "windows": 4}
    else:  # about 1,500 trading days, 6 test windows
        market = write_market(folder, 100, "2014-01-01", "2019-12-31")
        sizes = {"template": {"start": "2014-01-01", "end": "2019-12-31",
                              "train_end": "2017-12-31", "valid": ("2018-01-02", "2018-06-29"),
                              "test_start": "2018-07-02"}, "windows": 6}
    runs: list[dict[str, Any]] = []
    for index in range(options.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            output = Path(scratch) / "result.json"
            profile = Path(scratch) / "profile" if options.profile and index == 0 else None
            arguments = (f"Path({str(market)!r}), Path({str(output)!r}), "
                         f"json.loads({json.dumps(sizes)!r}), "
                         + (f"Path({str(profile)!r})" if profile else "None"))
            code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r});"
                    f"import fit_overhead as f; from pathlib import Path; f.one_run({arguments})")
            subprocess.run([sys.executable, "-c", code], check=True)
            runs.append(json.loads(output.read_text()))
            if profile:
                stats = pstats.Stats(str(profile))
                stats.sort_stats("cumulative").print_stats(40)
    rows = []
    for run in runs:
        known = sum(run.get(phase, 0.0) for phase in PHASES if phase != "other")
        run["other"] = run["total"] - known
    fit = [run.get("fit", 0.0) for run in runs]
    print(f"\n{len(runs)} runs, {int(runs[0]['windows'])} windows each\n")
    print(f"{'phase':<14}{'median s':>10}{'min s':>10}{'% of fit':>10}")
    for phase in (*PHASES, "train", "total"):
        values = [run.get(phase, 0.0) for run in runs]
        share = 100 * statistics.median(values) / max(statistics.median(fit), 1e-9)
        rows.append((phase, statistics.median(values), min(values), share))
        print(f"{phase:<14}{statistics.median(values):>10.2f}{min(values):>10.2f}{share:>9.1f}%")
    beyond = [run["total"] - run.get("fit", 0.0) for run in runs]
    ratio = statistics.median(beyond) / max(statistics.median(fit), 1e-9)
    print(f"\nbeyond the fit, whole process: median {statistics.median(beyond):.2f} s = "
          f"{100 * ratio:.1f}% of the fit (target <= 10%)")
    print(f"\n{'window':<8}{'task_train s':>14}{'fit s':>10}{'beyond s':>10}{'% of fit':>10}"
          "   (median over runs)")
    count = len(runs[0]["per_window"])  # type: ignore[arg-type]
    for index in range(count):
        spent = statistics.median(run["per_window"][index][0] for run in runs)  # type: ignore[index]
        fitted = statistics.median(run["per_window"][index][1] for run in runs)  # type: ignore[index]
        print(f"{index + 1:<8}{spent:>14.2f}{fitted:>10.2f}{spent - fitted:>10.2f}"
              f"{100 * (spent - fitted) / max(fitted, 1e-9):>9.1f}%")
    later = [sum(spent - fitted for spent, fitted in run["per_window"][1:])  # type: ignore[index]
             / max(sum(fitted for _, fitted in run["per_window"][1:]), 1e-9)  # type: ignore[index]
             for run in runs]
    print(f"windows 2..{count} (features cached, MLflow open): beyond the fit "
          f"{100 * statistics.median(later):.1f}% of the fit")
    inside = [run["train"] - run.get("fit", 0.0) for run in runs]
    ratio = statistics.median(inside) / max(statistics.median(fit), 1e-9)
    print(f"beyond the fit, inside TrainerR.train (no interpreter start or imports): median "
          f"{statistics.median(inside):.2f} s = {100 * ratio:.1f}% of the fit")


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
