"""Record templates' base and the signal record (Qlib's ``RecordTemp``, ``SignalRecord``).

:class:`RecordTemp` writes artifacts into one recorder; :class:`SignalRecord` saves a
model's test predictions (``pred.pkl``) and raw labels (``label.pkl``). They live here,
below :mod:`taskroll.train.record` and :mod:`taskroll.train.port_record`, so both can
build on them without an import circle; import them from :mod:`taskroll.train.record`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import pandas as pd

from taskroll.errors import RecorderError
from taskroll.train.recorder import Recorder

_logger = logging.getLogger(__name__)


class RecordTemp:
    """Base of record templates: artifacts written into one recorder under ``artifact_path``.

    Subclasses set :attr:`artifact_path` (a folder inside the run's artifacts, or
    ``None`` for the root) and :attr:`depend_cls` (a record whose artifacts they read),
    and implement :meth:`generate` and :meth:`list`.

    Args:
        recorder: The run the record writes into.
    """

    artifact_path: ClassVar[str | None] = None
    depend_cls: ClassVar[type[RecordTemp] | None] = None

    def __init__(self, recorder: Recorder | None):
        self._recorder = recorder

    @classmethod
    def get_path(cls, path: str | None = None) -> str:
        """Return ``path`` inside this record's artifact folder."""
        parts = [part for part in (cls.artifact_path, path) if part]
        return "/".join(parts)

    @property
    def recorder(self) -> Recorder:
        """The recorder; raises :class:`RecorderError` when the record has none."""
        if self._recorder is None:
            raise RecorderError(f"{type(self).__name__} has no recorder; pass recorder=...")
        return self._recorder

    def save(self, **objects: Any) -> None:
        """Pickle ``name=object`` pairs into this record's artifact folder."""
        self.recorder.save_objects(artifact_path=self.get_path() or None, **objects)

    def generate(self, **kwargs: Any) -> None:
        """Compute and save this record's artifacts."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate()")

    def load(self, name: str, parents: bool = True) -> Any:
        """Load an artifact of this record, else (``parents``) of the records it depends on.

        Raises:
            RecorderError: When no record in the chain has it.
        """
        try:
            return self.recorder.load_object(self.get_path(name))
        except RecorderError:
            if not parents or self.depend_cls is None:
                raise
            return self._as_dependency(self.depend_cls).load(name, parents=True)

    def list(self) -> list[str]:
        """Return the artifact paths this record writes."""
        return []

    def _as_dependency(self, dependency: type[RecordTemp]) -> RecordTemp:
        # Qlib's class_casting: the same record seen as the class it depends on, so the
        # dependency's paths and loading apply without knowing its constructor.
        proxy = copy.copy(self)
        proxy.__class__ = dependency
        return proxy

    def results_exist(self) -> bool:
        """Whether this record's own artifacts are all in the run (for ``skip_existing``)."""
        try:
            self.check(include_self=True, parents=False)
        except FileNotFoundError:
            return False
        return True

    def check(self, include_self: bool = False, parents: bool = True) -> None:
        """Check that the artifacts this record needs exist.

        Args:
            include_self: Check this record's own artifacts too.
            parents: Check the artifacts of the records it depends on.

        Raises:
            FileNotFoundError: Naming the first missing artifact.
        """
        needed: list[str] = []
        if include_self:
            needed += self.list()
        dependency = self.depend_cls
        while parents and dependency is not None:
            needed += self._as_dependency(dependency).list()
            dependency = dependency.depend_cls
        existing = self._existing_artifacts(needed)
        for path in needed:
            if path not in existing:
                raise FileNotFoundError(f"{type(self).__name__}: artifact {path!r} is missing "
                                        f"from run {self.recorder.id}")

    def _existing_artifacts(self, paths: Sequence[str]) -> set[str]:
        folders = {path.rsplit("/", 1)[0] if "/" in path else None for path in paths}
        existing: set[str] = set()
        for folder in folders:
            existing.update(self.recorder.list_artifacts(folder))
        return existing


class SignalRecord(RecordTemp):
    """Save the model's test predictions (``pred.pkl``) and raw labels (``label.pkl``).

    Args:
        model: Fitted model with ``predict(dataset, segment="test")``.
        dataset: Dataset with ``prepare("test", col_set="label", data_key="learn")``.
        recorder: The run to write into.
    """

    def __init__(self, model: Any = None, dataset: Any = None, recorder: Recorder | None = None):
        super().__init__(recorder)
        self.model = model
        self.dataset = dataset

    @staticmethod
    def generate_label(dataset: Any) -> pd.DataFrame | None:
        """Return the test labels of ``dataset``, or ``None`` (with a warning) when unavailable."""
        try:
            label = dataset.prepare("test", col_set="label", data_key="learn")
        except Exception as error:  # a dataset without labels is legal; the signal still is
            warnings.warn(f"SignalRecord: no test label ({error}); label.pkl is skipped",
                          RuntimeWarning, stacklevel=3)
            return None
        if isinstance(label, pd.Series):
            label = label.to_frame("label")
        return label if isinstance(label, pd.DataFrame) else None

    def generate(self, **kwargs: Any) -> None:
        """Predict the test segment and save ``pred.pkl`` (column ``score``) and ``label.pkl``.

        Raises:
            RecorderError: When model or dataset is missing or the prediction is not a
                Series/DataFrame.
        """
        if self.model is None or self.dataset is None:
            raise RecorderError("SignalRecord needs model and dataset")
        pred = self.model.predict(self.dataset, segment="test")
        if isinstance(pred, pd.Series):
            pred = pred.to_frame("score")
        if not isinstance(pred, pd.DataFrame):
            raise RecorderError(f"model.predict returned {type(pred).__name__}, "
                                "expected a pandas Series or DataFrame")
        self.save(**{"pred.pkl": pred})
        _logger.info("SignalRecord: saved %d predictions to run %s", len(pred), self.recorder.id)
        label = self.generate_label(self.dataset)
        if label is not None:
            self.save(**{"label.pkl": label})

    def list(self) -> list[str]:
        """Return ``["pred.pkl", "label.pkl"]``."""
        return ["pred.pkl", "label.pkl"]
