"""SignalRecord, SigAnaRecord and calc_ic on a real MLflow store, with hand-checked numbers."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.train.experiment import ExperimentManager
from taskroll.train.record import (
    RecordTemp,
    SigAnaRecord,
    SignalRecord,
    calc_ic,
    calc_long_short_return,
)
from taskroll.train.recorder import Recorder

DATES = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06"])
INSTRUMENTS = ["A", "B", "C"]


def _index(dates: Any = DATES, instruments: list[str] = INSTRUMENTS) -> pd.MultiIndex:
    return pd.MultiIndex.from_product([dates, instruments], names=["datetime", "instrument"])


# Hand-computed example, three instruments a day:
#   day 1: pred 1,2,3 label 1,3,2 -> Pearson 1/2 (sum dx*dy = 1, sxx = syy = 2); Spearman 1/2
#   day 2: pred 1,2,3 label 3,2,1 -> -1; Spearman -1
#   day 3: pred 1,2,4 label 1,2,3 -> 3 / sqrt(42/9 * 2) = 9 / sqrt(84); Spearman 1
PRED = pd.Series([1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 4.0], index=_index(), name="score")
LABEL = pd.Series([1.0, 3.0, 2.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0], index=_index())
EXPECTED_IC = [0.5, -1.0, 9 / math.sqrt(84)]
EXPECTED_RANK_IC = [0.5, -1.0, 1.0]


class TinyModel:
    """Follows the model interface: predict(dataset, segment) -> Series named score."""

    def __init__(self, prediction: pd.Series):
        self.prediction = prediction

    def predict(self, dataset: Any, segment: str = "test") -> pd.Series:
        assert segment == "test"
        return self.prediction


class TinyDataset:
    """Follows the dataset interface: prepare(...) -> DataFrame with ("label", "LABEL0")."""

    def __init__(self, label: pd.Series | None):
        self.label = label

    def prepare(self, segments: str, col_set: str = "feature", data_key: str = "infer") -> Any:
        assert (segments, col_set, data_key) == ("test", "label", "learn")
        if self.label is None:
            raise KeyError("no label in this dataset")
        frame = self.label.to_frame()
        frame.columns = pd.MultiIndex.from_tuples([("label", "LABEL0")])
        return frame


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    manager = ExperimentManager(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    return manager.get_exp("records").create_recorder("run")


def test_calc_ic_matches_the_hand_computed_example() -> None:
    ic, rank_ic = calc_ic(PRED, LABEL)
    assert list(ic.index) == list(DATES)
    np.testing.assert_allclose(ic.to_numpy(), EXPECTED_IC, rtol=1e-12)
    np.testing.assert_allclose(rank_ic.to_numpy(), EXPECTED_RANK_IC, rtol=1e-12)


def test_calc_ic_with_fewer_than_two_instruments_on_a_date() -> None:
    index = pd.MultiIndex.from_tuples(
        [(DATES[0], "A"), (DATES[1], "A"), (DATES[1], "B"), (DATES[1], "C"),
         (DATES[2], "A"), (DATES[2], "B")], names=["datetime", "instrument"])
    pred = pd.Series([1.0, 1.0, 2.0, 3.0, 5.0, np.nan], index=index)
    label = pd.Series([9.0, 2.0, 4.0, 6.0, 1.0, 2.0], index=index)
    ic, rank_ic = calc_ic(pred, label)
    # Day 1: one instrument; day 3: one complete pair. Both undefined, not errors.
    assert ic.isna().tolist() == [True, False, True]
    assert ic.iloc[1] == pytest.approx(1.0) and rank_ic.iloc[1] == pytest.approx(1.0)
    dropped, _ = calc_ic(pred, label, dropna=True)
    assert list(dropped.index) == [DATES[1]]


def test_calc_ic_of_a_constant_signal_is_undefined() -> None:
    ic, rank_ic = calc_ic(pd.Series(1.0, index=_index()), LABEL)
    assert ic.isna().all() and rank_ic.isna().all()


def test_calc_long_short_return_by_hand() -> None:
    index = _index(DATES[:1], ["A", "B", "C", "D", "E"])
    pred = pd.Series([5.0, 4.0, 3.0, 2.0, 1.0], index=index)
    label = pd.Series([0.10, 0.0, 0.0, 0.0, -0.06], index=index)
    long_short, long_average = calc_long_short_return(pred, label)  # one name each side
    assert long_short.iloc[0] == pytest.approx((0.10 - -0.06) / 2)
    assert long_average.iloc[0] == pytest.approx(0.04 / 5)


def test_signal_record_saves_pred_and_label(recorder: Recorder) -> None:
    record = SignalRecord(TinyModel(PRED), TinyDataset(LABEL), recorder)
    record.generate()
    pred = recorder.load_object("pred.pkl")
    assert isinstance(pred, pd.DataFrame) and list(pred.columns) == ["score"]
    pd.testing.assert_series_equal(pred["score"], PRED)
    label = recorder.load_object("label.pkl")
    assert list(label.columns) == [("label", "LABEL0")]
    np.testing.assert_array_equal(label.iloc[:, 0].to_numpy(), LABEL.to_numpy())
    record.check(include_self=True)
    assert record.load("pred.pkl").equals(pred)


def test_signal_record_without_label_warns_and_skips_it(recorder: Recorder) -> None:
    with pytest.warns(RuntimeWarning, match="label"):
        SignalRecord(TinyModel(PRED), TinyDataset(None), recorder).generate()
    assert recorder.list_artifacts() == ["pred.pkl"]
    with pytest.raises(FileNotFoundError, match=r"label\.pkl"):
        SigAnaRecord(recorder).generate()


def test_sig_ana_record_when_pred_equals_label(recorder: Recorder) -> None:
    SignalRecord(TinyModel(LABEL.rename("score")), TinyDataset(LABEL), recorder).generate()
    SigAnaRecord(recorder).generate()
    metrics = recorder.list_metrics()
    assert metrics["IC"] == pytest.approx(1.0)
    assert metrics["Rank IC"] == pytest.approx(1.0)
    assert math.isnan(metrics["ICIR"])  # constant IC: no dispersion, ratio undefined
    ic = recorder.load_object("sig_analysis/ic.pkl")
    assert list(ic.index) == list(DATES)
    np.testing.assert_allclose(ic.to_numpy(), 1.0)


def test_sig_ana_record_logs_the_hand_computed_metrics(recorder: Recorder) -> None:
    SignalRecord(TinyModel(PRED), TinyDataset(LABEL), recorder).generate()
    analysis = SigAnaRecord(recorder, ana_long_short=True)
    analysis.generate()
    metrics = recorder.list_metrics()
    assert metrics["IC"] == pytest.approx(statistics.mean(EXPECTED_IC))
    assert metrics["ICIR"] == pytest.approx(
        statistics.mean(EXPECTED_IC) / statistics.stdev(EXPECTED_IC))
    assert metrics["Rank IC"] == pytest.approx(1 / 6)
    assert metrics["Rank ICIR"] == pytest.approx(
        statistics.mean(EXPECTED_RANK_IC) / statistics.stdev(EXPECTED_RANK_IC))
    assert {"Long-Short Ann Return", "Long-Avg Ann Sharpe"} <= set(metrics)
    assert sorted(recorder.list_artifacts("sig_analysis")) == [
        "sig_analysis/ic.pkl", "sig_analysis/long_avg_r.pkl",
        "sig_analysis/long_short_r.pkl", "sig_analysis/ric.pkl"]
    rank_ic = analysis.load("ric.pkl")
    np.testing.assert_allclose(rank_ic.to_numpy(), EXPECTED_RANK_IC)
    analysis.check(include_self=True)


def test_sig_ana_record_skip_existing(recorder: Recorder) -> None:
    SignalRecord(TinyModel(PRED), TinyDataset(LABEL), recorder).generate()
    SigAnaRecord(recorder).generate()
    recorder.log_metrics(IC=42.0)
    SigAnaRecord(recorder, skip_existing=True).generate()
    assert recorder.list_metrics()["IC"] == 42.0
    SigAnaRecord(recorder).generate()
    assert recorder.list_metrics()["IC"] == pytest.approx(statistics.mean(EXPECTED_IC))


def test_record_temp_paths_and_missing_recorder() -> None:
    assert SigAnaRecord.get_path("ic.pkl") == "sig_analysis/ic.pkl"
    assert SignalRecord.get_path("pred.pkl") == "pred.pkl"
    with pytest.raises(NotImplementedError):
        RecordTemp(None).generate()
    with pytest.raises(Exception, match="no recorder"):
        _ = SignalRecord().recorder
