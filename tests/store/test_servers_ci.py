"""With ``CI=true`` a test server that cannot be had fails the run instead of skipping."""

from __future__ import annotations

import pytest
from servers import ServerUnavailable, require_module, running_in_ci, session_server


def _missing_server() -> object:
    raise ServerUnavailable("PostgreSQL server binaries not found")


def _first(generator: object) -> object:
    return next(generator)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_unavailable_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    monkeypatch.delenv("TASKROLL_TEST_POSTGRES_URL", raising=False)
    assert running_in_ci()
    with pytest.raises(pytest.fail.Exception, match=r"binaries not found.*CI=true"):
        _first(session_server("pytest", "dev", "TASKROLL_TEST_POSTGRES_URL",
                              _missing_server))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_unavailable_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch,
                                             value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    monkeypatch.delenv("TASKROLL_TEST_POSTGRES_URL", raising=False)
    assert not running_in_ci()
    with pytest.raises(pytest.skip.Exception, match="binaries not found"):
        _first(session_server("pytest", "dev", "TASKROLL_TEST_POSTGRES_URL",
                              _missing_server))  # type: ignore[arg-type]


def test_missing_driver_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_driver_module is not installed"):
        require_module("no_such_driver_module", "postgres")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_module("no_such_driver_module", "postgres")
