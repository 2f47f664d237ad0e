"""Tests of taskroll.online.evaluation: served signals scored against realised labels."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from taskroll.errors import DataError
from taskroll.online.evaluation import ServedReport, evaluate_signals, plot_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def frame_of(rows: list[tuple[str, str, float, float]]) -> tuple[pd.Series, pd.Series]:
    """Build (signals, labels) from ``(date, instrument, signal, label)`` rows."""
    index = pd.MultiIndex.from_tuples([(pd.Timestamp(day), name) for day, name, _, _ in rows],
                                      names=["datetime", "instrument"])
    signals = pd.Series([row[2] for row in rows], index=index, name="score")
    labels = pd.Series([row[3] for row in rows], index=index, name="label")
    return signals, labels


# Four served days; topk=2 throughout.
HAND_ROWS: list[tuple[str, str, float, float]] = [
    # Day 1: order a, b, c, d; k = min(2, 4 // 2) = 2: long {a, b}, short {c, d}.
    ("2024-01-02", "a", 4.0, 3.0), ("2024-01-02", "b", 3.0, 1.0),
    ("2024-01-02", "c", 2.0, 2.0), ("2024-01-02", "d", 1.0, -2.0),
    # Day 2: order b, c, d, a; k = 2: long {b, c}, short {d, a}.
    ("2024-01-03", "a", 1.0, -1.0), ("2024-01-03", "b", 4.0, 4.0),
    ("2024-01-03", "c", 3.0, 0.0), ("2024-01-03", "d", 2.0, 1.0),
    # Day 3: e has no label yet, so 3 usable rows; order a, c, b; k = min(2, 3 // 2) = 1.
    ("2024-01-04", "a", 3.0, 0.0), ("2024-01-04", "b", 1.0, 5.0),
    ("2024-01-04", "c", 2.0, 1.0), ("2024-01-04", "e", 5.0, math.nan),
    # Day 4: no label realised yet: left out of daily, counted in days_without_label.
    ("2024-01-05", "a", 1.0, math.nan), ("2024-01-05", "b", 2.0, math.nan),
]


@pytest.fixture()
def hand_report() -> ServedReport:
    signals, labels = frame_of(HAND_ROWS)
    return evaluate_signals(signals, labels, topk=2)


def test_hand_computed_daily(hand_report: ServedReport) -> None:
    daily = hand_report.daily
    # Day 1: x = [4, 3, 2, 1], y = [3, 1, 2, -2]; dx = [1.5, .5, -.5, -1.5], dy = [2, 0, 1, -3]
    #   Sxy = 3 + 0 - .5 + 4.5 = 7, Sxx = 5, Syy = 4 + 0 + 1 + 9 = 14 -> ic = 7 / sqrt(70).
    #   ranks y = [4, 2, 3, 1]; dry = [1.5, -.5, .5, -1.5]; Sxy = 2.25 - .25 - .25 + 2.25 = 4,
    #   Sxx = Syy = 5 -> rank_ic = 0.8.
    #   long = (3 + 1) / 2 = 2, short = (2 - 2) / 2 = 0, long_short = 2; turnover NaN (first day).
    # Day 2: x = [1, 4, 3, 2], y = [-1, 4, 0, 1]; dx = [-1.5, 1.5, .5, -.5], dy = [-2, 3, -1, 0]
    #   Sxy = 3 + 4.5 - .5 + 0 = 7, Sxx = 5, Syy = 4 + 9 + 1 = 14 -> ic = 7 / sqrt(70).
    #   ranks y = [1, 4, 2, 3]; dry = [-1.5, 1.5, -.5, .5]; Sxy = 2.25 + 2.25 - .25 - .25 = 4 -> 0.8.
    #   long = (4 + 0) / 2 = 2, short = (1 - 1) / 2 = 0, long_short = 2.
    #   turnover: new longs {c}, new shorts {a}: (1 + 1) / (2 + 2) = 0.5.
    # Day 3 (a, b, c): x = [3, 1, 2], y = [0, 5, 1]; dx = [1, -1, 0], dy = [-2, 3, -1]
    #   Sxy = -2 - 3 + 0 = -5, Sxx = 2, Syy = 4 + 9 + 1 = 14 -> ic = -5 / sqrt(28).
    #   ranks x = [3, 1, 2], ranks y = [1, 3, 2]; dry = [-1, 1, 0]; Sxy = -1 - 1 = -2 -> -2 / 2 = -1.
    #   long {a} = 0, short {b} = 5, long_short = -5.
    #   turnover: new longs {a} (1), new shorts {b} (1): (1 + 1) / (1 + 1) = 1.
    expected = pd.DataFrame({
        "ic": [7 / math.sqrt(70), 7 / math.sqrt(70), -5 / math.sqrt(28)],
        "rank_ic": [0.8, 0.8, -1.0],
        "long": [2.0, 2.0, 0.0],
        "short": [0.0, 0.0, 5.0],
        "long_short": [2.0, 2.0, -5.0],
        "turnover": [math.nan, 0.5, 1.0],
        "count": [4, 4, 3],
    }, index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], name="datetime"))
    pd.testing.assert_frame_equal(daily, expected, check_freq=False)


def test_hand_computed_summary(hand_report: ServedReport) -> None:
    summary = hand_report.summary
    ic = [7 / math.sqrt(70), 7 / math.sqrt(70), -5 / math.sqrt(28)]
    # long_short = [2, 2, -5]: mean -1/3; deviations [7/3, 7/3, -14/3], squares 49/9 * (1+1+4) = 294/9;
    # sample variance 294/9 / 2 = 49/3 -> std = 7 / sqrt(3).
    long_short_std = 7 / math.sqrt(3)
    assert summary["ic_mean"] == pytest.approx(sum(ic) / 3)
    assert summary["ic_std"] == pytest.approx(float(np.std(ic, ddof=1)))
    assert summary["icir"] == pytest.approx(sum(ic) / 3 / float(np.std(ic, ddof=1)))
    # rank_ic = [0.8, 0.8, -1]: mean 0.6/3 = 0.2; deviations [.6, .6, -1.2]: (0.36 * 6) / 2 = 1.08.
    assert summary["rank_ic_mean"] == pytest.approx(0.2)
    assert summary["rank_ic_std"] == pytest.approx(math.sqrt(1.08))
    assert summary["rank_icir"] == pytest.approx(0.2 / math.sqrt(1.08))
    assert summary["long_short_mean"] == pytest.approx(-1 / 3)
    assert summary["long_short_annualized"] == pytest.approx(-252 / 3)
    assert summary["long_short_sharpe"] == pytest.approx(-1 / 3 / long_short_std * math.sqrt(252))
    # cumulative long_short from 0: [0, 2, 4, -1]; peak 4, trough -1 -> -5.
    assert summary["max_drawdown"] == pytest.approx(-5.0)
    assert summary["turnover_mean"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert summary["days"] == 3
    assert summary["days_without_label"] == 1
    assert summary["topk"] == 2
    assert summary["first_day"] == "2024-01-02"
    assert summary["last_day"] == "2024-01-04"
    assert isinstance(summary["days"], int) and isinstance(summary["ic_mean"], float)


def test_drawdown_counts_a_loss_on_the_first_day() -> None:
    # one day, labels [1, 4] with signals [2, 1]: long {a} = 1, short {b} = 4 -> -3.
    signals, labels = frame_of([("2024-01-02", "a", 2.0, 1.0), ("2024-01-02", "b", 1.0, 4.0)])
    summary = evaluate_signals(signals, labels).summary
    assert summary["max_drawdown"] == pytest.approx(-3.0)
    assert math.isnan(float(summary["ic_std"]))  # one day has no sample std
    assert math.isnan(float(summary["icir"]))


def test_unlabelled_days_and_extra_label_days() -> None:
    signals, labels = frame_of(HAND_ROWS)
    # Labels for a day that was never served do not count as a day without label.
    extra = pd.Series([1.0], index=pd.MultiIndex.from_tuples(
        [(pd.Timestamp("2023-12-29"), "a")], names=["datetime", "instrument"]))
    report = evaluate_signals(signals, pd.concat([labels, extra]), topk=2)
    assert report.summary["days_without_label"] == 1
    assert pd.Timestamp("2024-01-05") not in report.daily.index
    assert pd.Timestamp("2023-12-29") not in report.daily.index
    # Infinite values are unusable too: an infinite label drops only that row.
    labels_inf = labels.copy()
    labels_inf[(pd.Timestamp("2024-01-02"), "d")] = math.inf
    assert evaluate_signals(signals, labels_inf, topk=2).daily["count"].tolist() == [3, 4, 3]


def test_all_labels_missing_gives_an_empty_report(tmp_path: Path) -> None:
    signals, labels = frame_of(HAND_ROWS)
    report = evaluate_signals(signals, labels * math.nan)
    assert report.daily.empty
    assert list(report.daily.columns) == ["ic", "rank_ic", "long", "short", "long_short",
                                          "turnover", "count"]
    assert report.summary["days"] == 0 and report.summary["days_without_label"] == 4
    assert report.summary["first_day"] == "" and report.summary["last_day"] == ""
    paths = report.save(tmp_path)
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert json.loads(paths["json"].read_text())["ic_mean"] is None


def test_ties_are_broken_by_instrument_name() -> None:
    rows = [("2024-01-02", name, 1.0, label)
            for name, label in (("d", 4.0), ("b", 2.0), ("a", 1.0), ("c", 3.0))]
    # All scores tie: order by name a, b, c, d; k = min(1, 2) = 1 -> long {a} = 1, short {d} = 4.
    first = evaluate_signals(*frame_of(rows), topk=1)
    second = evaluate_signals(*frame_of(list(reversed(rows))), topk=1)
    pd.testing.assert_frame_equal(first.daily, second.daily, check_exact=True)
    assert first.daily["long"].iloc[0] == 1.0
    assert first.daily["short"].iloc[0] == 4.0
    assert first.daily["long_short"].iloc[0] == -3.0
    # A constant signal has no correlation.
    assert math.isnan(first.daily["ic"].iloc[0]) and math.isnan(first.daily["rank_ic"].iloc[0])


def test_constant_label_with_rounding_gives_nan_ic() -> None:
    rows = [("2024-01-02", name, score, 0.1) for name, score in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    daily = evaluate_signals(*frame_of(rows)).daily
    assert math.isnan(daily["ic"].iloc[0]) and math.isnan(daily["rank_ic"].iloc[0])
    assert daily["long_short"].iloc[0] == 0.0


def test_single_row_day_has_nan_book_and_resets_turnover() -> None:
    rows = [("2024-01-02", "a", 1.0, 1.0), ("2024-01-02", "b", 2.0, 2.0),
            ("2024-01-03", "a", 1.0, 1.0),
            ("2024-01-04", "a", 1.0, 1.0), ("2024-01-04", "b", 2.0, 2.0)]
    daily = evaluate_signals(*frame_of(rows)).daily
    assert daily["count"].tolist() == [2, 1, 2]
    assert daily[["ic", "long", "short", "long_short", "turnover"]].iloc[1].isna().all()
    # After an empty book every position is new: (1 + 1) / 2 = 1.
    assert daily["turnover"].iloc[2] == 1.0


def test_one_column_frames_and_other_index_layouts(hand_report: ServedReport) -> None:
    signals, labels = frame_of(HAND_ROWS)
    as_frames = evaluate_signals(signals.to_frame("score"), labels.to_frame("label"), topk=2)
    pd.testing.assert_frame_equal(as_frames.daily, hand_report.daily)
    # Unnamed levels and ISO strings for dates are accepted.
    plain_index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(signals.index.get_level_values(0)).strftime("%Y-%m-%d"),
         signals.index.get_level_values(1)])
    renamed = evaluate_signals(signals.set_axis(plain_index), labels.set_axis(plain_index), topk=2)
    pd.testing.assert_frame_equal(renamed.daily, hand_report.daily)
    assert renamed.summary == as_frames.summary == hand_report.summary


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_row_order_does_not_change_the_report(seed: int) -> None:
    generator = np.random.default_rng(100 + seed)
    days = pd.bdate_range("2024-01-01", periods=12)
    names = [f"SH60{number:04d}" for number in range(25)]
    index = pd.MultiIndex.from_product([days, names], names=["datetime", "instrument"])
    # Rounded scores make ties frequent; some labels are missing.
    signals = pd.Series(np.round(generator.normal(size=len(index)), 1), index=index)
    labels = pd.Series(generator.normal(scale=0.02, size=len(index)), index=index)
    labels[generator.random(len(index)) < 0.15] = math.nan
    labels[labels.index.get_level_values(0) == days[-1]] = math.nan
    reference = evaluate_signals(signals, labels, topk=5)
    order = generator.permutation(len(index))
    label_order = generator.permutation(len(index))
    shuffled = evaluate_signals(signals.iloc[order], labels.iloc[label_order], topk=5)
    pd.testing.assert_frame_equal(reference.daily, shuffled.daily, check_exact=True)
    assert reference.summary == shuffled.summary
    assert reference.summary["days_without_label"] == 1


def test_save_writes_three_files_atomically(hand_report: ServedReport, tmp_path: Path) -> None:
    folder = tmp_path / "served" / "2024-01"
    paths = hand_report.save(folder)
    assert paths == {"csv": folder / "report.csv", "json": folder / "report.json",
                     "png": folder / "report.png"}
    assert sorted(path.name for path in folder.iterdir()) == ["report.csv", "report.json", "report.png"]
    text = paths["json"].read_text()
    assert json.loads(text) == hand_report.summary
    assert list(json.loads(text)) == sorted(hand_report.summary)
    assert text.startswith('{\n  "')  # indent 2
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    back = pd.read_csv(paths["csv"], index_col="datetime", parse_dates=["datetime"])
    pd.testing.assert_frame_equal(back, hand_report.daily, check_freq=False)
    hand_report.save(folder)  # overwriting works and leaves no temporary file behind
    assert len(list(folder.iterdir())) == 3


def test_save_writes_nan_as_null(tmp_path: Path) -> None:
    signals, labels = frame_of([("2024-01-02", "a", 2.0, 1.0), ("2024-01-02", "b", 1.0, 4.0)])
    loaded = json.loads(evaluate_signals(signals, labels).save(tmp_path)["json"].read_text())
    assert loaded["ic_std"] is None and loaded["turnover_mean"] is None
    assert loaded["days"] == 1


def test_plot_report_leaves_pyplot_alone(hand_report: ServedReport, tmp_path: Path) -> None:
    import matplotlib.pyplot as pyplot

    figures_before = pyplot.get_fignums()
    path = plot_report(hand_report, str(tmp_path / "nested" / "plot.png"))
    assert path == tmp_path / "nested" / "plot.png"
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert pyplot.get_fignums() == figures_before


def test_to_text_lists_every_summary_entry(hand_report: ServedReport) -> None:
    text = hand_report.to_text()
    for key in hand_report.summary:
        assert key in text
    assert "2024-01-02" in text and "-5" in text


def _shift_days(series: pd.Series) -> pd.Series:
    dates = pd.DatetimeIndex(series.index.get_level_values(0)) + pd.Timedelta(days=365)
    return series.set_axis(pd.MultiIndex.from_arrays([dates, series.index.get_level_values(1)]))


def _with_level(series: pd.Series) -> pd.Series:
    return series.set_axis(pd.MultiIndex.from_arrays(
        [series.index.get_level_values(0), series.index.get_level_values(1), ["x"] * len(series)]))


def _unchanged(series: pd.Series) -> pd.Series:
    return series


Change = Callable[[pd.Series], Any]
# (case, change to signals, change to labels, keyword options)
BAD_INPUTS: list[tuple[str, Change, Change, dict[str, Any]]] = [
    ("single level index", lambda series: series.droplevel(1).groupby(level=0).first(), _unchanged, {}),
    ("three level index", _with_level, _unchanged, {}),
    ("no overlap", _unchanged, _shift_days, {}),
    ("topk zero", _unchanged, _unchanged, {"topk": 0}),
    ("topk negative", _unchanged, _unchanged, {"topk": -3}),
    ("topk not an integer", _unchanged, _unchanged, {"topk": 2.5}),
    ("annualization zero", _unchanged, _unchanged, {"annualization": 0}),
    ("signals with two columns", lambda series: pd.DataFrame({"one": series, "two": series}),
     _unchanged, {}),
    ("labels with two columns", _unchanged,
     lambda series: pd.DataFrame({"one": series, "two": series}), {}),
    ("signals with no column", lambda series: pd.DataFrame(index=series.index), _unchanged, {}),
    ("duplicated signals", lambda series: pd.concat([series, series.iloc[:1]]), _unchanged, {}),
    ("duplicated labels", _unchanged, lambda series: pd.concat([series, series.iloc[-2:]]), {}),
    ("not pandas", lambda series: series.tolist(), _unchanged, {}),
    ("text scores", lambda series: series.astype(str) + "x", _unchanged, {}),
]


@pytest.mark.parametrize(("case", "change_signals", "change_labels", "options"), BAD_INPUTS,
                         ids=[row[0] for row in BAD_INPUTS])
def test_bad_inputs_raise_data_error(case: str, change_signals: Change, change_labels: Change,
                                     options: dict[str, Any]) -> None:
    signals, labels = frame_of(HAND_ROWS)
    with pytest.raises(DataError) as caught:
        evaluate_signals(change_signals(signals), change_labels(labels), **options)
    assert isinstance(caught.value, ValueError), case
    assert str(caught.value)
