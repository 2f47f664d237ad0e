"""The on-disk feature store: bit-identical results, one build per data version, shared by
real worker processes (real files, real subprocesses; nothing mocked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.data import SyntheticMarket, clear_caches, feature_store
from taskroll.data.features import compute_alpha158
from taskroll.data.handler import Alpha158

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

WINDOWS = (5, 20)

# Each process trains "rolling tasks": handlers over successive date ranges of one file.
ROLLING_SCRIPT = '''
import json, sys
from taskroll.data import clear_caches, feature_store
from taskroll.data.handler import Alpha158

path = sys.argv[1]
ranges = [("2019-03-01", "2019-12-31"), ("2019-06-01", "2020-06-30"),
          ("2019-09-01", "2020-12-31")]
rows = []
for start, end in ranges:
    clear_caches()  # as a fresh task would: only the disk store can help
    handler = Alpha158(start_time=start, end_time=end, windows=(5, 20),
                       data_loader={"class": "FileLoader", "kwargs": {"path": path}})
    rows.append(len(handler.fetch(data_key="learn")))
print(json.dumps({"builds": feature_store.build_count(), "rows": rows}))
'''


@pytest.fixture()
def store_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store folder named by TASKROLL_FEATURE_CACHE; empty in-process caches."""
    folder = tmp_path / "feature_cache"
    monkeypatch.setenv(feature_store.ENVIRONMENT_VARIABLE, str(folder))
    clear_caches()
    yield folder
    clear_caches()


@pytest.fixture()
def market_file(tmp_path: Path) -> Path:
    market = SyntheticMarket(seed=3, n_instruments=12, start="2019-01-01", end="2020-12-31",
                             suspension_rate=3.0, listing_fraction=0.3)
    return market.save(tmp_path / "bars.parquet")


def _handler(path: Path, **kwargs: object) -> Alpha158:
    return Alpha158(windows=WINDOWS, data_loader={"class": "FileLoader",
                                                  "kwargs": {"path": str(path)}}, **kwargs)


