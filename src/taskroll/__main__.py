"""``python -m taskroll``: the ``taskroll`` command."""

from taskroll.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
