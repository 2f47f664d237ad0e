"""A loop's child process (:func:`taskroll.cluster.loop_process.run_loop_in_child`) off Dask.

What the child does when it cannot load its loop, imports from odd folders, is asked to
stop while it waits for a task another worker holds, and when the process that started
it is killed (its own children and its summary folder go with it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import psutil
import pytest
from dask_cluster import processes_ended

from taskroll.cluster import loop_process
from taskroll.cluster.loop import LoopOptions, LoopSettings
from taskroll.cluster.loop_process import run_loop_in_child
from taskroll.config import Settings
from taskroll.errors import TaskrollError
from taskroll.manage import TaskManager


def test_a_loop_its_process_cannot_load_raises_one_line_naming_the_cause(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # importable here (and in a Dask worker that got it), not in the loop's process
    ghost = types.ModuleType("taskroll_ghost_tasks")
    exec("def double(task, **kwargs):\n    return task['value'] * 2\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    with TaskManager("ghost") as manager:
        manager.create_task([{"value": 1}])
    with pytest.raises(TaskrollError) as raised:  # raised, so that Dask's retries apply
        run_loop_in_child(0, LoopOptions(task_pool="ghost", func=ghost.double),
                          LoopSettings.current(), where="here", stop=lambda: False)
    message = str(raised.value)
    assert "\n" not in message
    assert "No module named 'taskroll_ghost_tasks'" in message and "here" in message
    with TaskManager("ghost") as manager:
        assert manager.task_stat() == {"waiting": 1}


def test_a_folder_with_a_path_separator_in_its_name_is_importable_in_the_child(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / f"odd{os.pathsep}name"
    folder.mkdir()
    (folder / "odd_folder_tasks.py").write_text(
        "def triple(task, **kwargs):\n    return task['value'] * 3\n")
    monkeypatch.syspath_prepend(str(folder))
    with TaskManager("odd") as manager:
        manager.create_task([{"value": value} for value in range(3)])
    summary = run_loop_in_child(0, LoopOptions(task_pool="odd", func="odd_folder_tasks:triple"),
                                LoopSettings.current(), where="here", stop=lambda: False)
    assert summary.error is None and summary.done == 3
    with TaskManager("odd") as manager:
        assert sorted(task["res"] for task in manager.query()) == [0, 3, 6]


def test_a_folder_at_the_end_of_the_path_does_not_shadow_the_standard_library_in_the_child(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    project = tmp_path / "project"  # e.g. an editable install's folder, from a .pth file
    project.mkdir()
    (project / "project_tasks.py").write_text(
        "def echo(task, **kwargs):\n    return task['value']\n")
    (project / "tempfile.py").write_text("raise ImportError('a project module, not the stdlib')\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(project)])  # after the standard library
    with TaskManager("project") as manager:
        manager.create_task([{"value": value} for value in range(2)])
    summary = run_loop_in_child(0, LoopOptions(task_pool="project", func="project_tasks:echo"),
                                LoopSettings.current(), where="here", stop=lambda: False)
    assert summary.error is None and summary.done == 2
    with TaskManager("project") as manager:
        assert sorted(task["res"] for task in manager.query()) == [0, 1]


def test_a_loop_waiting_for_a_task_held_elsewhere_ends_when_asked_to_stop(
        isolated_settings: Settings) -> None:
    with TaskManager("held", lease_seconds=20) as manager:
        manager.create_task([{"value": 1}])
        held = manager.fetch_task()  # another worker runs it: the loop drains, waiting
        assert held is not None
    asked: list[bool] = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 3  # once the child has started and is waiting

    summary = run_loop_in_child(0, LoopOptions(task_pool="held", func="builtins:repr"),
                                LoopSettings.current(), where="here", stop=stop)
    assert summary.error is None and (summary.done, summary.failed) == (0, 0)
    with TaskManager("held") as manager:  # not taken over after the lease: it stopped first
        task = manager.re_query(held["_id"])
        assert task["status"] == "running" and task["attempts"] == 1


def test_a_loop_asked_to_stop_before_it_starts_takes_no_task(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "quick_tasks.py").write_text("def echo(task, **kwargs):\n    return task['value']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with TaskManager("late") as manager:
        manager.create_task([{"value": value} for value in range(20)])
    summary = run_loop_in_child(0, LoopOptions(task_pool="late", func="quick_tasks:echo"),
                                LoopSettings.current(), where="here", stop=lambda: True)
    assert summary.error is None and (summary.done, summary.failed) == (0, 0)
    with TaskManager("late") as manager:  # as run_loop with this stop: it claims nothing
        assert manager.task_stat() == {"waiting": 20}


LINGERING_TASKS = """
import threading
import time


