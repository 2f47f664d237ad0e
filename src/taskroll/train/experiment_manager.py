"""The experiments of one MLflow tracking store (Qlib's ``MLflowExpManager``).

Imports :mod:`taskroll.train.mlflow_experiment`; imported by :mod:`taskroll.train.facade`.
Import it from :mod:`taskroll.train.experiment`, the module that gathers the experiment API.
"""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, Any

from taskroll.config import get_settings
from taskroll.errors import RecorderError, RecorderLookupError
from taskroll.store.urls import mask_url
from taskroll.train.mlflow_experiment import Experiment
from taskroll.train.tracking import (
    call_mlflow,
    is_duplicate,
    is_missing,
    local_directory,
    open_client,
    sqlite_path,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT_NAME = "Experiment"


def experiment_artifact_location(tracking_uri: str, root: str | None, name: str) -> str | None:
    """Return the artifact location for a new experiment ``name``.

    Args:
        tracking_uri: The store.
        root: Configured artifact root; ``None`` means ``mlruns/`` beside a SQLite
            database, and for other stores lets MLflow decide (returns ``None``).
        name: The experiment name, made filesystem-safe for the folder name.
    """
    if root is None:
        database = sqlite_path(tracking_uri)
        if database is None:
            return None
        root = str(database.parent / "mlruns")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    local = local_directory(root)
    return str(local.resolve() / slug) if local is not None else f"{root.rstrip('/')}/{slug}"


class ExperimentManager:
    """The experiments of one MLflow tracking store (Qlib's ``MLflowExpManager``).

    Args:
        tracking_uri: The store; ``None`` means ``get_settings().resolved_tracking_uri()``
            read at every use, so :func:`taskroll.init` and ``TASKROLL_TRACKING_URI`` apply.
        default_experiment_name: Experiment used when a call names none.
        artifact_root: Artifact root for new experiments; ``None`` means
            ``Settings.artifact_root``, else ``mlruns/`` beside a SQLite database.
    """

    def __init__(self, tracking_uri: str | None = None,
                 default_experiment_name: str = DEFAULT_EXPERIMENT_NAME,
                 artifact_root: str | None = None):
        self._tracking_uri = tracking_uri
        self.default_experiment_name = default_experiment_name
        self._artifact_root = artifact_root
        #: The URI of the run in progress when it named one (Qlib's ``_active_exp_uri``).
        self.active_uri: str | None = None

    @property
    def default_uri(self) -> str:
        """The store used when no run names one; setting ``None`` restores the configured one."""
        return self._tracking_uri or get_settings().resolved_tracking_uri()

    @default_uri.setter
    def default_uri(self, value: str | None) -> None:
        self._tracking_uri = value

    @property
    def default_uri_override(self) -> str | None:
        """The URI set with :attr:`default_uri` (or given), ``None`` when the configured one."""
        return self._tracking_uri

    @property
    def uri(self) -> str:
        """The tracking URI in force: the active run's, else :attr:`default_uri`."""
        return self.active_uri or self.default_uri

    @property
    def client(self) -> MlflowClient:
        """This process's MLflow client for :attr:`uri`."""
        return open_client(self.uri)

    def _wrap(self, found: Any) -> Experiment:
        return Experiment(found.experiment_id, found.name, self.uri)

    def _find(self, experiment_id: str | None, experiment_name: str | None) -> Any:
        client = self.client
        found: Any
        if experiment_id is not None:
            try:
                found = call_mlflow(lambda: client.get_experiment(experiment_id),
                                    f"get experiment {experiment_id}")
            except RecorderError as error:
                if is_missing(error):
                    return None
                raise
        else:
            name = experiment_name or self.default_experiment_name
            found = call_mlflow(lambda: client.get_experiment_by_name(name),
                                f"get experiment {name!r}")
        if found is None or found.lifecycle_stage == "deleted":
            return None
        return found

    def create_exp(self, experiment_name: str | None = None) -> Experiment:
        """Create an experiment.

        Raises:
            RecorderError: When the name is taken (by a live or a deleted experiment).
        """
        name = experiment_name or self.default_experiment_name
        client = self.client
        root = self._artifact_root or get_settings().artifact_root
        location = experiment_artifact_location(self.uri, root, name)
        experiment_id = call_mlflow(lambda: client.create_experiment(name, location),
                                    f"create experiment {name!r}")
        return Experiment(experiment_id, name, self.uri)

    def get_exp(self, experiment_name: str | None = None, create: bool = True, *,
                experiment_id: str | None = None) -> Experiment:
        """Return an experiment by id or name, creating it by name when allowed.

        Safe against concurrent creators: when another process creates the same
        name first, its experiment is returned.

        Args:
            experiment_name: Name; ``None`` means the default experiment.
            create: Create a missing experiment (not possible by id).
            experiment_id: Id (wins over the name).

        Returns:
            The experiment.

        Raises:
            RecorderLookupError: When it does not exist and ``create`` is false (a
                ``ValueError``, as in Qlib).
            RecorderError: When it does not exist and cannot be created, e.g. its
                name belongs to a deleted experiment (restore it in the MLflow UI
                or remove it for good with ``mlflow gc``).
        """
        found = self._find(experiment_id, experiment_name)
        if found is not None:
            return self._wrap(found)
        if not create or experiment_id is not None:
            wanted = experiment_id or experiment_name or self.default_experiment_name
            raise RecorderLookupError(f"no experiment {wanted!r} in {mask_url(self.uri)}")
        try:
            return self.create_exp(experiment_name)
        except RecorderError as error:
            if not is_duplicate(error):
                raise
            winner = self._find(None, experiment_name)  # lost a creation race: use the winner's
            if winner is None:
                raise RecorderError(
                    f"experiment {experiment_name!r} was deleted; restore it with "
                    "`mlflow experiments restore` or purge it with `mlflow gc` first") from error
            return self._wrap(winner)

    def list_experiments(self) -> dict[str, Experiment]:
        """Return the live experiments as ``{name: Experiment}``."""
        client = self.client
        experiments: dict[str, Experiment] = {}
        token: str | None = None
        while True:
            page = call_mlflow(partial(client.search_experiments, max_results=1000,
                                       page_token=token), "list experiments")
            for found in page:
                experiments[found.name] = self._wrap(found)
            token = page.token
            if not token:
                return experiments

    def delete_exp(self, experiment_name: str | None = None, *,
                   experiment_id: str | None = None) -> None:
        """Delete an experiment and its runs (MLflow soft delete).

        Raises:
            RecorderLookupError: When neither a name nor an id is given (Qlib refuses too,
                rather than deleting the default experiment), or it does not exist.
        """
        if experiment_name is None and experiment_id is None:
            raise RecorderLookupError("give the name or id of the experiment to delete")
        experiment = self.get_exp(experiment_name, create=False, experiment_id=experiment_id)
        client = self.client
        call_mlflow(lambda: client.delete_experiment(experiment.id),
                    f"delete experiment {experiment.name!r}")
