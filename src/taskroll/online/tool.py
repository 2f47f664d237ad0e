"""Online tools: which models are online, and keeping their predictions up to date.

:class:`OnlineToolR` (Qlib's ``qlib.workflow.online.utils.OnlineToolR``) marks
recorders ``online`` or ``offline`` with the tag :attr:`OnlineTool.ONLINE_KEY`
and extends the ``pred.pkl`` of online models to newer data without retraining
(Qlib's ``PredUpdater``): the saved model (``params.pkl``) predicts on the saved
dataset (``dataset``) reconfigured to cover only the days after its last
prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from taskroll.errors import RecorderError
from taskroll.task.calendar import DateLike, to_timestamp
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

PRED_NAME = "pred.pkl"


def _as_recorders(recorder: Recorder | Sequence[Recorder]) -> list[Recorder]:
    return [recorder] if isinstance(recorder, Recorder) else list(recorder)


def _date_level(index: pd.Index) -> str | int:
    return "datetime" if "datetime" in (index.names or []) else 0


def _dates(frame: pd.DataFrame | pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame.index.get_level_values(_date_level(frame.index)))


def _data_calendar(dataset: Any) -> pd.DatetimeIndex | None:
    """The days the dataset's data loader can serve, or ``None`` when it cannot say."""
    loader = getattr(getattr(dataset, "handler", None), "data_loader", None)
    calendar = getattr(loader, "calendar", None)
    if not callable(calendar):
        return None
    return pd.DatetimeIndex(calendar())


class OnlineTool:
    """Set and read the online status of models, and update online predictions.

    Subclasses say where models live; :class:`OnlineToolR` uses MLflow recorders.
    """

    ONLINE_KEY = "online_status"
    ONLINE_TAG = "online"
    OFFLINE_TAG = "offline"

    def set_online_tag(self, tag: str, recorder: Any) -> None:
        """Set ``tag`` (:attr:`ONLINE_TAG` or :attr:`OFFLINE_TAG`) on a model or models."""
        raise NotImplementedError

    def get_online_tag(self, recorder: Any) -> str:
        """Return the online tag of a model."""
        raise NotImplementedError

    def reset_online_tag(self, recorder: Any) -> None:
        """Make these models online and every other one offline."""
        raise NotImplementedError

    def online_models(self) -> list[Any]:
        """Return the online models."""
        raise NotImplementedError

    def update_online_pred(self, to_date: DateLike | None = None) -> Any:
        """Extend the online models' predictions to ``to_date``."""
        raise NotImplementedError


