"""Benchmark online serving: a daily simulation and the steady daily routine.

On a synthetic market (``--instruments``, 2018-2020) with a LinearModel rolling every
20 trading days, times ``OnlineManager.simulate`` from 2019-08-01 over ``--days``
trading days, then ``--routines`` more daily routines one by one (the cost of the
daily job once the history exists), each in a fresh MLflow store; reports the
signal rows served and the runs created. With ``--baseline REF`` the same runs on a
checkout of git ``REF`` (see ``baseline.py``), interleaved with this tree's runs.
Run::

    python benchmarks/online.py [--baseline REF] [--repeat 3] [--days 60] [--routines 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import baseline

BEGIN = "2019-08-01"


def _template(path: Path) -> dict[str, Any]:
    loader = {"class": "FileLoader", "module_path": "taskroll.data.loader",
              "kwargs": {"path": str(path)}}
    handler = {"class": "Alpha158", "module_path": "taskroll.data.handler",
               "kwargs": {"start_time": "2018-01-01", "end_time": "2019-07-31",
                          "fit_start_time": "2018-01-01", "fit_end_time": "2019-03-29",
                          "instruments": "all", "windows": [5, 10], "data_loader": loader}}
    return {"model": {"class": "LinearModel", "module_path": "taskroll.models.linear",
                      "kwargs": {"alpha": 1.0}},
            "dataset": {"class": "DatasetH", "module_path": "taskroll.data.dataset",
                        "kwargs": {"handler": handler,
                                   "segments": {"train": ("2018-01-01", "2019-03-29"),
                                                "valid": ("2019-04-01", "2019-06-28"),
                                                "test": ("2019-07-01", None)}}},
            "record": [{"class": "SignalRecord", "module_path": "taskroll.train.record",
                        "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}}]}


def measure(instruments: int, days: int, routines: int) -> dict[str, float]:
    """Time one simulation and the routines after it, in a fresh store; seconds."""
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    import pandas as pd

    import taskroll
    from taskroll.data import SyntheticMarket
    from taskroll.online import OnlineManager, RollingStrategy
    from taskroll.task.gen import RollingGen
    from taskroll.train.experiment import R
    from taskroll.train.trainer import TrainerR

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        market = SyntheticMarket(seed=7, n_instruments=instruments, start="2018-01-01",
                                 end="2020-12-31")
        path = market.save(root / "bars.parquet")
        calendar = pd.DatetimeIndex(market.calendar)
        taskroll.init(task_url=f"sqlite:///{root / 'tasks.db'}",
                      tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
        strategy = RollingStrategy("bench_online", _template(path),
                                   RollingGen(step=20, calendar=calendar))
        manager = OnlineManager(strategy, trainer=TrainerR(experiment_name="bench_online"),
                                begin_time=BEGIN)
        span = calendar[calendar >= pd.Timestamp(BEGIN)]
        started = time.perf_counter()
        manager.simulate(span[days - 1])
        simulated = time.perf_counter() - started
        started = time.perf_counter()
        for day in span[days:days + routines]:
            manager.routine(day)
        routine = (time.perf_counter() - started) / routines
        signals = manager.get_signals()
        return {"simulate": simulated, "routine": routine, "rows": float(len(signals)),
                "runs": float(len(R.list_recorders("bench_online", rtype="list")))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref to compare with (e.g. HEAD~3)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--instruments", type=int, default=50)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--routines", type=int, default=5)
    args = parser.parse_args(argv)
    codes = ["this tree"] + ([f"baseline {args.baseline}"] if args.baseline else [])
    runs: dict[str, list[dict[str, float]]] = {code: [] for code in codes}
    arguments = [args.instruments, args.days, args.routines]
    for _ in range(args.repeat):  # interleaved, so load drifts hit both alike
        runs["this tree"].append(measure(*arguments))
        if args.baseline:
            runs[codes[1]].append(baseline.measure_at(args.baseline, "online", "measure",
                                                      arguments))
    print(f"online serving: {args.instruments} instruments, simulate {args.days} trading days "
          f"from {BEGIN}, then {args.routines} routines; median of {args.repeat} runs")
    print(f"{'code':<24}{'simulate s':>12}{'routine s':>12}{'signal rows':>13}{'runs':>6}"
          f"{'simulate vs this':>18}{'routine vs this':>17}")
    mine = {key: statistics.median(run[key] for run in runs["this tree"])
            for key in ("simulate", "routine")}
    for code in codes:
        median = {key: statistics.median(run[key] for run in runs[code])
                  for key in ("simulate", "routine", "rows", "runs")}
        print(f"{code:<24}{median['simulate']:>12.2f}{median['routine']:>12.3f}"
              f"{int(median['rows']):>13}{int(median['runs']):>6}"
              f"{median['simulate'] / mine['simulate']:>17.2f}x"
              f"{median['routine'] / mine['routine']:>16.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
