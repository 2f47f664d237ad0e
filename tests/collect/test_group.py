"""Group and RollingGroup."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from taskroll.collect import Group, RollingEnsemble, RollingGroup

D1, D2 = pd.to_datetime(["2021-01-04", "2021-01-05"])


def _prediction(date: pd.Timestamp, value: float) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([(date, "A")], names=["datetime", "instrument"])
    return pd.DataFrame({"score": [value]}, index=index)


SEGMENT_1 = ("2021-01-04", "2021-01-04")
SEGMENT_2 = ("2021-01-05", "2021-01-05")
ROLLING = {
    ("Linear", SEGMENT_1): _prediction(D1, 1.0),
    ("Linear", SEGMENT_2): _prediction(D2, 2.0),
    ("GBDT", SEGMENT_1): _prediction(D1, 10.0),
}


def test_rolling_group_keys() -> None:
    grouped = RollingGroup().group(ROLLING)
    assert list(grouped) == [("Linear",), ("GBDT",)]
    assert list(grouped[("Linear",)]) == [SEGMENT_1, SEGMENT_2]
    assert list(grouped[("GBDT",)]) == [SEGMENT_1]
    with pytest.raises(TypeError):
        RollingGroup().group({"not-a-tuple": 1})


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_rolling_group_stitches_each_model(n_jobs: int) -> None:
    result = RollingGroup(n_jobs=n_jobs)(ROLLING)
    assert set(result) == {("Linear",), ("GBDT",)}
    pd.testing.assert_frame_equal(
        result[("Linear",)],
        pd.concat([_prediction(D1, 1.0), _prediction(D2, 2.0)]))
    pd.testing.assert_frame_equal(result[("GBDT",)], _prediction(D1, 10.0))


def test_group_with_functions() -> None:
    def by_parity(values: dict[int, int]) -> dict[str, dict[int, int]]:
        grouped: dict[str, dict[int, int]] = {}
        for key, value in values.items():
            grouped.setdefault("even" if key % 2 == 0 else "odd", {})[key] = value
        return grouped

    def total(values: dict[Any, int]) -> int:
        return sum(values.values())

    group = Group(group_func=by_parity, ens=total)
    assert group({1: 10, 2: 20, 3: 30}) == {"odd": 40, "even": 20}
    assert group.reduce({1: 1, 2: 2}) == 3  # one group, as Qlib's Group.reduce
    with pytest.raises(NotImplementedError):
        Group()({1: 1})
    with pytest.raises(NotImplementedError):
        Group(group_func=by_parity).reduce({})


def test_rolling_group_takes_a_custom_ensemble() -> None:
    group = RollingGroup(ens=lambda values: len(values))
    assert group(ROLLING) == {("Linear",): 2, ("GBDT",): 1}
    assert isinstance(RollingGroup()._ens_func, RollingEnsemble)
