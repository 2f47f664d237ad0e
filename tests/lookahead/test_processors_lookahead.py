"""No look-ahead in processors: per-day processors see only their day; fitted ones only
their fit range. Applied to features whose rows after D are scrambled, every processor
leaves the rows on or before D bit-identical (D two trading days before the scramble,
so that the labels of those rows, which look two days ahead, are complete)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskroll.data import compute_alpha158
from taskroll.data.processors import (
    CSRankNorm,
    CSZScoreNorm,
    DropnaFeature,
    DropnaLabel,
    Fillna,
    ProcessInf,
    Processor,
    RobustZScoreNorm,
    ZScoreNorm,
)

from .perturb import assert_identical, on_or_before, scramble_after

PROCESSORS: dict[str, Processor] = {
    "ProcessInf": ProcessInf(),
    "CSZScoreNorm": CSZScoreNorm(fields_group="feature"),
    "CSZScoreNorm-robust": CSZScoreNorm(fields_group="feature", method="robust"),
    "CSRankNorm": CSRankNorm(fields_group="feature"),
    "Fillna": Fillna(fields_group="feature"),
    "DropnaFeature": DropnaFeature(),
    "DropnaLabel": DropnaLabel(),
    "ZScoreNorm": ZScoreNorm(fields_group="feature"),
    "RobustZScoreNorm": RobustZScoreNorm(fields_group="feature", clip_outlier=True),
}


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_processor_rows_on_or_before_the_cut_do_not_change(
        dirty: pd.DataFrame, cut_dates: list[pd.Timestamp], name: str) -> None:
    scrambled_after = cut_dates[2]
    calendar = dirty.index.get_level_values(0).unique()
    cut = calendar[calendar.get_loc(scrambled_after) - 2]
    original = compute_alpha158(dirty, windows=(5, 20))
    perturbed = compute_alpha158(scramble_after(dirty, scrambled_after, seed=4), windows=(5, 20))
    # a few infinite values, so that ProcessInf has work to do
    for frame in (original, perturbed):
        frame.iloc[::97, 3] = np.inf
    processor = PROCESSORS[name]
    results = []
    for frame in (original, perturbed):
        processor.fit(on_or_before(frame, cut))  # the fit range ends on the cut at the latest
        results.append(processor(frame))
    assert_identical(on_or_before(results[0], cut), on_or_before(results[1], cut))
