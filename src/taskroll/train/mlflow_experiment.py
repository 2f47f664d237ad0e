"""One MLflow experiment and its recorders (Qlib's ``MLflowExperiment``).

Sits between :mod:`taskroll.train.recorder` (which it imports) and
:mod:`taskroll.train.experiment_manager` (which imports it). Import it from
:mod:`taskroll.train.experiment`, the module that gathers the experiment API.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload

from taskroll.errors import RecorderError
from taskroll.train.process import process_tags
from taskroll.train.recorder import Recorder
from taskroll.train.tracking import call_mlflow, is_missing, open_client

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def _filter_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise RecorderError(f"a recorder name cannot contain both quote characters: {value!r}")


class Experiment:
    """One MLflow experiment: a named collection of recorders (Qlib's ``MLflowExperiment``).

    Args:
        experiment_id: MLflow experiment id.
        name: Experiment name.
        tracking_uri: Store holding it.
    """

    def __init__(self, experiment_id: str, name: str, tracking_uri: str):
        self._id = experiment_id
        self._name = name
        self.tracking_uri = tracking_uri

    @property
    def id(self) -> str:
        """The MLflow experiment id."""
        return self._id

    @property
    def name(self) -> str:
        """The experiment name."""
        return self._name

    @property
    def client(self) -> MlflowClient:
        """The MLflow client of this experiment's store."""
        return open_client(self.tracking_uri)

    @property
    def info(self) -> dict[str, Any]:
        """Description: ``class``, ``id``, ``name``, ``artifact_location``, ``recorders`` (ids)."""
        client, experiment_id = self.client, self._id
        found = call_mlflow(lambda: client.get_experiment(experiment_id),
                            f"get experiment {experiment_id}")
        return {
            "class": type(self).__name__,
            "id": self._id,
            "name": self._name,
            "artifact_location": found.artifact_location,
            "lifecycle_stage": found.lifecycle_stage,
            "recorders": list(self.list_recorders(rtype="dict")),
        }

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Experiment) and other._id == self._id
                and other.tracking_uri == self.tracking_uri)

    def __hash__(self) -> int:
        return hash((self._id, self.tracking_uri))

    def __repr__(self) -> str:
        return f"Experiment(id={self._id!r}, name={self._name!r})"

    def create_recorder(self, recorder_name: str | None = None) -> Recorder:
        """Create a new run (status ``RUNNING``) in this experiment.

        The run is tagged with this process's identity as it is created
        (:func:`taskroll.train.process.process_tags`), so a run whose process dies
        is found interrupted whatever point the process reached.

        Args:
            recorder_name: Run name; ``None`` lets MLflow pick a readable one.

        Returns:
            The new recorder.
        """
        client, experiment_id = self.client, self._id
        tags = process_tags()
        run = call_mlflow(lambda: client.create_run(experiment_id, run_name=recorder_name,
                                                    tags=tags),
                          f"create a run in experiment {self._name!r}")
        return Recorder(run.info.run_id, self.tracking_uri, run=run)

    def get_recorder(self, recorder_id: str | None = None, recorder_name: str | None = None,
                     create: bool = False) -> Recorder:
        """Return a recorder by id, else the newest one with ``recorder_name``.

        Args:
            recorder_id: Run id (wins over the name).
            recorder_name: Run name; the most recently started match is returned.
            create: Create a recorder named ``recorder_name`` when none matches
                (or a fresh unnamed one when neither id nor name is given).

        Returns:
            The recorder.

        Raises:
            RecorderError: When nothing matches and ``create`` is false, or the id
                belongs to another experiment.
        """
        client = self.client
        if recorder_id is not None:
            try:
                run = call_mlflow(lambda: client.get_run(recorder_id), f"get run {recorder_id}")
            except RecorderError as error:
                if is_missing(error) and create:
                    return self.create_recorder(recorder_name)
                raise
            if run.info.experiment_id != self._id:
                raise RecorderError(
                    f"run {recorder_id} belongs to experiment {run.info.experiment_id}, "
                    f"not {self._name!r} ({self._id})")
            return Recorder(recorder_id, self.tracking_uri, run=run)
        if recorder_name is not None:
            filter_string = f"attributes.run_name = {_filter_literal(recorder_name)}"
            found = self.list_recorders(rtype="list", filter_string=filter_string)
            if found:
                return found[0]
        if create:
            return self.create_recorder(recorder_name)
        raise RecorderError(
            f"no recorder with name {recorder_name!r} in experiment {self._name!r}"
            if recorder_name is not None
            else "give recorder_id or recorder_name (or create=True)")

    @overload
    def list_recorders(self, rtype: Literal["dict"] = ..., status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> dict[str, Recorder]: ...

    @overload
    def list_recorders(self, rtype: Literal["list"], status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> list[Recorder]: ...

    def list_recorders(self, rtype: Literal["dict", "list"] = "dict",
                       status: str | Iterable[str] | None = None,
                       filter_string: str = "") -> dict[str, Recorder] | list[Recorder]:
        """List the active (not deleted) recorders, newest first.

        Args:
            rtype: ``"dict"`` for ``{run_id: Recorder}`` (Qlib's ``RT_D``), ``"list"`` for a list.
            status: Keep only runs with this status (or any of these statuses).
            filter_string: An MLflow search filter, e.g. ``"params.model = 'linear'"``
                or ``"tags.train_status = 'done'"``.

        Returns:
            The recorders, as a dict or list.

        Raises:
            RecorderError: For a malformed filter or a store failure.
        """
        if rtype not in ("dict", "list"):
            raise RecorderError(f"rtype must be 'dict' or 'list', got {rtype!r}")
        wanted = {status} if isinstance(status, str) else set(status) if status else None
        client, experiment_id = self.client, self._id
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = call_mlflow(
                partial(client.search_runs, [experiment_id], filter_string=filter_string,
                        max_results=1000, page_token=token,
                        order_by=["attributes.start_time DESC"]),
                f"search runs of experiment {self._name!r}")
            runs.extend(page)
            token = page.token
            if not token:
                break
        recorders = [Recorder(run.info.run_id, self.tracking_uri, run=run) for run in runs
                     if wanted is None or run.info.status in wanted]
        if rtype == "list":
            return recorders
        return {recorder.id: recorder for recorder in recorders}

    def delete_recorder(self, recorder_id: str) -> None:
        """Delete a run (MLflow soft delete: hidden from listings, removed by ``mlflow gc``)."""
        client = self.client
        call_mlflow(lambda: client.delete_run(recorder_id), f"delete run {recorder_id}")
