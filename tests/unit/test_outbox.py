"""The outbox: consecutive text deltas coalesce, other events keep their order, `wait` and `take` wait."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from proxy.outbox import Outbox
from proxy.wire.events import StreamEvent

DELTA = "response.content_delta"
REASONING = "reasoning.content"


def _event(fields: dict[str, str]) -> StreamEvent:
    """An event of any shape: the outbox only reads its `event` name."""
    return cast(StreamEvent, fields)


def delta(text: str) -> dict[str, Any]:
    return {"event": DELTA, "delta": text}


def test_consecutive_deltas_coalesce_into_one_event() -> None:
    box = Outbox()
    for part in ("Hel", "lo", ", ", "world"):
        box.push_text(DELTA, "delta", part)
    assert box.take_nowait() == [delta("Hello, world")]
    assert box.take_nowait() == []


def test_different_events_keep_their_order() -> None:
    box = Outbox()
    box.push(_event({"event": "response.created", "response_id": "r"}))
    box.push_text(REASONING, "content", "think")
    box.push_text(REASONING, "content", "ing")
    box.push(_event({"event": "reasoning.completed"}))
    box.push_text(DELTA, "delta", "a")
    box.push_text(DELTA, "delta", "b")
    box.push_text(REASONING, "content", "more")
    box.push_text(DELTA, "delta", "c")
    box.push(_event({"event": "response.heartbeat"}))
    box.push(_event({"event": "response.heartbeat"}))
    assert box.take_nowait() == [
        {"event": "response.created", "response_id": "r"},
        {"event": REASONING, "content": "thinking"},
        {"event": "reasoning.completed"},
        delta("ab"),
        {"event": REASONING, "content": "more"},
        delta("c"),
        {"event": "response.heartbeat"},
        {"event": "response.heartbeat"},  # only text events coalesce
    ]


def test_a_delta_after_a_take_starts_a_new_event() -> None:
    box = Outbox()
    box.push_text(DELTA, "delta", "a")
    assert box.take_nowait() == [delta("a")]
    box.push_text(DELTA, "delta", "b")
    assert box.take_nowait() == [delta("b")]


async def test_wait_takes_nothing_so_later_text_joins_the_same_event() -> None:
    box = Outbox()
    box.push(_event({"event": "response.created"}))
    box.push_text(DELTA, "delta", "ab")
    await box.wait()
    box.push_text(DELTA, "delta", "cd")  # arrives while the writer lets text gather
    assert box.take_nowait() == [{"event": "response.created"}, delta("abcd")]


async def test_wait_returns_once_closed() -> None:
    box = Outbox()
    box.close()
    await box.wait()
    assert box.take_nowait() == [] and box.closed


async def _take_when_waiting(box: Outbox) -> asyncio.Task[list[dict[str, Any]]]:
    """A task blocked inside `box.take()` (it set `waiting` right before calling it, then ran to its wait)."""
    waiting = asyncio.Event()

    async def take() -> list[dict[str, Any]]:
        waiting.set()
        return await box.take()

    task = asyncio.create_task(take())
    await waiting.wait()
    return task


async def test_take_waits_until_something_is_pushed() -> None:
    box = Outbox()
    task = await _take_when_waiting(box)
    assert not task.done()
    box.push_text(DELTA, "delta", "x")
    assert await task == [delta("x")]


async def test_take_returns_what_is_pending_without_waiting() -> None:
    box = Outbox()
    box.push(_event({"event": "e"}))
    assert await box.take() == [{"event": "e"}]


async def test_close_wakes_a_waiting_take_with_nothing() -> None:
    box = Outbox()
    task = await _take_when_waiting(box)
    box.close()
    assert await task == []


async def test_after_close_take_drains_then_returns_empty() -> None:
    box = Outbox()
    box.push_text(DELTA, "delta", "last")
    box.push(_event({"event": "response.completed"}))
    box.close()
    assert await box.take() == [delta("last"), {"event": "response.completed"}]
    assert await box.take() == []
    assert await box.take() == []


def test_pending_since_is_when_the_oldest_waiting_event_came() -> None:
    box = Outbox()
    box.push_text(DELTA, "delta", "a")
    oldest = box.pending_since
    box.push_text(DELTA, "delta", "b")
    box.push(_event({"event": "x"}))
    assert box.pending_since == oldest
    box.take_nowait()
    box.push(_event({"event": "y"}))
    assert box.pending_since >= oldest


def test_a_slow_reader_gets_one_delta_with_all_the_text() -> None:
    # What tests/api/test_slow_reader.py proves end to end: while nobody takes, 10,000 deltas
    # are one pending event whose text is all of theirs, in order.
    box = Outbox()
    parts = [f"{i} " for i in range(10_000)]
    box.push(_event({"event": "response.created"}))
    for part in parts:
        box.push_text(DELTA, "delta", part)
    box.push(_event({"event": "response.completed"}))
    assert box.take_nowait() == [{"event": "response.created"}, delta("".join(parts)), {"event": "response.completed"}]


async def _pause_when_waiting(box: Outbox, seconds: float) -> asyncio.Task[None]:
    """A task blocked inside `box.pause(seconds)` (as `_take_when_waiting`)."""
    waiting = asyncio.Event()

    async def pause() -> None:
        waiting.set()
        await box.pause(seconds)

    task = asyncio.create_task(pause())
    await waiting.wait()
    return task


async def test_close_ends_a_pause_at_once() -> None:
    # The SSE writer's pause between two writes of text must not hold back a stream's end.
    box = Outbox()
    task = await _pause_when_waiting(box, 3600)
    assert not task.done()
    box.close()
    async with asyncio.timeout(10):  # a bound for a broken build only: the close wakes it in one step
        await task


async def test_a_pause_on_a_closed_outbox_returns_at_once() -> None:
    box = Outbox()
    box.close()
    async with asyncio.timeout(10):
        await box.pause(3600)


async def test_a_pause_ends_by_itself_and_a_later_close_is_harmless() -> None:
    box = Outbox()
    task = await _pause_when_waiting(box, 0.001)
    await task  # its own timer ended it
    box.push_text(DELTA, "delta", "x")
    box.close()
    assert box.take_nowait() == [delta("x")] and box.closed


async def test_a_cancelled_pause_leaves_the_outbox_usable() -> None:
    box = Outbox()
    task = await _pause_when_waiting(box, 3600)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    second = await _pause_when_waiting(box, 3600)
    box.close()
    async with asyncio.timeout(10):
        await second
