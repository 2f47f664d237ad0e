"""Updaters: extend a trained model's artifacts to new data without retraining.

Qlib's ``qlib.workflow.online.update``: :class:`PredUpdater` appends the saved
model's predictions (``pred.pkl``) for the days after the last one,
:class:`LabelUpdater` fills in the realised labels (``label.pkl``) as new data
arrives, so that the IC of what was served can be computed later.

Both share one rule that Qlib lacks: **a model never writes a day before the start
of its own test segment.** Its training, validation and label-gap days are in
sample; an empty ``pred.pkl`` is filled from the test start, not from the first day
of the data. An artifact that cannot be read (a write cut short) is rebuilt from
the test start.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from taskroll.errors import RecorderError
from taskroll.online.models import TASK_FILE, test_start
from taskroll.task.calendar import DateLike, to_timestamp
from taskroll.train.record import SignalRecord
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)

PRED_FILE = "pred.pkl"
LABEL_FILE = "label.pkl"


def _date_level(index: pd.Index) -> str | int:
    return "datetime" if "datetime" in (index.names or []) else 0


def dates_of(frame: pd.DataFrame | pd.Series) -> pd.DatetimeIndex:
    """Return the date of each row of a ``(datetime, instrument)`` frame or series."""
    return pd.DatetimeIndex(frame.index.get_level_values(_date_level(frame.index)))


def data_calendar(dataset: Any) -> pd.DatetimeIndex | None:
    """The days the dataset's data loader can serve, or ``None`` when it cannot say."""
    loader = getattr(getattr(dataset, "handler", None), "data_loader", None)
    calendar = getattr(loader, "calendar", None)
    if not callable(calendar):
        return None
    return pd.DatetimeIndex(calendar())


class RecordUpdater:
    """Update an artifact of one recorder (Qlib's ``RecordUpdater``).

    Args:
        record: The recorder to update.
    """

    def __init__(self, record: Recorder) -> None:
        self.record = record

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Update the recorder's artifact."""
        raise NotImplementedError


