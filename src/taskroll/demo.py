"""The end-to-end demo: synthetic data → rolling tasks → pool workers → collection → IC report.

:func:`run_demo` runs the whole Qlib task-management loop in one folder:

1. a seeded :class:`~taskroll.data.SyntheticMarket` saved as Parquet;
2. a Qlib-style task template (Alpha158 over a FileLoader, DatasetH, SignalRecord +
   SigAnaRecord);
3. :class:`~taskroll.task.gen.RollingGen` windows x two model types (``LinearModel``,
   ``LGBModel``) through :func:`~taskroll.task.gen.task_generator` and :class:`ModelGen`;
4. the tasks stored in a SQLite task pool and trained by worker processes
   (:class:`~taskroll.train.trainer.TrainerRM`);
5. collection with :class:`~taskroll.collect.RecorderCollector` + ``RollingGroup`` per
   model type, and ``AverageEnsemble`` across model types;
6. a table of per-window and ensemble IC / Rank IC and a plot ``ic.png``.

It also holds :func:`double_task`, a tiny module-level task function that spawned
``taskroll worker --func taskroll.demo:double_task`` processes can import.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import taskroll
from taskroll.collect import (
    AverageEnsemble,
    RecorderCollector,
    RollingEnsemble,
    RollingGroup,
    model_and_test_segment_key,
)
from taskroll.data import SyntheticMarket
from taskroll.demo_report import ensemble_ic, format_table, plot_ic, window_rows
from taskroll.errors import TaskConfigError
from taskroll.manage import TaskManager
from taskroll.task.gen import RollingGen, Task, TaskGen, task_generator
from taskroll.threads import capped_environment, threads_per_worker
from taskroll.train.recorder import Recorder
from taskroll.train.trainer import TrainerRM

EXPERIMENT_NAME = "demo"
TASK_POOL = "demo_pool"
MODEL_TYPES = ("LinearModel", "LGBModel")


def _model_rank(name: str) -> tuple[int, str]:
    """Sort key putting model types in :data:`MODEL_TYPES` order."""
    return (MODEL_TYPES.index(name) if name in MODEL_TYPES else len(MODEL_TYPES), name)


@dataclass(frozen=True)
class DemoSizes:
    """Sizes of one demo run.

    Attributes:
        n_instruments: Instruments in the synthetic market.
        start: First calendar day of the market.
        end: Last calendar day of the market.
        step: Trading days per rolling test window.
        valid_days: Trading days of the validation segment before the first test day.
        windows: Alpha158 rolling windows.
        lgb_rounds: Maximum LightGBM boosting rounds.
    """

    n_instruments: int = 150
    start: str = "2017-01-01"
    end: str = "2022-12-31"
    step: int = 63
    valid_days: int = 126
    windows: tuple[int, ...] = (5, 10, 20, 60)
    lgb_rounds: int = 60


QUICK_SIZES = DemoSizes(n_instruments=25, start="2019-01-01", end="2021-03-31", step=15,
                        valid_days=40, windows=(5, 10), lgb_rounds=10)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        output_dir: The folder holding everything.
        table: One row per (model, window) plus ensemble rows; columns ``model``,
            ``window``, ``test_start``, ``test_end``, ``IC``, ``Rank IC``.
        daily_ic: Daily IC of each ensemble, one column per ensemble.
        plot_path: The PNG plot of daily and cumulative IC.
        data_path: The Parquet market file.
        recorders: The trained recorders, in task order.
        n_tasks: Number of tasks trained.
        seconds: Wall time of the whole run.
        task_stat: ``{status: count}`` of the pool at the end.
    """

    output_dir: Path
    table: pd.DataFrame
    daily_ic: pd.DataFrame
    plot_path: Path
    data_path: Path
    recorders: list[Recorder] = field(default_factory=list)
    n_tasks: int = 0
    seconds: float = 0.0
    task_stat: dict[str, int] = field(default_factory=dict)


class ModelGen(TaskGen):
    """Swap the model cfg of a task: one task per model cfg.

    Args:
        models: Model cfgs (``{"class", "module_path", "kwargs"}``).
    """

    def __init__(self, models: Sequence[dict[str, Any]]) -> None:
        self.models = [copy.deepcopy(model) for model in models]

    def generate(self, task: Task) -> list[Task]:
        """Return a copy of ``task`` per model cfg, with ``task["model"]`` replaced."""
        return [{**copy.deepcopy(task), "model": copy.deepcopy(model)} for model in self.models]


