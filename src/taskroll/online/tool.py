"""Online tools: which models are online, and keeping their predictions up to date.

:class:`OnlineToolR` (Qlib's ``qlib.workflow.online.utils.OnlineToolR``) marks
recorders ``online`` or ``offline`` with the tag :attr:`OnlineTool.ONLINE_KEY`
and extends the ``pred.pkl`` (and ``label.pkl``) of online models to newer data
without retraining, through :class:`~taskroll.online.update.PredUpdater` and
:class:`~taskroll.online.update.LabelUpdater`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from taskroll.errors import RecorderError
from taskroll.online.update import DSBasedUpdater, LabelUpdater, PredUpdater
from taskroll.task.calendar import DateLike
from taskroll.train.experiment import R
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)


def _as_recorders(recorder: Recorder | Sequence[Recorder]) -> list[Recorder]:
    return [recorder] if isinstance(recorder, Recorder) else list(recorder)


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
        # online first: a reader (or a routine killed between the two writes) sees the
        # old and the new models online for a moment, never no model at all
        self.set_online_tag(self.ONLINE_TAG, online)
        self.set_online_tag(self.OFFLINE_TAG, others)

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

        Each online recorder goes through a :class:`~taskroll.online.update.PredUpdater`:
        the saved model predicts on the saved dataset, reconfigured to the days after
        the last prediction (from ``from_date`` when given: those days are predicted
        again and replaced), with the handler's fitted processors (no refit). No day
        before the model's test start is ever written; no recorder is created.

        Args:
            to_date: Last day to predict; ``None``: the last day of the data.
            from_date: First day to (re)predict; ``None``: the day after the last prediction.
            exp_name: Experiment (default: ``default_exp_name``).
            hist_ref: Trading days of history before the first new day that the
                handler must load (for models reading past rows, e.g. time series).

        Returns:
            ``{recorder_id: rows added}`` for each online recorder (0: already up to date).

        Raises:
            RecorderError: When a recorder lacks ``task``, ``params.pkl`` or ``dataset``.
            DataError: When the data cannot be loaded.
        """
        return self._update(PredUpdater, to_date, from_date, exp_name, hist_ref)

    def update_online_label(self, to_date: DateLike | None = None,
                            exp_name: str | None = None) -> dict[str, int]:
        """Fill in the online models' ``label.pkl`` with the labels realised up to ``to_date``.

        Returns:
            ``{recorder_id: rows written}`` for each online recorder.
        """
        return self._update(LabelUpdater, to_date, None, exp_name, 0)

    def _update(self, updater: type[DSBasedUpdater], to_date: DateLike | None,
                from_date: DateLike | None, exp_name: str | None,
                hist_ref: int) -> dict[str, int]:
        added = {}
        for recorder in self.online_models(exp_name):
            one = updater(recorder, to_date=to_date, from_date=from_date, hist_ref=hist_ref)
            one.update()
            added[recorder.id] = one.added
        return added
