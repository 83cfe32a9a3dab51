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


async def store_mismatch(http: httpx.AsyncClient, where: str, body: dict[str, Any], sample: Sample) -> str:
    """What the store holds against what a cancel's body said ("" when they match): quick_edit, the
    thread is gone; keep_partial, the user message and exactly the text the client saw, marked cancelled."""
    where = f"{where} ({body.get('cancel_mode')})"
    if sample.terminal != "response.cancelled":
        return f"{where}: the stream ended with {sample.terminal or 'no terminal event'}"
    if body.get("cancel_mode") == "quick_edit":
        status = (await http.get(f"/v1/threads/{sample.thread_id}")).status_code
        return "" if status == 404 else f"{where}: GET thread answered {status}, not 404"
    response = await http.get(f"/v1/threads/{sample.thread_id}/messages")
    messages = response.json().get("data", []) if response.status_code == 200 else []
    roles = [m.get("role") for m in messages]
    if roles != ["user", "assistant"]:
        return f"{where}: the thread holds {roles} (status {response.status_code})"
    assistant = messages[1]
    metadata = assistant.get("metadata") or {}
    seen = "".join(sample.text or [])
    if assistant.get("content") != seen:
        return f"{where}: stored {len(assistant.get('content') or '')} characters, the client saw {len(seen)}"
    if not (metadata.get("cancelled") is True and metadata.get("cancel_mode") == "keep_partial"):
        return f"{where}: the assistant message's metadata is {metadata}"
    return ""
