"""The environment of each worker process on one machine: its GPU and its thread caps.

``taskroll worker -n N --gpus 0,1`` gives worker i ``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]``
(round robin: with more workers than GPUs, workers share them), so a framework in the
worker sees one device, as device 0. BLAS/OpenMP/numexpr threads default to
cores // N (:mod:`taskroll.threads`). Both must be in the environment before the
worker process loads CUDA or numpy, so each process is started inside
:func:`process_environment` with its own values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

from taskroll.errors import TaskConfigError
from taskroll.threads import THREAD_VARIABLES

DEVICE_VARIABLE = "CUDA_VISIBLE_DEVICES"
"""The variable CUDA (PyTorch, JAX, LightGBM's CUDA build, ...) reads to pick devices."""


def parse_gpus(gpus: str | Sequence[str | int]) -> list[str]:
    """Return the device list of ``--gpus``: ``"0,1"`` -> ``["0", "1"]``.

    Items are device numbers or UUIDs (``GPU-...``, ``MIG-...``); one may repeat to put
    two workers on one device.

    Raises:
        TaskConfigError: For an empty list, an empty item, or an item that is neither a
            device number nor a UUID (CUDA would silently show no device for it).
    """
    items = gpus.split(",") if isinstance(gpus, str) else list(gpus)
    devices = [str(item).strip() for item in items]
    if not devices or not all(_is_device(device) for device in devices):
        raise TaskConfigError(f"--gpus takes device numbers or UUIDs separated by commas, "
                              f"e.g. '0,1', got {gpus!r}")
    return devices


def _is_device(text: str) -> bool:
    """Whether ``text`` names a device: ``0``, ``1``, ... or ``GPU-<uuid>`` / ``MIG-<uuid>``."""
    if text.isascii() and text.isdigit():
        return True
    prefix, _, rest = text.partition("-")
    return (prefix in ("GPU", "MIG") and bool(rest) and text.isascii()
            and not any(char.isspace() or char == "," for char in text))


def worker_environments(workers: int, threads: int, gpus: Sequence[str] | None = None,
                        environment: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Return the variables to set for each of ``workers`` processes.

    Args:
        workers: Worker processes.
        threads: BLAS/OpenMP threads each may use; a thread variable already set in
            ``environment`` is kept (the user's choice wins).
        gpus: Devices given round robin (``None``: ``CUDA_VISIBLE_DEVICES`` untouched).
        environment: The environment the processes inherit (default ``os.environ``).

    Returns:
        One mapping per worker, in worker order.

    Raises:
        TaskConfigError: When ``workers`` or ``threads`` is below 1.
    """
    if workers < 1:
        raise TaskConfigError(f"-n must be at least 1, got {workers}")
    if threads < 1:
        raise TaskConfigError(f"--threads must be at least 1, got {threads}")
    inherited = os.environ if environment is None else environment
    caps = {name: str(threads) for name in THREAD_VARIABLES if not inherited.get(name)}
    values = []
    for number in range(workers):
        device = {DEVICE_VARIABLE: gpus[number % len(gpus)]} if gpus else {}
        values.append({**caps, **device})
    return values


@contextlib.contextmanager
def process_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block, then restore it.

    Start a process in the block: it copies the environment as it is then.
    """
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
