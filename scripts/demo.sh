#!/usr/bin/env bash
# Create the virtual environment, install taskroll with LightGBM, and run the rolling demo
# end to end on the embedded defaults (SQLite task pool, SQLite MLflow store) in ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[lgb]"
exec .venv/bin/taskroll demo --output demo_output "$@"
