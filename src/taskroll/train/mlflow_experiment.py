"""One MLflow experiment and its recorders (Qlib's ``MLflowExperiment``).

Sits between :mod:`taskroll.train.recorder` (which it imports) and
:mod:`taskroll.train.experiment_manager` (which imports it). Import it from
:mod:`taskroll.train.experiment`, the module that gathers the experiment API.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload

from taskroll.errors import RecorderError, RecorderLookupError
from taskroll.train.process import process_tags
from taskroll.train.recorder import DEFAULT_RECORDER_NAME, Recorder
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

    #: Qlib's ``rtype`` spellings for :meth:`list_recorders`.
    RT_D = "dict"
    RT_L = "list"

    def __init__(self, experiment_id: str, name: str, tracking_uri: str):
        self._id = experiment_id
        self._name = name
        self.tracking_uri = tracking_uri
        #: The recorder started by :meth:`start` and not yet ended (Qlib's attribute).
        self.active_recorder: Recorder | None = None

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
        """Description: ``class``, ``id``, ``name``, ``artifact_location``,
        ``active_recorder`` (its id or ``None``) and ``recorders`` (ids)."""
        client, experiment_id = self.client, self._id
        found = call_mlflow(lambda: client.get_experiment(experiment_id),
                            f"get experiment {experiment_id}")
        return {
            "class": type(self).__name__,
            "id": self._id,
            "name": self._name,
            "artifact_location": found.artifact_location,
            "lifecycle_stage": found.lifecycle_stage,
            "active_recorder": self.active_recorder.id if self.active_recorder else None,
            "recorders": list(self.list_recorders(rtype="dict")),
        }

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Experiment) and other._id == self._id
                and other.tracking_uri == self.tracking_uri)

    def __hash__(self) -> int:
        return hash((self._id, self.tracking_uri))

    def __repr__(self) -> str:
        return f"Experiment(id={self._id!r}, name={self._name!r})"

    def start(self, *, recorder_id: str | None = None, recorder_name: str | None = None,
              resume: bool = False) -> Recorder:
        """Start a run and make it :attr:`active_recorder` (Qlib's ``Experiment.start``).

        Args:
            recorder_id: With ``resume``, the run to resume.
            recorder_name: Run name; ``None`` means ``"mlflow_recorder"``.
            resume: Resume the run with this id, else the newest with this name
                (created when none matches), instead of creating a new one.

        Returns:
            The running recorder.
        """
        name = recorder_name or DEFAULT_RECORDER_NAME
        if resume:
            recorder = self.get_recorder(recorder_id, name, create=True)
            recorder.start_run()
        else:
            recorder = self.create_recorder(name)
        self.active_recorder = recorder
        return recorder

    def end(self, recorder_status: str = Recorder.STATUS_SCHEDULED) -> None:
        """End :attr:`active_recorder` with ``recorder_status`` (Qlib's default: ``SCHEDULED``)."""
        recorder, self.active_recorder = self.active_recorder, None
        if recorder is not None:
            recorder.end_run(recorder_status)

    def create_recorder(self, recorder_name: str | None = None) -> Recorder:
        """Create a new run (status ``RUNNING``) in this experiment.

        The run is tagged with this process's identity as it is created
        (:func:`taskroll.train.process.process_tags`), so a run whose process dies
        is found interrupted whatever point the process reached.

        Args:
            recorder_name: Run name; ``None`` means ``"mlflow_recorder"``, as in Qlib.

        Returns:
            The new recorder.
        """
        client, experiment_id = self.client, self._id
        tags, name = process_tags(), recorder_name or DEFAULT_RECORDER_NAME
        run = call_mlflow(lambda: client.create_run(experiment_id, run_name=name,
                                                    tags=tags),
                          f"create a run in experiment {self._name!r}")
        return Recorder(run.info.run_id, self.tracking_uri, run=run)

    def get_recorder(self, recorder_id: str | None = None, recorder_name: str | None = None,
                     create: bool = False) -> Recorder:
        """Return a recorder by id, else the newest one with ``recorder_name``.

        With neither, :attr:`active_recorder` when there is one (as Qlib).

        Args:
            recorder_id: Run id (wins over the name).
            recorder_name: Run name; the most recently started match is returned.
            create: Create a recorder named ``recorder_name`` when none matches
                (or a fresh unnamed one when neither id nor name is given).

        Returns:
            The recorder.

        Raises:
            RecorderLookupError: When nothing matches and ``create`` is false (a
                ``ValueError``, as in Qlib).
            RecorderError: When the id belongs to another experiment.
        """
        if recorder_id is None and recorder_name is None and self.active_recorder is not None:
            return self.active_recorder
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
        raise RecorderLookupError(
            f"no recorder with name {recorder_name!r} in experiment {self._name!r}"
            if recorder_name is not None
            else "give recorder_id or recorder_name (or create=True)")

    @overload
    def list_recorders(self, rtype: Literal["dict"] = ..., max_results: int | None = ...,
                       status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> dict[str, Recorder]: ...

    @overload
    def list_recorders(self, rtype: Literal["list"], max_results: int | None = ...,
                       status: str | Iterable[str] | None = ...,
                       filter_string: str = ...) -> list[Recorder]: ...

    def list_recorders(self, rtype: Literal["dict", "list"] = "dict",
                       max_results: int | None = None,
                       status: str | Iterable[str] | None = None,
                       filter_string: str = "") -> dict[str, Recorder] | list[Recorder]:
        """List the active (not deleted) recorders, newest first (Qlib's argument order).

        Args:
            rtype: ``"dict"`` for ``{run_id: Recorder}`` (Qlib's ``RT_D``), ``"list"`` for a list.
            max_results: At most this many runs (the newest); ``None``: all of them.
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
        runs = search_runs(self.tracking_uri, [self._id], filter_string, max_results=max_results,
                           order_by=["attributes.start_time DESC"],
                           what=f"search runs of experiment {self._name!r}")
        recorders = [Recorder(run.info.run_id, self.tracking_uri, run=run) for run in runs
                     if wanted is None or run.info.status in wanted]
        if rtype == "list":
            return recorders
        return {recorder.id: recorder for recorder in recorders}

    def search_records(self, **kwargs: Any) -> list[Run]:
        """Return this experiment's MLflow runs (Qlib's ``search_records``).

        Keyword arguments as Qlib's: ``filter_string``, ``run_view_type`` (default active
        only), ``max_results`` (default: all), ``order_by`` (e.g. ``["metrics.m DESC"]``).

        Returns:
            The ``mlflow.entities.Run`` objects.
        """
        return search_runs(self.tracking_uri, [self._id], **kwargs)

    def delete_recorder(self, recorder_id: str | None = None,
                        recorder_name: str | None = None) -> None:
        """Delete a run by id, else the newest with ``recorder_name`` (MLflow soft delete:
        hidden from listings, removed by ``mlflow gc``).

        Raises:
            RecorderLookupError: When neither is given or nothing matches.
        """
        if recorder_id is None:
            if recorder_name is None:
                raise RecorderLookupError("give recorder_id or recorder_name to delete a recorder")
            recorder_id = self.get_recorder(recorder_name=recorder_name).id
        client, run_id = self.client, recorder_id
        call_mlflow(lambda: client.delete_run(run_id), f"delete run {run_id}")


def search_runs(tracking_uri: str, experiment_ids: Iterable[str], filter_string: str | None = None,
                run_view_type: int | None = None, max_results: int | None = None,
                order_by: list[str] | None = None, *, what: str | None = None) -> list[Run]:
    """Return the runs of experiments, page by page (Qlib's ``search_records`` arguments).

    Args:
        tracking_uri: The store.
        experiment_ids: Experiment ids.
        filter_string: An MLflow search filter; ``None``: every run.
        run_view_type: ``mlflow.entities.ViewType`` value; ``None``: active runs only.
        max_results: At most this many runs; ``None``: all of them.
        order_by: MLflow order clauses, e.g. ``["metrics.m DESC"]``.
        what: The search in words, for an error (default: names the experiment ids).

    Raises:
        RecorderError: For a malformed filter or a store failure.
    """
    client, ids = open_client(tracking_uri), [str(found) for found in experiment_ids]
    view = 1 if run_view_type is None else run_view_type
    runs: list[Run] = []
    token: str | None = None
    while max_results is None or len(runs) < max_results:
        size = 1000 if max_results is None else min(1000, max_results - len(runs))
        page = call_mlflow(partial(client.search_runs, ids, filter_string or "", view, size,
                                   order_by, token), what or f"search runs of experiments {ids}")
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs
