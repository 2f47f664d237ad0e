"""Qlib's ``MLflowRecorder`` methods beyond params, metrics and pickled objects.

:class:`QlibRecorderMethods` is a base of :class:`taskroll.train.recorder.Recorder`:
artifact files (``log_artifact``, ``download_artifact``, ``get_artifact_uri``,
``get_local_dir``), ``delete_tags``, ``uri`` and Qlib's ``start_time``/``end_time``
strings. Imports only :mod:`taskroll.train.tracking`.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from taskroll.errors import RecorderError
from taskroll.train.tracking import call_mlflow, local_directory

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: Qlib's format of a recorder's ``start_time``/``end_time`` (local time).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_run_time(milliseconds: int | None) -> str | None:
    """Return an MLflow time (ms since the epoch) as Qlib's local time string, or ``None``."""
    if milliseconds is None:
        return None
    return datetime.fromtimestamp(milliseconds / 1000.0).strftime(TIME_FORMAT)


class QlibRecorderMethods:
    """Qlib's recorder methods on an MLflow run; needs ``client``, ``id``, ``tracking_uri``,
    ``artifact_uri`` and ``_fetch`` from the class that uses it."""

    tracking_uri: str

    @property
    def client(self) -> MlflowClient:  # pragma: no cover - provided by Recorder
        """The MLflow client of the run's store."""
        raise NotImplementedError

    @property
    def id(self) -> str:  # pragma: no cover - provided by Recorder
        """The MLflow run id."""
        raise NotImplementedError

    @property
    def artifact_uri(self) -> str:  # pragma: no cover - provided by Recorder
        """Root URI of the run's artifacts."""
        raise NotImplementedError

    def _fetch(self) -> Run:  # pragma: no cover - provided by Recorder
        raise NotImplementedError

    @property
    def uri(self) -> str:
        """The tracking URI of the run's store (Qlib's ``MLflowRecorder.uri``)."""
        return self.tracking_uri

    @property
    def start_time(self) -> str | None:
        """When the run started, as Qlib's ``"%Y-%m-%d %H:%M:%S"`` local time string."""
        return format_run_time(self._fetch().info.start_time)

    @property
    def end_time(self) -> str | None:
        """When the run ended, as Qlib's time string; ``None`` while it runs."""
        return format_run_time(self._fetch().info.end_time)

    def get_artifact_uri(self) -> str:
        """Return the root URI of the run's artifacts.

        Raises:
            RecorderError: When the run has no artifact location.
        """
        if not self.artifact_uri:
            raise RecorderError(f"run {self.id} has no artifact location")
        return self.artifact_uri

    def get_local_dir(self) -> str:
        """Return the run's local folder (the parent of its ``artifacts`` folder).

        Raises:
            RecorderError: When the artifacts are not in the local file system.
        """
        local = local_directory(self.get_artifact_uri())
        if local is None or not local.parent.is_dir():
            raise RecorderError(f"run {self.id} is not saved in the local file system "
                                f"(artifacts at {self.artifact_uri})")
        return str(local.parent.resolve())

    def log_artifact(self, local_path: str | os.PathLike[str],
                     artifact_path: str | None = None) -> None:
        """Upload one local file among the run's artifacts (under ``artifact_path``)."""
        client, run_id, source = self.client, self.id, str(Path(local_path))
        call_mlflow(lambda: client.log_artifact(run_id, source, artifact_path),
                    f"upload {source} to {run_id}")

    def download_artifact(self, path: str, dst_path: str | None = None) -> str:
        """Download an artifact file or folder and return its local path.

        Args:
            path: The artifact's path inside the run.
            dst_path: An existing local folder to download into; ``None``: a new
                temporary folder.
        """
        client, run_id = self.client, self.id
        local: str = call_mlflow(lambda: client.download_artifacts(run_id, path, dst_path),
                                 f"download artifact {path!r} of {run_id}")
        return local

    def delete_tags(self, *keys: str) -> None:
        """Delete tags of the run."""
        client, run_id = self.client, self.id
        for key in keys:
            call_mlflow(lambda key=key: client.delete_tag(run_id, key),  # type: ignore[misc]
                        f"delete tag {key!r} of {run_id}")
