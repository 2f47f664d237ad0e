"""The keywords :func:`taskroll.init` takes, and the message for the ones it refuses.

A ``qlib.init`` keyword taskroll has no equivalent for gets a hint saying what to do
instead; any other unknown keyword gets the closest valid name.
"""

from __future__ import annotations

import difflib

__all__ = ["INIT_KEYWORDS", "QLIB_ONLY_HINTS", "unknown_keywords_message"]

#: What to use instead of ``qlib.init`` keywords taskroll has no equivalent for.
QLIB_ONLY_HINTS: dict[str, str] = {
    "exp_manager": "give the MLflow URI as tracking_uri=... (and artifact_root=...)",
    "default_exp_name": "name the experiment where you train: task_train(task, experiment_name)",
    "kernels": "taskroll reads data in-process; start more workers to train in parallel",
    "expression_cache": "taskroll caches loaded data and features in-process by itself",
    "dataset_cache": "taskroll caches loaded data and features in-process by itself",
    "redis_host": "taskroll needs no redis",
    "redis_port": "taskroll needs no redis",
}

#: The keywords :func:`taskroll.init` takes, in its order.
INIT_KEYWORDS: tuple[str, ...] = (
    "task_url", "task_db_name", "tracking_uri", "artifact_root", "lease_seconds",
    "max_attempts", "allowed_modules", "allowed_tracking_uris", "provider_uri", "region",
    "mongo")


def unknown_keywords_message(names: list[str]) -> str:
    """The message for keywords :func:`taskroll.init` does not take: each with a hint or the closest."""
    parts = []
    for name in names:
        if name in QLIB_ONLY_HINTS:
            parts.append(f"{name!r} (a qlib.init keyword taskroll does not take: "
                         f"{QLIB_ONLY_HINTS[name]})")
            continue
        closest = difflib.get_close_matches(name, INIT_KEYWORDS, n=1, cutoff=0.5)
        parts.append(f"{name!r}" + (f" (did you mean {closest[0]!r}?)" if closest else ""))
    return (f"init() got unknown keyword(s) {', '.join(parts)}; it takes "
            f"{', '.join(INIT_KEYWORDS)}")
