"""The one backoff loop both server-backed stores use while the server is away."""

from __future__ import annotations

import pytest

from taskroll.errors import StoreConnectionError
from taskroll.store import retry
from taskroll.store.retry import ReconnectBackoff, ServerUnreachable, retry_while_unreachable


def test_backoff_doubles_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sleeps = [100.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(retry.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(retry.time, "sleep", sleep)
    backoff = ReconnectBackoff(retry_seconds=2.0)
    cause = ConnectionError("refused")
    with pytest.raises(StoreConnectionError, match=r"server gone \(retried 2 s\)") as caught:
        for _ in range(100):
            backoff.wait(cause, "server gone")
    assert caught.value.__cause__ is cause
    assert sleeps[:5] == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert max(sleeps) <= 1.0 and sum(sleeps) == pytest.approx(2.0)


def test_retry_while_unreachable_repeats_only_server_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", sleeps.append)
    tries: list[int] = []
    cause = ConnectionError("connection refused")

    def flaky() -> str:
        tries.append(len(tries))
        if len(tries) < 3:
            raise ServerUnreachable("cannot reach the store") from cause
        return "answer"

    assert retry_while_unreachable(flaky, retry_seconds=30.0) == "answer"
    assert len(tries) == 3 and sleeps == [0.05, 0.1]

    def broken() -> str:  # any other error ends the loop at once, untouched
        tries.append(len(tries))
        raise ValueError("bad statement")

    tries.clear()
    with pytest.raises(ValueError, match="bad statement"):
        retry_while_unreachable(broken, retry_seconds=30.0)
    assert tries == [0]


def test_retry_while_unreachable_gives_up_with_the_driver_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(retry.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(retry.time, "sleep", sleep)
    cause = ConnectionError("connection refused")

    def gone() -> None:
        raise ServerUnreachable("cannot reach the store at db:5432") from cause

    with pytest.raises(StoreConnectionError,
                       match=r"cannot reach the store at db:5432 \(retried 1 s\)") as caught:
        retry_while_unreachable(gone, retry_seconds=1.0)
    assert caught.value.__cause__ is cause and clock[0] == pytest.approx(1.0)