def model_configs(sizes: DemoSizes) -> list[dict[str, Any]]:
    """Return the cfgs of the two demo models (ridge, and a small single-threaded LightGBM)."""
    return [
        {"class": "LinearModel", "module_path": "taskroll.models.linear",
         "kwargs": {"alpha": 10.0}},
        {"class": "LGBModel", "module_path": "taskroll.models.gbdt",
         "kwargs": {"num_boost_round": sizes.lgb_rounds, "early_stopping_rounds": 10,
                    "num_leaves": 31, "learning_rate": 0.1, "num_threads": 1}},
    ]


INFER_PROCESSORS: list[dict[str, Any]] = [
    {"class": "ProcessInf", "kwargs": {}},
    {"class": "CSZScoreNorm", "kwargs": {"fields_group": "feature"}},
    {"class": "Fillna", "kwargs": {"fields_group": "feature"}},
]
"""Per-day feature normalisation for the linear model (Alpha158's default, as Qlib's, is none)."""


def task_template(data_path: Path, calendar: pd.DatetimeIndex, n_windows: int,
                  sizes: DemoSizes) -> Task:
    """Build the Qlib-style template whose test segment is the whole rolling test period.

    The last ``n_windows * step`` trading days are the test period, the ``valid_days``
    before them validation, and everything earlier training (expanding windows).

    Raises:
        TaskConfigError: When the calendar is too short for the windows asked for.
    """
    test_days = n_windows * sizes.step
    if len(calendar) < test_days + sizes.valid_days + 120:
        raise TaskConfigError(f"the market has {len(calendar)} trading days; {n_windows} windows "
                              f"of {sizes.step} days need at least "
                              f"{test_days + sizes.valid_days + 120}")
    test_start = len(calendar) - test_days
    valid_start = test_start - sizes.valid_days

    def day(position: int) -> str:
        return str(calendar[position].date())

    train = (day(0), day(valid_start - 1))
    valid = (day(valid_start), day(test_start - 1))
    test = (day(test_start), day(len(calendar) - 1))  # RollingGen cuts it into windows
    return {
        "model": model_configs(sizes)[0],
        "dataset": {
            "class": "DatasetH", "module_path": "taskroll.data.dataset",
            "kwargs": {
                "handler": {
                    "class": "Alpha158", "module_path": "taskroll.data.handler",
                    "kwargs": {"start_time": train[0], "end_time": test[1],
                               "fit_start_time": train[0], "fit_end_time": train[1],
                               "instruments": "all", "windows": list(sizes.windows),
                               "infer_processors": INFER_PROCESSORS,
                               "data_loader": {"class": "FileLoader",
                                               "module_path": "taskroll.data.loader",
                                               "kwargs": {"path": str(data_path)}}},
                },
                "segments": {"train": train, "valid": valid, "test": test},
            },
        },
        "record": [
            {"class": "SignalRecord", "module_path": "taskroll.train.record",
             "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
            {"class": "SigAnaRecord", "module_path": "taskroll.train.record", "kwargs": {}},
        ],
    }


def demo_tasks(data_path: Path, calendar: pd.DatetimeIndex, n_windows: int,
               sizes: DemoSizes) -> list[Task]:
    """Rolling windows x model types via :func:`task_generator`."""
    template = task_template(data_path, calendar, n_windows, sizes)
    rolling = RollingGen(step=sizes.step, rtype=RollingGen.ROLL_EX, calendar=calendar)
    return task_generator([template], [rolling, ModelGen(model_configs(sizes))])


def _pool_worker(task_url: str, tracking_uri: str, experiment_name: str, task_pool: str) -> None:
    """Body of one spawned worker process: train the pool's tasks until none is waiting."""
    taskroll.init(task_url=task_url, tracking_uri=tracking_uri)
    TrainerRM(experiment_name=experiment_name, task_pool=task_pool).worker()


def _train_with_workers(tasks: list[Task], workers: int, task_url: str,
                        tracking_uri: str) -> list[Recorder]:
    """Store the tasks, let ``workers`` spawned processes train them, return the recorders."""
    trainer = TrainerRM(experiment_name=EXPERIMENT_NAME, task_pool=TASK_POOL, skip_run_task=True)
    with TaskManager(TASK_POOL) as manager:
        manager.create_task(tasks)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_pool_worker, name=f"demo-worker-{number}",
                                 args=(task_url, tracking_uri, EXPERIMENT_NAME, TASK_POOL))
                 for number in range(max(1, workers))]
    with capped_environment(threads_per_worker(len(processes))):  # cores // workers each
        for process in processes:
            process.start()
    try:
        recorders = trainer.train(tasks)  # waits for the workers, with a progress bar
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join()
    return trainer.end_train(recorders)


