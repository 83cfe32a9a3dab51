"""One stream as its client saw it, and the helpers that own and wait on concurrent streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from proxy import sse
from proxy.bench.errors import BenchError
from proxy.bench.settings import STEP_TIMEOUT

TERMINAL_EVENTS = ("response.completed", "response.cancelled", "response.error")


@dataclass
class Sample:
    """One stream as its client saw it; times are perf_counter() values."""

    started: float = 0.0
    first_token: float | None = None
    ended: float = 0.0
    tokens: int = 0
    deltas: int = 0
    thread_id: str = ""
    terminal: str = ""
    terminal_at: float = 0.0
    closed_wall: float = 0.0  # time.time() when the client closed the connection early
    text: list[str] | None = None  # the deltas' text, when the caller wants it kept (None: not kept)

    @property
    def ttft(self) -> float:
        if self.first_token is None:
            raise BenchError("a stream ended without any content")
        return self.first_token - self.started


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any] | None]:
    """The JSON objects of `data:` frames as they arrive; None for `data: [DONE]`."""
    reader = sse.EventReader()
    async for chunk in response.aiter_bytes():
        for event in reader.feed(chunk):
            yield event if isinstance(event, dict) else None


@contextlib.asynccontextmanager
async def owned_tasks() -> AsyncIterator[list[asyncio.Task[Sample]]]:
    """Tasks appended to the list are cancelled (if still running) and awaited when the block ends."""
    tasks: list[asyncio.Task[Sample]] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(
    condition: Callable[[], bool], changed: asyncio.Event, tasks: Sequence[asyncio.Task[Sample]], what: str
) -> None:
    """Wait until `condition()` holds, re-checked whenever `changed` is set or a task ends.

    A task that failed fails the wait; all tasks ending first, or STEP_TIMEOUT passing, is a BenchError.
    """
    for task in tasks:
        task.add_done_callback(lambda _: changed.set())
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                changed.clear()
                for task in tasks:
                    if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                        raise exc
                if condition():
                    return
                if all(task.done() for task in tasks):
                    raise BenchError(f"the stream(s) ended before {what}")
                await changed.wait()
    except TimeoutError:
        raise BenchError(f"no {what} within {STEP_TIMEOUT:g} s") from None
