"""Which process runs a recorded run, and whether that process is still alive.

A run killed with SIGKILL (or by a lost machine) never ends: MLflow shows it
``RUNNING`` forever. Every training run is therefore stamped with the identity of
the process that runs it (:func:`process_tags`): the host name, the process id
and, on Linux, the process's start time (so a reused process id is not taken for
the original process). :func:`process_state` later tells from these tags whether
the process is gone; :mod:`taskroll.online.models` marks such runs ``FAILED``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

HOST_TAG = "hostname"
"""Tag holding the host name (Qlib sets the same tag)."""
PID_TAG = "taskroll.pid"
"""Tag holding the process id of the process that runs the run."""
PID_START_TAG = "taskroll.pid_start"
"""Tag holding that process's start time in clock ticks since boot (Linux), or ``""``."""

ProcessState = Literal["alive", "dead", "unknown"]


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` (``/proc/PID/stat`` field 22), ``""`` when unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces or parentheses
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def process_tags() -> dict[str, str]:
    """Return the tags identifying this process: host, pid and pid start time."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: _start_ticks(pid)}


def process_state(tags: Mapping[str, str]) -> ProcessState:
    """Tell whether the process named by a run's tags is alive.

    Args:
        tags: The run's tags, as written by :func:`process_tags`.

    Returns:
        ``"alive"`` or ``"dead"`` for a process of this host; ``"unknown"`` for another
        host or a run without the tags (its process cannot be checked from here).
    """
    if tags.get(HOST_TAG) != socket.gethostname():
        return "unknown"
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return "unknown"
    if pid <= 0:
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # the process exists but belongs to another user
    recorded = tags.get(PID_START_TAG, "")
    if recorded and _start_ticks(pid) not in ("", recorded):
        return "dead"  # the id now belongs to a newer process
    return "alive"