def _same_bits(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(left, right, check_exact=True)
    assert left.index.equals(right.index) and left.columns.equals(right.columns)
    left_values, right_values = left.to_numpy(), right.to_numpy()
    assert left_values.dtype == right_values.dtype
    assert np.array_equal(np.ascontiguousarray(left_values).view(np.uint8),
                          np.ascontiguousarray(right_values).view(np.uint8))


def _run_rolling_processes(path: Path, folder: Path, count: int) -> list[dict[str, Any]]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    environment[feature_store.ENVIRONMENT_VARIABLE] = str(folder)
    processes = [subprocess.Popen([sys.executable, "-c", ROLLING_SCRIPT, str(path)],
                                  env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for _ in range(count)]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports


def test_a_written_frame_reads_back_bit_for_bit(tmp_path: Path, market_file: Path) -> None:
    frame = compute_alpha158(pd.read_parquet(market_file).sort_index(), WINDOWS)
    assert frame.isna().to_numpy().any()  # NaN must survive as the same bits
    feature_store.write_frame(frame, tmp_path / "frame.arrow")
    _same_bits(frame, feature_store.read_frame(tmp_path / "frame.arrow"))


def test_results_are_bit_identical_with_and_without_the_store(
        store_folder: Path, market_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dates = {"start_time": "2019-06-01", "end_time": "2020-12-31",
             "fit_start_time": "2019-06-01", "fit_end_time": "2020-03-31"}
    built = _handler(market_file, **dates)  # computes and writes the file
    clear_caches()
    read = _handler(market_file, **dates)  # reads the file
    assert feature_store.build_count() >= 1 and len(list(store_folder.glob("*.arrow"))) == 1
    monkeypatch.setenv(feature_store.ENVIRONMENT_VARIABLE, "off")
    clear_caches()
    assert feature_store.cache_folder() is None
    plain = _handler(market_file, **dates)
    for data_key in ("raw", "infer", "learn"):
        reference = plain.fetch(data_key=data_key, col_set="__raw")
        _same_bits(reference, built.fetch(data_key=data_key, col_set="__raw"))
        _same_bits(reference, read.fetch(data_key=data_key, col_set="__raw"))


def test_features_are_built_once_across_rolling_tasks_in_a_process(
        store_folder: Path, market_file: Path) -> None:
    before = feature_store.build_count()
    for start, end in (("2019-03-01", "2019-12-31"), ("2019-09-01", "2020-12-31")):
        clear_caches()
        _handler(market_file, start_time=start, end_time=end).fetch()
    assert feature_store.build_count() - before == 1
    clear_caches()
    Alpha158(windows=(5, 10), data_loader={"class": "FileLoader",
                                            "kwargs": {"path": str(market_file)}}).fetch()
    assert feature_store.build_count() - before == 2  # other windows: another panel


def test_two_worker_processes_build_once_per_data_version(tmp_path: Path,
                                                          market_file: Path) -> None:
    folder = tmp_path / "shared_cache"
    reports = _run_rolling_processes(market_file, folder, 2)
    assert sum(int(report["builds"]) for report in reports) == 1
    assert reports[0]["rows"] == reports[1]["rows"]
    assert len(list(folder.glob("*.arrow"))) == 1

    again = _run_rolling_processes(market_file, folder, 2)  # same data: nothing built
    assert sum(int(report["builds"]) for report in again) == 0

    changed = SyntheticMarket(seed=4, n_instruments=12, start="2019-01-01", end="2020-12-31")
    changed.save(market_file)  # new data in the same file: the stored panel is stale
    after_change = _run_rolling_processes(market_file, folder, 2)
    assert sum(int(report["builds"]) for report in after_change) == 1
    assert len(list(folder.glob("*.arrow"))) == 2


def test_a_damaged_file_is_rebuilt(store_folder: Path, market_file: Path) -> None:
    reference = _handler(market_file).fetch(data_key="raw", col_set="__raw")
    (stored,) = store_folder.glob("*.arrow")
    stored.write_bytes(b"not arrow")
    clear_caches()
    before = feature_store.build_count()
    _same_bits(reference, _handler(market_file).fetch(data_key="raw", col_set="__raw"))
    assert feature_store.build_count() - before == 1


def test_unversioned_sources_are_not_stored(store_folder: Path) -> None:
    handler = Alpha158(windows=WINDOWS, data_loader={
        "class": "SyntheticLoader", "kwargs": {"n_instruments": 5, "start": "2020-01-01",
                                               "end": "2020-06-30"}})
    assert not handler.fetch().empty
    assert not store_folder.exists() or not list(store_folder.glob("*.arrow"))
    assert feature_store.store_key(("synthetic", ()), {}) is None
    assert feature_store.store_key(("file", "/x", 1, 2, ()), {"windows": [5]}) \
        != feature_store.store_key(("file", "/x", 1, 3, ()), {"windows": [5]})


def test_the_default_folder_sits_beside_a_local_tracking_store(
        isolated_settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import taskroll

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    taskroll.init(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}")
    assert feature_store.cache_folder() == (tmp_path / "runs" / "feature_cache").resolve()
    taskroll.init(tracking_uri="http://tracking.example:5000")
    assert feature_store.cache_folder() == tmp_path / "user_cache" / "taskroll" / "features"
    monkeypatch.setenv(feature_store.ENVIRONMENT_VARIABLE, "OFF")
    assert feature_store.cache_folder() is None
    assert feature_store.clear(tmp_path / "nowhere") == 0


def test_an_unwritable_folder_still_gives_the_features(
        tmp_path: Path, market_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(feature_store.ENVIRONMENT_VARIABLE, str(blocker / "cache"))
    clear_caches()
    stored = _handler(market_file).fetch(data_key="raw", col_set="__raw")
    monkeypatch.setenv(feature_store.ENVIRONMENT_VARIABLE, "off")
    clear_caches()
    _same_bits(_handler(market_file).fetch(data_key="raw", col_set="__raw"), stored)
    clear_caches()
