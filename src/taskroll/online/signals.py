"""Served signals as a pure function of the trained models.

For each chain of rolling models (:func:`taskroll.online.models.chains`) the
prediction served on a day comes from **the newest model whose test segment has
started by that day**: model *k* serves the days from its test start up to the day
before the next model's test start (the last model: up to the current day). That
is Qlib's rolling merge, made exact per day; it never uses a model before its own
test start, so no in-sample prediction is ever served.

:func:`extend_chain` first makes every model's ``pred.pkl`` reach the days it must
serve (a :class:`~taskroll.online.update.PredUpdater` per model), so the signals
have no hole whatever the calls of the routine were: daily, with skipped days, or
after a crash. The strategies' chains are then merged per day by the signal
function (default :class:`~taskroll.collect.ensemble.AverageEnsemble`). The same
models always give the same signals, so the signal file is a cache that
:func:`build_signals` can rebuild at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.collect.ensemble import AverageEnsemble
from taskroll.online.models import OnlineModel
from taskroll.online.update import PRED_FILE, DSBasedUpdater, LabelUpdater, PredUpdater, dates_of

_logger = logging.getLogger(__name__)

SignalFunction = Callable[[Mapping[Any, Any]], Any]
_DAY = pd.Timedelta(days=1)


def _served_range(chain: Sequence[OnlineModel], index: int,
                  until: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first and last calendar day model ``index`` of ``chain`` serves up to ``until``."""
    last = until
    if index + 1 < len(chain):
        last = min(last, chain[index + 1].test_start - _DAY)
    return chain[index].test_start, last


def extend_chain(chain: Sequence[OnlineModel], until: pd.Timestamp,
                 since: pd.Timestamp | None = None, hist_ref: int = 0,
                 updater: type[DSBasedUpdater] = PredUpdater, newest: int | None = None) -> int:
    """Extend an artifact of the chain's models to every day each one serves.

    Args:
        chain: One chain's trained models, sorted by test start.
        until: Last day to serve.
        since: Only models serving a day after ``since`` are looked at (``None``: all).
        hist_ref: Passed to the updater.
        updater: :class:`PredUpdater` (``pred.pkl``) or
            :class:`~taskroll.online.update.LabelUpdater` (``label.pkl``).
        newest: Only the newest ``newest`` models (``None``: all).

    Returns:
        The number of rows written.
    """
    added = 0
    first_index = 0 if newest is None else max(len(chain) - newest, 0)
    for index in range(first_index, len(chain)):
        first, last = _served_range(chain, index, until)
        if last < first or (since is not None and last <= since):
            continue
        one = updater(chain[index].recorder, to_date=last, hist_ref=hist_ref)
        if one.first_date > last:
            continue
        one.update()
        added += one.added
    return added


def fill_labels(chain: Sequence[OnlineModel], until: pd.Timestamp, newest: int) -> int:
    """Fill in the realised labels of the chain's newest models (``label.pkl``).

    The labels only serve reports: a failure is logged, never raised, so the day's
    signals are served anyway; the next routine fills them in from the first day missing.

    Returns:
        The number of rows written.
    """
    try:
        return extend_chain(chain, until, updater=LabelUpdater, newest=newest)
    except Exception as error:  # labels are retried by the next routine
        _logger.warning("labels of a chain not filled in up to %s (%s: %s); the next routine "
                        "retries", until.date(), type(error).__name__, error)
        return 0


def chain_predictions(chain: Sequence[OnlineModel], until: pd.Timestamp,
                      since: pd.Timestamp | None = None) -> pd.Series | None:
    """Return the chain's served predictions for the days after ``since`` up to ``until``.

    Returns:
        A ``score`` series indexed by ``(datetime, instrument)``, or ``None`` when no
        model serves a day of that span.
    """
    pieces = []
    for index, model in enumerate(chain):
        first, last = _served_range(chain, index, until)
        if since is not None:
            first = max(first, since + _DAY)
        if last < first:
            continue
        predictions = model.recorder.load_object(PRED_FILE)
        if isinstance(predictions, pd.DataFrame):
            predictions = predictions.iloc[:, 0]
        days = dates_of(predictions)
        pieces.append(predictions[(days >= first) & (days <= last)])
    pieces = [piece for piece in pieces if len(piece)]
    if not pieces:
        return None
    served: pd.Series = pd.concat(pieces).sort_index()
    served.name = "score"
    return served


def chain_labels(chains: Mapping[str, Sequence[OnlineModel]]) -> dict[str, str]:
    """Name each chain ``"<model class>:<first 8 characters of its key>"``.

    The fallback for strategies that do not name their chains (a
    :class:`~taskroll.online.strategy.RollingStrategy` names them in template order);
    a chain's name never depends on the other chains.
    """
    return {key: f"{models[0].model_class or 'model'}:{key[:8]}"
            for key, models in chains.items() if models}


def build_signals(chains_by_strategy: Mapping[str, Mapping[str, Sequence[OnlineModel]]],
                  until: pd.Timestamp, since: pd.Timestamp | None = None,
                  prepare_func: SignalFunction | None = None) -> pd.Series | None:
    """Merge every strategy's chains into the signals of the days after ``since``.

    Args:
        chains_by_strategy: ``{strategy name: {chain label: models}}``.
        until: Last day.
        since: Last day already served (``None``: from the first test start).
        prepare_func: ``{(strategy, chain label): prediction} -> signal``; default
            :class:`AverageEnsemble` (per-day z-score, then the mean).

    Returns:
        The ``score`` series of the new days, or ``None`` when no model serves one.
    """
    predictions: dict[tuple[str, str], pd.Series] = {}
    for strategy, chains in sorted(chains_by_strategy.items()):
        for label in sorted(chains):
            served = chain_predictions(chains[label], until, since)
            if served is not None:
                predictions[(strategy, label)] = served
    if not predictions:
        return None
    signals = (prepare_func or AverageEnsemble())(predictions)
    if isinstance(signals, pd.DataFrame) and signals.shape[1] == 1:
        signals = signals.iloc[:, 0]
    if isinstance(signals, pd.Series):
        signals.name = signals.name if signals.name is not None else "score"
        if signals.index.nlevels == 2:
            signals.index = signals.index.set_names(["datetime", "instrument"])
        days = dates_of(signals)
        keep = days <= until
        if since is not None:
            keep &= days > since
        return signals[keep].sort_index()
    raise TypeError(f"the signal function returned {type(signals).__name__}, not a series")
