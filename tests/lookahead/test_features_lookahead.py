"""No look-ahead in features and labels: scrambling every bar after D changes nothing
on or before D (features), or before D's horizon (labels), bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskroll.data import compute_alpha158

from .perturb import assert_identical, on_or_before, scramble_after

LABEL = ("label", "LABEL0")


@pytest.mark.parametrize("position", range(5))
def test_features_on_or_before_the_cut_do_not_change(dirty: pd.DataFrame,
                                                     cut_dates: list[pd.Timestamp],
                                                     position: int) -> None:
    cut = cut_dates[position]
    original = compute_alpha158(dirty)
    perturbed = compute_alpha158(scramble_after(dirty, cut, seed=position))
    features = [column for column in original.columns if column[0] == "feature"]
    assert_identical(on_or_before(original[features], cut), on_or_before(perturbed[features], cut))


def test_features_of_an_instrument_do_not_depend_on_other_instruments(dirty: pd.DataFrame) -> None:
    instruments = dirty.index.get_level_values(1).unique()
    alone = compute_alpha158(dirty[dirty.index.get_level_values(1) == instruments[5]])
    together = compute_alpha158(dirty)
    features = [column for column in alone.columns if column[0] == "feature"]
    assert_identical(alone[features], together.loc[alone.index, features])


def test_features_do_not_depend_on_later_rows_of_the_instrument(dirty: pd.DataFrame) -> None:
    """Removing every later bar of one instrument leaves its earlier features alone."""
    instrument = dirty.index.get_level_values(1).unique()[3]
    mine = dirty[dirty.index.get_level_values(1) == instrument]
    cut = mine.index.get_level_values(0)[len(mine) // 3]
    shorter = dirty.drop(mine.index[mine.index.get_level_values(0) > cut])
    full, cut_short = compute_alpha158(dirty), compute_alpha158(shorter)
    features = [column for column in full.columns if column[0] == "feature"]
    assert_identical(on_or_before(full[features], cut), on_or_before(cut_short[features], cut))


@pytest.mark.parametrize("position", range(5))
def test_labels_use_nothing_after_their_horizon(dirty: pd.DataFrame,
                                                cut_dates: list[pd.Timestamp],
                                                position: int) -> None:
    cut = cut_dates[position]
    calendar = dirty.index.get_level_values(0).unique()
    horizon = 2
    last_complete = calendar[calendar.get_loc(cut) - horizon]
    original = compute_alpha158(dirty)[LABEL]
    perturbed = compute_alpha158(scramble_after(dirty, cut, seed=position))[LABEL]
    assert_identical(on_or_before(original, last_complete), on_or_before(perturbed, last_complete))


def test_labels_count_trading_days_of_the_market_calendar(dirty: pd.DataFrame) -> None:
    """LABEL0 at t is close(t+2)/close(t+1) - 1 on the market calendar, NaN across a gap."""
    features = compute_alpha158(dirty)
    calendar = dirty.index.get_level_values(0).unique()
    columns = ["open", "high", "low", "close", "volume", "vwap"]
    valid = (dirty[columns] > 0).all(axis=1)  # NaN compares False: an invalid bar has no price
    close = dirty["close"].where(valid).unstack().reindex(calendar)
    expected = (close.shift(-2) / close.shift(-1) - 1.0).stack(future_stack=True)
    expected = expected.reindex(features.index).astype(np.float32)
    label = features[LABEL]
    both_nan = label.isna() & expected.isna()
    assert (both_nan | (label == expected)).all()
    assert label.isna().sum() > 0
