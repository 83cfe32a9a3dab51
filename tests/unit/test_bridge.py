"""`Prediction.cancel`: the cancel goes out once, then the proxy hands the CPU to LM Studio once."""

from __future__ import annotations

import pytest

from proxy import bridge


class _Stream:
    """The SDK prediction stream's `cancel()`, recording into a shared log (a fake: unit test)."""

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def cancel(self) -> None:
        if self.fail:
            raise OSError("connection reset")
        self.log.append("cancel sent")


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    events: list[str] = []
    monkeypatch.setattr(bridge, "_yield_cpu", lambda: events.append("cpu yielded"))
    return events


async def test_cancel_is_sent_then_the_cpu_is_yielded_once(log: list[str]) -> None:
    prediction = bridge.Prediction(_Stream(log), on_lost=lambda: None)
    await prediction.cancel()
    await prediction.cancel()  # a second stop sends nothing and yields nothing
    assert log == ["cancel sent", "cpu yielded"]
    assert prediction.cancel_sent


async def test_a_failed_cancel_does_not_yield(log: list[str]) -> None:
    prediction = bridge.Prediction(_Stream(log, fail=True), on_lost=lambda: None)
    await prediction.cancel()  # never raises: the drain that follows reports the problem
    assert log == [] and prediction.cancel_sent
