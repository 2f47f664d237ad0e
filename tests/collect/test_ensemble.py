"""Ensembles checked against frames computed by hand and written out literally."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from taskroll.collect import (
    AverageEnsemble,
    Ensemble,
    RollingEnsemble,
    SingleKeyEnsemble,
    flatten_dict,
)

D1, D2, D3, D4 = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"])


def frame(rows: list[tuple[pd.Timestamp, str, float]]) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([(date, name) for date, name, _ in rows],
                                      names=["datetime", "instrument"])
    return pd.DataFrame({"score": [value for _, _, value in rows]}, index=index)


OLD = frame([(D1, "A", 1.0), (D1, "B", 2.0), (D2, "A", 3.0), (D2, "B", 4.0),
             (D3, "A", 5.0), (D3, "B", 6.0)])
NEW = frame([(D3, "A", 50.0), (D3, "B", 60.0), (D4, "A", 70.0), (D4, "B", 80.0)])


def test_rolling_ensemble_newest_wins_the_overlap() -> None:
    expected = frame([(D1, "A", 1.0), (D1, "B", 2.0), (D2, "A", 3.0), (D2, "B", 4.0),
                      (D3, "A", 50.0), (D3, "B", 60.0), (D4, "A", 70.0), (D4, "B", 80.0)])
    # The newer model is listed first: order in the dict must not matter.
    merged = RollingEnsemble()({("2021-01-06", "2021-01-07"): NEW,
                                ("2021-01-04", "2021-01-06"): OLD})
    pd.testing.assert_frame_equal(merged, expected)


def test_rolling_ensemble_orders_by_test_segment_start_not_by_data() -> None:
    # The model whose segment starts later wins from its start on (D2), even though its
    # data also has D1, a day before its test start, which the earlier model serves.
    late_segment = frame([(D1, "A", -1.0), (D2, "A", -2.0)])
    early_segment = frame([(D1, "A", 1.0), (D2, "A", 2.0), (D3, "A", 3.0)])
    merged = RollingEnsemble()({(pd.Timestamp("2021-01-05"), pd.Timestamp("2021-01-31")):
                                late_segment,
                                (pd.Timestamp("2021-01-01"), pd.Timestamp("2021-01-20")):
                                early_segment})
    pd.testing.assert_frame_equal(merged, frame([(D1, "A", 1.0), (D2, "A", -2.0),
                                                 (D3, "A", 3.0)]), check_freq=False)


def test_rolling_ensemble_falls_back_to_first_date_and_takes_series() -> None:
    old = OLD["score"]
    new = NEW["score"]
    merged = RollingEnsemble()({"model-b": new, "model-a": old})
    expected = pd.Series([1.0, 2.0, 3.0, 4.0, 50.0, 60.0, 70.0, 80.0],
                         index=pd.MultiIndex.from_product([[D1, D2, D3, D4], ["A", "B"]],
                                                          names=["datetime", "instrument"]),
                         name="score")
    pd.testing.assert_series_equal(merged, expected)
    with pytest.raises(ValueError):
        RollingEnsemble()({})


def test_average_ensemble_z_scores_per_date_then_averages() -> None:
    model_a = frame([(D1, "A", 1.0), (D1, "B", 2.0), (D1, "C", 3.0),
                     (D2, "A", 10.0), (D2, "B", 20.0), (D2, "C", 30.0)])
    model_b = frame([(D1, "A", 3.0), (D1, "B", 1.0), (D1, "C", 2.0),
                     (D2, "A", 5.0), (D2, "B", 5.0), (D2, "C", 8.0)])
    # Day 1: a -> (-1, 0, 1), b -> (1, -1, 0). Day 2: a -> (-1, 0, 1); b has mean 6 and
    # sample std sqrt(3): (-1/sqrt3, -1/sqrt3, 2/sqrt3).
    root3 = math.sqrt(3)
    expected = pd.Series(
        [0.0, -0.5, 0.5, (-1 - 1 / root3) / 2, (-1 / root3) / 2, (1 + 2 / root3) / 2],
        index=model_a.index, name="score")
    averaged = AverageEnsemble()({"b": model_b, "a": model_a})
    pd.testing.assert_series_equal(averaged, expected)
    # Series in, nested dicts in: same answer.
    nested = AverageEnsemble()({"x": {"a": model_a["score"]}, "y": {"b": model_b["score"]}})
    pd.testing.assert_series_equal(nested, expected)


def test_average_ensemble_skips_models_missing_an_instrument() -> None:
    model_a = frame([(D1, "A", 1.0), (D1, "B", 2.0), (D1, "C", 3.0)])
    model_b = frame([(D1, "A", 4.0), (D1, "B", 2.0)])  # z: (1/sqrt2, -1/sqrt2)
    averaged = AverageEnsemble()({"a": model_a, "b": model_b})
    half_root2 = 1 / math.sqrt(2)
    np.testing.assert_allclose(averaged.to_numpy(),
                               [(-1 + half_root2) / 2, (0 - half_root2) / 2, 1.0])


def test_single_key_ensemble_unwraps_recursively_without_mutating() -> None:
    data = {"outer": {"inner": 5}}
    assert SingleKeyEnsemble()(data) == 5
    assert data == {"outer": {"inner": 5}}
    assert SingleKeyEnsemble()({"a": {"x": 1}, "b": 2}) == {"a": 1, "b": 2}
    assert SingleKeyEnsemble()({"a": {"x": 1}, "b": 2}, recursion=False) == {"a": {"x": 1},
                                                                             "b": 2}
    assert SingleKeyEnsemble()(7) == 7


def test_flatten_dict_and_the_abstract_base() -> None:
    assert flatten_dict({"a": {"b": 1, ("c", 2): 3}, "d": 4}) == {"a/b": 1, "a/c/2": 3, "d": 4}
    with pytest.raises(NotImplementedError):
        Ensemble()({})
