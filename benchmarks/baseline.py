"""Run a benchmark function on an earlier commit, in the same run as on this tree.

:func:`measure_at` checks git ``REF`` out into a temporary worktree and calls
``module.function(*arguments)`` from ``benchmarks/`` of *this* tree in a subprocess
that imports taskroll from that worktree, so both figures and their ratio come from
one run on one machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def measure_at(ref: str, module: str, function: str, arguments: list[Any]) -> dict[str, float]:
    """Return ``module.function(*arguments)`` computed with taskroll at git ``ref``.

    The function must return a JSON-serialisable dict; the subprocess prints it last.
    """
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                       check=True, capture_output=True)
        try:
            code = ("import importlib, json, sys; sys.path.insert(0, sys.argv[1]); "
                    "function = getattr(importlib.import_module(sys.argv[2]), sys.argv[3]); "
                    "print(json.dumps(function(*json.loads(sys.argv[4]))))")
            environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
            result = subprocess.run(
                [sys.executable, "-c", code, str(ROOT / "benchmarks"), module, function,
                 json.dumps(arguments)],
                check=True, capture_output=True, text=True, env=environment, cwd=folder)
            measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
            return measured
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
