#!/usr/bin/env bash
# Create .qlib-venv/ (git-ignored) for benchmarks/vs_qlib.py: Qlib (pyqlib 0.9.7) plus what
# the benchmark's Qlib side needs (pymongo, mongomock for Qlib's in-memory MongoDB,
# nx-27017 for the MongoDB wire server, LightGBM, psycopg). Qlib is never a dependency of
# taskroll: it lives only in this environment.
#
#   bash scripts/qlib-env.sh
#   .venv/bin/python benchmarks/vs_qlib.py --quick      # then without --quick
#
# taskroll is deliberately not installed here, although its requirements are compatible
# with Qlib's (`pip install -e .` next to pyqlib 0.9.7 passes `pip check`): where Qlib is
# importable, taskroll hands the `qlib.*` names of a task dict to Qlib's own classes, so
# one interpreter would measure Qlib twice. vs_qlib.py therefore runs each measurement in
# a fresh process: taskroll's in .venv, Qlib's in .qlib-venv (vs_qlib_side.py), and
# prints one interleaved table. Override the interpreter with PYTHON=..., the Qlib
# version with QLIB_VERSION=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
QLIB_VERSION=${QLIB_VERSION:-0.9.7}
if [ ! -x .qlib-venv/bin/python ]; then
    "$PYTHON" -m venv .qlib-venv
fi
.qlib-venv/bin/python -m pip install --quiet --upgrade pip
.qlib-venv/bin/python -m pip install --quiet "pyqlib==${QLIB_VERSION}" pymongo mongomock \
    nx-27017 lightgbm "psycopg[binary]"
.qlib-venv/bin/python -m pip check
.qlib-venv/bin/python -c "import qlib, mongomock, lightgbm; print('.qlib-venv: qlib', qlib.__version__)"
echo "run: .venv/bin/python benchmarks/vs_qlib.py [--quick] [--repeat 3] [--only pool,ensemble,e2e]"
