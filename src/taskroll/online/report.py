"""Evaluate what was served: served signals against the labels realised since.

:func:`realised_labels` reads the labels of the served days from the data as it is
now (the handler of the newest trained model, its label definition unchanged);
days whose label is not realised yet stay missing and are left out of the report.
:func:`served_report` joins them with the signals of a simulation or a live
history into a :class:`~taskroll.online.evaluation.ServedReport`.
"""

from __future__ import annotations

import logging

import pandas as pd

from taskroll.errors import DataError
from taskroll.online.evaluation import ServedReport, evaluate_signals
from taskroll.online.manager import OnlineManager
from taskroll.online.update import dates_of
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)


def realised_labels(recorder: Recorder, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Return the raw labels from ``start`` to ``end`` through the recorder's dataset.

    Args:
        recorder: A trained run holding ``dataset``.
        start: First day.
        end: Last day.

    Returns:
        A ``label`` series indexed by ``(datetime, instrument)`` (missing where not
        realised yet).

    Raises:
        DataError: When the dataset gives no label.
    """
    dataset = recorder.load_object("dataset")
    dataset.config(handler_kwargs={"start_time": start, "end_time": end},
                   segments={"test": (start, end)})
    dataset.setup_data(handler_kwargs={"init_type": "load_and_setup"})
    labels = dataset.prepare("test", col_set="label", data_key="raw")
    if isinstance(labels, pd.DataFrame):
        if labels.shape[1] == 0:
            raise DataError(f"the dataset of run {recorder.id} has no label column")
        labels = labels.iloc[:, 0]
    if not isinstance(labels, pd.Series):
        raise DataError(f"the dataset of run {recorder.id} gave no label series")
    labels.name = "label"
    return labels


def served_report(manager: OnlineManager, signals: pd.Series | None = None,
                  topk: int = 50) -> ServedReport:
    """Evaluate the served signals: daily IC, rank IC, top-k long-short and turnover.

    Args:
        manager: The manager (its strategies give the data and the label definition).
        signals: Default: ``manager.get_signals()``.
        topk: Instruments per side of the long-short book.

    Returns:
        The report.

    Raises:
        DataError: When there are no signals or no trained model to read labels with.
    """
    served = manager.get_signals() if signals is None else signals
    if len(served) == 0:
        raise DataError("no served signals to evaluate")
    days = dates_of(served)
    start, end = pd.Timestamp(days.min()), pd.Timestamp(days.max())
    newest = [chain[-1] for strategy_chains in manager.served_chains().values()
              for chain in strategy_chains.values() if chain]
    if not newest:
        raise DataError("no trained model to read the labels with")
    model = max(newest, key=lambda item: item.test_start)
    _logger.info("labels of %s..%s read through run %s", start.date(), end.date(),
                 model.recorder.id)
    labels = realised_labels(model.recorder, start, end)
    return evaluate_signals(served, labels, topk=topk)
