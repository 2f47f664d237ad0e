"""Run ``taskroll online ...`` and SIGKILL this process at a chosen point of the routine.

Usage: ``python crash_routine.py POINT taskroll-arguments...``, POINT one of
``training`` (inside the model's fit, the run open), ``before_switch`` (models
trained, tags not switched), ``between_tags`` (new models online, old ones not yet
offline), ``signals_write`` (the new signal file written but not yet in place) or
``none``. Only the process kills itself: every component (SQLite, MLflow, the data
files) is the real one.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str) -> None:
    if point == "training":
        from taskroll.models.linear import LinearModel

        def fit(self: Any, *args: Any, **kwargs: Any) -> None:
            _die()

        LinearModel.fit = fit  # type: ignore[method-assign]
    elif point == "before_switch":
        from taskroll.online.strategy import RollingStrategy

        original_prepare = RollingStrategy.prepare_online_models

        def prepare(self: Any, trained_models: Any, *args: Any, **kwargs: Any) -> Any:
            if trained_models and any(model.id not in {online.id for online in
                                                       self.tool.online_models()}
                                      for model in trained_models):
                _die()
            return original_prepare(self, trained_models, *args, **kwargs)

        RollingStrategy.prepare_online_models = prepare  # type: ignore[method-assign]
    elif point == "between_tags":
        from taskroll.online.tool import OnlineToolR

        original_set = OnlineToolR.set_online_tag

        def set_tag(self: Any, tag: str, recorder: Any) -> None:
            original_set(self, tag, recorder)
            if tag == self.ONLINE_TAG and len(self.online_models()) > 1:
                _die()

        OnlineToolR.set_online_tag = set_tag  # type: ignore[method-assign]
    elif point == "signals_write":
        from taskroll.online import cli

        original_write, original_fsync = cli.write_signals, os.fsync
        writing = []

        def write_signals(*args: Any, **kwargs: Any) -> Any:
            writing.append(True)
            return original_write(*args, **kwargs)

        def fsync(descriptor: int) -> None:
            original_fsync(descriptor)
            if writing:  # the new file is on disk beside the old one, not yet renamed
                _die()

        cli.write_signals = write_signals
        os.fsync = fsync
    elif point != "none":
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    _arm(sys.argv[1])
    from taskroll.cli import main

    raise SystemExit(main(sys.argv[2:]))
