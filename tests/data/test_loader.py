"""Panel files and loaders: round trips, validation errors, slicing, in-process caches."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from taskroll.data import (
    DataLoader,
    FileLoader,
    StaticLoader,
    SyntheticLoader,
    SyntheticMarket,
    load_panel,
    validate_panel,
)
from taskroll.errors import DataError, DataQualityWarning
from taskroll.task.spec import init_instance_by_config


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_round_trip(market: SyntheticMarket, bars: pd.DataFrame, tmp_path: Path,
                    suffix: str) -> None:
    path = market.save(tmp_path / f"bars{suffix}")
    loaded = load_panel(path)
    assert list(loaded.index.names) == ["datetime", "instrument"]
    assert loaded.index.equals(bars.index)
    pd.testing.assert_frame_equal(loaded, bars, check_exact=suffix == ".parquet", rtol=1e-8,
                                  check_index_type=False)


def test_columns_instead_of_index_are_accepted(tmp_path: Path) -> None:
    frame = pd.DataFrame({"instrument": ["B", "A", "A"],
                          "datetime": ["2020-01-03", "2020-01-02", "2020-01-03"],
                          "close": [1.0, 2.0, 3.0]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    loaded = load_panel(tmp_path / "p.csv", required_columns=["close"])
    assert list(loaded.index) == [(pd.Timestamp("2020-01-02"), "A"),
                                  (pd.Timestamp("2020-01-03"), "A"),
                                  (pd.Timestamp("2020-01-03"), "B")]
    assert loaded["close"].tolist() == [2.0, 3.0, 1.0]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def test_missing_index_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "date,instrument,close\n2020-01-02,A,1\n")
    with pytest.raises(DataError, match="datetime"):
        load_panel(path)


def test_missing_required_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "datetime,instrument,close\n2020-01-02,A,1\n")
    with pytest.raises(DataError, match="volume"):
        load_panel(path, required_columns=["close", "volume"])


def test_duplicate_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "datetime,instrument,close\n2020-01-02,A,1\n2020-01-02,A,2\n")
    with pytest.raises(DataError, match="duplicate"):
        load_panel(path)


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path: Path,
                                                      fresh_caches: None) -> None:
    path = _write(tmp_path, "datetime,instrument,close,volume\n"
                            "2020-01-02,A,1,10\n2020-01-03,A,2,0\n2020-01-02,A,1,10\n"
                            "2020-01-03,B,,5\n2020-01-03,B,,5\n2020-01-02,A,1,10\n")
    loaded = load_panel(path)
    assert len(loaded) == 3 and loaded.index.is_unique
    with pytest.warns(DataQualityWarning) as caught:
        loader = FileLoader(path)
        frame = loader.load_all()
    report = loader.quality_report()
    assert report is not None
    assert (report.rows, report.duplicated_rows, report.invalid_price_bars,
            report.zero_volume_bars, report.late_listings) == (3, 3, 1, 1, 1)
    assert sorted(str(item.message).split("[")[-1] for item in caught) == [
        "duplicated_rows]", "invalid_price_bars]", "late_listings]", "zero_volume_bars]"]
    assert frame["close"].tolist()[0] == 1.0 and frame["close"].iloc[1:].isna().all()
    assert frame["volume"].tolist()[0] == 10.0 and frame["volume"].iloc[1:].isna().all()


def test_quality_report_of_a_clean_file_and_of_a_loader_without_bars(
        parquet_path: Path, bars: pd.DataFrame, fresh_caches: None) -> None:
    report = FileLoader(parquet_path).quality_report()
    assert report is not None
    assert (report.rows, report.invalid_price_bars, report.zero_volume_bars,
            report.duplicated_rows) == (len(bars), 0, 0, 0)
    assert report.instruments == 40 and report.suspended_days > 0 and report.late_listings > 0
    assert FileLoader(parquet_path).load_all() is FileLoader(parquet_path).load_all()
    features = pd.DataFrame({"score": 1.0}, index=bars.index[:5])
    assert StaticLoader(features).quality_report() is None

    class Plain(DataLoader):
        cache_key = None

        def load_all(self) -> pd.DataFrame:
            return bars

    assert Plain().quality_report() is None


def test_unparseable_dates(tmp_path: Path) -> None:
    path = _write(tmp_path, "datetime,instrument,close\n2020-01-02,A,1\nnot-a-date,A,2\n")
    with pytest.raises(DataError, match="datetime"):
        load_panel(path)


def test_missing_file_unknown_suffix_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_panel(tmp_path / "nope.parquet")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataError, match=r"\.csv"):
        load_panel(tmp_path / "x.txt")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        load_panel(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="does not exist"):
        FileLoader(tmp_path / "nope.csv").load()


def test_validate_panel_accepts_a_multiindex_frame(bars: pd.DataFrame) -> None:
    shuffled = bars.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(validate_panel(shuffled), bars)


def test_file_loader_slices_and_caches(parquet_path: Path, bars: pd.DataFrame,
                                       fresh_caches: None) -> None:
    loader = FileLoader(parquet_path)
    part = loader.load(["SH600001", "SH600003"], "2019-03-01", "2019-03-31")
    dates = part.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2019-03-01")
    assert dates.max() <= pd.Timestamp("2019-03-31")
    assert set(part.index.get_level_values("instrument")) == {"SH600001", "SH600003"}
    expected = bars.loc[pd.IndexSlice["2019-03-01":"2019-03-31", ["SH600001", "SH600003"]], :]
    pd.testing.assert_frame_equal(part, expected, check_index_type=False)
    # the same file is read once per process; another loader object shares the cache
    assert FileLoader(str(parquet_path)).load_all() is loader.load_all()
    assert loader.calendar().equals(pd.DatetimeIndex(
        bars.index.get_level_values("datetime").unique(), name="datetime"))


def test_file_loader_rereads_a_changed_file(market: SyntheticMarket, tmp_path: Path,
                                            fresh_caches: None) -> None:
    path = market.save(tmp_path / "bars.parquet")
    first = FileLoader(path).load_all()
    smaller = first.iloc[:100]
    smaller.to_parquet(path)
    os.utime(path, ns=(1, 1))
    assert len(FileLoader(path).load_all()) == 100


def test_synthetic_loader_caches_by_arguments(fresh_caches: None) -> None:
    arguments = {"seed": 2, "n_instruments": 5, "start": "2020-01-01", "end": "2020-03-31"}
    loader = SyntheticLoader(**arguments)
    assert SyntheticLoader(**arguments).load_all() is loader.load_all()
    assert SyntheticLoader(**{**arguments, "seed": 3}).load_all() is not loader.load_all()
    with pytest.raises(DataError, match="SyntheticMarket"):
        SyntheticLoader(colour="blue").load()


def test_loaders_build_from_cfgs(parquet_path: Path, bars: pd.DataFrame) -> None:
    loader = init_instance_by_config({"class": "FileLoader", "module_path": "taskroll.data.loader",
                                      "kwargs": {"path": str(parquet_path)}})
    assert isinstance(loader, FileLoader)
    assert len(loader.load()) == len(bars)
    static = StaticLoader(bars.iloc[::-1])
    pd.testing.assert_frame_equal(static.load(), bars)
    with pytest.raises(DataError):
        StaticLoader(bars.reset_index())
