"""The import path a loop's child process gets (:func:`taskroll.cluster.loop_process.import_path`)."""

from __future__ import annotations

import os
import sys

import pytest

from taskroll.cluster.loop_process import child_environment, import_path, own_path


def test_the_interpreters_own_folders_are_left_out_and_the_rest_kept_in_place(
        monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/from/environment", "/added/first"]))
    stdlib = os.path.join(sys.base_prefix, "lib", "python3.11")
    site = os.path.join(sys.prefix, "lib", "python3.11", "site-packages")
    neighbour = sys.prefix.rstrip(os.sep) + "-other"  # shares the prefix's text, not its folder
    path = ["", "/uploaded", "/added/first", neighbour, stdlib, site, sys.prefix,
            "/from/a/pth/file", "/uploaded"]
    assert own_path(path) == ([str(tmp_path), "/uploaded", "/added/first", neighbour],
                              ["/from/a/pth/file"])
    # after the standard library there, they must not come before it in the child
    assert import_path(path).split(os.pathsep) == [
        str(tmp_path), "/uploaded", "/added/first", neighbour, "/from/environment"]


def test_a_folder_with_a_path_separator_is_left_out_of_the_import_path() -> None:
    odd = f"/odd{os.pathsep}name"
    assert own_path([odd, "/plain"])[0] == [odd, "/plain"]  # sent to the child as it is
    assert odd not in import_path([odd, "/plain"])
    assert import_path([odd, "/plain"]).split(os.pathsep)[0] == "/plain"


def test_the_child_environment_keeps_this_one_and_adds_the_extra_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKROLL_EXAMPLE", "kept")
    environment = child_environment({"TASKROLL_DASK_WORKER": "gpu-0"})
    assert environment["TASKROLL_EXAMPLE"] == "kept"
    assert environment["TASKROLL_DASK_WORKER"] == "gpu-0"
    assert environment["PYTHONPATH"] == import_path()
    assert "TASKROLL_DASK_WORKER" not in os.environ
