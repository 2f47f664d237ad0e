"""Helpers of Qlib's ``qlib.workflow.task.utils``: listing recorders, caching a task's handler.

* :func:`list_recorders` lists the recorders of an experiment that pass a filter.
* :func:`replace_task_handler_with_cache` builds a task's data handler once, pickles it to
  a file and puts a ``file://`` URI in the task instead of the handler's cfg;
  :class:`~taskroll.data.dataset.DatasetH` then loads the handler from that file
  (:func:`load_cached_handler`) instead of computing its features again.

Trust: a cached handler is a pickle, and unpickling runs code chosen by whoever wrote the
file. A ``file://`` URI inside a task may come from a shared task pool, so a URI alone
is not trusted: :func:`load_cached_handler` unpickles only a regular local file owned by
the user of this process that neither group nor others may write (checked on the open
file, so it cannot be swapped between the check and the read). Whoever can write the
pool can then only name files this user wrote; nobody else can plant a pickle for it.
These files are the ones :func:`replace_task_handler_with_cache` writes (mode ``0600``).
"""

from __future__ import annotations

import copy
import os
import pickle
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from taskroll.errors import TaskConfigError
from taskroll.task.spec import init_instance_by_config, task_id

if TYPE_CHECKING:
    from taskroll.train.mlflow_experiment import Experiment
    from taskroll.train.recorder import Recorder

HANDLER_CACHE_SCHEME = "file"
"""URI scheme of a cached handler in a task (``file:///abs/path/Alpha158.0123456789.pkl``)."""


def list_recorders(experiment: str | Experiment,
                   rec_filter_func: Callable[[Recorder], bool] | None = None) -> dict[str, Recorder]:
    """List the recorders of an experiment that pass a filter (Qlib's ``list_recorders``).

    Args:
        experiment: An experiment name (in the configured tracking store) or an
            :class:`~taskroll.train.experiment.Experiment`.
        rec_filter_func: Keep a recorder when it returns true; ``None`` keeps all.

    Returns:
        ``{recorder id: recorder}``, newest first, over runs of every status.

    Raises:
        RecorderError: When the experiment does not exist or the store fails.
    """
    if isinstance(experiment, str):
        # deferred: this task-level helper reaches up to the tracking layer only when called
        from taskroll.train.experiment import R

        experiment = R.get_exp(experiment, create=False)
    recorders = experiment.list_recorders("dict")
    return {recorder_id: recorder for recorder_id, recorder in recorders.items()
            if rec_filter_func is None or rec_filter_func(recorder)}


def _handler_of(task: Mapping[str, Any]) -> Any:
    try:
        return task["dataset"]["kwargs"]["handler"]
    except (KeyError, TypeError) as error:
        raise TaskConfigError("the task has no dataset.kwargs.handler to cache") from error


def replace_task_handler_with_cache(task: Mapping[str, Any],
                                    cache_dir: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """Return a copy of ``task`` whose handler cfg is replaced by a cached handler's URI.

    As Qlib: the handler cfg (``task["dataset"]["kwargs"]["handler"]``) is built once and
    pickled to ``cache_dir/<class>.<hash>.pkl`` (the hash is 10 hex digits of the cfg's
    canonical JSON, so equal cfgs share one file and a file is never written twice);
    the task then names it as ``file:///<absolute path>``. A handler that is already a
    URI or an object is left as it is. The file is written atomically with mode ``0600``
    (see the module doc: only such files are loaded back).

    Args:
        task: The task (not modified).
        cache_dir: Folder of the cached handlers (created if missing).

    Returns:
        The new task.

    Raises:
        TaskConfigError: When the task has no handler cfg or it cannot be built.
    """
    new_task: dict[str, Any] = copy.deepcopy(dict(task))
    handler = _handler_of(new_task)
    if not isinstance(handler, Mapping):
        return new_task
    name = handler.get("class")
    label = name if isinstance(name, str) else getattr(name, "__name__", "handler")
    folder = Path(cache_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{label}.{task_id(handler)[:10]}.pkl"
    if not path.exists():
        built = init_instance_by_config(handler, where="task.dataset.kwargs.handler")
        _write_private_pickle(built, path)
    new_task["dataset"]["kwargs"]["handler"] = path.as_uri()
    return new_task


def _write_private_pickle(value: Any, path: Path) -> None:
    """Pickle ``value`` to ``path`` atomically, readable and writable by this user only."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def is_handler_cache_uri(value: Any) -> bool:
    """Whether ``value`` is a ``file://`` URI naming a cached handler."""
    return isinstance(value, str) and urlparse(value).scheme == HANDLER_CACHE_SCHEME


def handler_cache_path(uri: str) -> Path:
    """The local path a ``file://`` URI names.

    Qlib writes ``file://`` followed by a possibly relative path (``file://./h.pkl`` puts
    ``.`` in the URI's host part), so the host and path are joined as Qlib does.

    Raises:
        TaskConfigError: When ``uri`` is not a ``file://`` URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme != HANDLER_CACHE_SCHEME:
        raise TaskConfigError(f"not a file:// URI: {uri!r}")
    host, path = unquote(parsed.netloc), unquote(parsed.path)
    if host in ("", "localhost"):
        return Path(path)
    return Path(os.path.normpath(os.path.join(host, path.lstrip("/")) if path else host))


def load_cached_handler(uri: str) -> Any:
    """Load a handler cached by :func:`replace_task_handler_with_cache`.

    Args:
        uri: ``file://`` URI of the pickle.

    Returns:
        The unpickled handler (the caller checks its type).

    Raises:
        TaskConfigError: When the file is missing, not a regular file, not owned by this
            user, writable by group or others (nothing is unpickled then), or cannot be
            unpickled.
    """
    path = handler_cache_path(uri)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise TaskConfigError(f"cannot open the cached handler {uri!r}: {error.strerror}; "
                              "run replace_task_handler_with_cache again") from error
    with handle:
        info = os.fstat(handle.fileno())
        problem = ""
        if not stat.S_ISREG(info.st_mode):
            problem = "it is not a regular file"
        elif hasattr(os, "getuid") and info.st_uid != os.getuid():
            problem = f"it is owned by user id {info.st_uid}, not by this user"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = "group or others may write it"
        if problem:
            raise TaskConfigError(
                f"refusing to unpickle the cached handler {str(path)!r}: {problem}. Only a "
                "file this user wrote is loaded (unpickling runs code chosen by its writer); "
                "write it with replace_task_handler_with_cache")
        try:
            return pickle.load(handle)  # a private file of this user, checked above
        except Exception as error:
            raise TaskConfigError(f"cannot unpickle the cached handler {str(path)!r}: "
                                  f"{type(error).__name__}: {error}") from error
