"""The one backoff loop both server-backed stores use while the server is away."""

from __future__ import annotations

import pytest

from taskroll.errors import StoreConnectionError
from taskroll.store import retry
from taskroll.store.retry import Backoff


def test_backoff_doubles_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sleeps = [100.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(retry.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(retry.time, "sleep", sleep)
    backoff = Backoff(retry_seconds=2.0)
    cause = ConnectionError("refused")
    with pytest.raises(StoreConnectionError, match=r"server gone \(retried 2 s\)") as caught:
        for _ in range(100):
            backoff.wait(cause, "server gone")
    assert caught.value.__cause__ is cause
    assert sleeps[:5] == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert max(sleeps) <= 1.0 and sum(sleeps) == pytest.approx(2.0)