class OnlineToolR(OnlineTool):
    """Online tags and prediction updates on MLflow recorders.

    Args:
        default_exp_name: Experiment used when a method gets no ``exp_name``.
    """

    def __init__(self, default_exp_name: str | None = None) -> None:
        self.default_exp_name = default_exp_name

    def _exp_name(self, exp_name: str | None) -> str:
        name = exp_name or self.default_exp_name
        if name is None:
            raise RecorderError("OnlineToolR: no experiment name; pass exp_name or set "
                                "default_exp_name")
        return name

    def set_online_tag(self, tag: str, recorder: Recorder | Sequence[Recorder]) -> None:
        """Tag one recorder or several with ``online_status = tag``.

        Raises:
            ValueError: When ``tag`` is neither ``online`` nor ``offline``.
            RecorderError: When MLflow fails.
        """
        if tag not in (self.ONLINE_TAG, self.OFFLINE_TAG):
            raise ValueError(f"online tag must be {self.ONLINE_TAG!r} or {self.OFFLINE_TAG!r}, "
                             f"got {tag!r}")
        for item in _as_recorders(recorder):
            item.set_tags(**{self.ONLINE_KEY: tag})

    def get_online_tag(self, recorder: Recorder) -> str:
        """Return the recorder's online tag; an untagged recorder is offline."""
        return recorder.list_tags().get(self.ONLINE_KEY, self.OFFLINE_TAG)

    def reset_online_tag(self, recorder: Recorder | Sequence[Recorder],
                         exp_name: str | None = None) -> None:
        """Make ``recorder`` online and every other recorder of the experiment offline.

        Args:
            recorder: The recorders to put online.
            exp_name: Experiment (default: ``default_exp_name``).

        Raises:
            RecorderError: When the experiment does not exist or MLflow fails.
        """
        online = _as_recorders(recorder)
        online_ids = {item.id for item in online}
        others = [item for item in self.online_models(exp_name) if item.id not in online_ids]
        self.set_online_tag(self.OFFLINE_TAG, others)
        self.set_online_tag(self.ONLINE_TAG, online)

    def online_models(self, exp_name: str | None = None) -> list[Recorder]:
        """Return the experiment's online recorders, newest first (none for a missing experiment).

        Raises:
            RecorderError: When MLflow fails.
        """
        name = self._exp_name(exp_name)
        try:
            experiment = R.get_exp(name, create=False)
        except RecorderError:
            return []
        return experiment.list_recorders(
            "list", filter_string=f"tags.{self.ONLINE_KEY} = '{self.ONLINE_TAG}'")

    def update_online_pred(self, to_date: DateLike | None = None,
                           from_date: DateLike | None = None,
                           exp_name: str | None = None, hist_ref: int = 0) -> dict[str, int]:
        """Extend every online model's ``pred.pkl`` up to ``to_date`` without retraining.

        For each online recorder: load the model (``params.pkl``) and the dataset
        (``dataset``), point the dataset's handler and a ``test`` segment at the days
        after the last prediction (from ``from_date`` when given: those days are
        predicted again and replaced) up to ``to_date``, predict with the handler's
        fitted processors (no refit), and save ``pred.pkl`` back with the new days
        appended. Rows before the first new day are kept unchanged; no recorder is
        created.

        Args:
            to_date: Last day to predict; ``None``: the last day of the data.
            from_date: First day to (re)predict; ``None``: the day after the last prediction.
            exp_name: Experiment (default: ``default_exp_name``).
            hist_ref: Trading days of history before the first new day that the
                handler must load (for models reading past rows, e.g. time series).

        Returns:
            ``{recorder_id: rows added}`` for each online recorder (0: already up to date).

        Raises:
            RecorderError: When a recorder lacks ``pred.pkl``, ``params.pkl`` or ``dataset``.
            DataError: When the data cannot be loaded.
        """
        end = None if to_date is None else to_timestamp(to_date, "to_date")
        start = None if from_date is None else to_timestamp(from_date, "from_date")
        return {recorder.id: self._update_one(recorder, start, end, hist_ref)
                for recorder in self.online_models(exp_name)}

    def _update_one(self, recorder: Recorder, start: pd.Timestamp | None,
                    end: pd.Timestamp | None, hist_ref: int) -> int:
        old = recorder.load_object(PRED_NAME)
        old_dates = _dates(old)
        if start is None:
            first_new = (old_dates.max() + pd.Timedelta(days=1) if len(old_dates)
                         else pd.Timestamp.min)
        else:
            first_new = start
        if end is not None and first_new > end:
            return 0
        dataset = recorder.load_object("dataset")
        calendar = _data_calendar(dataset)
        last_new: pd.Timestamp | None
        if calendar is not None:
            new_days = calendar[(calendar >= first_new) & (
                calendar <= (end if end is not None else calendar.max()))]
            if len(new_days) == 0:
                return 0
            position = int(calendar.searchsorted(new_days[0]))
            load_start = calendar[max(position - hist_ref, 0)]
            first_new, last_new = new_days[0], new_days[-1]
        else:
            load_start, last_new = first_new, end
        dataset.config(handler_kwargs={"start_time": load_start, "end_time": last_new},
                       segments={"test": (first_new, last_new)})
        dataset.setup_data(handler_kwargs={"init_type": "load_and_setup"})
        model = recorder.load_object("params.pkl")
        new = model.predict(dataset, segment="test")
        if isinstance(new, pd.Series):
            new = new.to_frame("score")
        if isinstance(old, pd.Series) and isinstance(new, pd.DataFrame):
            column = new.iloc[:, 0]
            column.name = old.name
            new = column
        new_dates = _dates(new)
        keep = new_dates >= first_new
        if last_new is not None:
            keep &= new_dates <= last_new
        new = new[keep]
        if len(new) == 0:
            return 0
        kept = old[old_dates < first_new]
        updated = pd.concat([kept, new]).sort_index()
        recorder.save_objects(**{PRED_NAME: updated})
        _logger.info("update_online_pred: %s + %d rows (%s..%s)", recorder.id, len(new),
                     first_new.date(), pd.Timestamp(last_new).date() if last_new is not None
                     else "end")
        return len(new)
