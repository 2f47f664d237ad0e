"""``python -m taskroll.dashboard``: serve the dashboard (see :mod:`taskroll.dashboard.cli`)."""

from __future__ import annotations

from taskroll.dashboard.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
