"""Experiments, the experiment manager and the ``R`` facade (Qlib's ``qlib.workflow.R``).

An :class:`Experiment` is an MLflow experiment; :class:`ExperimentManager` finds,
creates and deletes experiments of one tracking store (by default the store
configured with :func:`taskroll.init`, read at each use); :data:`R` is the
process-wide facade with the active run::

    from taskroll.train.experiment import R

    with R.start(experiment_name="rolling", recorder_name="linear"):
        R.log_params(alpha=0.1)
        R.save_objects(**{"pred.pkl": pred})

All MLflow calls go through :func:`taskroll.train.tracking.call_mlflow`, which
retries SQLite lock contention and raises :class:`~taskroll.errors.RecorderError`.

This module gathers the experiment API; the code lives in modules whose imports
point one way (each imports only those before it)::

    tracking -> recorder -> mlflow_experiment -> experiment_manager -> facade -> experiment

:class:`~taskroll.train.recorder.Recorder` is in :mod:`taskroll.train.recorder`, which
imports none of the modules after it.
"""

from __future__ import annotations

from taskroll.train.experiment_manager import (
    DEFAULT_EXPERIMENT_NAME,
    ExperimentManager,
    experiment_artifact_location,
)
from taskroll.train.facade import R, RecorderFacade
from taskroll.train.mlflow_experiment import Experiment

__all__ = [
    "DEFAULT_EXPERIMENT_NAME",
    "Experiment",
    "ExperimentManager",
    "R",
    "RecorderFacade",
    "experiment_artifact_location",
]
