"""Shared fixtures: small synthetic markets, generated for real (no mocks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taskroll.data import SyntheticMarket, clear_caches


@pytest.fixture(scope="session")
def market() -> SyntheticMarket:
    """40 instruments over two years, with frequent suspensions and some listings."""
    return SyntheticMarket(seed=7, n_instruments=40, start="2019-01-01", end="2020-12-31",
                           suspension_rate=3.0, listing_fraction=0.3, delisting_fraction=0.2)


@pytest.fixture(scope="session")
def bars(market: SyntheticMarket) -> pd.DataFrame:
    return market.bars()


@pytest.fixture(scope="session")
def parquet_path(market: SyntheticMarket, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return market.save(tmp_path_factory.mktemp("panel") / "bars.parquet")


@pytest.fixture()
def fresh_caches() -> None:
    """Start a test with empty in-process data caches."""
    clear_caches()
