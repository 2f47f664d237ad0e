"""Collectors: gather artifacts of many trained models (Qlib's ``qlib.workflow.task.collect``).

A collector returns ``{artifact_key: {record_key: artifact}}`` (e.g.
``{"pred": {("LinearModel", (start, end)): frame, ...}}``) and then runs its
processors over each artifact key's dict, typically a :class:`~taskroll.collect.group.Group`
or an :class:`~taskroll.collect.ensemble.Ensemble`::

    collector = RecorderCollector("rolling", process_list=[RollingGroup()],
                                  rec_key_func=model_and_test_segment_key)
    predictions = collector()["pred"]          # {("LinearModel",): stitched frame}

The default key is the recorder id (Qlib's); rolling groups need keys ending with the
rolling key, such as :func:`model_and_test_segment_key`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from taskroll.errors import RecorderError
from taskroll.train.experiment import Experiment, R
from taskroll.train.recorder import Recorder, as_recorder

_logger = logging.getLogger(__name__)

Processor = Callable[..., Any]


def _as_list(process_list: Processor | Sequence[Processor] | None) -> list[Processor]:
    if process_list is None:
        return []
    if callable(process_list):
        return [process_list]
    return list(process_list)


class Collector:
    """Collect a dict of artifacts, then post-process it.

    Args:
        process_list: Processors applied in turn to each collected value
            (a callable, a Group, an Ensemble, or a list of them).
    """

    def __init__(self, process_list: Processor | Sequence[Processor] | None = None):
        self.process_list = _as_list(process_list)

    def collect(self) -> dict[Any, Any]:
        """Return ``{artifact_key: collected_value}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement collect()")

    @staticmethod
    def process_collect(collected_dict: Mapping[Any, Any],
                        process_list: Processor | Sequence[Processor] | None = None,
                        *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """Apply each processor in turn to every value of ``collected_dict``.

        Args:
            collected_dict: ``{artifact_key: value}`` from :meth:`collect`.
            process_list: The processors.
            *args: Passed to every processor after the value.
            **kwargs: Passed to every processor.

        Returns:
            ``{artifact_key: processed_value}``.

        Raises:
            TypeError: When a processor is not callable.
        """
        processors = _as_list(process_list)
        for processor in processors:
            if not callable(processor):
                raise TypeError(f"{processor!r} is not callable and cannot process a collection")
        result: dict[Any, Any] = {}
        for artifact_key, value in collected_dict.items():
            for processor in processors:
                value = processor(value, *args, **kwargs)
            result[artifact_key] = value
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """Collect, then process with :attr:`process_list` (extra arguments go to processors)."""
        return self.process_collect(self.collect(), self.process_list, *args, **kwargs)


class MergeCollector(Collector):
    """Merge the results of several collectors into one dict.

    Args:
        collector_dict: ``{collector_key: collector}``; each collector is called (so its
            own processors run).
        process_list: Processors applied to the merged dict's values.
        merge_func: ``merge_func(collector_key, key) -> merged_key``; default
            ``(collector_key, key)``.
    """

    def __init__(self, collector_dict: Mapping[Any, Collector],
                 process_list: Processor | Sequence[Processor] | None = None,
                 merge_func: Callable[[Any, Any], Any] | None = None):
        super().__init__(process_list=process_list)
        self.collector_dict = dict(collector_dict)
        self.merge_func = merge_func

    def collect(self) -> dict[Any, Any]:
        """Return ``{merge_func(collector_key, key): value}`` over all collectors."""
        merged: dict[Any, Any] = {}
        for collector_key, collector in self.collector_dict.items():
            for key, value in collector().items():
                merged_key = (self.merge_func(collector_key, key) if self.merge_func is not None
                              else (collector_key, key))
                merged[merged_key] = value
        return merged


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


def recorder_id_key(recorder: Recorder) -> str:
    """Key a recorder by its id: Qlib's default ``rec_key_func`` (``rec.info["id"]``).

    Returns:
        The run id.
    """
    return recorder.id


def model_and_test_segment_key(recorder: Recorder) -> tuple[Any, Any]:
    """Key a recorder by ``(model class, test segment)`` read from its ``task`` artifact.

    The key :class:`~taskroll.collect.group.RollingGroup` needs: its last element is the
    rolling key, so every window of one model lands in one group.

    Returns:
        ``(task["model"]["class"], tuple(task["dataset"]["kwargs"]["segments"]["test"]))``.

    Raises:
        RecorderError: When the recorder has no ``task`` artifact or it lacks those fields.
    """
    task = recorder.load_object("task")
    try:
        model = task["model"]["class"]
        test_segment = task["dataset"]["kwargs"]["segments"]["test"]
    except (KeyError, TypeError) as error:
        raise RecorderError(f"the task of {recorder!r} has no model class or test segment; "
                            "pass rec_key_func") from error
    model_key = model if isinstance(model, str) else getattr(model, "__name__", repr(model))
    return model_key, _hashable(test_segment)


default_rec_key = recorder_id_key
"""The default ``rec_key_func`` of :class:`RecorderCollector`: the recorder id, as Qlib's.
Rolling groups need :func:`model_and_test_segment_key` (pass it explicitly)."""


ExperimentSource = str | Experiment | Callable[[], Experiment | Iterable[Recorder]]


class RecorderCollector(Collector):
    """Collect artifacts (e.g. ``pred.pkl``) from the finished recorders of an experiment.

    Args:
        experiment: An experiment name, an :class:`Experiment`, or a callable returning
            an experiment (or the recorders themselves); resolved at collect time.
        process_list: Processors for each artifact key's ``{rec_key: artifact}``.
        rec_key_func: ``rec_key_func(recorder) -> key``; default the recorder id
            (:func:`recorder_id_key`, Qlib's default). :class:`RollingGroup` needs keys
            ending with the rolling key: pass :func:`model_and_test_segment_key`.
        rec_filter_func: ``rec_filter_func(recorder) -> bool``; keep only true ones.
        artifacts_path: ``{artifact_key: artifact path}``; the key :attr:`ART_KEY_RAW`
            collects the recorder itself.
        artifacts_key: Which keys of ``artifacts_path`` to collect (default: all).
        list_kwargs: Extra arguments for :meth:`Experiment.list_recorders`.
        status: Recorder statuses to collect; ``None``: every status (as Qlib).

    An experiment named by a string is created (empty) when it does not exist yet, as
    Qlib's ``RecorderCollector`` does, so collecting it gives ``{}``.
    """

    ART_KEY_RAW = "__raw"

    def __init__(self, experiment: ExperimentSource,
                 process_list: Processor | Sequence[Processor] | None = None,
                 rec_key_func: Callable[[Recorder], Any] | None = None,
                 rec_filter_func: Callable[[Recorder], bool] | None = None,
                 artifacts_path: Mapping[str, str] | None = None,
                 artifacts_key: str | Sequence[str] | None = None,
                 list_kwargs: Mapping[str, Any] | None = None,
                 status: Iterable[str] | None = frozenset({Recorder.STATUS_FINISHED})):
        super().__init__(process_list=process_list)
        self.experiment = experiment
        self.artifacts_path = dict(artifacts_path) if artifacts_path is not None else {
            "pred": "pred.pkl"}
        self.rec_key_func = rec_key_func or default_rec_key
        self.rec_filter_func = rec_filter_func
        self.artifacts_key = artifacts_key if artifacts_key is not None else list(
            self.artifacts_path)
        self.list_kwargs = dict(list_kwargs or {})
        self.status = None if status is None else frozenset(status)

    def _experiment(self) -> Experiment | Iterable[Recorder]:
        if isinstance(self.experiment, str):
            return R.get_exp(self.experiment)
        if isinstance(self.experiment, Experiment):
            return self.experiment
        return self.experiment()

    def _recorders(self) -> list[Recorder]:
        source = self._experiment()
        if isinstance(source, Experiment):
            kwargs: dict[str, Any] = {"status": self.status, **self.list_kwargs}
            # Listed newest first; reversed so that the newest wins a duplicated key.
            return source.list_recorders("list", **kwargs)[::-1]
        # recorder references (e.g. task pool results) are resolved, for our stores only
        recorders = [as_recorder(item) for item in source]
        return [recorder for recorder in recorders
                if self.status is None or recorder.status in self.status]

    def collect(self, artifacts_key: str | Sequence[str] | None = None,
                rec_filter_func: Callable[[Recorder], bool] | None = None,
                only_exist: bool = True) -> dict[Any, Any]:
        """Load the artifacts of every matching recorder.

        Args:
            artifacts_key: Overrides the instance's ``artifacts_key``.
            rec_filter_func: Overrides the instance's ``rec_filter_func``.
            only_exist: Skip (with a warning) recorders lacking an artifact instead of raising.

        Returns:
            ``{artifact_key: {rec_key: artifact}}``; when two recorders share a
            ``rec_key`` the newest one wins and a warning is logged.

        Raises:
            RecorderError: When an artifact is missing and ``only_exist`` is false.
        """
        keys = artifacts_key if artifacts_key is not None else self.artifacts_key
        keys = [keys] if isinstance(keys, str) else list(keys)
        keep = rec_filter_func if rec_filter_func is not None else self.rec_filter_func
        recorders = [recorder for recorder in self._recorders() if keep is None or keep(recorder)]
        _logger.info("RecorderCollector: %d recorders after filtering", len(recorders))
        collected: dict[Any, dict[Any, Any]] = {}
        for recorder in recorders:
            record_key = self.rec_key_func(recorder)
            for key in keys:
                if key == self.ART_KEY_RAW:
                    artifact: Any = recorder
                else:
                    try:
                        artifact = recorder.load_object(self.artifacts_path[key])
                    except RecorderError:
                        if not only_exist:
                            raise
                        _logger.warning("RecorderCollector: %r has no %s, skipped", recorder,
                                        self.artifacts_path[key])
                        continue
                bucket = collected.setdefault(key, {})
                if record_key in bucket:
                    _logger.warning("RecorderCollector: key %r is duplicated; the previous value "
                                    "is overridden (check rec_key_func)", record_key)
                bucket[record_key] = artifact
        return collected

    def get_exp_name(self) -> str:
        """Return the name of the collected experiment."""
        if isinstance(self.experiment, str):
            return self.experiment
        source = self._experiment()
        if isinstance(source, Experiment):
            return source.name
        raise RecorderError("the experiment callable returned recorders, not an Experiment")
