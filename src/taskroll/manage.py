"""Task pools: :class:`TaskManager` (Qlib's method names) and the worker loop :func:`run_task`.

``TaskManager`` lives in :mod:`taskroll.manage_pool` (creating and claiming tasks) on top
of :mod:`taskroll.manage_queries` (queries, counts, resets, ``wait``), ``run_task`` in
:mod:`taskroll.worker`, failure kinds and backoff in :mod:`taskroll.manage_failure`;
import them from here. Run ``python -m taskroll.manage -t POOL COMMAND`` for the command
line, with Qlib's command set (``list``, ``task_stat``, ``query``, ``re_query``, ``wait``,
``create_task FILE``, ``insert_task_def``, ``replace_task``, ``fetch_task``,
``commit_task_res``, ``return_task``, ``reset_waiting``, ``reset_status``, ``remove``,
``prioritize``) and ``retry`` (:mod:`taskroll.manage_cli`, which imports the modules
below this one, never this one, so no two modules import each other).
"""

from __future__ import annotations

from taskroll.manage_pool import TaskManager
from taskroll.worker import run_task

__all__ = ["TaskManager", "run_task"]

if __name__ == "__main__":  # pragma: no cover - exercised through the CLI tests
    from taskroll.manage_cli import main

    raise SystemExit(main())
