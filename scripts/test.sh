#!/usr/bin/env bash
# Install everything the tests need (virtual environment, dev extras, the PostgreSQL
# server package) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
if [ -f scripts/install-test-servers.sh ]; then
    bash scripts/install-test-servers.sh
fi
exec .venv/bin/python -m pytest "$@"
