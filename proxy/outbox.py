"""The events of one stream waiting for its SSE writer; consecutive text deltas coalesce."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from proxy.flag import Flag
from proxy.wire.events import StreamEvent

TEXT_EVENTS = {"response.content_delta": "delta", "reasoning.content": "content"}


class Outbox:
    """Events waiting for the SSE writer, in order; consecutive deltas coalesce."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._parts: list[list[str]] = []  # per item: pending text parts of a delta item
        self._ready = Flag()
        self.closed = False
        self.pending_since = 0.0  # perf_counter() when the oldest waiting event was pushed
        self._pause: asyncio.Future[None] | None = None  # the writer's `pause`, while it lasts

    def push(self, event: StreamEvent) -> None:
        if not self._items:
            self.pending_since = time.perf_counter()
        self._items.append(cast(dict[str, Any], event))
        self._parts.append([])
        self._ready.set()

    def push_text(self, event_name: str, field_name: str, text: str) -> None:
        if self._items and self._items[-1]["event"] == event_name:
            self._parts[-1].append(text)
        else:
            if not self._items:
                self.pending_since = time.perf_counter()
            self._items.append({"event": event_name, field_name: ""})
            self._parts.append([text])
        self._ready.set()

    @property
    def empty(self) -> bool:
        return not self._items

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        if self._pause is not None and not self._pause.done():
            self._pause.set_result(None)  # the stream's end is not held back by the writer's pause

    def take_nowait(self) -> list[dict[str, Any]]:
        items, parts = self._items, self._parts
        self._items, self._parts = [], []
        self._ready.clear()
        for item, pending in zip(items, parts, strict=True):
            if pending:
                item[TEXT_EVENTS[item["event"]]] = "".join(pending)
        return items

    async def wait(self) -> None:
        """Until something is pending or the outbox is closed (takes nothing: the writer may let more gather)."""
        if not self._items and not self.closed:
            await self._ready.wait()

    async def pause(self, seconds: float) -> None:
        """Let more events gather for up to `seconds`; returns at once when the outbox closes.

        The SSE writer pauses between two writes of fast text; the terminal event and `[DONE]`
        must not wait out that pause (at 1 stream it was up to 2 ms at the end of every stream).
        """
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        self._pause = pause = loop.create_future()
        timer = loop.call_later(seconds, _end_pause, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    async def take(self) -> list[dict[str, Any]]:
        """Everything pending, waiting for something if need be; [] once closed and empty."""
        await self.wait()
        return self.take_nowait()


def _end_pause(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)
