"""``DatasetH``: a handler plus named date segments (Qlib's dataset with a handler).

Task cfg shape::

    {"class": "DatasetH", "module_path": "taskroll.data.dataset",
     "kwargs": {"handler": {"class": "Alpha158", "module_path": "taskroll.data.handler",
                            "kwargs": {...}},
                "segments": {"train": ("2017-01-01", "2019-12-31"),
                             "valid": ("2020-01-01", "2020-12-31"),
                             "test": ("2021-01-01", "2021-12-31")}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from taskroll.data.handler import DataHandlerLP
from taskroll.errors import TaskConfigError
from taskroll.task.spec import init_instance_by_config
from taskroll.task.utils import is_handler_cache_uri, load_cached_handler


def _check_segments(segments: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    if not isinstance(segments, Mapping):
        raise TaskConfigError(f"dataset.segments must be a dict of name -> (start, end), "
                              f"got {type(segments).__name__}")
    checked: dict[str, tuple[Any, Any]] = {}
    for name, span in segments.items():
        if isinstance(span, slice):
            span = (span.start, span.stop)
        if not isinstance(span, Sequence) or isinstance(span, str) or len(span) != 2:
            raise TaskConfigError(f"dataset.segments[{name!r}] must be a (start, end) pair, "
                                  f"got {span!r}")
        for bound in span:
            if bound is not None:
                try:
                    pd.Timestamp(bound)
                except (ValueError, TypeError) as error:
                    raise TaskConfigError(f"dataset.segments[{name!r}]: cannot parse date "
                                          f"{bound!r}") from error
        checked[str(name)] = (span[0], span[1])
    return checked


class DatasetH:
    """A dataset served by a data handler, split into named segments.

    Args:
        handler: A :class:`~taskroll.data.handler.DataHandlerLP`, its cfg, or the
            ``file://`` URI of a handler cached by
            :func:`taskroll.task.utils.replace_task_handler_with_cache` (loaded only from a
            private file of this user: see :func:`taskroll.task.utils.load_cached_handler`).
        segments: Map of segment name to an inclusive ``(start, end)`` pair of dates
            (strings, Timestamps, or ``None`` for open ends).
        fetch_kwargs: Extra keyword arguments passed to ``handler.fetch`` on every prepare.

    Raises:
        TaskConfigError: For a malformed handler cfg or segments.
    """

    def __init__(self, handler: Any, segments: Mapping[str, Any],
                 fetch_kwargs: Mapping[str, Any] | None = None) -> None:
        if is_handler_cache_uri(handler):
            built = load_cached_handler(handler)
        else:
            built = init_instance_by_config(handler, default_module="taskroll.data.handler",
                                            accept_types=DataHandlerLP, where="dataset.handler")
        if not isinstance(built, DataHandlerLP):
            raise TaskConfigError(f"dataset.handler: expected a data handler, got "
                                  f"{type(built).__name__}")
        self.handler: DataHandlerLP = built
        self.segments: dict[str, tuple[Any, Any]] = _check_segments(segments)
        self.fetch_kwargs: dict[str, Any] = dict(fetch_kwargs or {})

    def config(self, handler_kwargs: Mapping[str, Any] | None = None,
               segments: Mapping[str, Any] | None = None) -> None:
        """Reconfigure in place (Qlib's online flow: ``config(...)`` then ``setup_data()``).

        Args:
            handler_kwargs: Passed to ``handler.config`` (``start_time``, ``end_time``, ...).
            segments: New segments, replacing the old ones.

        Raises:
            TaskConfigError: For unknown handler settings or malformed segments.
        """
        if handler_kwargs:
            self.handler.config(**handler_kwargs)
        if segments is not None:
            self.segments = _check_segments(segments)

    def setup_data(self, handler_kwargs: Mapping[str, Any] | None = None) -> None:
        """Rebuild the handler's data (``handler_kwargs`` go to ``handler.setup_data``).

        Raises:
            TaskConfigError: For an unknown ``init_type``.
            DataError: When loading fails.
        """
        self.handler.setup_data(**dict(handler_kwargs or {}))

    def prepare(self, segments: str | Sequence[str] | slice,
                col_set: str | Sequence[str] = DataHandlerLP.CS_ALL,
                data_key: str = DataHandlerLP.DK_I, **kwargs: Any) -> Any:
        """Return the data of one segment, of several, or of a date slice.

        Args:
            segments: A segment name (→ one frame), a list or tuple of names (→ a list of
                frames), or a ``slice(start, end)`` of dates.
            col_set: Column selection (see :meth:`DataHandlerLP.fetch`): ``"feature"``,
                ``"label"``, ``["feature", "label"]``, ``"__all"`` or ``"__raw"``.
            data_key: ``"infer"`` (default), ``"learn"`` or ``"raw"``.
            **kwargs: More ``handler.fetch`` arguments (override ``fetch_kwargs``).

        Returns:
            A frame (or Series with ``squeeze=True``), or a list of them for a list of names.

        Raises:
            TaskConfigError: For an unknown segment name or column group.
        """
        fetch_kwargs = {**self.fetch_kwargs, **kwargs, "col_set": col_set, "data_key": data_key}
        if isinstance(segments, slice):
            return self.handler.fetch(segments, **fetch_kwargs)
        if isinstance(segments, str):
            return self.handler.fetch(self._segment_slice(segments), **fetch_kwargs)
        if isinstance(segments, Sequence):
            return [self.handler.fetch(self._segment_slice(name), **fetch_kwargs)
                    for name in segments]
        raise TaskConfigError(f"segments must be a name, a list of names or a slice, "
                              f"got {type(segments).__name__}")

    def _segment_slice(self, name: str) -> slice:
        if not isinstance(name, str) or name not in self.segments:
            raise TaskConfigError(f"unknown segment {name!r}; this dataset has "
                                  f"{sorted(self.segments)}")
        start, end = self.segments[name]
        return slice(start, end)

    def __repr__(self) -> str:
        return f"DatasetH(handler={type(self.handler).__name__}, segments={self.segments})"