def leave_a_thread(task, **kwargs):
    threading.Thread(target=time.sleep, args=(600,), name="left-running").start()
    return task["value"]
"""


def test_a_loop_whose_task_left_a_thread_running_ends_with_its_summary(
        isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lingering_tasks.py").write_text(LINGERING_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loop_process, "EXIT_GRACE_SECONDS", 1.0)
    with TaskManager("lingering") as manager:
        manager.create_task([{"value": value} for value in range(2)])
    before = {child.pid for child in psutil.Process().children()}
    summary = run_loop_in_child(0, LoopOptions(task_pool="lingering",
                                               func="lingering_tasks:leave_a_thread"),
                                LoopSettings.current(), where="here", stop=lambda: False)
    assert summary.error is None and summary.done == 2  # its work was done and committed
    assert {child.pid for child in psutil.Process().children()} <= before  # and it is gone
    with TaskManager("lingering") as manager:
        assert manager.task_stat() == {"done": 2}

PARENT = """
import sys
import taskroll
from taskroll.cluster.loop import LoopOptions, LoopSettings
from taskroll.cluster import loop_process
from taskroll.cluster.loop_process import run_loop_in_child

taskroll.init(task_url=sys.argv[1], tracking_uri=sys.argv[2])
run_loop_in_child(0, LoopOptions(task_pool="held", func="holding_tasks:hold",
                                 force_release=True),
                  LoopSettings.current(), where="parent", stop=lambda: False)
"""

HOLDING_TASKS = """
import os
import time


def hold(task, **kwargs):
    with open(task["marker"] + ".tmp", "w") as marker:
        marker.write(f"{os.getppid()} {os.getpid()}")
    os.rename(task["marker"] + ".tmp", task["marker"])
    time.sleep(600)
"""


def test_a_killed_parent_takes_the_loop_its_task_process_and_its_folder_along(
        tmp_path: Path) -> None:
    (tmp_path / "holding_tasks.py").write_text(textwrap.dedent(HOLDING_TASKS))
    temporary, marker = tmp_path / "tmp", tmp_path / "held"
    temporary.mkdir()
    url, tracking = f"sqlite:///{tmp_path / 'tasks.db'}", f"sqlite:///{tmp_path / 'mlruns.db'}"
    with TaskManager("held", store=url) as manager:
        manager.create_task([{"marker": str(marker)}])
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TASKROLL_")}
    environment.update(PYTHONPATH=str(tmp_path), TMPDIR=str(temporary))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, url, tracking], cwd=tmp_path,
                              env=environment)
    started: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert parent.poll() is None, "the parent ended before its loop ran the task"
            assert time.monotonic() < deadline, "the loop did not start its task"
            time.sleep(0.1)
        loop, task_process = (int(pid) for pid in marker.read_text().split())
        started += [loop, task_process]
        [folder] = temporary.iterdir()
        assert folder.name.startswith("taskroll-loop-")
        assert folder.stat().st_mode & 0o777 == 0o700  # no other user plants a summary there
        os.kill(parent.pid, signal.SIGKILL)  # e.g. the Dask worker killed for its memory
        parent.wait()
        assert processes_ended([loop], 20), "the loop's process outlived its parent"
        assert processes_ended([task_process], 20), "the task's process (force_release) outlived its loop"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in started:  # what this test started, should it outlive a failure
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    assert list(temporary.iterdir()) == []  # the summary folder went with the loop