def _first_column(frame: pd.DataFrame | pd.Series) -> pd.Series:
    return frame if isinstance(frame, pd.Series) else frame.iloc[:, 0]


def _collect(experiment_name: str) -> tuple[dict[str, pd.Series], pd.Series]:
    """Rolling-ensembled predictions per model type, and the rolling-ensembled labels."""
    collector = RecorderCollector(experiment_name, process_list=[RollingGroup()],
                                  rec_key_func=model_and_test_segment_key,
                                  artifacts_path={"pred": "pred.pkl", "label": "label.pkl"})
    collected = collector()
    predictions = {str(key[0] if isinstance(key, tuple) else key): _first_column(frame)
                   for key, frame in collected["pred"].items()}
    labels = RollingEnsemble()(dict(enumerate(collected["label"].values())))
    return predictions, _first_column(labels)


def run_demo(output_dir: str | Path, n_instruments: int | None = None, n_windows: int = 8,
             workers: int = 2, quick: bool = False, seed: int = 7,
             echo: bool = True) -> DemoResult:
    """Run the whole loop in ``output_dir`` and return its table and files.

    Args:
        output_dir: Folder for the market file, task pool, MLflow store and plot.
        n_instruments: Instruments in the market (default 150, or 25 when ``quick``).
        n_windows: Rolling test windows (at least 8).
        workers: Worker processes training the pool.
        quick: Tiny sizes, for tests (well under a minute).
        seed: Seed of the synthetic market.
        echo: Print progress and the table.

    Returns:
        The :class:`DemoResult`.

    Raises:
        TaskConfigError: For fewer than 8 windows or a market too short for them.
    """
    begun = time.perf_counter()
    if n_windows < 8:
        raise TaskConfigError(f"the demo needs at least 8 rolling windows, got {n_windows}")
    sizes = QUICK_SIZES if quick else DemoSizes()
    if n_instruments is not None:
        sizes = DemoSizes(**{**sizes.__dict__, "n_instruments": int(n_instruments)})
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    task_url = f"sqlite:///{output}/taskroll.db"
    tracking_uri = f"sqlite:///{output}/mlruns.db"
    taskroll.init(task_url=task_url, tracking_uri=tracking_uri)

    market = SyntheticMarket(seed=seed, n_instruments=sizes.n_instruments, start=sizes.start,
                             end=sizes.end)
    data_path = market.save(output / "market.parquet")
    tasks = demo_tasks(data_path, market.calendar, n_windows, sizes)
    if echo:
        print(f"market: {sizes.n_instruments} instruments x {len(market.calendar)} days -> "
              f"{data_path}")
        print(f"tasks: {len(tasks)} ({len(tasks) // len(MODEL_TYPES)} windows x "
              f"{len(MODEL_TYPES)} models), {workers} worker processes")
    recorders = _train_with_workers(tasks, workers, task_url, tracking_uri)

    collected, label = _collect(EXPERIMENT_NAME)
    # recorders come back in finishing order, which varies between runs: fix the order
    predictions = {name: collected[name] for name in sorted(collected, key=_model_rank)}
    average = AverageEnsemble()(predictions)
    ensembles = {f"{name} (rolling)": signal for name, signal in predictions.items()}
    ensembles["average of models"] = average
    daily_ic = {name: ensemble_ic(name, signal, label) for name, signal in ensembles.items()}
    table = pd.concat([window_rows(recorders), *[frame for _, frame in daily_ic.values()]],
                      ignore_index=True)
    daily = pd.DataFrame({name: ic for name, (ic, _) in daily_ic.items()})
    plot_path = plot_ic(daily, output / "ic.png")
    with TaskManager(TASK_POOL) as manager:
        stat = manager.task_stat()
    seconds = time.perf_counter() - begun
    if echo:
        print(format_table(table))
        print(f"pool {TASK_POOL!r}: {stat}; plot: {plot_path}; {seconds:.1f} s")
    return DemoResult(output_dir=output, table=table, daily_ic=daily, plot_path=plot_path,
                      data_path=data_path, recorders=recorders, n_tasks=len(tasks),
                      seconds=seconds, task_stat=stat)


def double_task(task: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A tiny task function for pool workers: ``{"x": n}`` → ``{"x": n, "double": 2 n}``.

    Extra keyword arguments (``experiment_name`` from ``taskroll worker``) are ignored.
    """
    time.sleep(float(task.get("sleep", 0.0)))
    return {"x": task["x"], "double": 2 * task["x"]}
