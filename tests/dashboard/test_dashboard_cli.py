"""The dashboard's command line: a real server process, the install hint, lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from dashboard_helpers import POOL, MixedPool, free_port

from taskroll.dashboard.cli import INSTALL_HINT, build_parser

PYTHON = sys.executable


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("TASKROLL_")}


MODULE = ("-m", "taskroll.dashboard")
"""``python -m taskroll.dashboard``."""
COMMAND = ("-m", "taskroll", "dashboard")
"""``taskroll dashboard`` (the same entry point as the ``taskroll`` script)."""


def _serve(mixed_pool: MixedPool, folder: Path, output: int,
           command: tuple[str, ...] = MODULE) -> tuple[subprocess.Popen[bytes], int]:
    """Start the dashboard on the pool's store; wait until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, *command, "--url", mixed_pool.url, "--port", str(port)],
        cwd=folder, env=_environment(), stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/pools", timeout=2)
            return process, port
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the dashboard did not start: {process.communicate()[0]!r}") from None
            time.sleep(0.2)


@pytest.mark.parametrize("command", [MODULE, COMMAND], ids=["module", "taskroll-dashboard"])
def test_command_serves_the_store_named_on_the_command_line(mixed_pool: MixedPool,
                                                             tmp_path: Path,
                                                             command: tuple[str, ...]) -> None:
    process, port = _serve(mixed_pool, tmp_path, subprocess.PIPE, command)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/api/pools", timeout=5)
        counts = response.json()["pools"][0]["counts"]
        assert response.json()["pools"][0]["pool"] == POOL and counts["failed"] == 2
        refused = httpx.post(f"http://127.0.0.1:{port}/api/pools/{POOL}/actions/retry",
                             json={"confirm": True}, timeout=5)
        assert refused.status_code == 403  # read-only without --allow-actions
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert f"http://127.0.0.1:{port}/" in output and "read-only" in output


def test_defaults_are_loopback_and_read_only() -> None:
    arguments = build_parser().parse_args([])
    assert arguments.host == "127.0.0.1" and arguments.port == 8080
    assert arguments.allow_actions is False and arguments.online is None


def test_missing_web_stack_is_a_one_line_hint(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from taskroll.dashboard.cli import main\n"
            f"raise SystemExit(main(['--url', 'sqlite:///{tmp_path / 'tasks.db'}']))")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                            env=_environment(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {INSTALL_HINT}"]


def test_importing_taskroll_does_not_import_the_web_stack() -> None:
    code = ("import sys, taskroll, taskroll.dashboard, taskroll.dashboard.cli, "
            "taskroll.dashboard.data, taskroll.dashboard.html\n"
            "print(sorted(name for name in ('starlette', 'uvicorn') if name in sys.modules))")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                            env=_environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_loopback_dashboard_refuses_foreign_host_names(mixed_pool: MixedPool,
                                                         tmp_path: Path) -> None:
    process, port = _serve(mixed_pool, tmp_path, subprocess.DEVNULL)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        assert httpx.get(f"http://localhost:{port}/api/pools", timeout=5).status_code == 200
        rebound = httpx.get(f"http://127.0.0.1:{port}/", headers={"host": f"evil.example:{port}"},
                            timeout=5)
        assert rebound.status_code == 400 and "data-token" not in rebound.text
    finally:
        process.terminate()
        process.wait(20)
