"""One side of one ``vs_qlib.py`` measurement, run in a fresh process; writes JSON.

Run by :mod:`vs_qlib` (never by hand, though it can be)::

    .venv/bin/python benchmarks/vs_qlib_side.py taskroll ROW PARAMS.json RESULT.json
    .qlib-venv/bin/python benchmarks/vs_qlib_side.py qlib ROW PARAMS.json RESULT.json

``ROW`` is ``pool``, ``ensemble`` or ``e2e``; ``PARAMS.json`` holds that row's
parameters and ``RESULT.json`` receives the measured figures. The taskroll side runs in
the project's ``.venv``, where Qlib is not importable, so the ``qlib.*`` names in the
shared task dicts are served by taskroll's classes (with Qlib importable, taskroll
would hand them to Qlib). The Qlib side runs in ``.qlib-venv`` (``scripts/qlib-env.sh``).
This module and the row modules import only the standard library, NumPy and pandas at
the top, so either environment can load them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

LIBRARIES = ("taskroll", "qlib")
"""The two sides, in the order runs are interleaved."""

Result = TypeVar("Result")


def timed(function: Callable[[], Result]) -> tuple[float, Result]:
    """Return the seconds ``function()`` took (``perf_counter``) and its result."""
    began = time.perf_counter()
    result = function()
    return time.perf_counter() - began, result


def run(library: str, row: str, params: dict[str, Any]) -> dict[str, Any]:
    """Measure one row on one library and return its figures.

    Args:
        library: ``"taskroll"`` or ``"qlib"``.
        row: ``"pool"``, ``"ensemble"`` or ``"e2e"``.
        params: The row's parameters (see each row module).

    Returns:
        A JSON-serialisable dict of figures.
    """
    if library not in LIBRARIES:
        raise SystemExit(f"unknown library {library!r}; one of {LIBRARIES}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if row == "pool":
        import vs_qlib_pool as module
    elif row == "ensemble":
        import vs_qlib_ensemble as module  # type: ignore[no-redef]
    elif row == "e2e":
        import vs_qlib_e2e as module  # type: ignore[no-redef]
    else:
        raise SystemExit(f"unknown row {row!r}; one of pool, ensemble, e2e")
    side: Callable[[dict[str, Any]], dict[str, Any]] = getattr(module, f"run_{library}")
    return side(params)


def main() -> None:
    """Read the parameters, measure, write the result file."""
    if len(sys.argv) != 5:
        raise SystemExit(f"usage: {sys.argv[0]} LIBRARY ROW PARAMS.json RESULT.json")
    library, row, params_path, result_path = sys.argv[1:]
    params = json.loads(Path(params_path).read_text(encoding="utf-8"))
    result = run(library, row, params)
    Path(result_path).write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