class DSBasedUpdater(RecordUpdater):
    """Update a ``(datetime, instrument)`` artifact from the recorder's saved dataset.

    Args:
        record: A trained recorder (``task``, ``dataset`` and, for predictions,
            ``params.pkl``).
        to_date: Last day to write; ``None`` or a later day: the last day of the data.
        from_date: First day to (re)write; ``None``: the day after the last day holding
            a non-missing value (labels not yet realised are computed again). Never
            before the test start.
        hist_ref: Trading days of history before the first new day that the handler
            loads (for models reading past rows).
        fname: The artifact.
        test_key: Name of the test segment.

    Raises:
        RecorderError: When the recorder has no task or no test start.
    """

    def __init__(self, record: Recorder, to_date: DateLike | None = None,
                 from_date: DateLike | None = None, hist_ref: int = 0,
                 fname: str = PRED_FILE, test_key: str = "test") -> None:
        super().__init__(record)
        if isinstance(hist_ref, bool) or not isinstance(hist_ref, int) or hist_ref < 0:
            raise ValueError(f"hist_ref must be an int >= 0, got {hist_ref!r}")
        self.fname = fname
        self.hist_ref = hist_ref
        self.to_date = None if to_date is None else to_timestamp(to_date, "to_date")
        self.floor = test_start(record.load_object(TASK_FILE), test_key)
        self.old_data = self._load_old()
        if from_date is not None:
            first = to_timestamp(from_date, "from_date")
        else:
            present = self.old_data.dropna()
            first = (dates_of(present).max() + pd.Timedelta(days=1) if len(present)
                     else self.floor)
        self.first_date = max(first, self.floor)

    def _load_old(self) -> pd.DataFrame:
        """The artifact so far; empty when missing or unreadable (rebuilt from the test start)."""
        try:
            old = self.record.load_object(self.fname)
        except RecorderError as error:
            _logger.warning("%s of run %s cannot be read (%s); rebuilt from %s", self.fname,
                            self.record.id, error, self.floor.date())
            return pd.DataFrame()
        if isinstance(old, pd.Series):
            old = old.to_frame(old.name if old.name is not None else "score")
        if not isinstance(old, pd.DataFrame):
            raise RecorderError(f"{self.fname} of run {self.record.id} is a "
                                f"{type(old).__name__}, not a frame")
        return old

    def prepare_data(self, unprepared_dataset: Any = None) -> tuple[Any, pd.Timestamp] | None:
        """Point the dataset at the days to write; ``None`` when there is none.

        Returns:
            The dataset, set up with a ``test`` segment from :attr:`first_date` to the
            last day to write, and that last day.
        """
        dataset = (self.record.load_object("dataset") if unprepared_dataset is None
                   else unprepared_dataset)
        calendar = data_calendar(dataset)
        last: pd.Timestamp | None = self.to_date
        load_start = self.first_date
        if calendar is not None:
            limit = calendar.max() if last is None else min(last, calendar.max())
            days = calendar[(calendar >= self.first_date) & (calendar <= limit)]
            if len(days) == 0:
                return None
            position = int(calendar.searchsorted(days[0]))
            load_start = calendar[max(position - self.hist_ref, 0)]
            first, last = days[0], days[-1]
        else:
            first = self.first_date
            if last is None:
                raise RecorderError("the dataset's loader has no calendar; pass to_date")
            if first > last:
                return None
        dataset.config(handler_kwargs={"start_time": load_start, "end_time": last},
                       segments={"test": (first, last)})
        dataset.setup_data(handler_kwargs={"init_type": "load_and_setup"})
        return dataset, last

    def get_update_data(self, dataset: Any) -> pd.DataFrame:
        """Return the artifact's new rows for the dataset's ``test`` segment."""
        raise NotImplementedError

    def update(self, dataset: Any = None, write: bool = True,
               ret_new: bool = False) -> pd.DataFrame | None:
        """Write the artifact with the days from :attr:`first_date` to the last day replaced.

        Rows outside that range are kept; no row before the test start is ever written.

        Args:
            dataset: An unprepared dataset to use instead of the recorder's.
            write: Save the artifact back to the recorder.
            ret_new: Return the updated artifact (else ``None``).

        Returns:
            The updated artifact when ``ret_new``.
        """
        prepared = self.prepare_data(dataset)
        if prepared is None:
            return self.old_data if ret_new else None
        ready, last = prepared
        new = self.get_update_data(ready)
        new_dates = dates_of(new)
        new = new[(new_dates >= self.first_date) & (new_dates <= last)
                  & (new_dates >= self.floor)]
        old = self.old_data
        if len(old):
            old_dates = dates_of(old)
            old = old[((old_dates < self.first_date) | (old_dates > last))
                      & (old_dates >= self.floor)]
        updated = pd.concat([old, new]) if len(old) else new
        updated = updated[~updated.index.duplicated(keep="last")].sort_index()
        self.added = len(new)
        if write and len(new):
            objects: dict[str, Any] = {self.fname: updated}
            self.record.save_objects(**objects)
            _logger.info("%s of run %s: %d rows for %s..%s", self.fname, self.record.id,
                         len(new), self.first_date.date(), last.date())
        return updated if ret_new else None

    #: Rows written by the last :meth:`update`.
    added: int = 0


class PredUpdater(DSBasedUpdater):
    """Extend ``pred.pkl`` with the saved model's predictions (column ``score``)."""

    def get_update_data(self, dataset: Any) -> pd.DataFrame:
        """Predict the dataset's ``test`` segment with the recorder's model."""
        model = self.record.load_object("params.pkl")
        predicted = model.predict(dataset, segment="test")
        if isinstance(predicted, pd.DataFrame):
            predicted = predicted.iloc[:, 0]
        frame: pd.DataFrame = predicted.to_frame("score")
        return frame


class LabelUpdater(DSBasedUpdater):
    """Fill in ``label.pkl`` with the labels realised since the last update."""

    def __init__(self, record: Recorder, to_date: DateLike | None = None,
                 **kwargs: Any) -> None:
        super().__init__(record, to_date=to_date, fname=LABEL_FILE, **kwargs)

    def get_update_data(self, dataset: Any) -> pd.DataFrame:
        """Return the dataset's ``test`` labels (as :class:`SignalRecord` saves them)."""
        label = SignalRecord.generate_label(dataset)
        return label if label is not None else pd.DataFrame()
