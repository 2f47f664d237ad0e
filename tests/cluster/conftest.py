"""Fixtures of the scale-out tests: a real Dask cluster on loopback (see dask_cluster.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dask_cluster import DaskCluster, dask_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler, a plain worker ``cpu-worker`` and ``gpu-worker`` with ``--resources GPU=1``."""
    with dask_cluster(tmp_path_factory.mktemp("dask"),
                      [("cpu-worker", []), ("gpu-worker", ["--resources", "GPU=1"])]) as started:
        yield started
